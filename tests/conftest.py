"""Shared fixtures: every test gets its own real database.

API tests run on both backends: the ``backend`` fixture is parametrized, and ``db_url`` is a
SQLite file under tmp_path or a fresh PostgreSQL database (see tests/backends.py). A test that
is about the SQLite file itself says so with ``@sqlite_only`` (and why, in a comment).
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.config import DEFAULT_MIGRATIONS_DIR, Config
from service.db import Database, DatabaseOptions, DatabaseURL, connect
from service.db.migrations import apply_migrations
from service.db.postgres import PostgresDatabase  # noqa: F401  # see below
from service.timeutil import Clock
from tests.backends import BACKENDS, PgCluster
from tests.support import wait_for_seed
from tests.support.auth import ADMIN_TOKEN, bearer, plant_test_tokens
from tests.support.deployed import Deployed, install
from tests.support.leaks import leaks, record_logs

# service.db.postgres is imported here, at the top of the stack, rather than first by connect()
# deep inside a fixture's event loop: pytest rewrites the modules of the service.testing
# plugin's package as it imports them, and CPython 3.11.7's ast.parse fails there now and then
# with "AST constructor recursion depth mismatch" (CPython's, not ours: seen once in CI).

# Servers the tests start stop at once on SIGTERM: the drain (--shutdown-grace-s, default 5 s)
# is tested where it is the subject (tests/test_shutdown.py), not paid by every other test.
os.environ.setdefault("BOBGEN_SHUTDOWN_GRACE_S", "0")


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own folder: files a server writes relative to its working
    directory (a PostgreSQL database's initial admin token file) stay out of the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "bobgen.db"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster.connect_or_skip()
    yield cluster
    cluster.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(request: pytest.FixtureRequest, backend: str, db_path: Path) -> Iterator[DatabaseURL]:
    """A database of the test's backend: a SQLite path (no file yet) or a PostgreSQL database
    (already migrated: made ahead of time, see tests/backends.py; ``wipe`` empties it)."""
    if backend == "sqlite":
        yield DatabaseURL.sqlite(db_path)
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    url = cluster.create(migrated=True)
    yield url
    cluster.drop(url)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[DatabaseURL]:
    """An empty PostgreSQL database, for tests about the PostgreSQL backend alone."""
    url = pg_cluster.create(migrated=False)
    yield url
    pg_cluster.drop(url)


@pytest.fixture
def make_config(db_url: DatabaseURL) -> Callable[..., Config]:
    def factory(**overrides: Any) -> Config:
        base = Config(db=db_url, seed_rows=0, port=0, log_level="WARNING", seed_batch_size=250)
        return dataclasses.replace(base, **overrides)

    return factory


@pytest.fixture
async def db(db_url: DatabaseURL) -> AsyncIterator[Database]:
    """An open Database on a freshly migrated database of the test's backend."""
    apply_migrations(db_url, DEFAULT_MIGRATIONS_DIR)
    database = connect(db_url, DatabaseOptions(read_connections=2, busy_timeout_ms=1234))
    await database.open()
    yield database
    await database.close()


@pytest.fixture
def planted_db(db_url: DatabaseURL) -> DatabaseURL:
    return plant_test_tokens(db_url)


@pytest.fixture
async def make_client(
    planted_db: DatabaseURL, make_config: Callable[..., Config], aiohttp_client: Any
):
    """Build an app on the test database; the client sends the admin token unless told not to.

    The database fixtures come first so that they are torn down last: the apps close (and
    stop their background tasks) before a PostgreSQL test database is recycled under them.
    """

    async def factory(
        *, token: str | None = ADMIN_TOKEN, clock: Clock | None = None, **overrides: Any
    ) -> TestClient:
        headers = bearer(token) if token else {}
        app = create_app(make_config(**overrides), clock=clock)
        return await aiohttp_client(app, headers=headers)

    return factory


@pytest.fixture
async def client(make_client: Any) -> TestClient:
    return await make_client()


@pytest.fixture
async def seeded_client(make_client: Any) -> TestClient:
    """A client whose database holds 1,000 deterministic seed rows."""
    client = await make_client(seed_rows=1000)
    await wait_for_seed(client.app)
    return client


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp folder other users can enter (tmp_path's parents are private to root): for a
    server run as a non-root user. Removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="bobgen-shared-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _deployed_once(shared: Path) -> Deployed:
    """Install once for the whole run: the first process to take the lock installs, the
    others read what it recorded."""
    with (shared / "deployed.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = shared / "deployed.json"
        if record.exists():
            return Deployed.from_json(record.read_text())
        installed = install()
        record.write_text(installed.to_json())
        return installed


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the ~20 s install in the background as soon as the run is known to need it, so
    the tests that use it do not wait for it (they come a fifth of the way in)."""
    if any("deployed" in getattr(item, "fixturenames", ()) for item in items):
        shared = config._tmp_path_factory.getbasetemp().parent  # type: ignore[attr-defined]
        threading.Thread(target=_deployed_once, args=(shared,), daemon=True).start()


@pytest.fixture(scope="session")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    """The wheel installed in a fresh venv, runnable as a non-root user (tests/support):
    built once per run, shared by the xdist workers (their basetemps share a parent)."""
    return _deployed_once(tmp_path_factory.getbasetemp().parent)


# ---- skips in CI ----------------------------------------------------------------------------
# In CI (CI=true) every tool a test needs is installed by .ci/run (PostgreSQL, promtool,
# Chromium, pg_dump) and the run is root, so a skip means a test did not run that should
# have: the run fails, naming it, unless its reason matches one of these (none today).
ALLOWED_CI_SKIPS: tuple[str, ...] = ()
_SKIPPED: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        _SKIPPED.append((report.nodeid, reason))


def pytest_sessionstart(session: pytest.Session) -> None:
    record_logs(session.config._tmp_path_factory.getbasetemp())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return  # the controller of an xdist run sees every report and every worker's folder
    # Every log the run wrote, searched for the tokens and passwords the tests use.
    leaked = leaks(session.config._tmp_path_factory.getbasetemp())
    if leaked:
        print(f"\n{len(leaked)} log line(s) hold a secret:", *leaked[:20], sep="\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if os.environ.get("CI", "") not in ("true", "1"):
        return  # outside CI a skip is fine
    unexpected = [
        (node, reason)
        for node, reason in _SKIPPED
        if not any(re.search(allowed, reason) for allowed in ALLOWED_CI_SKIPS)
    ]
    if unexpected:
        for node, reason in unexpected:
            print(f"\nunexpected skip in CI: {node}: {reason}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
