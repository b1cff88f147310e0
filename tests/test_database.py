import asyncio
import contextlib
import fcntl
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from service.audit import AuditedWrite, audited, audited_write
from service.config import DEFAULT_MIGRATIONS_DIR
from service.db import (
    Database,
    DatabaseClosed,
    DatabaseOptions,
    DatabaseUnavailable,
    DatabaseURL,
    ForeignKeyViolation,
    UniqueViolation,
    Work,
    connect,
    execute,
    execute_later,
    execute_many,
    query_one,
    returning,
    savepoint,
)
from service.db.coalescing import CommitCache
from service.db.migrations import apply_migrations
from service.db.sqlite import SqliteDatabase
from service.db.sqlite_locks import job_lock_path
from service.db.sqlite_writer import SLOW_TRANSACTION_S
from service.domain.auth import Scope
from service.tokens import issue_token
from tests.backends import sqlite_only
from tests.support import eventually


@sqlite_only  # SQLite's pragmas
async def test_pragmas_on_writer_and_readers(db: Database) -> None:
    def pragmas() -> Work[list[object]]:
        values = []
        for p in (
            "journal_mode",
            "synchronous",
            "foreign_keys",
            "busy_timeout",
            "journal_size_limit",
        ):
            values.append((yield from query_one(f"PRAGMA {p}"))[0])
        return values

    assert await db.write(pragmas()) == ["wal", 1, 1, 1234, 64 * 1024 * 1024]
    for _ in range(4):  # whichever reader thread takes each
        assert (await db.fetchall("PRAGMA foreign_keys"))[0][0] == 1
        assert (await db.fetchall("PRAGMA busy_timeout"))[0][0] == 1234
        assert (await db.fetchall("PRAGMA journal_mode"))[0][0] == "wal"
        assert (await db.fetchall("PRAGMA query_only"))[0][0] == 1


@sqlite_only  # SQLite's read-only reader connections
async def test_readers_cannot_write(db: Database) -> None:
    await db.write(execute(INSERT_ONE))
    with pytest.raises(DatabaseUnavailable, match="readonly"):
        await db.fetchall("DELETE FROM status")
    assert await db.fetchall("SELECT count(*) FROM status") == [(1,)]


@sqlite_only  # the reader threads
async def test_a_read_unit_sees_one_snapshot(db: Database) -> None:
    """Its statements run in one read transaction: a commit between them is not seen."""
    first_done, committed = threading.Event(), threading.Event()

    def two_counts() -> Work[tuple[int, int]]:
        before = (yield from query_one("SELECT count(*) FROM status"))[0]
        first_done.set()
        committed.wait(5)  # on the reader thread, while the writer commits
        after = (yield from query_one("SELECT count(*) FROM status"))[0]
        return before, after

    reading = asyncio.ensure_future(db.read(two_counts()))
    assert await asyncio.to_thread(first_done.wait, 5)
    await db.write(execute(INSERT_ONE))
    committed.set()
    assert await reading == (0, 0)
    assert await db.fetchall("SELECT count(*) FROM status") == [(1,)]


@sqlite_only  # the reader threads
async def test_reads_are_served_while_the_event_loop_is_busy(db: Database) -> None:
    """A reader thread takes the next read itself: reads queued behind a busy event loop
    all run while the loop is blocked, not one per turn of the loop (the soak's stall)."""
    reads = [asyncio.ensure_future(db.fetchall("SELECT 1")) for _ in range(200)]
    await asyncio.sleep(0)  # submitted
    deadline = time.monotonic() + 5
    while db.pool_state().waiting and time.monotonic() < deadline:
        # Blocking on purpose: only the reader threads can empty the queue meanwhile.
        time.sleep(0.01)  # noqa: ASYNC251
    assert db.pool_state().waiting == 0
    assert [await r for r in reads] == [[(1,)]] * 200


INSERT_ONE = (
    "INSERT INTO status (uptime, version, latency, error_rate, created_at, updated_at) "
    "VALUES (1, 'v', 1, 0, 't', 't')"
)


def failing(message: str = "boom") -> Work[None]:
    yield from execute(INSERT_ONE)
    raise RuntimeError(message)


async def count(db: Database, table: str = "status") -> int:
    row = await db.fetchone(f"SELECT count(*) FROM {table}")
    assert row is not None
    return int(row[0])


