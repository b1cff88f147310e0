"""Paged list responses: ``next`` (the opaque cursor), ``next_url`` and a ``Link`` header."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.jsonutil import json_response


def next_url(request: web.Request, cursor: str | None) -> str | None:
    """This request's path and query with ``cursor`` for the next page (``offset`` dropped:
    the cursor replaces it)."""
    if cursor is None:
        return None
    query = {k: v for k, v in request.query.items() if k not in ("cursor", "offset")}
    query["cursor"] = cursor
    return str(request.rel_url.with_query(query))


def page_response(
    request: web.Request,
    items: list[Any],
    limit: int,
    cursor: str | None,
    *,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """``{"items", "limit", ..., "next", "next_url"}`` and, when there is a next page,
    ``Link: <next_url>; rel="next"`` (RFC 8288), which generic HTTP clients follow."""
    url = next_url(request, cursor)
    body = {"items": items, "limit": limit, **(extra or {}), "next": cursor, "next_url": url}
    if url is not None:
        headers = {**(headers or {}), "Link": f'<{url}>; rel="next"'}
    return json_response(body, headers=headers)
