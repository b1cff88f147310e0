"""Tokens over HTTP (admin only), on both backends: the secret shown once and stored nowhere,
metadata listed, revocation refused by every instance within the documented second, each
write one audit row."""

from __future__ import annotations

import time
from typing import Any

from aiohttp.test_utils import TestClient

from service.db import DatabaseURL
from tests.backends import sql
from tests.helpers import VALID, assert_error
from tests.support import eventually
from tests.support.auth import READER_TOKEN, WRITER_TOKEN, bearer

REVOCATION_BOUND_S = 1.0  # docs/security.md


async def _create(client: TestClient, **body: Any) -> dict[str, Any]:
    resp = await client.post("/tokens", json={"user": "robot", "scopes": ["read", "write"], **body})
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert resp.headers["Location"] == f"/tokens/{created['id']}"
    assert resp.headers["Cache-Control"] == "no-store"
    return created


async def test_create_list_use_and_revoke(client: TestClient, db_url: DatabaseURL) -> None:
    created = await _create(client, name="nightly build")
    secret = created.pop("token")
    assert secret.startswith("bgt_")
    assert created["user"] == "robot" and created["scopes"] == "read,write"
    assert created["revoked_at"] is None and created["created_at"].endswith("Z")
    write = await client.post("/bobgen/status", json=VALID, headers=bearer(secret))
    assert write.status == 201

    listed = await (await client.get("/tokens")).json()
    mine = next(t for t in listed["items"] if t["id"] == created["id"])
    assert mine == {**created, "last_used_at": mine["last_used_at"]}
    assert all("token" not in t and "token_hash" not in t for t in listed["items"])

    assert (await client.delete(f"/tokens/{created['id']}")).status == 204
    refused = await client.post("/bobgen/status", json=VALID, headers=bearer(secret))
    assert refused.status == 401
    again = await client.delete(f"/tokens/{created['id']}")
    assert again.status == 404
    assert_error(await again.json(), "not_found")
    listed = await (await client.get("/tokens")).json()
    assert next(t for t in listed["items"] if t["id"] == created["id"])["revoked_at"]

    # The secret is nowhere in the database: not in the tokens table, not in the audit log.
    dumped = str(sql(db_url, "SELECT * FROM auth_tokens")) + str(
        sql(db_url, "SELECT * FROM audit_log")
    )
    assert secret not in dumped
    events = sql(
        db_url,
        "SELECT event, actor FROM audit_log WHERE event LIKE 'token.%' ORDER BY id",
    )
    assert events == [("token.created", "ops"), ("token.revoked", "ops")]


async def test_tokens_are_admin_only(client: TestClient) -> None:
    for token in (WRITER_TOKEN, READER_TOKEN):
        headers = bearer(token)
        body = {"user": "x", "scopes": ["read"]}
        assert (await client.post("/tokens", json=body, headers=headers)).status == 403
        assert (await client.get("/tokens", headers=headers)).status == 403
        assert (await client.delete("/tokens/1", headers=headers)).status == 403
    anonymous = {"Authorization": ""}
    assert (await client.get("/tokens", headers=anonymous)).status == 401


BAD_BODIES = [
    {"user": "x", "scopes": ["root"]},
    {"user": "x", "scopes": []},
    {"user": "x", "scopes": "read,write"},
    {"scopes": ["read"]},
    {"user": "", "scopes": ["read"]},
    {"user": "evil\nINFO forged line", "scopes": ["read"]},
    {"user": "x" * 101, "scopes": ["read"]},
    {"user": "x", "scopes": ["read"], "token": "bgt_chosen-by-client"},
    {"user": "x", "scopes": ["read"], "name": "tab\there"},
]


async def test_bad_token_requests_are_400_and_write_nothing(
    client: TestClient, db_url: DatabaseURL
) -> None:
    before = sql(db_url, "SELECT count(*) FROM auth_tokens")
    for body in BAD_BODIES:
        resp = await client.post("/tokens", json=body)
        assert resp.status == 400, body
        assert_error(await resp.json(), "validation_failed")
    assert sql(db_url, "SELECT count(*) FROM auth_tokens") == before


async def test_bad_token_ids_are_400(client: TestClient) -> None:
    for path in ("/tokens/0", "/tokens/x", "/tokens/99999999999999999999"):
        assert (await client.delete(path)).status == 400, path


async def test_the_list_is_paged_by_id(client: TestClient) -> None:
    for i in range(3):
        await _create(client, name=f"t{i}")
    first = await client.get("/tokens?limit=2")
    page = await first.json()
    assert len(page["items"]) == 2 and page["next"] and 'rel="next"' in first.headers["Link"]
    ids = [t["id"] for t in page["items"]]
    while page["next_url"]:
        page = await (await client.get(page["next_url"])).json()
        ids += [t["id"] for t in page["items"]]
    assert ids == sorted(ids) and len(ids) == 6  # 3 planted + 3 created, 2 a page
    assert (await client.get("/tokens?cursor=forged")).status == 400


async def test_a_revocation_is_refused_by_another_instance_within_the_bound(
    make_client: Any,
) -> None:
    """Two apps on one database (two instances): revoke through one, the other refuses the
    token within the documented bound (its cached entry is dropped by the change signal)."""
    first, second = await make_client(), await make_client()
    created = await _create(first)
    headers = bearer(created["token"])
    assert (await second.post("/bobgen/status", json=VALID, headers=headers)).status == 201
    assert (await first.delete(f"/tokens/{created['id']}")).status == 204
    revoked_at = time.monotonic()

    async def refused() -> bool:
        resp = await second.post("/bobgen/status", json=VALID, headers=headers)
        return resp.status == 401

    await eventually(refused, timeout=5)
    assert time.monotonic() - revoked_at < REVOCATION_BOUND_S
