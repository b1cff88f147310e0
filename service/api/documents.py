"""Documents: the database copy of persona and prompt files (docs/documents.md)."""

from __future__ import annotations

from aiohttp import web

from service.api.requests import load_match, load_query
from service.domain.documents import DocumentType
from service.errors import NotFound
from service.jsonutil import json_response
from service.keys import DB_KEY
from service.repositories import documents as documents_repo
from service.schemas.common import encode_cursor
from service.schemas.documents import (
    DocumentIdSchema,
    DocumentListQuerySchema,
    DocumentNameSchema,
    KindListQuerySchema,
)

_LIST, _ID = DocumentListQuerySchema(), DocumentIdSchema()
_KIND_LIST, _NAME = KindListQuerySchema(), DocumentNameSchema()


async def list_documents(request: web.Request) -> web.Response:
    q = load_query(_LIST, request)
    db = request.app[DB_KEY]
    filters = {"kind": q["type"], "name": q["name"], "fields": q["field_filters"]}
    if q["q"]:
        found = await documents_repo.search(db, q["q"], limit=q["limit"], **filters)
        return json_response({"items": found, "limit": q["limit"], "next": None})
    items, position = await documents_repo.list_page(
        db,
        limit=q["limit"],
        after=tuple(q["cursor"]) if q["cursor"] else None,  # type: ignore[arg-type]
        **filters,
    )
    next_cursor = encode_cursor(list(position)) if position else None
    return json_response({"items": items, "limit": q["limit"], "next": next_cursor})


async def get_document(request: web.Request) -> web.Response:
    document_id = load_match(_ID, request)["id"]
    found = await documents_repo.get(request.app[DB_KEY], document_id)
    if found is None:
        raise NotFound(f"no document {document_id}")
    return json_response(found)


# ---- the service-shaped reads of the old file-based services: the file's JSON as it was ----


async def _list_kind(request: web.Request, kind: DocumentType) -> web.Response:
    q = load_query(_KIND_LIST, request)
    items, position = await documents_repo.list_page(
        request.app[DB_KEY],
        limit=q["limit"],
        kind=str(kind),
        after=tuple(q["cursor"]) if q["cursor"] else None,  # type: ignore[arg-type]
    )
    next_cursor = encode_cursor(list(position)) if position else None
    body = {"items": [d["document"] for d in items], "limit": q["limit"], "next": next_cursor}
    return json_response(body)


async def _get_kind(request: web.Request, kind: DocumentType) -> web.Response:
    name = load_match(_NAME, request)["name"]
    found = await documents_repo.get_by_name(request.app[DB_KEY], str(kind), name)
    if found is None:
        raise NotFound(f"no {kind} named {name!r}")
    return json_response(found["document"])


async def list_personas(request: web.Request) -> web.Response:
    return await _list_kind(request, DocumentType.PERSONA)


async def get_persona(request: web.Request) -> web.Response:
    return await _get_kind(request, DocumentType.PERSONA)


async def list_prompts(request: web.Request) -> web.Response:
    return await _list_kind(request, DocumentType.PROMPT_TEMPLATE)


async def get_prompt(request: web.Request) -> web.Response:
    return await _get_kind(request, DocumentType.PROMPT_TEMPLATE)
