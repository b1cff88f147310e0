"""What the client raises: one class per family of BobGen's error codes (docs/api.md#errors).

Every error carries what the server said (``status``, ``code``, ``message``, ``details``) and
the request id to quote when reporting it (the ``X-Request-ID`` BobGen echoed, or the one in
the error body). Catch a family (``except NotFound``) rather than matching code strings; the
code is still there for the cases a family lumps together (``conflict``, ``not_holder``, ...).
"""

from __future__ import annotations

from typing import Any


class BobGenError(Exception):
    """Anything the BobGen API answered with an error, or could not be asked."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.request_id = request_id


class InvalidRequest(BobGenError):
    """400, 413, 415, 422: the request itself is wrong (parameters, body, size, a graph);
    ``details`` says what, field by field. Sending it again will not help."""


class Unauthorized(BobGenError):
    """401: no token, or one the server does not know (revoked, mistyped)."""


class Forbidden(BobGenError):
    """403: the token lacks a scope (``details.required_scope``), or the debug session
    belongs to another user (``not_session_owner``)."""


class NotFound(BobGenError):
    """404: no such record (or route)."""


class MethodNotAllowed(BobGenError):
    """405: the path exists, the method does not (``details.allowed_methods``)."""


class Conflict(BobGenError):
    """409 or 412: the request does not fit the current state: a duplicate id, a status move
    the machine refuses, a worktree held by another session, or (412) a stale ``If-Match``:
    someone changed the record since it was read. Read it again and decide."""

    @property
    def current_version(self) -> int | None:
        """For a 412: the version the record is at now."""
        value = self.details.get("current_version")
        return value if isinstance(value, int) else None


class PreconditionRequired(BobGenError):
    """428: the change needs ``If-Match`` (the client's ``update`` methods always send it)."""


class Unavailable(BobGenError):
    """503 or 507: the database is busy, unreachable or full; nothing was written. Retried by
    the client where that is safe; raised when the retries ran out. ``retry_after``: the
    seconds the server asked for."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServerError(BobGenError):
    """500 and other 5xx: a bug on the server; ``request_id`` finds its traceback in the log."""


class ConnectionFailed(BobGenError):
    """The server could not be reached (refused, reset, timed out); ``status`` is 0."""


_BY_STATUS: dict[int, type[BobGenError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    412: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    428: PreconditionRequired,
    503: Unavailable,
    507: Unavailable,
}


def error_class(status: int) -> type[BobGenError]:
    """The class for an error ``status``."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else InvalidRequest
