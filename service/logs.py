"""Log lines as text for people or as JSON objects for collectors (``--log-format``).

JSON: one object per line with ``time``, ``level``, ``logger``, ``message`` and, for lines
written while a request runs, its ``request_id``; access lines add ``method``, ``route``,
``path``, ``status``, ``duration_ms`` and ``remote``. Exceptions go in ``exception``.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from service.requestcontext import current_request_id

FORMATS = ("text", "json")
ACCESS_FIELDS = ("method", "route", "path", "status", "duration_ms", "remote")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        data: dict[str, Any] = {
            "time": stamp.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or current_request_id.get()
        if request_id:
            data["request_id"] = request_id
        for name in ACCESS_FIELDS:
            if hasattr(record, name):
                data[name] = getattr(record, name)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def configure(level: str, log_format: str = "text") -> None:
    """Log to stderr in ``log_format``; replaces whatever handlers were set before."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
