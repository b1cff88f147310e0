"""Log lines as text for people or as JSON objects for collectors (``--log-format``).

JSON: one object per line with ``time``, ``level``, ``logger``, ``message`` and, for lines
written while a request runs, its ``request_id``; access lines add ``method``, ``route``,
``path``, ``status``, ``duration_ms`` and ``remote``. Exceptions go in ``exception``.

Both formats hold two promises for every logger, aiohttp's own included: a message cannot
start a line of its own (control characters in it are escaped, so a path with ``%0a`` cannot
forge an entry), and no secret is written (BobGen tokens, bearer values and URL passwords are
masked in the finished line, tracebacks included).
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from service.domain.secrets import redact
from service.requestcontext import current_request_id

FORMATS = ("text", "json")
ACCESS_FIELDS = ("method", "route", "path", "status", "duration_ms", "remote")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """Control characters as visible escapes (``\\n``, ``\\x00``): one message, one line."""
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1], text)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, with the message escaped and the whole line redacted."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


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
        # JSON escapes control characters itself; redacting the encoded line is safe because
        # no secret pattern spans a quote or a backslash.
        return redact(orjson.dumps(data, default=str).decode())


def configure(level: str, log_format: str = "text") -> None:
    """Log to stderr in ``log_format``; replaces whatever handlers were set before."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.server").addFilter(MALFORMED_REQUESTS)


class OneLineForMalformedRequests(logging.Filter):
    """A request aiohttp cannot parse (a NUL in a header, a bad request line) is the client's
    fault: one warning line without a traceback, not an ERROR with one. The parser's message
    shows the offending bytes as a Python bytes repr, so nothing in it can forge a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__name__ in MALFORMED:
            record.msg = "malformed request refused: %s"
            record.args = (str(exc).replace("\n", " "),)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


MALFORMED = frozenset({"BadHttpMessage", "BadStatusLine", "LineTooLong", "InvalidHeader"})
MALFORMED_REQUESTS = OneLineForMalformedRequests()
