"""Paged list responses: ``next`` (the opaque cursor), ``next_url`` and a ``Link`` header."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.jsonutil import json_response
from service.keys import DB_KEY
from service.repositories import versioned
from service.repositories.versioned import Sort, Table
from service.schemas.common import encode_cursor


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


async def versioned_page(
    request: web.Request,
    table: Table,
    q: dict[str, Any],
    *,
    project_id: str | None = None,
    filters: dict[str, Any] | None = None,
    at_least: dict[str, Any] | None = None,
) -> web.Response:
    """One keyset page of a versioned ``table`` for a validated list query ``q`` (``limit``,
    ``sort``, ``cursor``); see :func:`versioned.list_page` for the rest."""
    items, position = await versioned.list_page(
        request.app[DB_KEY],
        table,
        project_id,
        limit=q["limit"],
        sort=Sort.parse(q["sort"]),
        after=q["cursor"],
        filters=filters,
        at_least=at_least,
    )
    cursor = encode_cursor(position) if position else None
    return page_response(request, items, q["limit"], cursor)
