"""PostgreSQL going away under a running server, and coming back (docs/runbook.md).

The test database is closed to connections and its sessions are terminated (what a restart
or failover looks like to BobGen), then opened again: no 500, no hang, and recovery without
a restart.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from service.app import create_app
from service.config import Config
from service.db import DatabaseURL
from tests.backends import sql
from tests.helpers import VALID, assert_error
from tests.support import eventually
from tests.support.auth import ADMIN_TOKEN, bearer, plant_test_tokens

TIMEOUT_S = 5.0


def cut(url: DatabaseURL, admin: DatabaseURL) -> None:
    name = url.redacted.rsplit("/", 1)[-1]
    sql(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    sql(admin, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")


def restore(url: DatabaseURL, admin: DatabaseURL) -> None:
    name = url.redacted.rsplit("/", 1)[-1]
    sql(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


async def test_unreachable_postgresql_is_503_everywhere_then_recovers_by_itself(
    aiohttp_client: Any, pg_url: DatabaseURL, pg_cluster: Any
) -> None:
    plant_test_tokens(pg_url)
    config = Config(
        db=pg_url,
        seed_rows=0,
        port=0,
        log_level="WARNING",
        pg_connect_timeout_s=1.0,
        request_timeout_s=TIMEOUT_S,
    )
    client = await aiohttp_client(create_app(config), headers=bearer(ADMIN_TOKEN))
    assert (await client.post("/bobgen/status", json=VALID)).status == 201
    admin = pg_cluster.url("postgres")

    cut(pg_url, admin)
    try:
        started = time.monotonic()
        health = await client.get("/health")
        assert health.status == 503 and health.headers["Retry-After"]
        body = await health.json()
        assert body["status"] == "unavailable" and body["db"] == "error" and body["reason"]
        for method, path, payload in (
            ("GET", "/bobgen/status", None),
            ("GET", "/bobgen/status/1", None),
            ("POST", "/bobgen/status", VALID),
            ("GET", "/projects", None),
        ):
            resp = await client.request(method, path, json=payload)
            assert resp.status == 503, (method, path, await resp.text())
            assert resp.headers["Retry-After"]
            assert_error(await resp.json(), resp_code(await resp.json()))
        assert time.monotonic() - started < 5 * TIMEOUT_S  # answers, never a hang
    finally:
        restore(pg_url, admin)

    # Back without a restart: the pool makes new connections on demand.
    async def healthy() -> bool:
        return (await client.get("/health")).status == 200

    await eventually(healthy, timeout=15, what="the service to recover")
    created = await client.post("/bobgen/status", json=VALID)
    assert created.status == 201
    page = await (await client.get("/bobgen/status")).json()
    assert page["total"] == 2  # nothing lost, nothing half-written


def resp_code(body: dict[str, Any]) -> str:
    code = body["error"]["code"]
    assert code in ("database_unavailable", "database_busy", "timeout"), body
    return str(code)


async def test_an_outage_is_one_warning_when_it_starts_and_one_line_when_it_ends(
    aiohttp_client: Any, pg_url: DatabaseURL, pg_cluster: Any, caplog: Any
) -> None:
    plant_test_tokens(pg_url)
    config = Config(db=pg_url, seed_rows=0, port=0, pg_connect_timeout_s=1.0)
    client = await aiohttp_client(create_app(config), headers=bearer(ADMIN_TOKEN))
    assert (await client.post("/bobgen/status", json=VALID)).status == 201
    admin = pg_cluster.url("postgres")
    caplog.set_level(logging.INFO)
    caplog.clear()
    cut(pg_url, admin)
    try:
        for _ in range(5):
            assert (await client.get("/bobgen/status")).status == 503
            assert (await client.post("/bobgen/status", json=VALID)).status == 503
    finally:
        restore(pg_url, admin)

    async def recovered() -> bool:
        return (await client.get("/bobgen/status")).status == 200

    await eventually(recovered, timeout=15)
    records = [r for r in caplog.records if r.levelno >= logging.INFO and "aiohttp" not in r.name]
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(":")[0] for r in warnings] == ["database unavailable"]
    assert any("database available again" in r.getMessage() for r in records)
    assert not any(r.exc_info for r in records)  # no tracebacks
