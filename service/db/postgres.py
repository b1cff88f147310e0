"""PostgreSQL through an asyncpg pool: the backend for several BobGen processes on one database.

The same units of work as on SQLite (:mod:`service.db.work`) run here, each in its own
transaction on a pooled connection, statement by statement (an ``await`` per statement;
PostgreSQL serves many writers at once, so there is no writer thread and no group commit).

What differs from SQLite, and why:

* **Statement errors abort the transaction.** After a failed statement PostgreSQL refuses
  every further statement until the transaction (or a savepoint) is rolled back. A unit that
  catches a database error and carries on must therefore wrap the failing part in
  :func:`service.db.work.savepoint` (which works on both backends).
* **Serialization failures and deadlocks** are retried (``max_retries`` times, with jitter)
  when the unit was given as a factory: a generator cannot be rewound.
* **Change notifications** (:func:`service.db.work.notify`) become ``pg_notify`` inside the
  transaction, which PostgreSQL delivers only on COMMIT, to every process that LISTENs. One
  listener connection per process bumps :meth:`change_marker`. While that connection is down
  the marker moves on every call, so nothing keyed on it is cached until it is back.
* **Round trips.** asyncpg sends one statement per round trip (no pipelining), so a write
  is BEGIN, its statements, COMMIT. Statements the unit does not wait for (audit rows,
  ``pg_notify``: :func:`service.db.work.execute_later`) travel as SQL text in one message
  with what follows them (:mod:`service.db.pg_literals`): a POST is BEGIN, INSERT ...
  RETURNING, then "audit INSERT; COMMIT", three round trips instead of four.
* **Other processes' commits** are invisible to :attr:`derived` (the ``count(*)`` cache)
  until it is refreshed: its values live at most :attr:`cross_process_staleness_s` (1 s).

Lifecycle (after asyncpg's own ``Pool``): ``open`` creates the pool (connecting once, so a
wrong URL fails at start) and the listener; ``close`` refuses new work, lets in-flight work
finish for ``close_timeout_s``, then terminates what is left.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from functools import lru_cache
from typing import Any, TypeVar, cast

import asyncpg

from service.db.database import (
    Database,
    DatabaseOptions,
    Distribution,
    Params,
    PoolState,
    Row,
    WorkSource,
    WriterStats,
    caller_operation,
    observe_in,
    operation_name,
    unit_operation,
)
from service.db.errors import DatabaseClosed, DatabaseUnavailable, SerializationConflict
from service.db.outage import POOL_FILTER
from service.db.pg_errors import is_connection_lost, translate
from service.db.pg_literals import HeldBack, inline
from service.db.url import POSTGRESQL, DatabaseURL
from service.db.work import Notify, Result, Statement, Step, Work, drive_async, read_only

log = logging.getLogger(__name__)

T = TypeVar("T")

NOTIFY_CHANNEL = "bobgen_changes"  # one PostgreSQL channel; the payload names ours
LISTENER_RETRY_S = 1.0
LOOKUP_CONCURRENCY = 2


def write_slots(pool_size: int) -> int:
    """How many pooled connections writes may hold at once: half the pool, rounded up.

    A write holds its connection through COMMIT, which waits for PostgreSQL's WAL flush. When
    the disk is slow to flush (seen for 0.5 s at a time in the soak), uncapped writes took
    every pooled connection within tens of milliseconds, and reads, four requests in five,
    queued behind a flush they did not need. Capped, a slow flush slows the writes and
    leaves the reads their connections. Several writes still overlap their flushes, which
    PostgreSQL makes into one (its own group commit)."""
    return max(1, (pool_size + 1) // 2)


@lru_cache(maxsize=2048)
def to_dollar_params(sql: str) -> str:
    """``?`` placeholders -> ``$1, $2, ...``, leaving quoted strings and identifiers alone."""
    out: list[str] = []
    n = 0
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


@lru_cache(maxsize=2048)
def _prepared(sql: str) -> tuple[str, bool]:
    """``sql`` with ``$n`` placeholders, and whether it returns rows (fetch, else execute for
    the row count): worked out once per SQL text, not per statement run."""
    upper = sql.upper()
    head = upper.lstrip()[:6]
    returns_rows = head in ("SELECT", "WITH") or head.startswith("VALUES") or " RETURNING " in upper
    return to_dollar_params(sql), returns_rows


_INSERT_VALUES = re.compile(
    r"\s*(INSERT\s+INTO\s+[\w.\"]+\s*\([^)]*\))\s*VALUES\s*\(([$\d\s,]+)\)(.*)", re.S | re.I
)
# INSERT text -> its one-statement form, or None when it has none (worked out once per text).
_one_statement_sql: dict[str, str | None] = {}


async def _one_statement(conn: asyncpg.Connection, sql: str) -> str | None:
    """``INSERT INTO t (a, b) VALUES ($1, $2) <rest>`` as
    ``INSERT INTO t (a, b) SELECT * FROM unnest($1::type_a[], $2::type_b[]) <rest>``.

    Why: ``executemany`` pipelines the rows, but PostgreSQL still starts and ends its executor
    once per row; one statement over arrays wrote 10,000 documents in 1.8 s instead of 3.2 s.
    The types come from preparing the statement (PostgreSQL infers them from the columns).
    None when the text is not such an INSERT (constants among the values, array columns).
    """
    if sql in _one_statement_sql:
        return _one_statement_sql[sql]
    converted = None
    match = _INSERT_VALUES.fullmatch(sql)
    if match:
        head, values, rest = match.groups()
        placeholders = [v.strip() for v in values.split(",")]
        if placeholders == [f"${n}" for n in range(1, len(placeholders) + 1)]:
            types = (await conn.prepare(sql)).get_parameters()
            if all(t.kind == "scalar" for t in types):
                arrays = ", ".join(
                    f'${n}::"{t.schema}"."{t.name}"[]' for n, t in enumerate(types, start=1)
                )
                converted = f"{head} SELECT * FROM unnest({arrays}){rest}"
    _one_statement_sql[sql] = converted
    return converted


async def _execute_many(conn: asyncpg.Connection, sql: str, rows: Iterable[Sequence[Any]]) -> int:
    """Run ``sql`` once per row of ``rows``; an INSERT of several rows as one statement (see
    :func:`_one_statement`).

    One statement may not update a row twice, so an upsert batch naming a key twice fails
    there (CardinalityViolation): it then runs row by row, as on SQLite, where the last row
    wins. A savepoint keeps that failure from aborting the transaction.
    """
    batch = [tuple(row) for row in rows]
    if len(batch) <= 1:
        return _rowcount(await conn.execute(sql, *batch[0])) if batch else 0
    one_statement = await _one_statement(conn, sql)
    if one_statement is not None:
        columns = [list(c) for c in zip(*batch, strict=True)]
        if " DO UPDATE " not in sql.upper():
            return _rowcount(await conn.execute(one_statement, *columns))
        await conn.execute("SAVEPOINT bobgen_many")
        try:
            count = _rowcount(await conn.execute(one_statement, *columns))
        except asyncpg.CardinalityViolationError:
            await conn.execute("ROLLBACK TO SAVEPOINT bobgen_many")
        else:
            await conn.execute("RELEASE SAVEPOINT bobgen_many")
            return count
    await conn.executemany(sql, batch)
    return len(batch)


def _rowcount(status: str) -> int:
    """asyncpg's command tag ("UPDATE 3", "INSERT 0 1") -> the number of rows."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else -1


