"""JSON responses with orjson: several times faster than the stdlib encoder on row lists."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )
