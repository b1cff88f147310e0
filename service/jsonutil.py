"""JSON responses with orjson: several times faster than the stdlib encoder on row lists."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def dumps_lenient(obj: Any) -> bytes:
    """For error details: marshmallow keys errors of list items by index (an int), which
    plain orjson refuses. Not the default: the option makes every dump ~70 % slower."""
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None, lenient: bool = False
) -> web.Response:
    body = dumps_lenient(data) if lenient else dumps(data)
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")
