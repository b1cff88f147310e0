"""One line when the database becomes unavailable, one when it is back: not a line (or a
traceback) per failed request, pool refill and background task while it is down.

A PostgreSQL restart used to fill the log with asyncpg's "Failed to restore the pool
connection floor" tracebacks, one warning per request answered 503 and a traceback per token
touch. The backend reports every failure to connect and every success here; whoever logs a
per-request failure asks :attr:`OutageLog.down` and stays quiet while it is reported.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("service.db")


class OutageLog:
    def __init__(self) -> None:
        self._down_since: float | None = None

    @property
    def down(self) -> bool:
        """An outage is under way (and was logged)."""
        return self._down_since is not None

    def failed(self, reason: object) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("database unavailable: %s; answering 503 until it is back", reason)
        else:
            log.debug("database still unavailable: %s", reason)

    def succeeded(self) -> None:
        if self._down_since is not None:
            seconds = time.monotonic() - self._down_since
            self._down_since = None
            log.info("database available again after %.1f s", seconds)


class DropPoolFloorTracebacks(logging.Filter):
    """asyncpg's pool retries its minimum size with a traceback at each attempt while the
    server is unreachable; the outage is already reported by :class:`OutageLog`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to restore the pool connection floor")


POOL_FILTER = DropPoolFloorTracebacks()
