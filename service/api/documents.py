"""Documents: the database copy of persona and prompt files (docs/documents.md)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from service.api.openapi import operation
from service.api.paging import page_response
from service.api.requests import load_match, load_query
from service.db import DatabaseUnavailable
from service.documents.files import SOURCE_HEADER, select
from service.domain.documents import DocumentType
from service.errors import NotFound
from service.jsonutil import json_response
from service.keys import DB_KEY, DOCUMENT_FILES_KEY
from service.repositories import documents as documents_repo
from service.schemas.common import encode_cursor
from service.schemas.documents import (
    DOCUMENT_RECORD,
    PERSONA,
    PROMPT_TEMPLATE,
    DocumentIdSchema,
    DocumentListQuerySchema,
    DocumentNameSchema,
    KindListQuerySchema,
)

log = logging.getLogger(__name__)

_LIST, _ID = DocumentListQuerySchema(), DocumentIdSchema()
_KIND_LIST, _NAME = KindListQuerySchema(), DocumentNameSchema()


def _page(
    request: web.Request,
    items: list[dict[str, Any]],
    limit: int,
    position: Any,
    **headers: str,
) -> web.Response:
    next_cursor = encode_cursor(list(position)) if position else None
    return page_response(request, items, limit, next_cursor, headers=headers or None)


async def _files(request: web.Request, exc: DatabaseUnavailable) -> list[dict[str, Any]]:
    """The documents as the files hold them, when the database is unavailable and there are
    files to fall back on (otherwise the database error stands: 503)."""
    view = request.app[DOCUMENT_FILES_KEY]
    if view is None:
        raise exc
    log.warning("documents served from the files: %s", exc)
    return await view.documents()


@operation(
    "Documents: filters, JSON-field filters (field.<path>=), full-text q",
    query=_LIST,
    returns="page",
    response=DOCUMENT_RECORD,
)
async def list_documents(request: web.Request) -> web.Response:
    q = load_query(_LIST, request)
    after = tuple(q["cursor"]) if q["cursor"] else None
    filters = {"kind": q["type"], "name": q["name"], "fields": q["field_filters"]}
    db = request.app[DB_KEY]
    try:
        if q["q"]:
            found = await documents_repo.search(db, q["q"], limit=q["limit"], **filters)
            return _page(request, found, q["limit"], None)
        items, position = await documents_repo.list_page(
            db,
            limit=q["limit"],
            after=after,
            **filters,
        )
    except DatabaseUnavailable as exc:
        rows = await _files(request, exc)
        items, position = select(
            rows,
            limit=q["limit"],
            text=q["q"],
            after=after,
            **filters,
        )
        return _page(request, items, q["limit"], position, **SOURCE_HEADER)
    return _page(request, items, q["limit"], position)


@operation("One document", path=_ID, response=DOCUMENT_RECORD)
async def get_document(request: web.Request) -> web.Response:
    document_id = load_match(_ID, request)["id"]
    headers: dict[str, str] = {}
    try:
        found = await documents_repo.get(request.app[DB_KEY], document_id)
    except DatabaseUnavailable as exc:
        rows = await _files(request, exc)
        found, headers = next((r for r in rows if r["id"] == document_id), None), SOURCE_HEADER
    if found is None:
        raise NotFound(f"no document {document_id}")
    return json_response(found, headers=headers or None)


async def _list_kind(request: web.Request, kind: DocumentType) -> web.Response:
    q = load_query(_KIND_LIST, request)
    after = tuple(q["cursor"]) if q["cursor"] else None
    headers: dict[str, str] = {}
    try:
        items, position = await documents_repo.list_page(
            request.app[DB_KEY],
            limit=q["limit"],
            kind=str(kind),
            after=after,
        )
    except DatabaseUnavailable as exc:
        rows = await _files(request, exc)
        items, position = select(rows, limit=q["limit"], kind=str(kind), after=after)
        headers = SOURCE_HEADER
    return _page(request, [d["document"] for d in items], q["limit"], position, **headers)


async def _get_kind(request: web.Request, kind: DocumentType) -> web.Response:
    name = load_match(_NAME, request)["name"]
    headers: dict[str, str] = {}
    try:
        found = await documents_repo.get_by_name(request.app[DB_KEY], str(kind), name)
    except DatabaseUnavailable as exc:
        rows = await _files(request, exc)
        matches, _ = select(rows, limit=1, kind=str(kind), name=name)
        found, headers = (matches[0] if matches else None), SOURCE_HEADER
    if found is None:
        raise NotFound(f"no {kind} named {name!r}")
    return json_response(found["document"], headers=headers or None)


@operation("Personas as their files have them", query=_KIND_LIST, returns="page", response=PERSONA)
async def list_personas(request: web.Request) -> web.Response:
    return await _list_kind(request, DocumentType.PERSONA)


@operation("One persona by name", path=_NAME, response=PERSONA)
async def get_persona(request: web.Request) -> web.Response:
    return await _get_kind(request, DocumentType.PERSONA)


@operation(
    "Prompt templates as their files have them",
    query=_KIND_LIST,
    returns="page",
    response=PROMPT_TEMPLATE,
)
async def list_prompts(request: web.Request) -> web.Response:
    return await _list_kind(request, DocumentType.PROMPT_TEMPLATE)


@operation("One prompt template by name", path=_NAME, response=PROMPT_TEMPLATE)
async def get_prompt(request: web.Request) -> web.Response:
    return await _get_kind(request, DocumentType.PROMPT_TEMPLATE)