INSERT_WITH_ID = (
    "INSERT INTO status (id, uptime, version, latency, error_rate, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def status_row(i: int, version: str = "v") -> tuple[object, ...]:
    """A status row with id 1,000,000 + ``i`` (clear of the ids the database assigns)."""
    return (
        1_000_000 + i,
        99.5,
        version,
        1.5,
        0.01,
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00.000Z",
    )


async def test_a_batch_writes_every_row_and_counts_them(db: Database) -> None:
    assert (
        await db.write(execute_many(INSERT_WITH_ID, [status_row(i) for i in range(1, 301)])) == 300
    )
    assert await db.write(execute_many(INSERT_ONE, [()] * 3)) == 3  # constants among the values
    assert await db.write(execute_many(INSERT_WITH_ID, [])) == 0
    assert await count(db) == 303
    assert await db.fetchone("SELECT uptime, version FROM status WHERE id = 1000300") == (99.5, "v")


async def test_a_batch_with_a_taken_key_writes_nothing(db: Database) -> None:
    await db.write(execute(INSERT_WITH_ID, status_row(5)))
    with pytest.raises(UniqueViolation):
        await db.write(execute_many(INSERT_WITH_ID, [status_row(i) for i in range(1, 10)]))
    assert await count(db) == 1


async def test_an_upsert_batch_naming_a_key_twice_keeps_the_last_row(db: Database) -> None:
    upsert = f"{INSERT_WITH_ID} ON CONFLICT (id) DO UPDATE SET version = excluded.version"

    def unit() -> Work[int]:
        yield from execute_many(
            upsert, [status_row(1, "a"), status_row(2, "b"), status_row(1, "c")]
        )
        return (yield from execute(INSERT_ONE))  # the transaction goes on

    assert await db.write(unit()) == 1
    assert await db.fetchall("SELECT id, version FROM status WHERE version <> 'v' ORDER BY id") == [
        (1_000_001, "c"),
        (1_000_002, "b"),
    ]


async def test_unit_commits_or_rolls_back_whole(db: Database) -> None:
    await db.write(execute(INSERT_ONE))
    with pytest.raises(RuntimeError, match="boom"):
        await db.write(failing())
    assert await count(db) == 1
    assert db.transactions_committed == 1
    assert db.transactions_rolled_back == 1


@sqlite_only  # the SQLite writer's own account of a slow transaction
async def test_a_slow_write_transaction_is_logged_with_where_its_time_went(
    db_url: DatabaseURL, caplog: pytest.LogCaptureFixture
) -> None:
    apply_migrations(db_url, DEFAULT_MIGRATIONS_DIR)
    database = connect(db_url, DatabaseOptions(read_connections=1, busy_timeout_ms=10_000))
    await database.open()
    try:
        await database.write(execute(INSERT_ONE))  # a quick one: not logged
        assert "slow write transaction" not in caplog.text
        other = sqlite3.connect(str(db_url.path), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # an operator's shell holds the file's write lock
        try:
            write = asyncio.create_task(database.write(execute(INSERT_ONE)))
            # Hold the lock past the threshold (a duration, not a wait for an effect).
            await asyncio.sleep(SLOW_TRANSACTION_S + 0.2)
            assert not write.done()
        finally:
            other.rollback()
            other.close()
        await write
    finally:
        await database.close()
    [line] = [r.getMessage() for r in caplog.records if "slow write" in r.getMessage()]
    begin = float(line.split("BEGIN ")[1].split(" s")[0])
    assert begin >= SLOW_TRANSACTION_S and "for 1 unit(s)" in line  # the time was BEGIN's


HOSTILE_TEXTS = [
    "it's",
    "''",
    "\\'; DROP TABLE status; --",
    "$1 $$ $2::text",
    "back\\slash\\",
    "tab\tnew\nline\rcr",
    "ünïcødé ✓ 🐍",
    "E'\\x41'",
]


AUDIT_INSERT = (
    "INSERT INTO audit_log (ts, level, actor, run_id, scope, event, message, data_json) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


async def test_statements_sent_later_store_exactly_what_was_given(db: Database) -> None:
    """On PostgreSQL these travel as SQL text with the COMMIT (service.db.pg_literals):
    quotes, backslashes and dollar signs must arrive as they were, never as SQL."""

    def unit() -> Work[int]:
        for text in HOSTILE_TEXTS:
            yield from execute_later(AUDIT_INSERT, ("t", "info", text, None, "s", "e", text, "{}"))
        return 0

    await db.write(unit())
    rows = await db.fetchall("SELECT actor, run_id, message FROM audit_log ORDER BY id")
    assert rows == [(t, None, t) for t in HOSTILE_TEXTS]


async def test_statements_sent_later_run_in_order_before_what_follows(db: Database) -> None:
    def unit() -> Work[int]:
        yield from execute_later(INSERT_WITH_ID, status_row(1))
        yield from execute_later("UPDATE status SET version = ? WHERE id = ?", ("w", 1000001))
        row = yield from query_one("SELECT count(*), max(version) FROM status")
        assert row is not None
        return int(row[0])

    assert await db.write(unit()) == 1
    assert await db.fetchone("SELECT version FROM status") == ("w",)


async def test_a_failing_statement_sent_later_rolls_back_the_whole_unit(db: Database) -> None:
    await db.write(execute(INSERT_WITH_ID, status_row(5)))

    def unit() -> Work[None]:
        yield from execute(INSERT_WITH_ID, status_row(6))
        yield from execute_later(INSERT_WITH_ID, status_row(5))  # the key is taken

    with pytest.raises(UniqueViolation):
        await db.write(unit())
    assert await count(db) == 1


async def test_a_unit_runs_in_one_hop_and_sees_its_own_writes(db: Database) -> None:
    def insert_then_count() -> Work[int]:
        yield from execute(INSERT_ONE)
        yield from execute(INSERT_ONE)
        return (yield from query_one("SELECT count(*) FROM status"))[0]

    assert await db.write(insert_then_count()) == 2


# SQLite's single writer serializes units; on PostgreSQL, units that derive keys from what
# they read take lock_for_inserts (the seed does).
@sqlite_only
async def test_concurrent_units_are_serialized_without_lock_errors(db: Database) -> None:
    def next_id() -> Work[None]:
        (n,) = yield from query_one("SELECT count(*) FROM status")
        yield from execute(
            "INSERT INTO status (id, uptime, version, latency, error_rate, created_at,"
            " updated_at) VALUES (?, 1, 'v', 1, 0, 't', 't')",
            (n + 1,),
        )

    await asyncio.gather(*(db.write(next_id()) for _ in range(100)))
    assert await db.fetchone("SELECT count(*), max(id) FROM status") == (100, 100)


class Blocker:
    """Holds the writer thread until released, so that the units submitted meanwhile queue up
    and form one batch (events, not sleeps: on a slow machine the test waits longer)."""

    def __init__(self) -> None:
        self.started, self.released = threading.Event(), threading.Event()

    def unit(self) -> Work[None]:
        self.started.set()  # on the writer thread, inside its transaction
        assert self.released.wait(30)
        yield from returning(None)

    async def hold(self, db: Database) -> asyncio.Future[None]:
        held = asyncio.ensure_future(db.write(self.unit()))
        assert await asyncio.to_thread(self.started.wait, 30)
        return held

    async def release_when_queued(self, db: Any, n: int) -> None:
        await eventually(lambda: db.queued_writes >= n, what=f"{n} queued writes")
        self.released.set()


@sqlite_only  # group commit is the SQLite writer's
async def test_group_commit_batches_and_a_failing_unit_rolls_back_alone(db: Database) -> None:
    blocker = Blocker()
    block = await blocker.hold(db)
    units = [failing() if i % 5 == 0 else execute(INSERT_ONE) for i in range(50)]
    writes = asyncio.gather(*(db.write(u) for u in units), return_exceptions=True)
    await blocker.release_when_queued(db, 50)
    results = await writes
    await block
    failures = [r for r in results if isinstance(r, RuntimeError)]
    assert len(failures) == 10
    assert await count(db) == 40
    assert db.writer_stats.largest_batch == 50  # they went together...
    assert db.transactions_committed <= 3  # ...in one transaction (plus the blocker's)


@sqlite_only  # group commit is the SQLite writer's
async def test_a_failed_commit_fails_every_unit_in_its_batch(db: Database) -> None:
    def dangling_step() -> Work[None]:
        # A deferred foreign key is checked only at COMMIT: this makes the COMMIT fail.
        yield from execute("PRAGMA defer_foreign_keys = ON")
        yield from execute(
            "INSERT INTO run_steps (run_id, name, status, stats_json) "
            "VALUES ('missing', 's', 'pending', '{}')"
        )

    blocker = Blocker()
    block = await blocker.hold(db)
    units = [execute(INSERT_ONE), dangling_step(), execute(INSERT_ONE)]
    writes = asyncio.gather(*(db.write(u) for u in units), return_exceptions=True)
    await blocker.release_when_queued(db, 3)
    results = await writes
    await block
    assert all(isinstance(r, ForeignKeyViolation) for r in results), results
    assert await count(db) == 0  # none acknowledged, none committed
    await db.write(execute(INSERT_ONE))  # and the writer carries on
    assert await count(db) == 1


async def test_a_lone_writer_is_never_held_back(db: Database) -> None:
    for _ in range(20):
        await db.write(execute(INSERT_ONE))
    assert db.writer_stats.largest_batch == 1
    assert db.transactions_committed == 20


async def test_writes_nest_without_deadlock(db: Database) -> None:
    """A helper that writes (issuing a token) runs inside another write, in a savepoint."""

    def outer(w: AuditedWrite) -> Work[tuple[str, int]]:
        token, record = yield from savepoint(
            audited(
                "nested",
                lambda inner: issue_token(
                    inner, user="u", name="n", scopes=frozenset({Scope.READ})
                ),
            )
        )
        # A nested helper that fails is undone alone, and the outer write goes on.
        with contextlib.suppress(RuntimeError):
            yield from savepoint(failing("inner failure"))
        yield from execute(INSERT_ONE)
        w.audit("test.outer", scope="test", message="outer write")
        return token, record.id

    token, token_id = await asyncio.wait_for(audited_write(db, "outer", outer), 5)
    assert token.startswith("bgt_")
    assert await count(db) == 1  # the failed inner insert is gone, the outer one stayed
    assert await db.fetchall("SELECT id FROM auth_tokens") == [(token_id,)]
    events = await db.fetchall("SELECT actor, event FROM audit_log ORDER BY id")
    assert events == [("nested", "token.created"), ("outer", "test.outer")]


async def test_close_fails_waiting_readers_instead_of_stranding_them(db_path: Path) -> None:
    apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR)
    database = SqliteDatabase(db_path, read_connections=1, close_timeout_s=2)
    await database.open()
    borrowed, release = threading.Event(), threading.Event()

    def hold_the_only_reader() -> Work[int]:
        borrowed.set()
        release.wait(5)  # on the reader thread
        return (yield from query_one("SELECT 1"))[0]

    holder = asyncio.ensure_future(database.read(hold_the_only_reader()))
    assert await asyncio.to_thread(borrowed.wait, 5)
    waiter = asyncio.ensure_future(database.fetchall("SELECT 1"))
    await eventually(lambda: database.pool_state().waiting == 1)
    closing = asyncio.ensure_future(database.close())
    with pytest.raises(DatabaseClosed):
        await asyncio.wait_for(waiter, 1)  # failed at once, not left waiting
    assert not closing.done()  # close waits for the running read...
    release.set()
    await asyncio.wait_for(closing, 2)  # ...and finishes once it is done
    assert await holder == 1
    with pytest.raises(DatabaseClosed):
        await database.fetchall("SELECT 1")


async def test_close_finishes_queued_writes_and_refuses_new_ones(db_path: Path) -> None:
    apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR)
    database = SqliteDatabase(db_path)
    await database.open()
    queued = [asyncio.ensure_future(database.write(execute(INSERT_ONE))) for _ in range(20)]
    await asyncio.sleep(0)
    await database.close()
    assert [await q for q in queued] == [1] * 20  # in flight before close: all committed
    with pytest.raises(DatabaseClosed):
        await database.write(execute(INSERT_ONE))
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM status").fetchone() == (20,)


async def test_database_is_an_async_context_manager(db_path: Path) -> None:
    apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR)
    async with SqliteDatabase(db_path) as database:
        assert database.is_open
        await database.write(execute(INSERT_ONE))
    assert not database.is_open


