"""pytest fixtures for services that consume BobGen: test against the real thing, in-process.

Installed with the package and registered as a pytest plugin (entry point ``pytest11``), so a
consumer's tests can ask for:

* ``bobgen`` — a running BobGen app on a fresh SQLite file under the test's ``tmp_path``
  (migrated, no seed), as a :class:`BobGen` with an authenticated ``client``, the
  ``admin_token`` and ``make_token(scopes)`` for tokens with fewer rights;
* ``bobgen_client`` — that client (an ``aiohttp.test_utils.TestClient`` sending the admin
  token), ``bobgen_admin_token`` — the token itself, ``bobgen_url`` — the server's base URL
  (it listens on a real port: your own HTTP clients can use it);
* ``bobgen_config`` — the :class:`~service.config.Config` it starts with: override this
  fixture to change settings.

Async fixtures need pytest-asyncio (``asyncio_mode = auto`` or ``@pytest.mark.asyncio``);
docs/testing-with-bobgen.md has a complete example.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from service.config import Config
from service.db import DatabaseURL, connect
from service.db.migrations import apply_migrations
from service.domain.auth import Scope, parse_scopes
from service.keys import DB_KEY
from service.tokens import create_token

try:
    from pytest_asyncio import fixture as async_fixture

    HAS_PYTEST_ASYNCIO = True
except ImportError:  # the plugin loads anyway; its fixture then says what is missing
    HAS_PYTEST_ASYNCIO = False

MISSING_PYTEST_ASYNCIO = (
    "the bobgen fixtures need pytest-asyncio: pip install pytest-asyncio "
    "(or bobgen[testing]), and set asyncio_mode = auto"
)
ADMIN_SCOPES = frozenset({Scope.READ, Scope.WRITE, Scope.ADMIN})


@dataclass
class BobGen:
    """A BobGen app serving one test."""

    app: web.Application
    client: TestClient[web.Request, web.Application]  # sends the admin token
    admin_token: str
    db: DatabaseURL

    @property
    def url(self) -> str:
        """The server's base URL (``http://127.0.0.1:<port>``), for your own HTTP clients."""
        return str(self.client.make_url("")).rstrip("/")

    async def make_token(self, scopes: str = "read", user: str = "pytest") -> str:
        """A new token with ``scopes`` (comma-separated: read, write, admin)."""
        token, _ = await create_token(
            self.app[DB_KEY], user=user, name="pytest", scopes=parse_scopes(scopes), actor="pytest"
        )
        return token


@pytest.fixture
def bobgen_config(tmp_path: Path) -> Config:
    """The settings of the ``bobgen`` fixture: a SQLite file under tmp_path, no seed."""
    return Config(
        db=DatabaseURL.sqlite(tmp_path / "bobgen" / "bobgen.db"),
        seed_rows=0,
        port=0,
        log_level="WARNING",
    )


async def _admin_token(url: DatabaseURL) -> str:
    """Migrate the database and create an admin token in it, before the app starts (so the
    app creates no initial token file)."""
    if url.path is not None:
        url.path.parent.mkdir(parents=True, exist_ok=True)
    apply_migrations(url, Config().migrations_dir)
    db = connect(url)
    await db.open()
    try:
        token, _ = await create_token(
            db, user="pytest-admin", name="pytest admin", scopes=ADMIN_SCOPES, actor="pytest"
        )
    finally:
        await db.close()
    return token


if HAS_PYTEST_ASYNCIO:

    @async_fixture
    async def bobgen(bobgen_config: Config) -> AsyncIterator[BobGen]:
        token = await _admin_token(bobgen_config.db)
        app = create_app(bobgen_config)
        client = TestClient(TestServer(app), headers={"Authorization": f"Bearer {token}"})
        await client.start_server()
        try:
            yield BobGen(app, client, token, bobgen_config.db)
        finally:
            await client.close()

else:

    @pytest.fixture
    def bobgen(bobgen_config: Config) -> BobGen:
        # Without pytest-asyncio an async fixture fails with pytest's generic message, which
        # does not say what is missing: say it, in one line, before that can happen.
        pytest.fail(MISSING_PYTEST_ASYNCIO, pytrace=False)


@pytest.fixture
def bobgen_client(bobgen: BobGen) -> TestClient[web.Request, web.Application]:
    return bobgen.client


@pytest.fixture
def bobgen_admin_token(bobgen: BobGen) -> str:
    return bobgen.admin_token


@pytest.fixture
def bobgen_url(bobgen: BobGen) -> str:
    return bobgen.url
