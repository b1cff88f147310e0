"""The embedded SQLite database: one writer connection and a small pool of readers.

SQLite allows one writer at a time. Funnelling every write through a single connection,
guarded by an asyncio lock and opened with ``BEGIN IMMEDIATE``, means writers queue in the
event loop instead of fighting over the file lock (which is what produces
"database is locked"). Readers use their own connections: in WAL mode they never block the
writer and never see half a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from service.db.coalescing import BatchedLookup, CommitCache, FetchMany, SingleFlight

log = logging.getLogger(__name__)

Params = Sequence[Any] | dict[str, Any]
Row = tuple[Any, ...]

JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
# Checkpoints normally run from a background task (see run_checkpoints). The writer's own
# automatic checkpoint only remains as a safety net, at ~40 MiB of WAL instead of ~4 MiB.
WRITER_AUTOCHECKPOINT_PAGES = 10_000
MMAP_SIZE_BYTES = 256 * 1024 * 1024


class DatabaseUnavailable(RuntimeError):
    """The database could not be queried (missing file, broken schema, I/O error, closed)."""


class DatabaseBusy(DatabaseUnavailable):
    """Another process held SQLite's write lock for longer than ``busy_timeout``."""


class Database:
    """Owns every connection to one SQLite file and closes them all in :meth:`close`."""

    def __init__(self, path: Path, *, read_connections: int = 2, busy_timeout_ms: int = 5000):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._read_count = read_connections
        self._writer: aiosqlite.Connection | None = None
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all_readers: list[aiosqlite.Connection] = []
        self._checkpointer: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._lookups: dict[str, BatchedLookup[Any, Any]] = {}
        self.shared_reads: SingleFlight[Any] = SingleFlight()
        self.derived: CommitCache[Any] = CommitCache(lambda: self.transactions_committed)
        self.write_wait_seconds_total = 0.0
        self.transactions_committed = 0
        self.transactions_rolled_back = 0

    async def open(self) -> None:
        """Open the writer first (it sets WAL mode on the file), then the readers."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await self._connect(readonly=False)
            await self._writer.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}")
            self._checkpointer = await self._connect(readonly=False)
            for _ in range(self._read_count):
                conn = await self._connect(readonly=True)
                self._all_readers.append(conn)
                self._readers.put_nowait(conn)
        except BaseException:
            await self.close()
            raise
        log.debug("opened %s with %d reader(s)", self.path, self._read_count)

    async def _connect(self, *, readonly: bool) -> aiosqlite.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so sqlite3 must not.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await conn.executescript(self._pragmas(readonly=readonly))
            await self._enable_wal(conn)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _enable_wal(self, conn: aiosqlite.Connection) -> None:
        """Switch the file to WAL (a no-op once it is), retrying while others hold locks.

        Switching needs an exclusive lock, and SQLite does not run the busy handler for that
        upgrade (to avoid deadlocks), so ``busy_timeout`` alone does not cover a second
        process migrating or seeding the same file at that moment: retry until it would have.
        """
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                await conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.02)

    def _pragmas(self, *, readonly: bool) -> str:
        pragmas = [
            f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}",
            "PRAGMA synchronous = NORMAL",
            "PRAGMA foreign_keys = ON",
            f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}",
            f"PRAGMA mmap_size = {MMAP_SIZE_BYTES}",
            "PRAGMA temp_store = MEMORY",
        ]
        if readonly:
            # A reader that tries to write is a bug: make it fail loudly instead of
            # silently competing with the writer for the file lock.
            pragmas.append("PRAGMA query_only = ON")
        return ";\n".join(pragmas) + ";"

    async def close(self) -> None:
        """Close every connection. aiosqlite threads keep the process alive until closed."""
        conns = [c for c in (*self._all_readers, self._checkpointer, self._writer) if c]
        self._all_readers.clear()
        self._readers = asyncio.Queue()
        self._writer = self._checkpointer = None
        for conn in conns:
            try:
                await conn.close()
            except Exception:  # pragma: no cover - closing is best effort
                log.exception("error while closing a connection")

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Yield the writer connection inside ``BEGIN IMMEDIATE`` ... ``COMMIT``.

        The lock is held from BEGIN to COMMIT because coroutines sharing one connection
        share its transaction: without it, one coroutine's ROLLBACK would undo another's work.
        """
        if self._writer is None:
            raise DatabaseUnavailable("database is closed")
        started = time.perf_counter()
        async with self._write_lock:
            self.write_wait_seconds_total += time.perf_counter() - started
            conn = self._writer
            try:
                try:
                    await conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    # Only another process can hold the lock: our own writers queue above.
                    raise DatabaseBusy(f"could not start a write transaction: {exc}") from exc
                yield conn
            except BaseException:
                # Also reached when cancelled while BEGIN was still queued in the connection's
                # thread: the ROLLBACK queues behind it, so the writer never stays inside a
                # transaction. Shielded so a second cancellation cannot skip it.
                await asyncio.shield(_rollback(conn))
                self.transactions_rolled_back += 1
                raise
            try:
                await asyncio.shield(conn.execute("COMMIT"))
            except sqlite3.Error:
                await asyncio.shield(_rollback(conn))  # e.g. disk full: leave no open transaction
                self.transactions_rolled_back += 1
                raise
            self.transactions_committed += 1

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[aiosqlite.Connection]:
        """Borrow one read connection from the pool."""
        if self._writer is None:
            raise DatabaseUnavailable("database is closed")
        conn = await self._readers.get()
        try:
            yield conn
        finally:
            self._readers.put_nowait(conn)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one read query; one thread hop thanks to ``execute_fetchall``."""
        async with self.reader() as conn:
            return list(await conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    def lookup(self, name: str, fetch_many: FetchMany[Any, Any]) -> BatchedLookup[Any, Any]:
        """The batched point-read helper called ``name``, created on first use."""
        found = self._lookups.get(name)
        if found is None:
            found = self._lookups[name] = BatchedLookup(fetch_many, concurrency=self._read_count)
        return found

    async def check(self, sql: str = "SELECT 1", timeout: float = 2.0) -> Row | None:
        """Run a query for a health check and turn any failure into :class:`DatabaseUnavailable`."""
        try:
            return await asyncio.wait_for(self.fetchone(sql), timeout)
        except (sqlite3.Error, OSError, ValueError, TimeoutError) as exc:
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def checkpoint(self) -> tuple[int, int, int]:
        """A PASSIVE checkpoint on a connection of its own: it copies what it can from the WAL
        into the database without waiting for, or blocking, readers and the writer.

        Returns SQLite's (busy, frames in the WAL, frames checkpointed).
        """
        if self._checkpointer is None:
            raise DatabaseUnavailable("database is closed")
        rows = list(await self._checkpointer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)"))
        busy, frames, done = rows[0]
        return int(busy), int(frames), int(done)

    async def run_checkpoints(self, interval_s: float) -> None:
        """Checkpoint in the background, so commits never pay for it (they did: 10 ms p99)."""
        while True:
            await asyncio.sleep(interval_s)
            if self.file_sizes()["wal"] == 0:
                continue
            try:
                await self.checkpoint()
            except (sqlite3.Error, DatabaseUnavailable) as exc:
                log.warning("background checkpoint failed: %s", exc)

    def file_sizes(self) -> dict[str, int]:
        """Sizes of the database file and its WAL, read from the filesystem (no DB round trip)."""
        sizes = {}
        for suffix, name in (("", "db"), ("-wal", "wal")):
            try:
                sizes[name] = (self.path.parent / (self.path.name + suffix)).stat().st_size
            except OSError:
                sizes[name] = 0
        return sizes


async def _rollback(conn: aiosqlite.Connection) -> None:
    # OperationalError: no transaction was open (BEGIN failed), so nothing to undo.
    with contextlib.suppress(sqlite3.OperationalError):
        await conn.execute("ROLLBACK")
