"""Helpers the debug-metadata handlers share (worktrees.py and sessions.py import them
downward): their audit rows, inserts with an id, and keyset pages of a versioned table."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.api.common import new_id
from service.api.paging import page_response
from service.audit import AuditedWrite
from service.db import UniqueViolation, Work
from service.domain.debug import Refused
from service.keys import DB_KEY
from service.repositories import versioned
from service.repositories.versioned import Sort, Table
from service.schemas.common import encode_cursor


def audit(w: AuditedWrite, event: str, message: str, **data: Any) -> None:
    w.audit(event, scope="debug", message=message, data=data)


def insert_row(
    w: AuditedWrite, table: Table, kind: str, values: dict[str, Any]
) -> Work[dict[str, Any]]:
    """Insert with a new id (unless given): a taken id or unique name is 409."""
    values = {**values, "id": values.get("id") or new_id()}
    try:
        row = yield from versioned.insert(table, values)
    except UniqueViolation:
        raise Refused(
            "already_exists", f"a {kind} with this id or name exists already", {"id": values["id"]}
        ) from None
    assert row is not None
    audit(w, f"{kind}.created", f"{kind} {row['id']} created", id=row["id"])
    return row


async def page(
    request: web.Request,
    table: Table,
    q: dict[str, Any],
    filters: dict[str, Any] | None = None,
    at_least: dict[str, Any] | None = None,
) -> web.Response:
    """One keyset page of ``table`` as ``{"items", "limit", "next"}`` (see
    :func:`versioned.list_page` for ``filters`` and ``at_least``)."""
    items, position = await versioned.list_page(
        request.app[DB_KEY],
        table,
        None,
        limit=q["limit"],
        sort=Sort.parse(q["sort"]),
        after=q["cursor"],
        filters=filters,
        at_least=at_least,
    )
    next_cursor = encode_cursor(position) if position else None
    return page_response(request, items, q["limit"], next_cursor)
