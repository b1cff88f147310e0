"""Coalescing of concurrent point reads into one query per thread hop.

Every aiosqlite call costs a round trip to the connection's thread, and under load that hop
(GIL hand-over plus a wake-up of the event loop) costs far more than an indexed lookup. So
lookups that arrive while one is in flight wait for it to finish and then go together as one
``WHERE key IN (...)`` query: one hop serves many requests and the event loop never blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

FetchMany = Callable[[Sequence[K]], Awaitable[dict[K, V]]]


class BatchedLookup(Generic[K, V]):
    """``await lookup.get(key)`` -> the value for ``key`` or ``None``, batched with its peers."""

    def __init__(self, fetch_many: FetchMany[K, V], *, max_batch: int = 256, concurrency: int = 1):
        self._fetch_many = fetch_many
        self._max_batch = max_batch
        self._pending: dict[K, list[asyncio.Future[V | None]]] = {}
        self._slots = concurrency
        self._in_flight = 0

    async def get(self, key: K) -> V | None:
        fut: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(fut)
        if self._in_flight < self._slots:
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        """Fetch pending keys until none are left; new arrivals ride along on the next query."""
        try:
            while self._pending:
                keys = list(self._pending)[: self._max_batch]
                waiters = {k: self._pending.pop(k) for k in keys}
                try:
                    found = await self._fetch_many(keys)
                except Exception as exc:
                    for futs in waiters.values():
                        for f in futs:
                            if not f.done():
                                f.set_exception(exc)
                    continue
                for k, futs in waiters.items():
                    value = found.get(k)
                    for f in futs:
                        if not f.done():
                            f.set_result(value)
        finally:
            self._in_flight -= 1


T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Identical reads that overlap in time share one execution and its result.

    A hot URL (the first page of a list) asked for by many clients at once then costs one
    query per thread hop instead of one per client. Nothing is cached: a call that starts after
    the shared one finished runs a fresh query, so results are never staler than the read itself.
    Callers must treat the shared result as read-only.
    """

    def __init__(self) -> None:
        self._in_flight: dict[Hashable, asyncio.Future[T]] = {}

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        shared = self._in_flight.get(key)
        if shared is None:
            shared = asyncio.ensure_future(compute())
            self._in_flight[key] = shared
            shared.add_done_callback(lambda _: self._in_flight.pop(key, None))
        # Shielded: one caller going away (client disconnect) must not cancel the others' query.
        return await asyncio.shield(shared)
