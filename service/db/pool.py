"""A fixed pool of read connections with a lifecycle that cannot strand a waiter.

Modelled on asyncpg's ``Pool.close()``: closing first refuses new acquisitions, then wakes
every coroutine waiting for a connection with :class:`DatabaseClosed`, then waits (bounded)
for borrowed connections to come back, and only then closes them. The race this avoids: a
coroutine queued for a connection while the pool is torn down would otherwise wait forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from service.db.database import Distribution
from service.db.errors import DatabaseClosed

log = logging.getLogger(__name__)

C = TypeVar("C")


class ConnectionPool(Generic[C]):
    def __init__(self, close_connection: Callable[[C], Awaitable[None]]) -> None:
        self._close_connection = close_connection
        self._all: list[C] = []
        self._idle: deque[C] = deque()
        self._waiters: deque[asyncio.Future[C]] = deque()
        self._borrowed = 0
        self._returned = asyncio.Event()
        self._closing = False
        self.waits = Distribution()  # seconds, of the borrowers that had to queue

    def add(self, conn: C) -> None:
        self._all.append(conn)
        self._release(conn)

    @property
    def size(self) -> int:
        return len(self._all)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def in_use(self) -> int:
        return self._borrowed

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[C]:
        conn = await self.borrow()
        try:
            yield conn
        finally:
            self.give_back(conn)

    def give_back(self, conn: C) -> None:
        """Return a connection from :meth:`borrow` (exactly once)."""
        self._borrowed -= 1
        self._release(conn)

    async def borrow(self) -> C:
        """A connection to hand back with :meth:`give_back`; prefer :meth:`acquire`."""
        if self._closing:
            raise DatabaseClosed("database is closed")
        if self._idle:
            self._borrowed += 1
            return self._idle.popleft()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[C] = loop.create_future()
        self._waiters.append(waiter)
        queued = loop.time()
        try:
            conn = await waiter
            self.waits.observe(loop.time() - queued)
        except asyncio.CancelledError:
            # Handed a connection in the same tick as the cancellation: pass it on.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())
            raise
        self._borrowed += 1
        return conn

    def _release(self, conn: C) -> None:
        if not self._closing:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(conn)
                    return
        self._idle.append(conn)
        self._returned.set()

    async def close(self, timeout: float = 10.0) -> None:
        """Refuse new work, fail waiters, wait for borrowed connections, close them all."""
        self._closing = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(DatabaseClosed("database is closing"))
        deadline = asyncio.get_running_loop().time() + timeout
        while self._borrowed > 0:
            self._returned.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                log.warning("closing %d read connection(s) still in use", self._borrowed)
                break
            try:
                await asyncio.wait_for(self._returned.wait(), remaining)
            except TimeoutError:
                continue
        conns, self._all = self._all, []
        self._idle.clear()
        for conn in conns:
            try:
                await self._close_connection(conn)
            except Exception:  # pragma: no cover - closing is best effort
                log.exception("error while closing a connection")