async def test_a_statement_error_is_translated_and_can_be_caught_by_the_unit(
    db: Database,
) -> None:
    def insert_twice() -> Work[str]:
        yield from execute(
            "INSERT INTO status (id, uptime, version, latency, error_rate, "
            "created_at, updated_at) VALUES (7, 1, 'v', 1, 0, 't', 't')"
        )
        try:
            # In a savepoint: on PostgreSQL a failed statement dooms the transaction otherwise.
            yield from savepoint(
                execute(
                    "INSERT INTO status (id, uptime, version, latency, error_rate, "
                    "created_at, updated_at) VALUES (7, 1, 'v', 1, 0, 't', 't')"
                )
            )
        except UniqueViolation:
            return "duplicate seen"
        return "no error"

    assert await db.write(insert_twice()) == "duplicate seen"
    assert await count(db) == 1


async def test_batched_lookups_serve_concurrent_reads(db: Database) -> None:
    calls: list[int] = []

    async def fetch_many(db: Database, keys):  # type: ignore[no-untyped-def]
        calls.append(len(keys))
        marks = ", ".join("CAST(? AS INTEGER)" for _ in keys)
        rows = await db.fetchall(f"SELECT {marks}", list(keys))
        return {k: k * 10 for k in rows[0]}

    lookup = db.lookup(fetch_many)
    assert db.lookup(fetch_many) is lookup  # built once
    results = await asyncio.gather(*(lookup.get(i) for i in range(1, 51)), lookup.get(3))
    assert results == [i * 10 for i in range(1, 51)] + [30]
    assert sum(calls) < 51 + 1 and len(calls) < 51  # lookups were coalesced


