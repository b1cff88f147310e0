"""The embedded SQLite database: one group-committing writer thread and reader threads.

SQLite allows one writer at a time. Every write is a unit of work (:mod:`service.db.work`)
handed to a single writer thread (:mod:`service.db.sqlite_writer`) that runs it from BEGIN to
COMMIT in one hop and commits concurrent units together. Writers therefore queue in memory
instead of fighting over the file lock (which is what produces "database is locked").
Reader threads (:mod:`service.db.sqlite_readers`) use their own connections: in WAL mode they
never block the writer and never see half a transaction.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from service.db.database import (
    CheckpointStats,
    Database,
    Distribution,
    Params,
    PoolState,
    Row,
    WorkSource,
    WriterStats,
    caller_operation,
    operation_name,
    unit_operation,
)
from service.db.errors import DatabaseClosed, DatabaseUnavailable
from service.db.sqlite_errors import translate
from service.db.sqlite_locks import WriteLock, hold_in_use_lock, job_lock, job_lock_path
from service.db.sqlite_readers import ReaderThreads
from service.db.sqlite_writer import GroupCommitWriter
from service.db.url import SQLITE, DatabaseURL
from service.db.work import Result, Step, Work, drive, read_only

log = logging.getLogger(__name__)

T = TypeVar("T")

JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
# Checkpoints normally run from a background task (see run_checkpoints). The writer's own
# automatic checkpoint only remains as a safety net, at ~40 MiB of WAL instead of ~4 MiB.
WRITER_AUTOCHECKPOINT_PAGES = 10_000
MMAP_SIZE_BYTES = 256 * 1024 * 1024
SLOW_CHECKPOINT_S = 1.0  # a background checkpoint slower than this is logged
SIGNAL_POLL_S = 0.1  # how soon another process's notify (a CLI token revoke) is seen


def create_private(path: Path) -> None:
    """Create the database file readable by its owner only (0600), if it is not there yet.
    SQLite gives its -wal and -shm files the mode of the database file, and the file holds
    token hashes. A failure is left for SQLite to report in its own words."""
    with suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class SqliteDatabase(Database):
    """Owns every connection to one SQLite file; :meth:`close` (or ``async with``) ends them."""

    # Rowids are assigned under the one write lock, so every process's inserts land past the
    # largest id a count has seen, where the cached count's refresh looks: only deletions
    # (which the API never makes of status rows) wait for the full recount.
    derived_full_recompute_s = 60.0

    def __init__(
        self,
        path: Path | DatabaseURL,
        *,
        read_connections: int = 2,
        busy_timeout_ms: int = 5000,
        max_batch: int = 64,
        max_batch_wait_ms: float = 0.0,
        close_timeout_s: float = 10.0,
    ):
        url = path if isinstance(path, DatabaseURL) else DatabaseURL.sqlite(Path(path))
        super().__init__(url, concurrency=read_connections)
        self.path = url.sqlite_path
        self.busy_timeout_ms = busy_timeout_ms
        self.close_timeout_s = close_timeout_s
        self._writer = GroupCommitWriter(
            self._connect_writer,
            max_batch=max_batch,
            max_wait_s=max_batch_wait_ms / 1000,
            after_commit=self._signal,
            write_lock=WriteLock(job_lock_path(self.path, "write"), busy_timeout_ms / 1000),
        )
        self._readers = ReaderThreads(self._connect_read_only, read_connections)
        self._checkpointer: aiosqlite.Connection | None = None
        self._in_use: int | None = None  # the descriptor holding <db>.lock shared
        self._checkpoints = CheckpointStats()
        self._open = False
        self._generations: dict[str, int] = {}
        self._watched: dict[str, tuple[int, int] | None] = {}  # channel -> signal file seen

    # ---- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Start the writer first (it sets WAL mode on the file), then the readers."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        create_private(self.path)
        self._in_use = hold_in_use_lock(self.path)
        try:
            await self._writer.start()
            self._checkpointer = await self._connect_checkpointer()
            await self._readers.start()
        except BaseException:
            await self.close()
            raise
        self._open = True
        log.debug("opened %s with %d reader(s)", self.path, self._readers.size)

    async def close(self) -> None:
        """Refuse new work, fail waiters, let in-flight work finish (bounded), close all.

        aiosqlite threads keep the process alive until closed, so everything is closed even
        when a step fails.
        """
        self._open = False
        await self._readers.close(self.close_timeout_s)
        await self._writer.close(self.close_timeout_s)
        if self._checkpointer is not None:
            await self._checkpointer.close()
            self._checkpointer = None
        if self._in_use is not None:
            os.close(self._in_use)  # after every connection: the database is free now
            self._in_use = None

    @property
    def is_open(self) -> bool:
        return self._open

    # ---- connections -------------------------------------------------------------------------

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

    def _connect_writer(self) -> sqlite3.Connection:
        """Runs on the writer thread. isolation_level=None: the writer issues BEGIN itself."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.executescript(self._pragmas(readonly=False))
            conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}")
            deadline = time.monotonic() + self.busy_timeout_ms / 1000
            while not _try_enable_wal(conn, deadline):
                time.sleep(0.02)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        """A reader thread's connection (any thread may open it: it is used by one at a time)."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.executescript(self._pragmas(readonly=True))
        except BaseException:
            conn.close()
            raise
        return conn

    async def _connect_checkpointer(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await conn.executescript(self._pragmas(readonly=False))
        except BaseException:
            await conn.close()
            raise
        return conn

    # ---- writing -----------------------------------------------------------------------------

    async def write(self, work: WorkSource[T], *, operation: str | None = None) -> T:
        """Run a unit of work in a write transaction; returns once its COMMIT succeeded.

        Concurrent calls share transactions (group commit), each in its own savepoint: a
        unit that raises rolls back alone, and its exception is raised here. (One writer:
        SQLite never reports a serialization failure, so nothing is retried.)
        """
        name = operation or operation_name(work)
        result: T = await self._writer.submit(work() if callable(work) else work, name)
        return result

    @property
    def writer_stats(self) -> WriterStats:
        return self._writer.stats

    @property
    def queued_writes(self) -> int:
        """Units waiting for the writer thread: what the next group commit will take."""
        return self._writer.queued

    @property
    def write_lock_waits(self) -> Distribution:
        """How long transactions waited for another process's writer (contended ones only)."""
        return self._writer.write_lock.waits

    # ---- change signals (see work.notify) ------------------------------------------------------

    def signal_path(self, channel: str) -> Path:
        return self.path.with_name(f"{self.path.name}.changed-{channel}")

    def _signal(self, channels: set[str]) -> None:
        """After a commit that notified ``channels`` (writer thread): bump this process's
        generation at once, and replace the channel's signal file so that other processes on
        this file (the CLI beside a server) notice within ``SIGNAL_POLL_S``."""
        for channel in channels:
            self._generations[channel] = self._generations.get(channel, 0) + 1
            path = self.signal_path(channel)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            try:
                tmp.write_text(f"{time.time_ns()}\n")
                os.replace(tmp, path)  # a new inode each time: no mtime-granularity blind spot
            except OSError as exc:
                log.warning("could not write the change signal %s: %s", path, exc)

    def change_marker(self, channel: str) -> int:
        """A number that grows after any commit that notified ``channel``: at once for this
        process's commits, within ``SIGNAL_POLL_S`` for other processes' (see
        :meth:`watch_signals`). A dict look-up: free to check on every request."""
        if channel not in self._watched:
            self._watched[channel] = self._signal_stamp(channel)
        return self._generations.get(channel, 0)

    def _signal_stamp(self, channel: str) -> tuple[int, int] | None:
        try:
            st = os.stat(self.signal_path(channel))
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    async def watch_signals(self, interval_s: float = SIGNAL_POLL_S) -> None:
        """Poll the signal files of the channels in use; bump a channel's generation when
        another process replaced its file. (A ``stat`` per request costs more than it seems:
        it releases the GIL, and taking it back waits for the writer thread.)"""
        while True:
            await asyncio.sleep(interval_s)
            for channel, seen in list(self._watched.items()):
                current = self._signal_stamp(channel)
                if current != seen:
                    self._generations[channel] = self._generations.get(channel, 0) + 1
                    self._watched[channel] = current

    # ---- reading -----------------------------------------------------------------------------

    async def fetchall(
        self, sql: str, params: Params = (), *, operation: str | None = None
    ) -> list[Row]:
        """Run one read query on the next free reader thread: the hottest path of every read."""
        if not self._open:
            raise DatabaseClosed("database is closed")
        self.reads_started += 1
        name = operation or caller_operation()
        return await self._readers.submit(partial(_fetchall, sql, params), name)

    async def read(self, work: Work[T]) -> T:
        """Run a read-only unit of work on one reader thread, from its first statement to its
        last (one hop, as a write), inside one read transaction: its statements see one
        snapshot of the database.

        The same units a write may ``yield from`` (a ``get`` by id, say) can be read here
        without a write transaction.
        """
        if not self._open:
            work.close()
            raise DatabaseClosed("database is closed")
        self.reads_started += 1
        return await self._readers.submit(partial(_read_unit, work), unit_operation(work))

    async def table_exists(self, name: str) -> bool:
        rows = await self.fetchall(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            (name,),
            operation="db.table_exists",
        )
        return bool(rows)

    async def engine_version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    async def check(self, sql: str = "SELECT 1", timeout: float = 2.0) -> Row | None:
        try:
            return await super().check(sql, timeout)
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def background_tasks(self) -> list[Callable[[], Any]]:
        return [self.watch_signals]

    def maintenance_tasks(self, checkpoint_interval_s: float) -> list[Callable[[], Any]]:
        return [partial(self.run_checkpoints, checkpoint_interval_s)]

    # ---- checkpoints and files ---------------------------------------------------------------

    async def checkpoint(self) -> tuple[int, int, int]:
        """A PASSIVE checkpoint on a connection of its own: it copies what it can from the WAL
        into the database without waiting for, or blocking, readers and the writer.

        Returns SQLite's (busy, frames in the WAL, frames checkpointed).
        """
        if self._checkpointer is None:
            raise DatabaseClosed("database is closed")
        try:
            rows = list(await self._checkpointer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)"))
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        busy, frames, done = rows[0]
        return int(busy), int(frames), int(done)

    async def run_checkpoints(self, interval_s: float) -> None:
        """Checkpoint in the background, so commits never pay for it (they did: 10 ms p99)."""
        while True:
            await asyncio.sleep(interval_s)
            if self.file_sizes()["wal"] == 0:
                continue
            started = time.perf_counter()
            try:
                _, frames, done = await self.checkpoint()
            except (sqlite3.Error, DatabaseUnavailable) as exc:
                self._checkpoints.failed += 1
                log.warning("background checkpoint failed: %s", exc)
                continue
            took = time.perf_counter() - started
            self._checkpoints.seconds.observe(took)
            if took > SLOW_CHECKPOINT_S:
                log.warning(
                    "slow checkpoint: %.2f s to copy %d of %d WAL frames into the database "
                    "(a disk slow to write or fsync; the WAL grows meanwhile)",
                    took,
                    done,
                    frames,
                )
            if done >= frames:
                self._checkpoints.complete += 1
            else:
                self._checkpoints.partial += 1

    def checkpoint_stats(self) -> CheckpointStats:
        return self._checkpoints

    def pool_state(self) -> PoolState:
        return self._readers.state()

    def reads_by_operation(self) -> dict[str, Distribution]:
        return self._readers.reads_by_operation()

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Whether this process may do the one-at-a-time job ``name`` now (see
        :func:`~service.db.sqlite_locks.job_lock`): of several processes on one file
        (instances, a server beside ``bobgen seed``) exactly one seeds or takes the scheduled
        backup; the others see its rows and wait, and one takes over when it dies."""
        with job_lock(self.path, name) as mine:
            yield mine

    def file_sizes(self) -> dict[str, int]:
        """Sizes of the database file and its WAL, read from the filesystem (no DB round trip)."""
        sizes = {}
        for suffix, name in (("", "db"), ("-wal", "wal")):
            try:
                sizes[name] = (self.path.parent / (self.path.name + suffix)).stat().st_size
            except OSError:
                sizes[name] = 0
        return sizes


def _try_enable_wal(conn: sqlite3.Connection, deadline: float) -> bool:
    """Switch the file to WAL (a no-op once it is); False while another process holds a lock.

    Switching needs an exclusive lock, and SQLite does not run the busy handler for that
    upgrade (to avoid deadlocks), so ``busy_timeout`` alone does not cover a second process
    migrating or seeding the same file at that moment: retry until it would have.
    """
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        return True
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) or time.monotonic() > deadline:
            raise
        return False


def _fetchall(sql: str, params: Params, conn: sqlite3.Connection) -> list[Row]:
    """On a reader thread."""
    return cast(list[Row], conn.execute(sql, params).fetchall())


def _read_unit(work: Work[T], conn: sqlite3.Connection) -> T:
    """On a reader thread: ``work`` inside BEGIN ... COMMIT (a read transaction: one snapshot
    for all its statements, released at once at the end, so it never pins the WAL for long)."""

    def run(step: Step) -> Result:
        statement = read_only(step)
        if statement.only not in (None, SQLITE):
            return Result()
        try:
            rows = conn.execute(statement.sql, cast(Params, statement.params)).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        return Result(cast(list[Row], rows), -1)

    conn.execute("BEGIN")
    try:
        return drive(work, run)
    finally:
        conn.execute("COMMIT")  # nothing to write: it only ends the snapshot
