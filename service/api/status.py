"""Status records: list (offset or keyset), get by id, create."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.api.common import write
from service.api.openapi import operation
from service.api.paging import page_response
from service.api.requests import load_json, load_match, load_query
from service.audit import AuditedWrite
from service.db import Work
from service.errors import NotFound
from service.jsonutil import json_response
from service.keys import DB_KEY
from service.repositories import status as status_repo
from service.repositories.status import STATUS_FIELDS
from service.schemas.common import encode_cursor
from service.schemas.status import (
    STATUS_RECORD,
    StatusCreateSchema,
    StatusFieldsQuerySchema,
    StatusIdSchema,
    StatusListQuerySchema,
)

_LIST_QUERY = StatusListQuerySchema()
_ID = StatusIdSchema()
_CREATE = StatusCreateSchema()
_FIELDS_ONLY = StatusFieldsQuerySchema()


@operation(
    "A page of status records (offset or cursor)",
    query=_LIST_QUERY,
    returns="page",
    response=STATUS_RECORD,
)
async def list_statuses(request: web.Request) -> web.Response:
    q = load_query(_LIST_QUERY, request)
    db = request.app[DB_KEY]
    page = await status_repo.list_page(
        db,
        limit=q["limit"],
        columns=q["columns"] or STATUS_FIELDS,
        after_id=q["cursor"],
        offset=q["offset"] or 0,
        version=q["version"],
    )
    extra = {
        "offset": None if q["cursor"] is not None else q["offset"] or 0,
        "total": await status_repo.count(db, version=q["version"]),
    }
    cursor = None if page.next_after_id is None else encode_cursor(page.next_after_id)
    return page_response(request, page.items, q["limit"], cursor, extra=extra)


@operation("One status record", path=_ID, query=_FIELDS_ONLY, response=STATUS_RECORD)
async def get_status(request: web.Request) -> web.Response:
    status_id = load_match(_ID, request)["id"]
    columns = load_query(_FIELDS_ONLY, request)["columns"] or STATUS_FIELDS
    record = await status_repo.get(request.app[DB_KEY], status_id, columns)
    if record is None:
        raise NotFound(f"status {status_id} not found", details={"id": status_id})
    return json_response(record)


@operation("Create a status record", body=_CREATE, status=201, response=STATUS_RECORD)
async def create_status(request: web.Request) -> web.Response:
    values = await load_json(_CREATE, request)

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        record = yield from status_repo.insert(values, w.now)
        w.audit(
            "status.created",
            scope="status",
            message=f"status {record['id']} created",
            data={"id": record["id"], "version": record["version"]},
        )
        return record

    record = await write(request, work)
    return json_response(record, status=201, headers={"Location": f"/bobgen/status/{record['id']}"})
