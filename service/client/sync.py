"""A small blocking wrapper for scripts: :class:`BobGenSync` runs :class:`BobGen` on an event
loop of its own, so a script without asyncio calls the same groups and methods without
``await``, and a paged list comes back as a plain iterator that fetches the next page when it
needs it. The async client is the product (docs/client.md); in async code use it: this one
refuses to run inside a running event loop (it would block it).

    with BobGenSync("http://127.0.0.1:8080", token) as bobgen:
        bobgen.status.create(uptime=99.9, version="1.2.0", latency=12, error_rate=0)
        for idea in bobgen.projects("p1").ideas.list(status="open"):
            ...
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

from service.client.api import BobGen
from service.client.transport import Retries

T = TypeVar("T")


class BobGenSync:
    """:class:`BobGen` with every method blocking; the same arguments, answers and errors."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: Retries | None = None,
    ) -> None:
        if _loop_running():
            raise RuntimeError(
                "BobGenSync cannot be used inside a running event loop (it would block it): "
                "await the async BobGen there"
            )
        self._runner = asyncio.Runner()
        # Made on the runner's loop: its HTTP session belongs to that loop, for every call.
        self._client = self._runner.run(_open(base_url, token, timeout_s, retries))

    def __getattr__(self, name: str) -> Any:
        return _blocking(getattr(self._client, name), self._runner)

    def close(self) -> None:
        try:
            self._runner.run(self._client.close())
        finally:
            self._runner.close()

    def __enter__(self) -> BobGenSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _open(
    base_url: str | None, token: str | None, timeout_s: float, retries: Retries | None
) -> BobGen:
    return BobGen(base_url, token, timeout_s=timeout_s, retries=retries)


class _Blocking:
    """A group of the async client (``status``, ``projects("p1").ideas``...), blocking."""

    def __init__(self, group: Any, runner: asyncio.Runner) -> None:
        self._group, self._runner = group, runner

    def __getattr__(self, name: str) -> Any:
        return _blocking(getattr(self._group, name), self._runner)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _answer(self._group(*args, **kwargs), self._runner)


def _blocking(value: Any, runner: asyncio.Runner) -> Any:
    if inspect.iscoroutinefunction(value):

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            return runner.run(value(*args, **kwargs))

        return call
    if inspect.ismethod(value):  # returns a pager or a sub-group: wrap what it returns

        @functools.wraps(value)
        def call_plain(*args: Any, **kwargs: Any) -> Any:
            return _answer(value(*args, **kwargs), runner)

        return call_plain
    if _is_group(value):
        return _Blocking(value, runner)
    return value


def _answer(value: Any, runner: asyncio.Runner) -> Any:
    if isinstance(value, AsyncIterator):
        return _pages(value, runner)
    if _is_group(value):
        return _Blocking(value, runner)
    return value


def _is_group(value: Any) -> bool:
    return type(value).__module__ == "service.client.api"


def _pages(items: AsyncIterator[T], runner: asyncio.Runner) -> Iterator[T]:
    """Each item as the async pager yields it, a page fetched when the last one runs out."""

    done = object()

    async def step() -> T | object:
        try:
            return await anext(items)
        except StopAsyncIteration:
            return done  # not raised through the loop: a task cannot end with it

    while (item := runner.run(step())) is not done:
        yield item  # type: ignore[misc]
