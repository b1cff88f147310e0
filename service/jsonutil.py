"""JSON responses with orjson: several times faster than the stdlib encoder on row lists."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

# Validation errors of lists are keyed by index (ints): allow non-string keys.
_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_OPTIONS)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=dumps(data), status=status, headers=headers, content_type="application/json"
    )
