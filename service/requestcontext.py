"""The request id: accepted from ``X-Request-ID`` or made here, echoed on every response, put
in error bodies and in every log line written while the request runs. No aiohttp here: the
log formatter needs it, and the CLI should not pay for importing a web framework."""

from __future__ import annotations

import itertools
import os
import re
import uuid
from contextvars import ContextVar

REQUEST_ID_HEADER = "X-Request-ID"
# Log lines read it from here: loggers have no request at hand.
current_request_id: ContextVar[str | None] = ContextVar("bobgen_request_id", default=None)
# What a client may send: enough for uuids and tracing ids, nothing that could forge a log line.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_for(given: str | None) -> str:
    """The client's id when it is a sane one, else a new one."""
    if given and _ACCEPTED.fullmatch(given):
        return given
    return _ids.next()


class _RequestIds:
    """32 hex digits, as a uuid4's: a random half drawn once per process, then a counter.

    ``uuid4()`` reads the kernel's random source on every call, a system call that was 3 % of
    a row-by-id request's time, for ids that need to be unique, not unguessable (they are
    echoed to the client that sent the request and written to logs). A forked worker draws
    its own random half.
    """

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._counter = itertools.count(int.from_bytes(os.urandom(4)))

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


_ids = _RequestIds()
