import asyncio
import logging
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.api.auth import TOKEN_CACHE_KEY
from service.app import create_app
from service.db import DatabaseURL
from service.keys import DB_KEY
from service.tokens import initial_token_path, revoke_token
from tests.backends import cli_db, sql
from tests.helpers import VALID, assert_error
from tests.support import eventually
from tests.support.auth import ADMIN_TOKEN, READER_TOKEN, WRITER_TOKEN, bearer


@pytest.fixture
async def anon(make_client) -> TestClient:  # type: ignore[no-untyped-def]
    return await make_client(token=None)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
        {"Authorization": "Basic b3BzOnB3"},
        {"Authorization": "bgt_test-admin"},
        bearer("bgt_wrong"),
        bearer(ADMIN_TOKEN + "x"),
    ],
)
async def test_writes_without_a_valid_token_are_401(anon: TestClient, headers: dict) -> None:  # type: ignore[type-arg]
    resp = await anon.post("/bobgen/status", json=VALID, headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(await resp.json(), "unauthorized")
    assert (await (await anon.get("/bobgen/status")).json())["total"] == 0


async def test_scopes(anon: TestClient) -> None:
    assert (
        await anon.post("/bobgen/status", json=VALID, headers=bearer(READER_TOKEN))
    ).status == 403
    assert (
        await anon.post("/bobgen/status", json=VALID, headers=bearer(WRITER_TOKEN))
    ).status == 201
    denied = await anon.post("/admin/seed", json={"rows": 1}, headers=bearer(WRITER_TOKEN))
    assert denied.status == 403
    details = assert_error(await denied.json(), "forbidden")
    assert details == {"required_scope": "admin", "token_scopes": ["read", "write"]}
    assert (await anon.get("/admin/seed", headers=bearer(WRITER_TOKEN))).status == 403
    assert (await anon.get("/admin/seed", headers=bearer(ADMIN_TOKEN))).status == 200
    assert (await anon.get("/admin/seed")).status == 401


async def test_reads_are_open_by_default(anon: TestClient) -> None:
    for path in ("/bobgen/status", "/health", "/metrics", "/runs", "/audit"):
        assert (await anon.get(path)).status == 200, path


async def test_auth_reads_closes_reads(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(token=None, auth_reads=True)
    for path in ("/bobgen/status", "/bobgen/status/1", "/health", "/metrics", "/runs", "/audit"):
        assert (await client.get(path)).status == 401, path
        assert (await client.get(path, headers=bearer(READER_TOKEN))).status in (200, 404), path
    resp = await client.get("/bobgen/status", headers=bearer("bgt_nope"))
    assert resp.status == 401


async def test_revoked_token_is_refused_at_once(anon: TestClient) -> None:
    ok = await anon.post("/bobgen/status", json=VALID, headers=bearer(WRITER_TOKEN))
    assert ok.status == 201
    await revoke_token(anon.app[DB_KEY], 2, actor="cli:test")  # the writer token's id
    refused = await anon.post("/bobgen/status", json=VALID, headers=bearer(WRITER_TOKEN))
    assert refused.status == 401
    assert (
        await anon.post("/bobgen/status", json=VALID, headers=bearer(ADMIN_TOKEN))
    ).status == 201


async def test_a_revocation_by_another_process_is_seen_within_the_poll_interval(
    anon: TestClient, db_url: DatabaseURL
) -> None:
    """The CLI revokes beside a running server: the server's token cache notices within
    0.1 s (SQLite: the signal file is polled; PostgreSQL: NOTIFY reaches the listener). This
    waits for it with a deadline, not a sleep."""
    assert (
        await anon.post("/bobgen/status", json=VALID, headers=bearer(WRITER_TOKEN))
    ).status == 201
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "token", "revoke", "2", "--db", cli_db(db_url)
    )
    assert await cli.wait() == 0
    revoked_at = time.monotonic()

    async def refused() -> bool:
        resp = await anon.post("/bobgen/status", json=VALID, headers=bearer(WRITER_TOKEN))
        assert resp.status in (201, 401)
        return resp.status == 401

    await eventually(refused, timeout=5)
    assert time.monotonic() - revoked_at < 1.0  # 0.1 s poll, with room for a slow machine


async def test_a_token_is_checked_without_a_database_read_once_cached(anon: TestClient) -> None:
    cache = anon.app[TOKEN_CACHE_KEY]
    await anon.post("/bobgen/status", json=VALID, headers=bearer(WRITER_TOKEN))
    db = anon.app[DB_KEY]
    reads_before = db.reads_started
    for _ in range(5):
        await anon.post("/bobgen/status", json=VALID, headers=bearer(WRITER_TOKEN))
    assert db.reads_started == reads_before
    assert len(cache) == 1


async def test_last_used_is_recorded(anon: TestClient, db_url: DatabaseURL) -> None:
    await anon.post("/bobgen/status", json=VALID, headers=bearer(WRITER_TOKEN))
    used = await eventually(  # recorded off the request path
        lambda: sql(db_url, "SELECT last_used_at FROM auth_tokens WHERE id = 2")[0][0]
    )
    assert used.endswith("Z")


async def test_tokens_never_reach_logs(anon: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await anon.post("/bobgen/status", json=VALID, headers=bearer("bgt_secret-guess"))
    await anon.post("/bobgen/status", json=VALID, headers=bearer(WRITER_TOKEN))
    assert "rejected a bearer token" in caplog.text
    assert "bgt_secret-guess" not in caplog.text and WRITER_TOKEN not in caplog.text


async def test_first_start_writes_an_initial_admin_token_file(
    aiohttp_client,
    make_config,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    caplog.set_level(logging.INFO)
    db = tmp_path / "fresh" / "bobgen.db"
    client = await aiohttp_client(create_app(make_config(db=db)))
    token_file = initial_token_path(DatabaseURL.sqlite(db))
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    token = token_file.read_text().strip()
    assert token.startswith("bgt_") and len(token) > 40
    assert str(token_file) in caplog.text and token not in caplog.text
    resp = await client.post("/admin/seed", json={"rows": 10}, headers=bearer(token))
    assert resp.status == 202
    assert token.encode() not in db.read_bytes() + Path(f"{db}-wal").read_bytes()
    await client.close()

    token_file.unlink()
    second = await aiohttp_client(create_app(make_config(db=db)))
    assert not token_file.exists()  # tokens exist: no new admin token
    assert (await second.get("/health")).status == 200


async def test_a_lost_revocation_signal_is_bounded_by_the_cache_lifetime(
    make_client: Any, db_url: DatabaseURL
) -> None:
    """A token revoked behind the server's back (raw SQL: no notification) is refused once its
    cache entry expires: --token-cache-ttl-s is the worst case (docs/security.md)."""
    ttl = 0.5
    client = await make_client(token=None, token_cache_ttl_s=ttl)
    headers = bearer(WRITER_TOKEN)
    assert (await client.post("/bobgen/status", json=VALID, headers=headers)).status == 201
    # In a thread: the server's own write of the token's last use may hold the row, and it
    # needs this event loop to commit.
    revoke = "UPDATE auth_tokens SET revoked_at = '2026-01-01T00:00:00Z' WHERE id = 2"
    await asyncio.to_thread(sql, db_url, revoke)
    revoked = time.monotonic()

    async def refused() -> bool:
        resp = await client.post("/bobgen/status", json=VALID, headers=headers)
        return resp.status == 401

    await eventually(refused, timeout=10)
    assert time.monotonic() - revoked < ttl + 0.5  # the lifetime, plus a poll's slack
