"""The SQLite write path: one thread, one connection, units of work in group-committed batches.

Each unit of work (see :mod:`service.db.work`) runs on this thread from its first statement to
its last without returning to the event loop, so a write costs one thread hop, not one per
statement. Units that arrive while a transaction is being committed are run together in the
next one (group commit): ``BEGIN IMMEDIATE``, then each unit inside its own ``SAVEPOINT`` (a
failing unit rolls back only itself), then one ``COMMIT`` for all. A unit is acknowledged
only after the COMMIT that contains it succeeded; if that COMMIT fails, every unit in it fails.

Batching adds no latency to a lone writer: a batch is whatever queued up while the previous
one ran, and the optional wait for more (``max_wait_s``) applies only when the previous batch
held more than one unit, i.e. under concurrent load.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from service.db.database import WriterStats
from service.db.errors import DatabaseClosed, DatabaseUnavailable
from service.db.sqlite_errors import translate
from service.db.sqlite_locks import WriteLock
from service.db.url import SQLITE
from service.db.work import Notify, Result, Step, Work, drive

log = logging.getLogger(__name__)

# A write transaction slower than this is logged with where its time went: a p99 hides one
# stall among thousands of transactions a minute, yet every write queued behind it waits.
SLOW_TRANSACTION_S = 1.0

_STOP = object()


@dataclass(slots=True)
class _Job:
    work: Work[Any]
    future: asyncio.Future[Any]
    operation: str = "unnamed"
    queued_at: float = 0.0  # time.perf_counter() at submit


@dataclass(slots=True)
class _Outcome:
    job: _Job
    value: Any = None
    error: BaseException | None = None
    channels: tuple[str, ...] = ()


class GroupCommitWriter:
    """Owns the writer connection and its thread. Lifecycle: ``start`` -> ``submit``* ->
    ``close``; ``close`` refuses new work, lets queued work finish (bounded), then closes."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.0,
        after_commit: Callable[[set[str]], None] = lambda channels: None,
        write_lock: WriteLock,
    ) -> None:
        self._connect = connect
        self.write_lock = write_lock
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max_wait_s
        self._after_commit = after_commit
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._accepting = False
        self._abandon = False  # set when close() timed out: fail what is still queued
        self._last_batch = 0
        self.stats = WriterStats()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._stopped = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name="bobgen-writer", daemon=True
        )
        self._thread.start()
        await ready  # raises if the connection could not be opened
        self._accepting = True

    @property
    def queued(self) -> int:
        """Units waiting for the writer thread (approximate, as any queue size read)."""
        return self._queue.qsize()

    def submit(self, work: Work[Any], operation: str = "unnamed") -> asyncio.Future[Any]:
        """Queue ``work``; the future resolves after the COMMIT that contains it."""
        if not self._accepting or self._loop is None:
            work.close()
            raise DatabaseClosed("database is closed")
        future = self._loop.create_future()
        self._queue.put(_Job(work, future, operation, time.perf_counter()))
        return future

    async def close(self, timeout: float = 10.0) -> None:
        """Refuse new work, finish what is queued (for at most ``timeout`` s), then close.

        The race to avoid: a unit submitted just before close must either run and be
        acknowledged, or fail with :class:`DatabaseClosed` — never wait forever. Submissions
        stop before the stop marker is queued, so everything queued is ahead of it; what is
        still queued when the timeout passes is failed, and a statement still running is
        interrupted.
        """
        if self._thread is None or self._stopped is None:
            return
        self._accepting = False
        self._queue.put(_STOP)
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), timeout)
        except TimeoutError:
            log.warning("writer did not finish within %.1fs: abandoning queued writes", timeout)
            self._abandon = True
            if self._conn is not None:
                self._conn.interrupt()
            try:
                await asyncio.wait_for(asyncio.shield(self._stopped), 5.0)
            except TimeoutError:  # pragma: no cover - a statement ignoring interrupt()
                log.error("writer thread is stuck; leaving it behind")
        self._thread = None

    # ---- the writer thread ---------------------------------------------------------------

    def _main(self, ready: asyncio.Future[None]) -> None:
        assert self._loop is not None and self._stopped is not None
        loop = self._loop
        try:
            self._conn = self._connect()
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle_one, ready, None, translate(exc))
            loop.call_soon_threadsafe(_settle_one, self._stopped, None, None)
            return
        loop.call_soon_threadsafe(_settle_one, ready, None, None)
        try:
            while True:
                batch, stop = self._collect()
                if batch:
                    self._run_batch(self._conn, batch)
                if stop:
                    break
        finally:
            try:
                self._conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                log.exception("error while closing the writer connection")
            self._conn = None
            self.write_lock.close()
            loop.call_soon_threadsafe(_settle_one, self._stopped, None, None)

    def _collect(self) -> tuple[list[_Job], bool]:
        """The next batch: what is queued now, plus (under load) what arrives within
        ``max_wait_s``, up to ``max_batch`` units. Second item: the stop marker was seen."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch: list[_Job] = [first]
        deadline: float | None = None
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if self.max_wait_s <= 0 or self._last_batch <= 1:
                    break
                now = time.monotonic()
                deadline = deadline or now + self.max_wait_s
                if now >= deadline:
                    break
                try:
                    item = self._queue.get(timeout=deadline - now)
                except queue.Empty:
                    break
            if item is _STOP:
                return batch, True
            batch.append(item)
        self._last_batch = len(batch)
        return batch, False

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        if self._abandon:
            self._settle([_Outcome(j, error=DatabaseClosed("database closed")) for j in batch])
            return
        # Skip units whose caller is gone before they start (a cancelled request).
        pending = [job for job in batch if not job.future.done()]
        self.stats.largest_batch = max(self.stats.largest_batch, len(pending))
        now = time.perf_counter()
        for job in pending:
            self.stats.queue_wait.observe(now - job.queued_at)
        if pending:
            self.stats.batch_size.observe(len(pending))
        while pending:
            pending = self._run_transaction(conn, pending)

    def _run_transaction(self, conn: sqlite3.Connection, jobs: list[_Job]) -> list[_Job]:
        """Run ``jobs`` in one transaction, holding the cross-process write lock; returns the
        jobs left to run in a new one."""
        asked = time.perf_counter()
        try:
            self.write_lock.acquire()
        except sqlite3.Error as exc:
            error = translate(exc)
            self._settle([_Outcome(job, error=error) for job in jobs])
            return []
        try:
            return self._run_transaction_held(conn, jobs, asked)
        finally:
            self.write_lock.release()

    def _run_transaction_held(
        self, conn: sqlite3.Connection, jobs: list[_Job], asked: float
    ) -> list[_Job]:
        began = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            error = translate(exc)
            self._settle([_Outcome(job, error=error) for job in jobs])
            return []
        begun = time.perf_counter()
        done: list[_Outcome] = []
        isolate = len(jobs) > 1  # a lone unit needs no savepoint: ROLLBACK undoes it
        for index, job in enumerate(jobs):
            outcome = self._run_unit(conn, job, isolate)
            self.stats.units += 1
            if not conn.in_transaction:
                # SQLite itself rolled the transaction back (disk full, I/O error): the units
                # already run in it are undone too. Fail them with the cause, retry the rest.
                cause = outcome.error or DatabaseUnavailable("the transaction was aborted")
                self.stats.rolled_back += 1
                self._settle([_Outcome(o.job, error=cause) for o in [*done, outcome]])
                return jobs[index + 1 :]
            done.append(outcome)
        if not isolate and done[0].error is not None:
            _rollback(conn)
            self.stats.rolled_back += 1
            self._settle(done)
            return []
        committing = time.perf_counter()
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)  # e.g. disk full at commit: leave no transaction open
            self.stats.rolled_back += 1
            error = translate(exc)
            self._settle([_Outcome(o.job, error=o.error or error) for o in done])
            return []
        committed = time.perf_counter()
        self.stats.committed += 1
        self.stats.transaction.observe(committed - began)
        channels = {c for o in done if o.error is None for c in o.channels}
        if channels:
            try:
                self._after_commit(channels)
            except Exception:  # pragma: no cover - a listener must not fail the writes
                log.exception("after-commit listener failed")
        signalled = time.perf_counter()
        if signalled - asked > SLOW_TRANSACTION_S:
            log.warning(
                "slow write transaction: %.2f s for %d unit(s): write lock %.2f s, BEGIN "
                "%.2f s, units %.2f s, COMMIT %.2f s, change signals %.2f s (every write "
                "queued behind it waited)",
                signalled - asked,
                len(jobs),
                began - asked,
                begun - began,
                committing - begun,
                committed - committing,
                signalled - committed,
            )
        self._settle(done)
        return []

    def _run_unit(self, conn: sqlite3.Connection, job: _Job, isolate: bool) -> _Outcome:
        started = time.perf_counter()
        try:
            return self._run_unit_untimed(conn, job, isolate)
        finally:
            self.stats.observe_unit(job.operation, time.perf_counter() - started)

    def _run_unit_untimed(self, conn: sqlite3.Connection, job: _Job, isolate: bool) -> _Outcome:
        channels: list[str] = []
        try:
            if isolate:
                conn.execute("SAVEPOINT bobgen_unit")
            value = _drive(conn, job.work, channels)
        except BaseException as exc:
            if isolate and conn.in_transaction:
                try:
                    conn.execute("ROLLBACK TO bobgen_unit")
                    conn.execute("RELEASE bobgen_unit")
                except sqlite3.Error as undo_exc:
                    log.warning("could not roll back a unit's savepoint: %s", undo_exc)
            if isinstance(exc, sqlite3.Error):
                exc = translate(exc)
            return _Outcome(job, error=exc)
        if isolate:
            try:
                conn.execute("RELEASE bobgen_unit")
            except sqlite3.Error as exc:
                return _Outcome(job, error=translate(exc))
        return _Outcome(job, value=value, channels=tuple(channels))

    def _settle(self, outcomes: list[_Outcome]) -> None:
        """Hand results to the event loop in one wake-up for the whole batch."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_settle_all, outcomes)


def _drive(conn: sqlite3.Connection, work: Work[Any], channels: list[str]) -> Any:
    """Run a unit of work to its end on ``conn``, feeding each statement's result back in."""

    def run(step: Step) -> Result:
        if isinstance(step, Notify):
            channels.append(step.channel)
            return Result()
        if step.only not in (None, SQLITE):
            return Result()
        try:
            if step.many:
                cursor = conn.executemany(step.sql, step.params)
                return Result([], cursor.rowcount)
            cursor = conn.execute(step.sql, cast(Sequence[Any], step.params))
            return Result(cursor.fetchall(), cursor.rowcount)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    return drive(work, run)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # pragma: no cover - nothing more can be done
            log.warning("ROLLBACK failed: %s", exc)


def _settle_one(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _settle_all(outcomes: list[_Outcome]) -> None:
    for o in outcomes:
        _settle_one(o.job.future, o.value, o.error)
