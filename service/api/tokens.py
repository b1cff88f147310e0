"""API tokens over HTTP (admin only): create one (its secret shown once), list them (metadata,
never a secret or a hash), revoke one. The CLI's ``bobgen token`` does the same through the
same functions (``service/tokens.py``); each is one audited write."""

from __future__ import annotations

from aiohttp import web

from service.api.auth import principal
from service.api.openapi import operation
from service.api.paging import page_response
from service.api.requests import load_json, load_match, load_query
from service.domain.auth import Scope
from service.errors import NotFound
from service.jsonutil import json_response
from service.keys import DB_KEY
from service.schemas.common import encode_cursor
from service.schemas.tokens import (
    NEW_TOKEN,
    TOKEN_RECORD,
    TokenCreateSchema,
    TokenIdSchema,
    TokenListQuerySchema,
)
from service.tokens import TokenNotFound, create_token, list_token_page, revoke_token

_CREATE, _ID, _LIST = TokenCreateSchema(), TokenIdSchema(), TokenListQuerySchema()


@operation(
    "Create a token; the response is the only time its secret is shown",
    body=_CREATE,
    status=201,
    response=NEW_TOKEN,
)
async def create(request: web.Request) -> web.Response:
    body = await load_json(_CREATE, request)
    secret, record = await create_token(
        request.app[DB_KEY],
        user=body["user"],
        name=body["name"],
        scopes=frozenset(Scope(s) for s in body["scopes"]),
        actor=principal(request).user,
    )
    return json_response(
        {**record.public(), "token": secret},
        status=201,
        headers={"Location": f"/tokens/{record.id}", "Cache-Control": "no-store"},
    )


@operation(
    "Tokens by id (metadata only: never a secret or a hash)",
    query=_LIST,
    returns="page",
    response=TOKEN_RECORD,
)
async def list_all(request: web.Request) -> web.Response:
    q = load_query(_LIST, request)
    records = await list_token_page(request.app[DB_KEY], after=q["cursor"], limit=q["limit"] + 1)
    items, more = records[: q["limit"]], len(records) > q["limit"]
    cursor = encode_cursor(items[-1].id) if more and items else None
    return page_response(request, [r.public() for r in items], q["limit"], cursor)


@operation(
    "Revoke a token (refused everywhere within 1 s; 404 if absent or revoked)",
    path=_ID,
    status=204,
    returns="empty",
)
async def revoke(request: web.Request) -> web.Response:
    token_id = load_match(_ID, request)["id"]
    try:
        await revoke_token(request.app[DB_KEY], token_id, actor=principal(request).user)
    except TokenNotFound as exc:
        raise NotFound(str(exc), details={"id": token_id}) from None
    return web.Response(status=204)


def setup_token_routes(app: web.Application) -> None:
    app.router.add_post("/tokens", create)
    app.router.add_get("/tokens", list_all)
    app.router.add_delete("/tokens/{id}", revoke)
