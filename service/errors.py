"""Domain and HTTP errors, and the middleware that turns them into one JSON error shape.

Every error a client sees is ``{"error": {"code", "message", "details"}}``. Handlers raise
:class:`ApiError` (or let marshmallow's ``ValidationError`` escape); nothing else is allowed
to reach the client as a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from marshmallow import ValidationError

from service.db import DatabaseBusy, DatabaseUnavailable, DiskFull, ValueOutOfRange
from service.domain.debug import Refused
from service.domain.statemachine import InvalidTransition
from service.jsonutil import json_response
from service.keys import DB_KEY, REQUEST_ID_KEY
from service.repositories.versioned import VersionMismatch

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error with an HTTP status, a stable machine-readable code and optional details."""

    status = 400
    code = "bad_request"
    headers: dict[str, str] = {}

    def __init__(self, message: str, *, details: Any = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details if details is not None else {}
        if code:
            self.code = code


class InvalidParameter(ApiError):
    status, code = 400, "invalid_parameter"


class InvalidBody(ApiError):
    status, code = 400, "invalid_body"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class UnprocessableEntity(ApiError):
    status, code = 422, "unprocessable"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class ServiceUnavailable(ApiError):
    status, code = 503, "service_unavailable"


class PreconditionFailed(ApiError):
    status, code = 412, "version_mismatch"

    def __init__(self, current: int):
        super().__init__(
            f"the resource changed: its current version is {current}; fetch it and retry",
            details={"current_version": current},
        )
        self.headers = {"ETag": f'"{current}"'}


def from_domain(exc: Exception) -> ApiError | None:
    """The HTTP form of a domain error every handler would translate the same way."""
    if isinstance(exc, VersionMismatch):
        return PreconditionFailed(exc.current)
    if isinstance(exc, InvalidTransition):
        details = {"from": exc.current, "to": exc.requested, "allowed": exc.allowed}
        return Conflict(str(exc), code="invalid_transition", details=details)
    if isinstance(exc, Refused):
        error = ApiError(exc.message, details=exc.details, code=exc.code)
        error.status = exc.status
        return error
    return None


def error_response(
    status: int, code: str, message: str, details: Any = None, request_id: str | None = None
) -> web.Response:
    error = {"code": code, "message": message, "details": details or {}}
    if request_id is not None:
        error["request_id"] = request_id  # to quote when reporting a problem
    return json_response({"error": error}, status=status, lenient=True)


# aiohttp raises these for routing and protocol problems; give them stable codes.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ClientDisconnected(ApiError):
    """The client closed its connection before its request arrived whole: nothing was done,
    and the answer reaches no one (nginx would say 499)."""

    status, code = 400, "client_disconnected"


class RequestTimeout(ApiError):
    status, code = 408, "request_timeout"


class HandlerTimeout(ApiError):
    """The server took longer than ``request_timeout_s`` to answer; nothing is promised about
    a write that was under way (it may still commit): retry idempotently or check."""

    status, code = 503, "timeout"
    headers = {"Retry-After": "1"}


def error_middleware(*, request_timeout_s: float = 60.0) -> Middleware:
    """One JSON error shape for every failure, and a time limit on every handler."""
    deadlines = _Deadlines(request_timeout_s)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        task = deadlines.enter()
        try:
            return await handler(request)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and deadlines.expired(task):
                exc = HandlerTimeout(f"no answer within {request_timeout_s:g} s")
            return _error_for(request, exc)
        finally:
            deadlines.leave(task)

    return errors


class _Deadlines:
    """The time limit of every request in flight, watched by one timer a second.

    ``asyncio.timeout`` per request schedules and cancels a timer each time, 4.7 us of a
    row-by-id request's ~150 us. Here entering and leaving is a dict write, and a sweep each
    second (armed only while requests are in flight) cancels the tasks past their deadline.
    So a request is cut between ``limit_s`` and ``limit_s`` + 1 s after it began: a limit of
    tens of seconds, not a precise one.
    """

    SWEEP_S = 1.0

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._running: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweep: asyncio.TimerHandle | None = None

    def enter(self) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - aiohttp runs every handler in a task
            return None
        loop = task.get_loop()
        self._running[task] = loop.time() + self.limit_s
        if self._sweep is None:
            self._sweep = loop.call_later(self.SWEEP_S, self._cut_overdue, loop)
        return task

    def leave(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self._running.pop(task, None)
            self._expired.discard(task)

    def expired(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether ``task`` was cancelled for its deadline (and not by its client leaving):
        then the cancellation is taken back, so that the error response can go out."""
        if task is None or task not in self._expired:
            return False
        task.uncancel()
        return True

    def _cut_overdue(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep = None
        now = loop.time()
        for task, deadline in list(self._running.items()):
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        if self._running:
            self._sweep = loop.call_later(self.SWEEP_S, self._cut_overdue, loop)


def _respond(
    request: web.Request, status: int, code: str, message: str, details: Any = None
) -> web.Response:
    return error_response(status, code, message, details, request.get(REQUEST_ID_KEY))


def _error_for(request: web.Request, error: BaseException) -> web.StreamResponse:
    try:
        raise error
    except ApiError as exc:
        resp = _respond(request, exc.status, exc.code, exc.message, exc.details)
        resp.headers.update(exc.headers)
        return resp
    except ValidationError as exc:
        return _respond(
            request, 400, "validation_failed", "request failed validation", exc.messages
        )
    except (VersionMismatch, InvalidTransition, Refused) as exc:
        api_error = from_domain(exc)
        assert api_error is not None
        resp = _respond(
            request, api_error.status, api_error.code, api_error.message, api_error.details
        )
        resp.headers.update(api_error.headers)
        return resp
    except ValueOutOfRange as exc:
        return _respond(request, 400, "invalid_value", str(exc))
    except DiskFull as exc:
        # 507: the request was fine and nothing was committed; retry once space is freed.
        log.error("disk full on %s %s: %s", request.method, request.path, exc)
        resp = _respond(request, 507, "insufficient_storage", str(exc))
        resp.headers["Retry-After"] = "5"
        return resp
    except DatabaseUnavailable as exc:
        # Transient by nature (an external lock holder, a restart): tell clients to retry.
        code = "database_busy" if isinstance(exc, DatabaseBusy) else "database_unavailable"
        if code == "database_busy":
            log.warning("%s on %s %s: %s", code, request.method, request.path, exc)
        else:  # logged once per outage, not once per request (db/outage.py)
            _report_outage(request, exc)
        resp = _respond(request, 503, code, str(exc))
        resp.headers["Retry-After"] = "1"
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        details: dict[str, Any] = {}
        if exc.status == 405 and isinstance(exc, web.HTTPMethodNotAllowed):
            details = {"allowed_methods": sorted(exc.allowed_methods)}
        code = _HTTP_CODES.get(exc.status, "http_error")
        resp = _respond(request, exc.status, code, exc.reason, details)
        for name in ("Allow", "Retry-After"):
            if name in exc.headers:
                resp.headers[name] = exc.headers[name]
        return resp
    except Exception:
        # Never leak internals: log the traceback, give the client an opaque error.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _respond(request, 500, "internal_error", "internal server error")


def _report_outage(request: web.Request, exc: DatabaseUnavailable) -> None:
    db = request.app.get(DB_KEY)
    if db is None:
        log.warning("database_unavailable on %s %s: %s", request.method, request.path, exc)
    else:
        db.outage.failed(exc)
        log.debug("database_unavailable on %s %s: %s", request.method, request.path, exc)


# ---- errors aiohttp answers before any handler runs ----------------------------------------

_PROTOCOL_CODES = {400: "malformed_request", 413: "payload_too_large", 431: "headers_too_large"}


def _json_protocol_error(
    handler: RequestHandler,
    request: BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    """aiohttp's own answer (logged by it, and refused once a response has started), with
    the one JSON error shape as its body. The parser's message quotes the offending bytes (a
    header with its bearer token, say), so it is never sent back: the error kind is."""
    _AIOHTTP_HANDLE_ERROR(handler, request, status, exc, message)
    code = _PROTOCOL_CODES.get(status, "internal_error" if status >= 500 else "bad_request")
    text = "malformed HTTP request" if status < 500 else "internal server error"
    details = {"reason": type(exc).__name__} if exc is not None and status < 500 else {}
    resp = error_response(status, code, text, details)
    resp.force_close()
    return resp


_AIOHTTP_HANDLE_ERROR = RequestHandler.handle_error


def answer_protocol_errors_in_json() -> None:
    """Make aiohttp answer requests it cannot parse (a NUL or a fold in a header, a line too
    long) with the JSON error shape instead of plain text that echoes the bad header.

    aiohttp has no hook for these: they are answered before the application sees a request,
    so its ``RequestHandler.handle_error`` is replaced, for every server in this process.
    Idempotent."""
    RequestHandler.handle_error = _json_protocol_error  # type: ignore[method-assign,assignment]
