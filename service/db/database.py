"""The backend interface every repository uses, whichever database runs underneath.

Two implementations: :class:`~service.db.sqlite.SqliteDatabase` (one file, a group-committing
writer thread and a pool of readers) and :class:`~service.db.postgres.PostgresDatabase` (an
asyncpg pool on a server that several BobGen processes may share). Code above ``service/db/``
sees only this class, the units of work of :mod:`service.db.work` and the neutral errors of
:mod:`service.db.errors`: SQL is written once, with ``?`` placeholders, and each backend adapts
it (placeholder style, the few statements that differ: see :mod:`service.db.work`).

Lifecycle, for both: ``open()`` -> ``write()``/``read()``/``fetchall()``* -> ``close()`` (or
``async with``). ``close()`` refuses new work, fails waiters with :class:`DatabaseClosed`,
waits (bounded) for what is in flight, then closes every connection.
"""

from __future__ import annotations

import asyncio
import sys
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from service.db.coalescing import BatchedLookup, CommitCache, FetchMany, SingleFlight
from service.db.errors import DatabaseError, DatabaseUnavailable
from service.db.outage import OutageLog
from service.db.search import PerBackend
from service.db.url import DatabaseURL
from service.db.work import Work

T = TypeVar("T")
Params = Sequence[Any]
Row = tuple[Any, ...]
WorkSource = Work[T] | Callable[[], Work[T]]
"""A unit of work, or a function making one: only the latter can be retried after a
serialization failure or deadlock (a generator cannot be rewound)."""


# Bucket bounds of the database's distributions: seconds from 0.1 ms, and batch sizes.
SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_SIZES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)


class Distribution:
    """A histogram kept by the database layer without a metrics library (service/metrics.py
    exposes it): a count per bucket and a sum. Written from one thread (the writer's, or the
    event loop's), read at scrape time; a scrape may see one observation half-counted."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = SECONDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @classmethod
    def merged(cls, parts: list[Distribution]) -> Distribution:
        """The sum of distributions kept one per thread (so that no two threads write one)."""
        merged = cls(parts[0].bounds if parts else SECONDS)
        for part in parts:
            merged.counts = [a + b for a, b in zip(merged.counts, part.counts, strict=True)]
            merged.total += part.total
        return merged


def caller_operation(depth: int = 2) -> str:
    """The read's name for metrics when it was not named: the function ``depth`` frames up
    (2: the caller of the function calling this), as ``module.function``
    (``status.fetch_page``). Bounded by the code, as :func:`operation_name`; about 0.3 us."""
    return _frame_operation(sys._getframe(depth))


def unit_operation(work: Any) -> str:
    """A read unit's name for metrics, as :func:`caller_operation` names a query: the
    generator function's (``sessions.require``)."""
    frame = getattr(work, "gi_frame", None)
    return _frame_operation(frame) if frame is not None else operation_name(work)


def _frame_operation(frame: Any) -> str:
    package = str(frame.f_globals.get("__name__", ""))
    if package.startswith("asyncio"):  # a read that is a task's first step: no caller to name
        return "unnamed"
    module = package.rsplit(".", 1)[-1]
    function = frame.f_code.co_qualname.split(".<locals>", 1)[0].lstrip("_")
    return f"{module}.{function}" if module else function


def observe_in(by_name: dict[str, Distribution], name: str, seconds: float) -> None:
    """Add ``seconds`` to the distribution for ``name`` in ``by_name`` (one writer thread)."""
    found = by_name.get(name)
    if found is None:
        found = by_name[name] = Distribution()
    found.observe(seconds)


def operation_name(source: Any) -> str:
    """A unit of work's name for metrics: its function, without where it was defined
    (``create_run.<locals>.work`` -> ``create_run``). Bounded by the code, never by data."""
    func = getattr(source, "func", source)  # a functools.partial
    name = getattr(func, "__qualname__", None) or type(func).__name__
    return str(name).split(".<locals>", 1)[0]


@dataclass(slots=True)
class PoolState:
    """Connections for reads (SQLite's readers) or for everything (PostgreSQL's pool)."""

    size: int  # connections open
    in_use: int
    waiting: int  # callers queued for a connection now
    waits: Distribution  # how long callers that had to queue waited
    errors: int = 0  # connections that could not be made or broke (PostgreSQL)
    retries: int = 0  # units re-run after a serialization failure or deadlock


