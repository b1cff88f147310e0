"""Fault injection needs real processes: a ``bobgen serve`` we can SIGKILL, starve of disk,
point at a corrupted file, or flood with slow and idle clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.auth import plant_test_tokens
from tests.support.server import Server


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[Any]:
    """Servers on fresh, token-planted database files; all stopped at the end."""
    servers: list[Server] = []

    async def factory(*args: str, db_path: Path | None = None, start: bool = True) -> Server:
        path = db_path or tmp_path / "data" / "bobgen.db"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            plant_test_tokens(path)
        server = Server(path, list(args))
        servers.append(server)
        if start:
            await server.start()
        return server

    yield factory
    for server in servers:
        await server.stop()
