"""What only the PostgreSQL backend has: retries of deadlocks, and caches shared by several
processes (here two apps in one test, each with its own pool and listener)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from service.app import create_app
from service.config import DEFAULT_MIGRATIONS_DIR, Config
from service.db import DatabaseOptions, DatabaseURL, Work, connect, execute, query_one
from service.db.migrations import apply_migrations
from tests.helpers import VALID
from tests.support.auth import ADMIN_TOKEN, bearer, plant_test_tokens


async def test_deadlocks_are_retried_until_both_units_commit(pg_url: DatabaseURL) -> None:
    apply_migrations(pg_url, DEFAULT_MIGRATIONS_DIR)
    db = connect(pg_url, DatabaseOptions(pool_size=4))
    await db.open()
    try:
        for row in (1, 2):
            await db.write(
                execute(
                    "INSERT INTO status (id, uptime, version, latency, error_rate, created_at, "
                    "updated_at) VALUES (?, 1, 'v', 1, 0, 't', 't')",
                    (row,),
                )
            )

        def crosswise(first: int, second: int) -> Work[None]:
            # Lock one row, wait for the other unit to lock the other, then ask for it.
            yield from execute("UPDATE status SET blocks = blocks + 1 WHERE id = ?", (first,))
            yield from query_one("SELECT pg_sleep(0.3)")
            yield from execute("UPDATE status SET blocks = blocks + 1 WHERE id = ?", (second,))

        await asyncio.gather(db.write(lambda: crosswise(1, 2)), db.write(lambda: crosswise(2, 1)))
        assert db.writer_stats.retried >= 1  # PostgreSQL chose a victim; it ran again
        rows = await db.fetchall("SELECT id, blocks FROM status ORDER BY id")
        assert rows == [(1, 2), (2, 2)]  # both units committed, each exactly once
    finally:
        await db.close()


async def test_another_instances_writes_show_in_totals_within_a_second(
    aiohttp_client: Any, pg_url: DatabaseURL
) -> None:
    plant_test_tokens(pg_url)
    config = Config(db=pg_url, seed_rows=0, port=0, log_level="WARNING")
    first = await aiohttp_client(create_app(config), headers=bearer(ADMIN_TOKEN))
    second = await aiohttp_client(create_app(config), headers=bearer(ADMIN_TOKEN))
    assert (await (await second.get("/bobgen/status")).json())["total"] == 0  # now cached
    assert (await first.post("/bobgen/status", json=VALID)).status == 201
    written = time.monotonic()
    while (await (await second.get("/bobgen/status")).json())["total"] != 1:
        assert time.monotonic() - written < 1.5, "the count cache outlived its 1 s bound"
        await asyncio.sleep(0.02)
    # Rows themselves are never cached: the new row is readable at once on the other instance.
    assert (await second.get("/bobgen/status/1")).status == 200