async def test_batched_lookup_propagates_errors(db: Database) -> None:
    async def broken(db: Database, keys):  # type: ignore[no-untyped-def]
        raise sqlite3.OperationalError("disk on fire")

    with pytest.raises(sqlite3.OperationalError, match="disk on fire"):
        await db.lookup(broken).get(1)


async def test_check_reports_unavailable(db: Database) -> None:
    assert await db.check() == (1,)
    with pytest.raises(DatabaseUnavailable, match=r"no such table|does not exist"):
        await db.check("SELECT count(*) FROM missing_table")


async def test_closed_database_refuses_work(db_path: Path) -> None:
    apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR)
    database = SqliteDatabase(db_path)
    await database.open()
    await database.close()
    assert not database.is_open
    with pytest.raises(DatabaseUnavailable):
        await database.fetchall("SELECT 1")
    with pytest.raises(DatabaseUnavailable):
        await database.write(execute(INSERT_ONE))


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


@sqlite_only  # SQLite's WAL
async def test_background_checkpoint_empties_the_wal_without_blocking(db: Database) -> None:
    await db.write(execute_many(INSERT_ONE, [()] * 2000))
    busy, frames, done = await db.checkpoint()
    assert busy == 0
    assert frames > 0
    assert done == frames
    task = asyncio.ensure_future(db.run_checkpoints(0.01))
    try:
        await db.write(execute(INSERT_ONE))  # writes go on while checkpoints run
        await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await count(db) == 2001


