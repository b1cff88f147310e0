"""Handlers for versioned, project-scoped resources (ideas, context items, workflows, ...).

Each resource is a :class:`Resource` description served by one :class:`ResourceHandlers`
object: validate, run one audited unit of work, map the outcomes onto HTTP (404 outside the
project, 409 for a taken id, 404 when the project vanished meanwhile, 412/428 for versions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from marshmallow import Schema

from service.api.common import new_id, project_path, require_changes, write
from service.api.etag import etag, if_match
from service.api.openapi import Operation, describe, stored_row
from service.api.paging import versioned_page
from service.api.requests import load_json, load_match, load_query
from service.audit import AuditedWrite
from service.db import ForeignKeyViolation, UniqueViolation, Work
from service.errors import Conflict, NotFound
from service.jsonutil import json_response
from service.keys import DB_KEY
from service.repositories import versioned
from service.repositories.versioned import Table
from service.schemas.projects import ItemPath, ProjectPath

Check = Callable[[dict[str, Any]], None]

_ITEM_PATH = ItemPath()


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


def audit_change(w: AuditedWrite, res: Resource, action: str, row: dict[str, Any]) -> None:
    w.audit(
        f"{res.kind}.{action}",
        scope="projects",
        message=f"{res.kind} {row['id']} {action}",
        data={"project_id": row.get("project_id"), "id": row["id"], "version": row.get("version")},
    )


def not_found(res: Resource, path: dict[str, str]) -> NotFound:
    message = f"{res.kind} {path['item_id']} not found in project {path['project_id']}"
    return NotFound(message, details=path)


def insert_new(w: AuditedWrite, res: Resource, values: dict[str, Any]) -> Work[dict[str, Any]]:
    """Insert with a new id (unless given), version 1 and timestamps.

    A taken id is 409 ``id_taken``; a parent that vanished between the request's existence
    check and this insert (a concurrent project delete) is 404, not a duplicate.
    """
    values = {
        **values,
        "id": values.get("id") or new_id(),
        "version": 1,
        "created_at": w.now,
        "updated_at": w.now,
    }
    try:
        row = yield from versioned.insert(res.table, values)
    except UniqueViolation:
        message = f"{res.kind} {values['id']} exists already"
        raise Conflict(message, details={"id": values["id"]}, code="id_taken") from None
    except ForeignKeyViolation:
        message = f"project {values.get('project_id')} no longer exists"
        raise NotFound(message, details={"project_id": values.get("project_id")}) from None
    assert row is not None
    return row


class ResourceHandlers:
    """create, list, get, update and delete for one :class:`Resource`."""

    def __init__(self, res: Resource) -> None:
        self.res = res
        kind = res.kind.replace("_", " ")
        row = stored_row(res.create)
        for handler, op in (
            (
                self.create,
                Operation(
                    f"Create a {kind}",
                    path=ProjectPath(),
                    body=res.create,
                    status=201,
                    response=row,
                ),
            ),
            (
                self.list,
                Operation(
                    f"List {kind}s",
                    path=ProjectPath(),
                    query=res.list_query,
                    returns="page",
                    response=row,
                ),
            ),
            (self.get, Operation(f"Get a {kind}", path=_ITEM_PATH, response=row)),
            (
                self.update,
                Operation(
                    f"Change a {kind}",
                    path=_ITEM_PATH,
                    body=res.update,
                    if_match="required",
                    response=row,
                ),
            ),
            (
                self.delete,
                Operation(
                    f"Delete a {kind}",
                    path=_ITEM_PATH,
                    status=204,
                    returns="empty",
                    if_match="optional",
                ),
            ),
        ):
            describe(handler, op)

    async def create(self, request: web.Request) -> web.Response:
        res = self.res
        project_id = await project_path(request)
        values = await load_json(res.create, request)
        if res.check:
            res.check(values)

        def work(w: AuditedWrite) -> Work[dict[str, Any]]:
            row = yield from insert_new(w, res, {**values, "project_id": project_id})
            audit_change(w, res, "created", row)
            return row

        row = await write(request, work)
        headers = {"Location": f"/projects/{project_id}/{res.collection}/{row['id']}"}
        return json_response(row, status=201, headers={**headers, **etag(row["version"])})

    async def list(self, request: web.Request) -> web.Response:
        project_id = await project_path(request)
        q = load_query(self.res.list_query, request)
        filters = {f: q[f] for f in self.res.filters}
        return await versioned_page(
            request, self.res.table, q, project_id=project_id, filters=filters
        )

    async def get(self, request: web.Request) -> web.Response:
        path = load_match(_ITEM_PATH, request)
        work = versioned.get(self.res.table, path["project_id"], path["item_id"])
        row = await request.app[DB_KEY].read(work)
        if row is None:
            raise not_found(self.res, path)
        return json_response(row, headers=etag(row["version"]))

    async def update(self, request: web.Request) -> web.Response:
        res = self.res
        path = load_match(_ITEM_PATH, request)
        expected = if_match(request, required=True)
        changes = require_changes(await load_json(res.update, request))
        if res.check:
            res.check(changes)

        def work(w: AuditedWrite) -> Work[dict[str, Any]]:
            row = yield from versioned.update(
                res.table,
                path["project_id"],
                path["item_id"],
                changes,
                expected_version=expected,
                now=w.now,
            )
            if row is None:
                raise not_found(res, path)
            audit_change(w, res, "updated", row)
            return row

        row = await write(request, work)
        return json_response(row, headers=etag(row["version"]))

    async def delete(self, request: web.Request) -> web.Response:
        res = self.res
        path = load_match(_ITEM_PATH, request)
        expected = if_match(request, required=False)

        def work(w: AuditedWrite) -> Work[None]:
            try:
                found = yield from versioned.delete(
                    res.table, path["project_id"], path["item_id"], expected_version=expected
                )
            except ForeignKeyViolation:
                message = f"{res.kind} {path['item_id']} is still referenced (e.g. by runs)"
                raise Conflict(message, code="in_use", details=path) from None
            if not found:
                raise not_found(res, path)
            w.audit(
                f"{res.kind}.deleted",
                scope="projects",
                message=f"{res.kind} deleted",
                data={"project_id": path["project_id"], "id": path["item_id"]},
            )

        await write(request, work)
        return web.Response(status=204)