@dataclass(slots=True)
class CheckpointStats:
    """SQLite's background WAL checkpoints: how long each took and how far it got."""

    seconds: Distribution = field(default_factory=Distribution)
    complete: int = 0  # the whole WAL copied into the database
    partial: int = 0  # readers pinned part of it (or the writer appended meanwhile)
    failed: int = 0


@dataclass(slots=True)
class WriterStats:
    """What the metrics collector reads of the write path (written from one place each)."""

    committed: int = 0  # transactions
    rolled_back: int = 0  # transactions
    units: int = 0  # units of work that ran (committed or not)
    largest_batch: int = 0
    retried: int = 0  # units re-run after a serialization failure or deadlock
    queue_wait: Distribution = field(default_factory=Distribution)  # submit -> its BEGIN
    batch_size: Distribution = field(default_factory=lambda: Distribution(BATCH_SIZES))
    transaction: Distribution = field(default_factory=Distribution)  # BEGIN -> COMMIT done
    units_by_operation: dict[str, Distribution] = field(default_factory=dict)

    def observe_unit(self, operation: str, seconds: float) -> None:
        observe_in(self.units_by_operation, operation, seconds)


@dataclass(frozen=True, slots=True)
class DatabaseOptions:
    """Tuning shared by both backends' constructors (each ignores what does not apply)."""

    read_connections: int = 2
    busy_timeout_ms: int = 5000
    max_batch: int = 64
    max_batch_wait_ms: float = 0.0
    close_timeout_s: float = 10.0
    pool_size: int = 10
    command_timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    statement_cache_size: int = 100


