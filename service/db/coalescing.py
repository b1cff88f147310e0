"""Making one thread hop serve many requests: batching, single flight, and a commit-keyed cache.

Every read is a round trip to a reader thread (or a PostgreSQL query), and under load that hop
(GIL hand-over plus a wake-up of the event loop) costs far more than an indexed lookup. The
helpers here cut the number of hops per request without blocking the event loop and, except
for :class:`CommitCache`, without caching anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from functools import partial
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")

FetchMany = Callable[[Sequence[K]], Awaitable[dict[K, V]]]


class BatchedLookup(Generic[K, V]):
    """``await lookup.get(key)`` -> the value for ``key`` or ``None``, batched with its peers.

    Keys asked for while a fetch is in flight wait for it, then go together as one
    ``WHERE key IN (...)`` query.
    """

    def __init__(self, fetch_many: FetchMany[K, V], *, max_batch: int = 256, concurrency: int = 1):
        self._fetch_many = fetch_many
        self._max_batch = max_batch
        self._pending: dict[K, list[asyncio.Future[V | None]]] = {}
        self._slots = concurrency
        self._busy = 0  # fetches in flight, inline or in drain tasks
        self._drains: set[asyncio.Task[None]] = set()  # strong refs: the loop keeps weak ones

    async def get(self, key: K) -> V | None:
        if self._busy < self._slots and not self._pending:
            # A free slot and nobody queued: fetch in the caller's own task. A lone client
            # then pays no task creation and no extra wake-up of the event loop.
            self._busy += 1
            try:
                found = await self._fetch_many([key])
            finally:
                self._busy -= 1
                self._start_drains()  # keys that queued up meanwhile
            return found.get(key)
        fut: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(fut)
        self._start_drains()
        return await fut

    def _start_drains(self) -> None:
        while self._pending and self._busy < self._slots:
            self._busy += 1
            task = asyncio.get_running_loop().create_task(self._drain())
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)

    async def _drain(self) -> None:
        """Fetch pending keys until none are left; new arrivals ride along on the next query."""
        try:
            while self._pending:
                keys = list(self._pending)[: self._max_batch]
                waiters = {k: self._pending.pop(k) for k in keys}
                try:
                    found = await self._fetch_many(keys)
                except BaseException as exc:
                    for futs in waiters.values():
                        for f in futs:
                            if f.done():
                                continue
                            if isinstance(exc, asyncio.CancelledError):
                                f.cancel()
                            else:
                                f.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for k, futs in waiters.items():
                    value = found.get(k)
                    for f in futs:
                        if not f.done():
                            f.set_result(value)
        finally:
            self._busy -= 1


class SingleFlight(Generic[T]):
    """Identical reads that overlap in time share one execution and its result.

    A hot URL (the first page of a list) asked for by many clients at once then costs one
    query per thread hop instead of one per client. Nothing is cached: a call that starts after
    the shared one finished runs a fresh query, so results are never staler than the read itself.
    Callers must treat the shared result as read-only.
    """

    def __init__(self) -> None:
        self._in_flight: dict[Hashable, asyncio.Future[T]] = {}

    def running(self, key: Hashable) -> bool:
        """Whether a call for ``key`` is under way (one may then choose not to join it)."""
        return key in self._in_flight

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        shared = self._in_flight.get(key)
        while shared is not None:
            try:
                # Shielded: a follower going away must not cancel the leader's query.
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                if not shared.cancelled():
                    raise  # this follower was cancelled
                # The leader was cancelled (its client went away): lead a new attempt.
                shared = self._in_flight.get(key)
        # The first caller runs the query itself (no task to create: cheaper on the hot path)
        # and hands its result to whoever joined meanwhile.
        shared = asyncio.get_running_loop().create_future()
        self._in_flight[key] = shared
        try:
            result = await compute()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                shared.cancel()
            else:
                shared.set_exception(exc)
                shared.exception()  # marks it retrieved: no warning when nobody joined
            raise
        finally:
            if self._in_flight.get(key) is shared:
                del self._in_flight[key]
        shared.set_result(result)
        return result


class CommitCache(Generic[T]):
    """Values derived from the database, valid until this process commits again.

    ``generation`` must grow with every commit of this process. ``max_age_s`` bounds how long a
    value may be served when *other* processes write to the same database, which this process
    cannot see commit. Concurrent misses of one key share one computation: under a steady
    stream of commits every cached value goes stale often, and without this each waiting
    request would run its own ``count(*)`` at once (the soak of 2026-11-25 collapsed so).

    ``full_every_s`` is how long a value may be carried forward by ``refresh`` before it is
    computed afresh. Left at ``max_age_s``, a refresh only follows this process's commits. A
    backend whose refresh also sees other processes' writes (SQLite: rowids are assigned under
    the one write lock, in commit order) sets it longer, so that the full ``count(*)`` (a walk
    of the whole index, 15 ms at 250,000 rows, holding one of two readers) runs once a minute
    instead of every two seconds; it then bounds only what a refresh cannot see (deletions).

    ``confirm_first_s``: a key's first value is computed afresh once more this many seconds
    later, with the first as its ``previous``. PostgreSQL sets it to ``ids_settle_s``: a first
    count cannot know which lower ids were still in flight, a second one ``ids_settle_s``
    later can (see ``status.Tally``). It is a full computation, so it runs once, as every full
    one does; checking the first value from inside ``refresh`` instead made every commit during
    that check start its own (a walk of the whole table per commit: the PostgreSQL soak of
    2026-11-30 slowed from minute 8 on, as the table grew).
    """

    def __init__(
        self,
        generation: Callable[[], int],
        *,
        max_age_s: float = 2.0,
        full_every_s: float | None = None,
        confirm_first_s: float = 0.0,
        max_entries: int = 256,
    ):
        self._generation = generation
        self._max_age_s = max_age_s
        self._full_every_s = max(max_age_s, full_every_s or 0.0)
        self._confirm_first_s = confirm_first_s
        self._max_entries = max_entries
        # key -> (generation, when a full compute is next due, time of the last fill, value)
        self._entries: dict[Hashable, tuple[int, float, float, T]] = {}
        self._flights: SingleFlight[T] = SingleFlight()

    async def get(
        self,
        key: Hashable,
        compute: Callable[[T | None], Awaitable[T]],
        refresh: Callable[[T], Awaitable[T]] | None = None,
    ) -> T:
        """The value for ``key``: cached, brought up to date, or computed afresh.

        ``compute(previous)`` computes the value afresh; ``previous`` is the value it replaces
        (``None`` for the first), for what stays true of it (``status.Tally``: the id below
        which rows have settled). ``refresh(old)``, when given, updates a value this process's
        commits made stale more cheaply (a count plus the rows added since); the entry keeps
        when its next full ``compute`` is due, so ``full_every_s`` still bounds what a refresh
        cannot see (deletions; other processes' commits unless the backend's refresh sees them).
        """
        generation, now = self._generation(), time.monotonic()
        entry = self._entries.get(key)
        if entry is None or refresh is None:
            if entry is not None and entry[0] == generation and now - entry[2] < self._max_age_s:
                return entry[3]
            previous = entry[3] if entry is not None else None
            # Joiners of a computation that started at this generation get its value; one that
            # started before a newer commit is not joined (it may miss that commit).
            fill = partial(self._fill, key, partial(compute, previous), previous is None)
            return await self._flights.run((key, generation), fill)
        # Once the full computation is due, one request runs it; the others go on refreshing
        # meanwhile. Joining it by generation, as above, let every commit during a 20 ms
        # count(*) start another (the PostgreSQL soak of 2026-11-30: up to a quarter of one
        # backend's time went to overlapping full counts of one key).
        full_key = (key, "full")
        if now >= entry[1] and not self._flights.running(full_key):
            full = partial(self._fill, key, partial(compute, entry[3]), False)
            return await self._flights.run(full_key, full)
        if entry[0] == generation and now - entry[2] < self._max_age_s:
            return entry[3]
        update = partial(self._fill, key, partial(refresh, entry[3]), False, entry[1])
        return await self._flights.run((key, generation), update)

    async def _fill(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[T]],
        first: bool,
        full_due: float | None = None,
    ) -> T:
        generation, now = self._generation(), time.monotonic()
        value = await compute()
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        if full_due is None:  # a full computation
            wait = self._confirm_first_s if first and self._confirm_first_s > 0 else None
            full_due = now + (self._full_every_s if wait is None else wait)
        elif (current := self._entries.get(key)) is not None:
            # A full computation that landed while this refresh ran makes the entry fresh; a
            # refresh based on the older one must not make it due again at once.
            full_due = max(full_due, current[1])
        self._entries[key] = (generation, full_due, now, value)
        return value
