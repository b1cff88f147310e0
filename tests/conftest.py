"""Shared fixtures: every test gets its own real SQLite file under tmp_path."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.config import Config
from service.keys import SEEDER_KEY

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "bobgen.db"


@pytest.fixture
def make_config(db_path: Path) -> Callable[..., Config]:
    def factory(**overrides: Any) -> Config:
        base = Config(db=db_path, seed_rows=0, port=0, log_level="WARNING", seed_batch_size=250)
        return dataclasses.replace(base, **overrides)

    return factory


@pytest.fixture
async def make_client(aiohttp_client: Any, make_config: Callable[..., Config]):
    async def factory(**overrides: Any) -> TestClient:
        return await aiohttp_client(create_app(make_config(**overrides)))

    return factory


@pytest.fixture
async def client(make_client: Any) -> TestClient:
    return await make_client()


async def wait_for_seed(app: web.Application, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        await app[SEEDER_KEY].wait()


@pytest.fixture
async def seeded_client(make_client: Any) -> TestClient:
    """A client whose database holds 1,000 deterministic seed rows."""
    client = await make_client(seed_rows=1000)
    await wait_for_seed(client.app)
    return client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
