"""What only the PostgreSQL backend has: retries of deadlocks, and caches shared by several
processes (here two apps in one test, each with its own pool and listener)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg

from service.app import DB_KEY, create_app
from service.config import DEFAULT_MIGRATIONS_DIR, Config
from service.db import (
    DatabaseOptions,
    DatabaseURL,
    Work,
    connect,
    execute,
    execute_later,
    query_one,
)
from service.db.migrations import apply_migrations
from service.db.postgres import write_slots
from service.repositories.status import count_since_query
from tests.backends import sql
from tests.helpers import VALID
from tests.support import eventually
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


async def test_writes_stuck_in_commit_leave_the_reads_their_connections(
    pg_url: DatabaseURL,
) -> None:
    """Writes may hold only half the pool: when they cannot finish (here a table lock held
    elsewhere; in the soak, a slow WAL flush at COMMIT), reads still get a connection at
    once instead of waiting out the connect timeout behind them."""
    apply_migrations(pg_url, DEFAULT_MIGRATIONS_DIR)
    db = connect(pg_url, DatabaseOptions(pool_size=4, connect_timeout_s=1.0))
    insert = (
        "INSERT INTO status (uptime, version, latency, error_rate, created_at, updated_at) "
        "VALUES (1, 'v', 1, 0, 't', 't')"
    )
    name = pg_url.redacted.rsplit("/", 1)[-1]
    await db.open()
    try:
        await db.write(execute(insert))
        with psycopg.connect(pg_url.dsn) as holder:  # a transaction holding the table
            holder.execute("LOCK TABLE status IN EXCLUSIVE MODE")  # reads pass, writes wait
            writes = [asyncio.create_task(db.write(execute(insert))) for _ in range(6)]

            def waiting_writes() -> int:
                found = sql(
                    pg_url,
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = ? "
                    "AND wait_event_type = 'Lock'",
                    (name,),
                )
                return int(found[0][0])

            await eventually(lambda: waiting_writes() == write_slots(4), what="writes waiting")
            started = time.monotonic()
            assert await db.fetchall("SELECT count(*) FROM status") == [(1,)]
            assert time.monotonic() - started < 0.5  # not the 1 s connect timeout
            assert waiting_writes() == 2  # the other four wait for a slot, not in PostgreSQL
            holder.rollback()
        await asyncio.gather(*writes)
        assert await db.fetchall("SELECT count(*) FROM status") == [(7,)]
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

    async def counted() -> bool:
        return (await (await second.get("/bobgen/status")).json())["total"] == 1

    await eventually(counted, timeout=5)
    assert time.monotonic() - written < 1.5, "the count cache outlived its 1 s bound"
    # Rows themselves are never cached: the new row is readable at once on the other instance.
    assert (await second.get("/bobgen/status/1")).status == 200


async def test_a_pooled_connection_killed_while_idle_is_retried_invisibly(
    aiohttp_client: Any, pg_url: DatabaseURL, pg_cluster: Any
) -> None:
    """A server restart or an idle timeout kills pooled connections while nobody uses them:
    the next request gets a fresh connection, not an error (service/db/postgres.py)."""
    plant_test_tokens(pg_url)
    config = Config(db=pg_url, seed_rows=0, port=0, log_level="WARNING")
    client = await aiohttp_client(create_app(config), headers=bearer(ADMIN_TOKEN))
    assert (await client.post("/bobgen/status", json=VALID)).status == 201
    name = pg_url.redacted.rsplit("/", 1)[-1]

    def kill_idle_pool_connections() -> int:
        return int(
            sql(
                pg_cluster.url("postgres"),
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND state = 'idle' AND query NOT LIKE 'LISTEN%'",
            )[0][0]
        )

    # A point read (one query), a write (a transaction) and a paged read (a read-only
    # transaction), each first thing after every idle connection of the pool was killed.
    for method, path, body, status in (
        ("GET", "/bobgen/status/1", None, 200),
        ("POST", "/bobgen/status", VALID, 201),
        ("GET", "/projects", None, 200),
        ("POST", "/projects", {"name": "p"}, 201),
    ):
        await asyncio.gather(*(client.get("/bobgen/status?limit=1") for _ in range(4)))
        assert kill_idle_pool_connections() >= 1  # the pool's, not the change listener
        resp = await client.request(method, path, json=body)
        assert resp.status == status, (method, path, await resp.text())


async def test_the_page_totals_refresh_walks_the_index_without_statistics(
    pg_url: DatabaseURL,
) -> None:
    """With autovacuum off nothing analyzes the table: the refresh of a cached total must not
    fall back to scanning every row (it did, on every commit, in the soak of 2026-11-30)."""
    apply_migrations(pg_url, DEFAULT_MIGRATIONS_DIR)
    db = connect(pg_url, DatabaseOptions(pool_size=2))
    await db.open()
    try:
        await db.write(
            execute(
                "INSERT INTO status (uptime, version, latency, error_rate, created_at, updated_at)"
                " SELECT 1, 'v', 1, 0, 't', 't' FROM generate_series(1, 20000)"
            )
        )
        for version in (None, "v"):
            sql, params = count_since_query(version, 19_990)
            plan = "\n".join(row[0] for row in await db.fetchall(f"EXPLAIN {sql}", params))
            assert "Seq Scan" not in plan, plan
            assert tuple(await db.fetchone(sql, params) or ()) == (10, 20_000)
    finally:
        await db.close()


async def test_connections_go_back_to_the_pool_without_a_reset_round_trip(
    pg_url: DatabaseURL,
) -> None:
    """asyncpg's default reset query after every unit of work was one more round trip; BobGen
    leaves no session state behind, so none is run (a session setting survives the release),
    while an advisory lock is still given back: another session can take it at once."""
    db = connect(pg_url, DatabaseOptions(pool_size=1))
    await db.open()
    try:
        await db.fetchone("SELECT set_config('bobgen.probe', 'kept', false)")
        row = await db.fetchone("SELECT current_setting('bobgen.probe', true)")
        assert row is not None and row[0] == "kept"  # the same session, not reset
        async with db.exclusive("bobgen.test-reset") as mine:
            assert mine
        other = connect(pg_url, DatabaseOptions(pool_size=1))
        await other.open()
        try:
            async with other.exclusive("bobgen.test-reset") as theirs:
                assert theirs
        finally:
            await other.close()
    finally:
        await db.close()


async def test_a_statement_the_unit_does_not_wait_for_travels_with_the_commit(
    pg_url: DatabaseURL,
) -> None:
    """One round trip fewer per write: the held-back statement is seen by PostgreSQL in one
    message with the COMMIT, its value written in (service.db.pg_literals)."""
    apply_migrations(pg_url, DEFAULT_MIGRATIONS_DIR)
    db, watcher = connect(pg_url), connect(pg_url)
    await db.open()
    await watcher.open()
    try:

        def unit() -> Work[None]:
            yield from execute(
                "INSERT INTO projects (id, name, description, version, "
                "created_at, updated_at) VALUES (?, 'p', '', 1, 't', 't')",
                ("p1",),
            )
            yield from execute_later("SELECT pg_sleep(? / 4.0)", (3,))

        writing = asyncio.create_task(db.write(unit()))
        seen = "SELECT query FROM pg_stat_activity WHERE query LIKE ? AND pid <> pg_backend_pid()"

        async def in_flight() -> list[Any]:
            return await watcher.fetchall(seen, ("%pg_sleep(3 / 4.0);%COMMIT%",))

        assert await eventually(in_flight, timeout=5)
        await writing
        assert await db.fetchone("SELECT count(*) FROM projects") == (1,)
    finally:
        await db.close()
        await watcher.close()


async def test_a_row_committed_after_a_later_id_is_counted_without_a_full_count_each_second(
    aiohttp_client: Any, pg_url: DatabaseURL
) -> None:
    """Ids commit out of order on PostgreSQL: a slow transaction's row, with an id below one
    already counted, still reaches the cached total (the first count is taken afresh once,
    ``ids_settle_s`` later), while the full ``count(*)``, a walk of the whole table, runs
    once in this test instead of once a second."""
    plant_test_tokens(pg_url)
    config = Config(db=pg_url, seed_rows=0, port=0, log_level="WARNING")
    client = await aiohttp_client(create_app(config), headers=bearer(ADMIN_TOKEN))
    db = client.app[DB_KEY]

    def slow() -> Work[None]:  # takes its id first, commits 1.5 s later
        yield from execute(
            "INSERT INTO status (uptime, version, latency, error_rate, created_at, updated_at) "
            "VALUES (1, 'slow', 1, 0, 't', 't')"
        )
        yield from query_one("SELECT pg_sleep(1.5)")

    slow_write = asyncio.create_task(db.write(slow()))
    sleeping = "SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(1.5)'"
    await eventually(lambda: db.fetchall(sleeping), timeout=5)
    assert (await client.post("/bobgen/status", json=VALID)).status == 201  # the later id

    async def total() -> int:
        return int((await (await client.get("/bobgen/status")).json())["total"])

    assert await total() == 1  # the full count: the slow row is not committed yet

    async def total_is(expected: int) -> bool:
        return await total() == expected

    await slow_write
    await eventually(lambda: total_is(2), timeout=db.ids_settle_s + 3)

    reads = db.reads_by_operation()
    assert sum(reads["status.count"].counts) == 1  # the first count
    assert sum(reads["status.count_up_to"].counts) == 1  # its confirmation, ids_settle_s later
