"""Generic handlers for versioned, project-scoped resources (ideas, context items, ...).

Each resource is a :class:`Resource` description; :func:`handlers` turns it into thin aiohttp
handlers that validate, call the versioned repository inside an audited transaction, and map
the outcomes onto HTTP: 404 outside the project, 409 for a taken id, 412/428 for versions.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from marshmallow import Schema

from service.api.auth import principal
from service.api.etag import PreconditionFailed, etag, if_match
from service.api.requests import load_json, load_match, load_query
from service.audit import AuditedWrite, audited_transaction
from service.errors import Conflict, InvalidBody, NotFound
from service.jsonutil import json_response
from service.keys import DB_KEY
from service.repositories import versioned
from service.repositories.projects import project_exists
from service.repositories.versioned import Sort, Table, VersionMismatch
from service.schemas.common import encode_cursor
from service.schemas.projects import ItemPath, ProjectPath

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Check = Callable[[dict[str, Any]], None]

_PROJECT_PATH, _ITEM_PATH = ProjectPath(), ItemPath()


@dataclass(frozen=True)
class Resource:
    table: Table
    kind: str  # singular, for messages and audit events: "idea" -> idea.created
    collection: str  # URL segment: /projects/{project_id}/<collection>
    create: Schema
    update: Schema
    list_query: Schema
    filters: tuple[str, ...] = ()
    check: Check | None = None  # extra validation of created/updated values


def new_id() -> str:
    return uuid.uuid4().hex


async def project_path(request: web.Request) -> str:
    """The project id of the URL, which must exist (404 otherwise)."""
    project_id = load_match(_PROJECT_PATH, request)["project_id"]
    if not await project_exists(request.app[DB_KEY], project_id):
        raise NotFound(f"project {project_id} not found", details={"project_id": project_id})
    return project_id


def writing(request: web.Request) -> AbstractAsyncContextManager[AuditedWrite]:
    """An audited write transaction on behalf of the request's token user."""
    return audited_transaction(request.app[DB_KEY], principal(request).user)


def require_changes(changes: dict[str, Any]) -> dict[str, Any]:
    if not changes:
        raise InvalidBody("nothing to change: give at least one field", code="validation_failed")
    return changes


def audit_change(w: AuditedWrite, res: Resource, action: str, row: dict[str, Any]) -> None:
    w.audit(f"{res.kind}.{action}", scope="projects", message=f"{res.kind} {row['id']} {action}",
            data={"project_id": row.get("project_id"), "id": row["id"],
                  "version": row.get("version")})  # fmt: skip


def handlers(res: Resource) -> dict[str, Handler]:
    """create, list, get, update and delete handlers for ``res``."""

    async def create(request: web.Request) -> web.Response:
        project_id = await project_path(request)
        values = await load_json(res.create, request)
        if res.check:
            res.check(values)
        async with writing(request) as w:
            row = await insert_new(w, res, {**values, "project_id": project_id})
            audit_change(w, res, "created", row)
        location = f"/projects/{project_id}/{res.collection}/{row['id']}"
        return json_response(
            row, status=201, headers={"Location": location, **etag(row["version"])}
        )

    async def list_(request: web.Request) -> web.Response:
        project_id = await project_path(request)
        q = load_query(res.list_query, request)
        items, position = await versioned.list_page(
            request.app[DB_KEY], res.table, project_id, limit=q["limit"],
            sort=Sort.parse(q["sort"]), after=q["cursor"],
            filters={f: q[f] for f in res.filters},
        )  # fmt: skip
        next_cursor = encode_cursor(position) if position else None
        return json_response({"items": items, "limit": q["limit"], "next": next_cursor})

    async def get(request: web.Request) -> web.Response:
        path = load_match(_ITEM_PATH, request)
        row = await versioned.get(
            request.app[DB_KEY], res.table, path["project_id"], path["item_id"]
        )
        if row is None:
            raise not_found(res, path)
        return json_response(row, headers=etag(row["version"]))

    async def update(request: web.Request) -> web.Response:
        path = load_match(_ITEM_PATH, request)
        expected = if_match(request, required=True)
        changes = require_changes(await load_json(res.update, request))
        if res.check:
            res.check(changes)
        async with writing(request) as w:
            row = await update_row(w, res, path, changes, expected)
            audit_change(w, res, "updated", row)
        return json_response(row, headers=etag(row["version"]))

    async def delete(request: web.Request) -> web.Response:
        path = load_match(_ITEM_PATH, request)
        expected = if_match(request, required=False)
        async with writing(request) as w:
            try:
                found = await versioned.delete(
                    w.conn, res.table, path["project_id"], path["item_id"],
                    expected_version=expected,
                )  # fmt: skip
            except VersionMismatch as exc:
                raise PreconditionFailed(exc.current) from None
            except sqlite3.IntegrityError:
                message = f"{res.kind} {path['item_id']} is still referenced (e.g. by runs)"
                raise Conflict(message, code="in_use", details=path) from None
            if not found:
                raise not_found(res, path)
            w.audit(f"{res.kind}.deleted", scope="projects", message=f"{res.kind} deleted",
                    data={"project_id": path["project_id"], "id": path["item_id"]})  # fmt: skip
        return web.Response(status=204)

    return {"create": create, "list": list_, "get": get, "update": update, "delete": delete}


def not_found(res: Resource, path: dict[str, str]) -> NotFound:
    return NotFound(f"{res.kind} {path['item_id']} not found in project {path['project_id']}",
                    details=path)  # fmt: skip


async def insert_new(w: AuditedWrite, res: Resource, values: dict[str, Any]) -> dict[str, Any]:
    """Insert with a new id (unless given), version 1 and timestamps; 409 if the id is taken."""
    values = {**values, "id": values.get("id") or new_id(), "version": 1,
              "created_at": w.now, "updated_at": w.now}  # fmt: skip
    try:
        row = await versioned.insert(w.conn, res.table, values)
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"{res.kind} {values['id']} exists already", details={"id": values["id"]},
                       code="id_taken") from exc  # fmt: skip
    assert row is not None
    return row


async def update_row(
    w: AuditedWrite, res: Resource, path: dict[str, str], changes: dict[str, Any],
    expected: int | None,
) -> dict[str, Any]:  # fmt: skip
    try:
        row = await versioned.update(w.conn, res.table, path["project_id"], path["item_id"],
                                     changes, expected_version=expected, now=w.now)  # fmt: skip
    except VersionMismatch as exc:
        raise PreconditionFailed(exc.current) from None
    if row is None:
        raise not_found(res, path)
    return row
