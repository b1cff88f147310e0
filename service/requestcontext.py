"""The request id: accepted from ``X-Request-ID`` or made here, echoed on every response, put
in error bodies and in every log line written while the request runs. No aiohttp here: the
log formatter needs it, and the CLI should not pay for importing a web framework."""

from __future__ import annotations

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
    return uuid.uuid4().hex
