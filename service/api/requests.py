"""Reading and validating request input: query strings and JSON bodies."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web
from marshmallow import Schema, ValidationError

from service.errors import (
    ClientDisconnected,
    InvalidBody,
    InvalidParameter,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from service.keys import CONFIG_KEY


class _ValidatedQueries:
    """Query strings already validated, by (schema, raw query string).

    Validation is a pure function of the two, and list endpoints see the same few query
    strings again and again (pages, filters): marshmallow then runs once per distinct string,
    not once per request. Only successes are kept; the size is bounded.
    """

    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str], dict[str, Any]] = {}

    def get(self, schema: Schema, raw: str) -> dict[str, Any] | None:
        found = self._entries.get((id(schema), raw))
        return dict(found) if found is not None else None  # a copy: callers may change it

    def put(self, schema: Schema, raw: str, loaded: dict[str, Any]) -> None:
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[(id(schema), raw)] = dict(loaded)


_validated = _ValidatedQueries()


NUL_MESSAGE = "text may not contain NUL characters (U+0000)"


def _has_nul(value: Any) -> bool:
    """Whether any string in a parsed JSON value contains U+0000 (PostgreSQL cannot store it,
    so neither backend accepts it: the API behaves the same on both)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def load_query(schema: Schema, request: web.Request) -> dict[str, Any]:
    """Validate the query string; a repeated parameter is an error rather than a silent pick."""
    raw = request.query_string
    found = _validated.get(schema, raw)
    if found is not None:
        return found
    loaded = _load_query(schema, request)
    _validated.put(schema, raw, loaded)
    return loaded


def _load_query(schema: Schema, request: web.Request) -> dict[str, Any]:
    query = request.query
    if any(_has_nul(k) or _has_nul(v) for k, v in query.items()):
        raise InvalidParameter(NUL_MESSAGE)
    repeated = sorted({k for k in query if len(query.getall(k)) > 1})
    if repeated:
        raise InvalidParameter(
            "query parameters may appear once", details={k: ["Repeated."] for k in repeated}
        )
    try:
        loaded: dict[str, Any] = schema.load(dict(query))
        return loaded
    except ValidationError as exc:
        raise InvalidParameter("invalid query parameters", details=exc.messages) from None


def load_match(schema: Schema, request: web.Request) -> dict[str, Any]:
    """Validate path parameters (``/things/{id}``)."""
    if any(_has_nul(v) for v in request.match_info.values()):
        raise InvalidParameter(NUL_MESSAGE)
    try:
        loaded: dict[str, Any] = schema.load(dict(request.match_info))
        return loaded
    except ValidationError as exc:
        raise InvalidParameter("invalid path parameter", details=exc.messages) from None


# Deeper is refused: no API object nests this far, and JSON encoders give up near 255 levels
# (a free-form field stored that deep would fail at the database, after validation).
MAX_JSON_DEPTH = 64


def _check_shape(data: dict[str, Any], *, nul_possible: bool) -> None:
    """Refuse a body nested deeper than MAX_JSON_DEPTH or holding U+0000 (JSON carries it only
    as an escape: looked for only when the bytes have one). Iterative: the depth is the
    client's to choose."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_JSON_DEPTH and isinstance(value, dict | list):
            raise InvalidBody(
                f"body nested deeper than {MAX_JSON_DEPTH} levels",
                details={"max_depth": MAX_JSON_DEPTH},
                code="validation_failed",
            )
        if isinstance(value, dict):
            if nul_possible and any("\x00" in key for key in value):
                raise InvalidBody(NUL_MESSAGE, code="validation_failed")
            pending.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            pending.extend((v, depth + 1) for v in value)
        elif nul_possible and isinstance(value, str) and "\x00" in value:
            raise InvalidBody(NUL_MESSAGE, code="validation_failed")


async def load_json(schema: Schema, request: web.Request) -> dict[str, Any]:
    """Read a JSON object body (size-capped by the app's ``client_max_size``) and validate it."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            "send the body as application/json", details={"content_type": request.content_type}
        )
    timeout = request.app[CONFIG_KEY].body_timeout_s
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except ConnectionResetError:
        # The client went away mid-body: its business, answered (to no one) as a 400.
        raise ClientDisconnected(
            "the client closed the connection before its body arrived"
        ) from None
    except TimeoutError:
        # A client trickling its body holds only its own request; this bounds even that.
        raise RequestTimeout(
            f"the request body did not arrive within {timeout:g} s",
            details={"body_timeout_s": timeout},
        ) from None
    except web.HTTPRequestEntityTooLarge as exc:
        limit = request.app[CONFIG_KEY].max_body_bytes
        raise PayloadTooLarge("request body too large", details={"max_bytes": limit}) from exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody("body is not valid JSON", details={"reason": str(exc)}) from None
    if not isinstance(data, dict):
        raise InvalidBody("body must be a JSON object")
    _check_shape(data, nul_possible=b"\\u0000" in raw)
    try:
        body: dict[str, Any] = schema.load(data)
        return body
    except ValidationError as exc:
        raise InvalidBody(
            "request body failed validation", details=exc.messages, code="validation_failed"
        ) from None
