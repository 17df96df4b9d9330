"""JSON logs on stderr for every Herald process, each line with its correlation id.

A log line written while a record or a request is being handled carries the
``correlation_id`` bound for it (``engine.correlation``): the REST request id, then the
CloudEvents ``correlationid`` of every event the request caused. One ``grep`` of that id
follows a notification through the API, the ingest, routing, sink and gateway log lines
of every process (``docs/observability.md``, "Logs").
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

from engine import correlation


class CorrelationFilter(logging.Filter):
    """Adds the bound correlation id to a record that does not name one itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "correlation_id", None) is None:
            value = correlation.current()
            if value is not None:
                record.correlation_id = value
        return True


def json_handler(stream: TextIO | None = None) -> logging.Handler:
    """A handler writing one JSON object per line to ``stream`` (stderr), with correlation ids."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(CorrelationFilter())
    return handler


def configure(level: str = "INFO") -> None:
    """Route all logging through one JSON handler on stderr."""
    root = logging.getLogger()
    root.handlers[:] = [json_handler()]
    root.setLevel(level.upper())
    # Chatty libraries: their INFO lines are about their internals, not Herald's work.
    for name in ("aiokafka", "faust", "mode", "aiohttp.access", "kafka"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
