"""The SQLite read path: a few threads, each with its own read-only connection, taking reads
from one queue.

What this replaced, and why: a pool of aiosqlite connections handed out by the event loop. A
connection given back by one request reached the next only after two or three turns of the
loop (the result's callback, the give-back, the waiter's wake-up and its submit to the
connection's thread), and under load each turn runs many requests' Python. The readers then
sat idle between queries while requests queued for them: the tail of the soak
(docs/performance.md, "The soak's stall, found") was requests waiting for a reader that was
free. Here a reader thread that finishes a read takes the next one from the queue at once; the
event loop only submits reads and receives results, so how fast reads are served no longer
depends on how busy the loop is.

Lifecycle, as the writer's (:mod:`service.db.sqlite_writer`): ``start`` -> ``submit``* ->
``close``. Closing refuses new reads, fails those still queued with :class:`DatabaseClosed`
(nobody is left waiting), lets the ones running finish for a bounded time, then interrupts
them and closes the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from service.db.database import Distribution, PoolState, observe_in
from service.db.errors import DatabaseClosed
from service.db.sqlite_errors import translate

log = logging.getLogger(__name__)

T = TypeVar("T")

ReadFunction = Callable[[sqlite3.Connection], T]

_STOP = object()


@dataclass(slots=True)
class _Read:
    run: ReadFunction[Any]
    future: asyncio.Future[Any]
    operation: str
    queued_at: float  # time.perf_counter() at submit


class _Reader:
    """One thread and its connection, with what it measured (written by that thread only)."""

    __slots__ = ("busy", "conn", "ran", "thread", "waits")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.thread: threading.Thread | None = None
        self.busy = False
        self.waits = Distribution()  # submit -> picked up by this thread
        self.ran: dict[str, Distribution] = {}  # by operation: picked up -> result handed back


class ReaderThreads:
    """``size`` reader threads serving reads in the order they were submitted."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], size: int) -> None:
        self._connect = connect
        self.size = max(1, size)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._readers: list[_Reader] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False

    async def start(self) -> None:
        """Open every connection (on the event loop's default executor, not the loop), then
        start the threads. Raises what opening raised, with nothing left open."""
        self._loop = asyncio.get_running_loop()
        conns: list[sqlite3.Connection] = []
        try:
            for _ in range(self.size):
                conns.append(await asyncio.to_thread(self._connect))
        except BaseException:
            for conn in conns:
                conn.close()
            raise
        for index, conn in enumerate(conns):
            reader = _Reader(conn)
            reader.thread = threading.Thread(
                target=self._main, args=(reader,), name=f"bobgen-reader-{index}", daemon=True
            )
            self._readers.append(reader)
            reader.thread.start()
        self._accepting = True

    def submit(self, run: ReadFunction[T], operation: str = "read") -> asyncio.Future[T]:
        """Queue ``run(connection)`` for the next free reader; the future gets its result, or
        the neutral error (:mod:`service.db.errors`) for what SQLite raised."""
        if not self._accepting or self._loop is None:
            raise DatabaseClosed("database is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Read(run, future, operation, time.perf_counter()))
        return future

    def state(self) -> PoolState:
        """For /metrics: readers open and busy, reads queued, and how long reads waited."""
        return PoolState(
            size=len(self._readers),
            in_use=sum(reader.busy for reader in self._readers),
            waiting=self._queue.qsize(),
            waits=Distribution.merged([reader.waits for reader in self._readers]),
        )

    def reads_by_operation(self) -> dict[str, Distribution]:
        """How long reads held a reader thread, by operation, summed over the threads."""
        names = {name for reader in self._readers for name in list(reader.ran)}
        return {
            name: Distribution.merged(
                [reader.ran[name] for reader in self._readers if name in reader.ran]
            )
            for name in names
        }

    async def close(self, timeout: float = 10.0) -> None:
        """Refuse new reads, fail queued ones, wait (bounded) for running ones, close.

        The race to avoid: a read submitted just before close must either run or fail with
        :class:`DatabaseClosed`, never wait forever. Submissions stop first; what is queued
        then is failed here at once, and a read a thread took meanwhile is failed by that
        thread (it checks ``_accepting`` before running anything).
        """
        self._accepting = False
        while True:  # fail what is queued now, rather than after the running reads
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                _settle(job.future, DatabaseClosed("database is closing"), True)
        if not self._readers:
            return
        for _ in self._readers:
            self._queue.put(_STOP)
        deadline = time.monotonic() + timeout
        for reader in self._readers:
            interrupted = False
            while reader.thread is not None and reader.thread.is_alive():
                if time.monotonic() > deadline:
                    if interrupted:  # pragma: no cover - a statement ignoring interrupt()
                        log.warning("a read ignored interrupt(); leaving its thread behind")
                        break
                    log.warning("interrupting a read still running at close")
                    reader.conn.interrupt()
                    interrupted, deadline = True, time.monotonic() + 1.0
                await asyncio.sleep(0.005)
        for reader in self._readers:
            if reader.thread is None or not reader.thread.is_alive():
                reader.conn.close()  # (a connection still in use is left to its thread)
        self._readers = []

    # ---- the reader threads ----------------------------------------------------------------

    def _main(self, me: _Reader) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            picked = time.perf_counter()
            if not self._accepting:
                self._hand_back(job, DatabaseClosed("database is closing"), failed=True)
                continue
            if job.future.done():  # its caller gave up (cancelled) while it was queued
                continue
            me.busy = True
            me.waits.observe(picked - job.queued_at)
            try:
                value = job.run(me.conn)
            except Exception as exc:  # what SQLite raised, neutral; or a bug, as it is
                self._hand_back(job, translate(exc), failed=True)
            else:
                self._hand_back(job, value, failed=False)
            finally:
                observe_in(me.ran, job.operation, time.perf_counter() - picked)
                me.busy = False

    def _hand_back(self, job: _Read, value: Any, *, failed: bool) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            self._loop.call_soon_threadsafe(_settle, job.future, value, failed)


def _settle(future: asyncio.Future[Any], value: Any, failed: bool) -> None:
    if future.done():  # cancelled while the read ran
        return
    if failed:
        future.set_exception(value)
    else:
        future.set_result(value)