class _StaleConnection(DatabaseUnavailable):
    """BEGIN failed on a pooled connection that died while idle: nothing ran, try another."""


async def _begin(start: Awaitable[Any]) -> None:
    try:
        await start
    except Exception as exc:
        if is_connection_lost(exc):
            raise _StaleConnection(f"a pooled connection was dead: {exc}") from exc
        raise translate(exc) from exc


class PostgresDatabase(Database):
    """Owns an asyncpg pool and one listener connection."""

    cross_process_staleness_s = 1.0
    # Sequence values are taken at INSERT and seen at COMMIT, so ids commit out of order; but
    # a unit holds its transaction for milliseconds. Counts trust an id range 2 s after seeing
    # its top (see ``status.count``), and recount in full once a minute, not every second:
    # the full count walks the whole table (visibility map unset without autovacuum).
    ids_settle_s = 2.0
    derived_full_recompute_s = 60.0

    def __init__(
        self,
        url: DatabaseURL,
        options: DatabaseOptions | None = None,
        *,
        max_retries: int = 3,
    ):
        options = options or DatabaseOptions()
        # Batched point reads (rows by id) run at most this many queries at once: fewer, fuller
        # "WHERE id IN (...)" round trips cost both processes less CPU than one per request.
        super().__init__(url, concurrency=min(options.pool_size, LOOKUP_CONCURRENCY))
        self.options = options
        self.max_retries = max_retries
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._listening = False
        self._open = False
        self._stats = WriterStats()
        self._waiting = 0  # callers that found no idle pooled connection, waiting for one now
        self._write_slots = asyncio.Semaphore(write_slots(options.pool_size))
        self._acquire_waits = Distribution()
        self._reads: dict[str, Distribution] = {}  # by operation, from the query sent
        self._connection_errors = 0
        self._generations: dict[str, int] = {}
        self._unlistened = 0  # moves on every change_marker call while the listener is down
        self._listener_ready = asyncio.Event()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        o = self.options
        logging.getLogger("asyncpg.pool").addFilter(POOL_FILTER)  # once: the same filter object
        try:
            self._pool = await asyncpg.create_pool(
                self.url.dsn,
                min_size=1,
                max_size=o.pool_size,
                command_timeout=o.command_timeout_s,
                timeout=o.connect_timeout_s,
                statement_cache_size=o.statement_cache_size,
                max_inactive_connection_lifetime=60.0,
                reset=_keep_session,
                server_settings={
                    "application_name": "bobgen",
                    # SQLite's busy_timeout, here: a row or table lock held elsewhere (an
                    # operator's psql session) fails the statement as DatabaseBusy (503)
                    # after this long instead of holding the request until its deadline.
                    "lock_timeout": str(int(o.busy_timeout_ms)),
                },
            )
        except BaseException as exc:
            await self.close()
            raise translate(exc) from exc
        self._open = True
        self._listener_ready = asyncio.Event()
        self._listener_task = asyncio.create_task(self._listen_forever(), name="pg-listener")
        # Until it listens, nothing keyed on change markers is cached: wait for it (bounded;
        # the service works without it, only slower).
        try:
            await asyncio.wait_for(self._listener_ready.wait(), o.connect_timeout_s)
        except TimeoutError:
            log.warning("the PostgreSQL change listener is not connected yet")
        log.debug("opened %s with a pool of up to %d", self.url, o.pool_size)

    async def close(self) -> None:
        """Refuse new work, let in-flight work finish (bounded), then terminate the rest.

        ``Pool.close`` waits for every acquired connection to be released; a request stuck in
        a long query would hold shutdown forever, hence the timeout and ``terminate``.
        """
        self._open = False
        if self._listener_task is not None:
            self._listener_task.cancel()
            await asyncio.gather(self._listener_task, return_exceptions=True)
            self._listener_task = None
        await self._drop_listener()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self.options.close_timeout_s)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("terminating PostgreSQL connections after: %r", exc)
                pool.terminate()

    @property
    def is_open(self) -> bool:
        return self._open

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self._pool
        if not self._open or pool is None:
            raise DatabaseClosed("database is closed")
        # Waiting means none was free: one taken from the idle ones still passes through
        # acquire's awaits, and counted so the gauge (and the pool-exhausted alert) read 1
        # whenever any task was borrowing at the moment of a scrape.
        queued = pool.get_idle_size() == 0
        self._waiting += int(queued)
        asked = time.perf_counter()
        try:
            conn = await pool.acquire(timeout=self.options.connect_timeout_s)
        except Exception as exc:
            self._connection_errors += 1
            # Whatever stops a connection from being made (refused, the database dropped or
            # closed to connections, too many clients, a timeout) means the database is
            # unavailable to us now, not a bug in a query.
            neutral = translate(exc)
            if not isinstance(neutral, DatabaseUnavailable):
                neutral = DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}")
            self.outage.failed(neutral)
            raise neutral from exc
        finally:
            self._waiting -= int(queued)
        self._acquire_waits.observe(time.perf_counter() - asked)
        self.outage.succeeded()
        try:
            yield conn
        except Exception as exc:
            if is_connection_lost(exc):
                self._connection_errors += 1
                # Never hand a broken connection back to the pool (asyncpg may have detached
                # a closed one from its proxy already: then there is nothing to end).
                with suppress(asyncpg.InterfaceError):
                    conn.terminate()
            raise
        finally:
            # Release resets the session (rolls back an open transaction, drops LISTENs and
            # session advisory locks) and closes a broken connection, which the pool then
            # replaces on the next acquire: that is how the service recovers by itself.
            try:
                await pool.release(conn)
            except Exception as exc:  # a broken session: asyncpg closes it, the pool replaces it
                log.debug("releasing a PostgreSQL connection failed: %r", exc)

    # ---- writing -----------------------------------------------------------------------------

    async def write(self, work: WorkSource[T], *, operation: str | None = None) -> T:
        """Run a unit in its own transaction; retry serialization failures and deadlocks when
        ``work`` is a factory (up to ``max_retries`` times, with jittered backoff). A BEGIN
        that fails on a connection that died while idle is retried on the next connection,
        factory or not: nothing of the unit ran."""
        attempt = stale = 0
        name = operation or operation_name(work)
        unit = work() if callable(work) else work
        while True:
            try:
                return await self._write_once(unit, name)
            except _StaleConnection:
                stale += 1
                if stale > self.options.pool_size:
                    raise
            except SerializationConflict:
                if not callable(work) or attempt >= self.max_retries:
                    raise
                attempt += 1
                self._stats.retried += 1
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
                unit = work()

    async def _write_once(self, unit: Work[T], operation: str) -> T:
        channels: list[str] = []
        queued = time.perf_counter()
        async with self._write_slots, self._connection() as conn:
            began = time.perf_counter()
            self._stats.queue_wait.observe(began - queued)  # for a write slot, then a connection
            # BEGIN and COMMIT by hand, not through asyncpg's Transaction: the COMMIT travels
            # in one message with the statements the unit held back (pg_literals).
            await _begin(conn.execute("BEGIN"))
            self._stats.units += 1
            held = HeldBack()
            try:
                value = await _drive(conn, unit, channels, held)
                await conn.execute(held.take(then="COMMIT"))
                seconds = time.perf_counter() - began
                self._stats.observe_unit(operation, seconds)
                self._stats.transaction.observe(seconds)
            except BaseException as exc:
                self._stats.rolled_back += 1
                # Already failed, or the connection broke: release() resets or closes the
                # connection in every case, so a failed ROLLBACK changes nothing.
                with suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await conn.execute("ROLLBACK")
                if isinstance(exc, Exception):
                    raise translate(exc) from exc
                raise
        self._stats.committed += 1
        self._stats.largest_batch = 1
        self._stats.batch_size.observe(1)
        for channel in channels:
            self._generations[channel] = self._generations.get(channel, 0) + 1
        return value

    @property
    def writer_stats(self) -> WriterStats:
        return self._stats

    def pool_state(self) -> PoolState | None:
        pool = self._pool
        if pool is None:
            return None
        size = pool.get_size()
        return PoolState(
            size,
            size - pool.get_idle_size(),
            self._waiting,
            self._acquire_waits,
            errors=self._connection_errors,
            retries=self._stats.retried,
        )

    def reads_by_operation(self) -> dict[str, Distribution]:
        return dict(self._reads)

    # ---- reading -----------------------------------------------------------------------------

    async def fetchall(
        self, sql: str, params: Params = (), *, operation: str | None = None
    ) -> list[Row]:
        """One query on a pooled connection. A connection that died while idle in the pool
        (the server restarted) is dropped and the query retried on the next one: every idle
        connection may be dead, so up to pool size + 1 tries (a dead one fails at once)."""
        self.reads_started += 1
        name = operation or caller_operation()
        statement = to_dollar_params(sql)
        tries = self.options.pool_size + 1
        for attempt in range(1, tries + 1):
            try:
                async with self._connection() as conn:
                    sent = time.perf_counter()
                    rows = await conn.fetch(statement, *params)
                    observe_in(self._reads, name, time.perf_counter() - sent)
                return [tuple(r) for r in rows]
            except DatabaseUnavailable:
                raise
            except Exception as exc:
                if attempt < tries and is_connection_lost(exc):
                    continue
                raise translate(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(self, work: Work[T]) -> T:
        """Statement by statement on one connection, in a read-only transaction (one snapshot
        per statement is enough for our reads; a transaction keeps them on one connection).
        A BEGIN on a connection that died while idle is retried on the next one."""
        for _ in range(self.options.pool_size):
            with suppress(_StaleConnection):
                return await self._read_once(work)
        return await self._read_once(work)

    async def _read_once(self, work: Work[T]) -> T:
        name = unit_operation(work)  # before it runs: a finished generator has no frame
        async with self._connection() as conn:
            sent = time.perf_counter()
            tx = conn.transaction(readonly=True, isolation="read_committed")
            await _begin(tx.start())
            try:
                value = await _drive(conn, work, None)
                await tx.commit()
                observe_in(self._reads, name, time.perf_counter() - sent)
                return value
            except BaseException as exc:
                with suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await tx.rollback()
                if isinstance(exc, Exception):
                    raise translate(exc) from exc
                raise

    async def table_exists(self, name: str) -> bool:
        row = await self.fetchone(
            "SELECT to_regclass(?) IS NOT NULL", (name,), operation="db.table_exists"
        )
        return bool(row and row[0])

    async def refresh_statistics(self, tables: Sequence[str]) -> None:
        for table in tables:  # names from code, never from input
            await self.run_outside_transaction(f"ANALYZE {table}")

    async def run_outside_transaction(self, sql: str) -> None:
        async with self._connection() as conn:
            try:
                await conn.execute(sql)  # no parameters: the simple protocol, no transaction
            except Exception as exc:
                raise translate(exc) from exc

    # ---- change notifications ----------------------------------------------------------------

    def change_marker(self, channel: str) -> int:
        if not self._listening:
            self._unlistened += 1
            return -self._unlistened  # never equal twice: nothing keyed on it is trusted
        return self._generations.get(channel, 0)

    def _cache_generation(self) -> int:
        return self.transactions_committed + sum(self._generations.values())

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._generations[payload] = self._generations.get(payload, 0) + 1

    async def _listen_forever(self) -> None:
        """Keep one LISTEN connection; reconnect after PostgreSQL comes back."""
        while self._open:
            try:
                conn = await asyncpg.connect(self.url.dsn, timeout=self.options.connect_timeout_s)
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                conn.add_termination_listener(lambda _c: self._mark_unlistened())
                self._listener = conn
                # Everything may have changed while nobody listened.
                for channel in self._generations:
                    self._generations[channel] += 1
                self._listening = True
                self._listener_ready.set()
                while self._open and not conn.is_closed():
                    await asyncio.sleep(LISTENER_RETRY_S)
                    await conn.execute("SELECT 1")  # notices a dead socket sooner
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._listening:
                    self.outage.failed(f"lost the change listener: {translate(exc)}")
            self._mark_unlistened()
            await self._drop_listener()
            await asyncio.sleep(LISTENER_RETRY_S)

    def _mark_unlistened(self) -> None:
        self._listening = False

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        self._listening = False
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()

    async def engine_version(self) -> str:
        row = await self.fetchone("SHOW server_version", operation="db.engine_version")
        return f"PostgreSQL {row[0] if row else 'unknown'}"

    # ---- cross-process coordination ----------------------------------------------------------

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Hold a session advisory lock named ``name`` while the block runs, if it is free.

        Yields False (without waiting) when another session holds it. The lock lives as long
        as the connection that took it, so that connection is held, unused, for the block: a
        process that dies releases it with its connection.
        """
        async with self._connection() as conn:
            try:
                got = await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", name)
            except Exception as exc:
                raise translate(exc) from exc
            try:
                yield bool(got)
            finally:
                if got and not conn.is_closed():
                    try:
                        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", name)
                    except BaseException:
                        # The pool does not reset sessions (_keep_session): a connection
                        # that may still hold the lock must not go back to it.
                        conn.terminate()
                        raise


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What the pool does to a connection coming back, instead of asyncpg's reset query
    (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``): nothing.

    That query was one more round trip after every unit of work (1-2 % of a backend's time
    in the soak) to undo session state BobGen never leaves behind: statements run inside
    transactions (an open one is still rolled back by asyncpg before this), LISTEN has a
    connection of its own, settings are per connection at connect, and ``exclusive``
    unlocks its advisory lock itself or terminates the connection.
    """


async def _drive(
    conn: asyncpg.Connection,
    work: Work[T],
    channels: list[str] | None,
    held: HeldBack | None = None,
) -> T:
    """Run a unit of work to its end on ``conn``, awaiting each statement. ``channels`` is
    None for a read (which may not notify or executemany). With ``held``, statements the unit
    does not wait for are kept there, to go with the next one or with the COMMIT."""
    literals_ok = held is not None and conn.get_settings().standard_conforming_strings == "on"

    async def run(step: Step) -> Result:
        if channels is None:
            step = read_only(step)
        if isinstance(step, Notify):
            assert channels is not None
            channels.append(step.channel)
            step = Statement("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, step.channel), later=True)
        if step.only not in (None, POSTGRESQL):
            return Result()
        sql, returns_rows = _prepared(step.sql)
        if held is not None:
            if step.later and literals_ok and not step.many:
                text = inline(sql, cast(Sequence[Any], step.params))
                if text is not None:
                    held.hold(text)
                    return Result()
            if held:  # statements run in the order the unit yielded them
                try:
                    await conn.execute(held.take())
                except Exception as exc:
                    raise translate(exc) from exc
        try:
            if step.many:
                rows = cast(Iterable[Sequence[Any]], step.params)
                return Result([], await _execute_many(conn, sql, rows))
            if returns_rows:
                rows = await conn.fetch(sql, *step.params)
                return Result([tuple(r) for r in rows], len(rows))
            status = await conn.execute(sql, *step.params)
            return Result([], _rowcount(status))
        except Exception as exc:
            raise translate(exc) from exc

    return await drive_async(work, run)