class Database(ABC):
    """What repositories, handlers and the CLI may do with a database."""

    url: DatabaseURL
    #: Seconds a value in :attr:`derived` may be served after another *process* committed.
    cross_process_staleness_s: float = 2.0
    #: Seconds a value in :attr:`derived` may be carried forward by its refresh (rows past the
    #: largest id counted) before it is computed afresh; ``None``: only this process's commits
    #: are refreshed, other processes' are caught by a full recompute within the staleness.
    derived_full_recompute_s: float | None = None
    #: Seconds after which every transaction that took an id up to the largest one seen then
    #: has ended (0: ids become visible in the order they were taken). A count carried
    #: forward past the largest id it saw (``status.count``) trusts what lies below an id
    #: only once it is this old; the full recount bounds the rare longer transaction.
    ids_settle_s: float = 0.0

    def __init__(self, url: DatabaseURL, concurrency: int) -> None:
        self.url = url
        self.outage = OutageLog()  # one log line when the database goes, one when it is back
        self._concurrency = concurrency
        self._lookups: dict[Callable[..., Any], BatchedLookup[Any, Any]] = {}
        self.reads_started = 0  # borrowings of a connection: tests prove caches save them
        self.shared_reads: SingleFlight[Any] = SingleFlight()
        self.derived: CommitCache[Any] = CommitCache(
            self._cache_generation,
            max_age_s=self.cross_process_staleness_s,
            full_every_s=self.derived_full_recompute_s,
            confirm_first_s=self.ids_settle_s,
        )

    # ---- lifecycle ---------------------------------------------------------------------------

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    @abstractmethod
    def is_open(self) -> bool: ...

    @property
    def backend(self) -> str:
        return self.url.backend

    # ---- writing -----------------------------------------------------------------------------

    @abstractmethod
    async def write(self, work: WorkSource[T], *, operation: str | None = None) -> T:
        """Run a unit of work in a write transaction; return once its COMMIT succeeded.

        A unit that raises is rolled back (alone) and its exception raised here.
        ``operation`` names it in the metrics (default: :func:`operation_name` of ``work``).
        """

    @property
    @abstractmethod
    def writer_stats(self) -> WriterStats: ...

    def pool_state(self) -> PoolState | None:
        """The connection pool now, for the metrics."""
        return None

    def checkpoint_stats(self) -> CheckpointStats | None:
        """SQLite's checkpoints, for the metrics (None on PostgreSQL)."""
        return None

    @property
    def transactions_committed(self) -> int:
        return self.writer_stats.committed

    @property
    def transactions_rolled_back(self) -> int:
        return self.writer_stats.rolled_back

    # ---- reading -----------------------------------------------------------------------------

    @abstractmethod
    async def fetchall(
        self, sql: str, params: Params = (), *, operation: str | None = None
    ) -> list[Row]:
        """Rows of one read query (``?`` placeholders), as tuples.

        ``operation`` names the read in ``bobgen_db_read_seconds``; by default the calling
        function's name (``page``, ``fetch_by_ids``, ...)."""

    async def fetch_per_backend(self, query: PerBackend) -> list[Row]:
        """Rows of a query written once per backend (full-text search: service/db/search.py)."""
        sql, params = query.for_backend(self.backend)
        return await self.fetchall(sql, params, operation=caller_operation())

    async def fetchone(
        self, sql: str, params: Params = (), *, operation: str | None = None
    ) -> Row | None:
        rows = await self.fetchall(sql, params, operation=operation or caller_operation())
        return rows[0] if rows else None

    @abstractmethod
    async def read(self, work: Work[T]) -> T:
        """Run a read-only unit of work (no writes, no notify) outside any write transaction;
        in ``bobgen_db_read_seconds`` under the unit's name (as writes are)."""

    @abstractmethod
    def reads_by_operation(self) -> dict[str, Distribution]:
        """How long reads took, by operation (for /metrics; a copy, safe to iterate)."""

    def lookup(
        self, fetch_many: Callable[[Database, Sequence[Any]], Awaitable[dict[Any, Any]]]
    ) -> BatchedLookup[Any, Any]:
        """The batched point-read helper for ``fetch_many(db, keys)``, built once per function
        (pass a module-level function: the look-up is keyed by it, and a new closure per call
        would build a new batcher each time)."""
        found = self._lookups.get(fetch_many)
        if found is None:
            bound: FetchMany[Any, Any] = partial(fetch_many, self)
            found = BatchedLookup(bound, concurrency=self._concurrency)
            self._lookups[fetch_many] = found
        return found

    @abstractmethod
    async def table_exists(self, name: str) -> bool: ...

    async def run_outside_transaction(self, sql: str) -> None:
        """A maintenance statement that must not run in a transaction (``VACUUM``)."""
        raise NotImplementedError(f"{self.backend} runs maintenance through its own tools")

    async def refresh_statistics(self, tables: Sequence[str]) -> None:
        """Tell the query planner about a bulk load into ``tables`` (the seed, an import).

        SQLite: nothing (BobGen's queries follow their indexes without statistics, and
        ``sqlite_stat1`` could change plans under load). PostgreSQL overrides this with
        ``ANALYZE``, which autovacuum does some time later, or never where it is off: without
        statistics its planner guesses, and guessed a table scan per commit (issue 17).
        """
        return None

    @abstractmethod
    async def engine_version(self) -> str:
        """The database engine and its version (``SQLite 3.40.1``, ``PostgreSQL 15.19``)."""

    async def check(self, sql: str = "SELECT 1", timeout: float = 2.0) -> Row | None:
        """Run a query for a health check and turn any failure into :class:`DatabaseUnavailable`.
        Probes run it: it is also what tells :attr:`outage` that an outage began or ended."""
        try:
            row = await asyncio.wait_for(self.fetchone(sql, operation="db.check"), timeout)
        except DatabaseUnavailable as exc:
            self.outage.failed(exc)
            raise
        except (DatabaseError, OSError, ValueError, TimeoutError) as exc:
            neutral = DatabaseUnavailable(f"{type(exc).__name__}: {exc}")
            self.outage.failed(neutral)
            raise neutral from exc
        self.outage.succeeded()
        return row

    # ---- change notifications (see work.notify) ----------------------------------------------

    @abstractmethod
    def change_marker(self, channel: str) -> int:
        """A number that grows after any commit that notified ``channel`` (this process's at
        once, other processes' within the backend's bound). Free to check on every request."""

    def _cache_generation(self) -> int:
        return self.transactions_committed

    # ---- cross-process coordination ----------------------------------------------------------

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Whether this process may do the one-at-a-time job ``name`` (the seed, a scheduled
        backup) now, held for the block: yields False, without waiting, while another process
        on the same database holds it. SQLite: a ``flock`` on a file beside the database;
        PostgreSQL: a session advisory lock. This default (one process) always may.
        """
        yield True

    # ---- background work and files -----------------------------------------------------------

    def background_tasks(self) -> list[Callable[[], Any]]:
        """Coroutine functions every serving process runs beside requests while the database
        is open."""
        return []

    def maintenance_tasks(self, checkpoint_interval_s: float) -> list[Callable[[], Any]]:
        """Coroutine functions that one process of a server runs (of its ``--workers``, the
        one holding the ``maintenance`` role): SQLite's WAL checkpoints."""
        return []

    def file_sizes(self) -> dict[str, int] | None:
        """Sizes of the database's files, when it has files of its own (SQLite)."""
        return None