@pytest.mark.parametrize("ticks", [0, 1, 2, 3, 5])
async def test_cancelled_writers_never_leave_the_writer_in_a_transaction(
    db: Database, ticks: int
) -> None:
    """Cancel the caller at different points: later writes still work, and the cancelled
    unit either committed whole or not at all."""

    def slow_insert() -> Work[None]:
        yield from execute(INSERT_ONE)
        time.sleep(0.05)
        yield from execute(INSERT_ONE)

    task = asyncio.ensure_future(db.write(slow_insert()))
    for _ in range(ticks):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await db.write(execute(INSERT_ONE))
    assert await count(db) in (1, 3)


async def test_commits_during_a_full_count_refresh_it_instead_of_starting_more() -> None:
    """While the one full computation of a key runs (a 20 ms ``count(*)``), requests seeing
    newer commits bring the last value forward; they neither wait for it nor start their own
    (each commit used to start another full count, several at once)."""
    generation, full_counts = 0, 0
    release = asyncio.Event()

    async def full_count(previous: int | None) -> int:
        nonlocal full_counts
        full_counts += 1
        if full_counts > 1:
            await release.wait()
        return 100

    async def refresh(old: int) -> int:
        return old + 1  # one row per commit

    cache: CommitCache[int] = CommitCache(lambda: generation, max_age_s=0.0)  # always due
    assert await cache.get("count", full_count, refresh) == 100
    slow = asyncio.ensure_future(cache.get("count", full_count, refresh))
    await eventually(lambda: full_counts == 2)
    for _ in range(5):
        generation += 1  # a commit
        assert await cache.get("count", full_count, refresh) == 100 + generation
    assert full_counts == 2
    release.set()
    assert await slow == 100


