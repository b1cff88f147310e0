"""Shared fixtures: every test gets its own real SQLite file under tmp_path."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.auth import hash_token
from service.config import DEFAULT_MIGRATIONS_DIR, Config
from service.db.migrations import apply_migrations
from service.db.sqlite import SqliteDatabase
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


# Known tokens, planted in each test database before the app starts (so no initial admin token
# is generated). Only their hashes are stored, as in production.
ADMIN_TOKEN = "bgt_test-admin"
WRITER_TOKEN = "bgt_test-writer"
READER_TOKEN = "bgt_test-reader"
TEST_TOKENS = {
    ADMIN_TOKEN: ("ops", "read,write,admin"),
    WRITER_TOKEN: ("ci-bot", "read,write"),
    READER_TOKEN: ("dashboard", "read"),
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def plant_tokens(db_path: Path) -> None:
    apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR)
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            'INSERT INTO auth_tokens ("user", name, token_hash, scopes, created_at) '
            "VALUES (?, 'test', ?, ?, '2026-01-01T00:00:00.000Z')",
            [(user, hash_token(tok), scopes) for tok, (user, scopes) in TEST_TOKENS.items()],
        )


@pytest.fixture
async def db(db_path: Path):
    """An open Database on a freshly migrated file."""
    apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR)
    database = SqliteDatabase(db_path, read_connections=2, busy_timeout_ms=1234)
    await database.open()
    yield database
    await database.close()


@pytest.fixture
def planted_db(db_path: Path) -> Path:
    plant_tokens(db_path)
    return db_path


@pytest.fixture
async def make_client(aiohttp_client: Any, make_config: Callable[..., Config], planted_db: Path):
    """Build an app on the test database; the client sends the admin token unless told not to."""

    async def factory(*, token: str | None = ADMIN_TOKEN, **overrides: Any) -> TestClient:
        headers = bearer(token) if token else {}
        return await aiohttp_client(create_app(make_config(**overrides)), headers=headers)

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
