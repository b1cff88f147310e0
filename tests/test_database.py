import asyncio
import sqlite3
from pathlib import Path

import pytest

from service.config import DEFAULT_MIGRATIONS_DIR
from service.db import Database, DatabaseUnavailable
from service.db.migrations import apply_migrations


async def test_pragmas_on_writer_and_readers(db: Database) -> None:
    async with db.transaction() as conn:
        writer = [
            (await conn.execute_fetchall(f"PRAGMA {p}"))[0][0]
            for p in (
                "journal_mode",
                "synchronous",
                "foreign_keys",
                "busy_timeout",
                "journal_size_limit",
            )
        ]
    assert writer == ["wal", 1, 1, 1234, 64 * 1024 * 1024]
    for _ in range(2):
        async with db.reader() as conn:
            assert (await conn.execute_fetchall("PRAGMA foreign_keys"))[0][0] == 1
            assert (await conn.execute_fetchall("PRAGMA busy_timeout"))[0][0] == 1234
            assert (await conn.execute_fetchall("PRAGMA journal_mode"))[0][0] == "wal"


async def test_readers_cannot_write(db: Database) -> None:
    async with db.reader() as conn:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await conn.execute("DELETE FROM status")


async def test_transaction_commits_or_rolls_back_whole(db: Database) -> None:
    insert = (
        "INSERT INTO status (uptime, version, latency, error_rate, created_at, updated_at) "
        "VALUES (1, 'v', 1, 0, 't', 't')"
    )
    async with db.transaction() as conn:
        await conn.execute(insert)
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await conn.execute(insert)
            raise RuntimeError("boom")
    assert await db.fetchone("SELECT count(*) FROM status") == (1,)
    assert db.transactions_committed == 1 and db.transactions_rolled_back == 1


async def test_concurrent_transactions_are_serialized_without_lock_errors(db: Database) -> None:
    async def write(i: int) -> None:
        async with db.transaction() as conn:
            (n,) = (await conn.execute_fetchall("SELECT count(*) FROM status"))[0]
            await asyncio.sleep(0)  # another writer would interleave here without the lock
            await conn.execute(
                "INSERT INTO status (id, uptime, version, latency, error_rate, created_at,"
                " updated_at) VALUES (?, 1, 'v', 1, 0, 't', 't')",
                (n + 1,),
            )

    await asyncio.gather(*(write(i) for i in range(100)))
    assert await db.fetchone("SELECT count(*), max(id) FROM status") == (100, 100)


async def test_batched_lookups_serve_concurrent_reads(db: Database) -> None:
    calls: list[int] = []

    async def fetch_many(keys):  # type: ignore[no-untyped-def]
        calls.append(len(keys))
        rows = await db.fetchall(f"SELECT {', '.join('?' * len(keys))}", list(keys))
        return {k: k * 10 for k in rows[0]}

    lookup = db.lookup("test", fetch_many)
    results = await asyncio.gather(*(lookup.get(i) for i in range(1, 51)), lookup.get(3))
    assert results == [i * 10 for i in range(1, 51)] + [30]
    assert sum(calls) < 51 + 1 and len(calls) < 51  # lookups were coalesced


async def test_batched_lookup_propagates_errors(db: Database) -> None:
    async def broken(keys):  # type: ignore[no-untyped-def]
        raise sqlite3.OperationalError("disk on fire")

    with pytest.raises(sqlite3.OperationalError, match="disk on fire"):
        await db.lookup("broken", broken).get(1)


async def test_check_reports_unavailable(db: Database) -> None:
    assert await db.check() == (1,)
    with pytest.raises(DatabaseUnavailable, match="no such table"):
        await db.check("SELECT count(*) FROM missing_table")


async def test_closed_database_refuses_work(db_path: Path) -> None:
    apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR)
    database = Database(db_path)
    await database.open()
    await database.close()
    assert not database.is_open
    with pytest.raises(DatabaseUnavailable):
        await database.fetchall("SELECT 1")
    with pytest.raises(DatabaseUnavailable):
        async with database.transaction():
            pass


async def test_single_flight_shares_overlapping_identical_reads(db: Database) -> None:
    runs = 0

    async def slow_query() -> list[tuple[int, ...]]:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return await db.fetchall("SELECT 42")

    first = asyncio.gather(*(db.shared_reads.run("k", slow_query) for _ in range(10)))
    other = db.shared_reads.run("other", slow_query)
    results = await first
    assert results == [[(42,)]] * 10 and await other == [(42,)]
    assert runs == 2  # one per distinct key
    assert await db.shared_reads.run("k", slow_query) == [(42,)]
    assert runs == 3  # nothing is cached once the shared read is over


async def test_single_flight_survives_a_cancelled_caller(db: Database) -> None:
    async def slow_query() -> int:
        await asyncio.sleep(0.05)
        return 7

    doomed = asyncio.ensure_future(db.shared_reads.run("k", slow_query))
    survivor = asyncio.ensure_future(db.shared_reads.run("k", slow_query))
    await asyncio.sleep(0.01)
    doomed.cancel()
    assert await survivor == 7


async def test_background_checkpoint_empties_the_wal_without_blocking(db: Database) -> None:
    async with db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO status (uptime, version, latency, error_rate, created_at, updated_at)"
            " VALUES (1, 'v', 1, 0, 't', 't')",
            [()] * 2000,
        )
    busy, frames, done = await db.checkpoint()
    assert busy == 0 and frames > 0 and done == frames
    task = asyncio.ensure_future(db.run_checkpoints(0.01))
    try:
        async with db.transaction() as conn:  # writes go on while checkpoints run
            await conn.execute(
                "INSERT INTO status (uptime, version, latency, error_rate, created_at, "
                "updated_at) VALUES (1, 'v', 1, 0, 't', 't')"
            )
        await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await db.fetchone("SELECT count(*) FROM status") == (2001,)


INSERT_ONE = (
    "INSERT INTO status (uptime, version, latency, error_rate, created_at, updated_at) "
    "VALUES (1, 'v', 1, 0, 't', 't')"
)


@pytest.mark.parametrize("ticks", [0, 1, 2, 3, 5])
async def test_cancelled_writers_never_leave_the_writer_in_a_transaction(
    db: Database, ticks: int
) -> None:
    """Cancel at different points (waiting for BEGIN, inside the body): later writes still work
    and nothing of the cancelled transaction is committed."""

    async def write() -> None:
        async with db.transaction() as conn:
            await conn.execute(INSERT_ONE)
            await asyncio.sleep(1)

    task = asyncio.ensure_future(write())
    for _ in range(ticks):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.transaction() as conn:
        await conn.execute(INSERT_ONE)
    assert await db.fetchone("SELECT count(*) FROM status") == (1,)
