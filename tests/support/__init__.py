"""Helpers for tests that wait: one way to wait for an asynchronous effect, by polling it with a
deadline (never a fixed sleep), so a slow machine makes a test slower, not red."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from service.keys import SEEDER_KEY

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

POLL_S = 0.02


async def eventually(
    check: Callable[[], Awaitable[T] | T], timeout: float = 10.0, what: str = ""
) -> T:
    """Poll ``check`` (sync or async) until it returns something truthy; return that.
    Fails after ``timeout`` seconds, naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}: {result!r}"
        await asyncio.sleep(POLL_S)


def eventually_sync(check: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
    """:func:`eventually` for code outside an event loop (a server process, a file)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}: {result!r}"
        time.sleep(POLL_S)


async def wait_for_seed(app: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        await app[SEEDER_KEY].wait()


# The supervisor's metrics, with --workers only (an in-process app has none):
# tests/reliability/test_workers.py reads them from a real server.
WORKERS_ONLY_METRICS = {"bobgen_workers", "bobgen_worker_restarts_total"}