async def test_a_first_value_is_confirmed_by_one_full_computation_not_per_commit() -> None:
    """PostgreSQL's first count cannot know which lower ids were in flight, so it is computed
    afresh ``confirm_first_s`` later, given the first as its previous value. That runs once,
    while commits meanwhile refresh the value; a check run from inside the refresh ran once
    per commit, a walk of the whole table each (the soak of 2026-11-30)."""
    generation, computed = 0, []
    release = asyncio.Event()

    async def compute(previous: int | None) -> int:
        computed.append(previous)
        if previous is not None:
            await release.wait()
        return 100 if previous is None else 1000

    async def refresh(old: int) -> int:
        return old + 1

    cache: CommitCache[int] = CommitCache(
        lambda: generation, max_age_s=0.0, full_every_s=60.0, confirm_first_s=1e-9
    )
    assert await cache.get("count", compute, refresh) == 100
    assert computed == [None]
    generation += 1

    async def confirming() -> bool:
        return len(computed) == 2

    confirm = asyncio.ensure_future(cache.get("count", compute, refresh))
    await eventually(confirming, timeout=5)
    assert computed == [None, 100]  # the confirmation starts from the value it replaces
    for _ in range(5):
        generation += 1  # commits while it runs: refreshed, no second confirmation
        assert await cache.get("count", compute, refresh) == 100 + generation - 1
    assert len(computed) == 2
    release.set()
    assert await confirm == 1000
    generation += 1
    assert await cache.get("count", compute, refresh) == 1001  # the next full one is a minute off
    assert len(computed) == 2


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_job_runs_in_one_process_and_another_takes_over_when_it_dies(
    db: Database, tmp_path: Path
) -> None:
    """Of several processes on one database exactly one holds a job (the seed, a scheduled
    backup); when the holder dies, the kernel (SQLite: the flock) or the server (PostgreSQL:
    the session) lets go, and the next try of another process gets it."""
    holder = tmp_path / "hold.py"
    holder.write_text(
        "import asyncio, sys\n"
        "from service.db import DatabaseURL, connect\n"
        "async def main():\n"
        "    db = connect(DatabaseURL.parse(sys.argv[1]))\n"
        "    await db.open()\n"
        "    async with db.exclusive('bobgen.test-job') as mine:\n"
        "        print('mine' if mine else 'not mine', flush=True)\n"
        "        await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(holder),
        db.url.dsn or str(db.url.path),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert (await asyncio.wait_for(child.stdout.readline(), 30)).strip() == b"mine"
        async with db.exclusive("bobgen.test-job") as mine:
            assert not mine  # held by the other process
    finally:
        child.kill()
        await child.wait()

    async def taken_over() -> bool:
        async with db.exclusive("bobgen.test-job") as mine:
            return mine

    await eventually(taken_over, timeout=10, what="the dead holder's lock to be released")


async def test_processes_on_one_file_take_turns_through_the_write_lock(db_path: Path) -> None:
    """Writers of several processes on one file (two databases here: each its own lock
    descriptor, as two processes would have) wait for each other's COMMIT on the flock, not
    in SQLite's sleeping busy handler: a write queued behind a held lock runs as soon as it
    is released, and the wait is counted."""
    apply_migrations(DatabaseURL.sqlite(db_path), DEFAULT_MIGRATIONS_DIR)
    async with SqliteDatabase(db_path) as a, SqliteDatabase(db_path) as b:
        await asyncio.gather(*(d.write(execute(INSERT_ONE)) for _ in range(200) for d in (a, b)))
        assert (await a.fetchone("SELECT count(*) FROM status") or [0])[0] == 400

        fd = os.open(job_lock_path(db_path, "write"), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another process is writing
            waits = sum(a.write_lock_waits.counts)
            pending = asyncio.ensure_future(a.write(execute(INSERT_ONE)))
            await asyncio.sleep(0)  # the task submits the unit
            await eventually(lambda: a.queued_writes == 0, what="the writer to take the unit")
            with pytest.raises(TimeoutError):  # and wait for the lock
                await asyncio.wait_for(asyncio.shield(pending), 0.3)
            fcntl.flock(fd, fcntl.LOCK_UN)
            await asyncio.wait_for(pending, 5)
        finally:
            os.close(fd)
        assert sum(a.write_lock_waits.counts) == waits + 1


async def test_a_write_lock_never_released_ends_in_a_503_not_a_hang(db_path: Path) -> None:
    apply_migrations(DatabaseURL.sqlite(db_path), DEFAULT_MIGRATIONS_DIR)
    async with SqliteDatabase(db_path, busy_timeout_ms=300) as database:
        fd = os.open(job_lock_path(db_path, "write"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a stopped process holding it
            with pytest.raises(DatabaseUnavailable, match="locked"):
                await asyncio.wait_for(database.write(execute(INSERT_ONE)), 5)
        finally:
            os.close(fd)
        await database.write(execute(INSERT_ONE))  # released with its holder
        assert (await database.fetchone("SELECT count(*) FROM status") or [0])[0] == 1
