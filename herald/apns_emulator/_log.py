"""The single logger shared by the emulator modules.

Every module logs under ``herald.apns_emulator`` (not the per-module
``__name__``) so operators configure one name for the whole emulator.
"""

import logging

logger = logging.getLogger("herald.apns_emulator")
