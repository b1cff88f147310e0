"""Real databases for tests on both backends: a SQLite file, or a fresh PostgreSQL database.

PostgreSQL is the server at ``BOBGEN_TEST_PG_DSN`` (default: postgres@127.0.0.1:5432, trust
auth). Every test gets a database of its own, prepared ahead of time by a background thread so
that it overlaps with the tests: a used database is emptied (``DROP SCHEMA public CASCADE``)
and migrated again rather than dropped, because every ``DROP DATABASE`` forces a checkpoint,
which on a slow disk took longer than the test. The handful of databases are dropped at the
end of the session. Without a server the
PostgreSQL cases are skipped with the reason, except in CI (``CI=true``), where a missing
server is a failure.
"""

from __future__ import annotations

import os
import queue
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from service.config import DEFAULT_MIGRATIONS_DIR
from service.db import DatabaseURL
from service.db.migrations import apply_migrations
from service.domain.auth import hash_token

BACKENDS = ("sqlite", "postgresql")
# For a test about SQLite itself (its file, pragmas, locks): say why where it is used.
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])

ADMIN_DSN = os.environ.get("BOBGEN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _with_dbname(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


class PgCluster:
    """The test server: hands out fresh migrated databases and drops used ones, both on a
    background thread."""

    READY = 3  # migrated databases kept waiting for the next tests

    def __init__(self, admin: psycopg.Connection):
        self.admin = admin
        self.prefix = f"bobgen_t{os.getpid()}_"
        self._ready: queue.Queue[DatabaseURL | BaseException] = queue.Queue()
        self._jobs: queue.Queue[str | None] = queue.Queue()  # "make", a name to drop, or None
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()
        for _ in range(self.READY):
            self._jobs.put("make")

    @classmethod
    def connect_or_skip(cls) -> PgCluster:
        try:
            admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=3)
        except psycopg.OperationalError as exc:
            reason = f"PostgreSQL is not reachable at {ADMIN_DSN}: {exc}".splitlines()[0]
            if IN_CI:
                pytest.fail(f"CI must test on PostgreSQL too: {reason}")
            pytest.skip(reason)
        return cls(admin)

    def url(self, name: str) -> DatabaseURL:
        return DatabaseURL.parse(_with_dbname(ADMIN_DSN, name))

    def create(self, *, migrated: bool) -> DatabaseURL:
        if not migrated:
            return self._create(self.admin)
        self._jobs.put("make")  # a replacement for the one taken now
        ready = self._ready.get(timeout=120)
        if isinstance(ready, BaseException):
            raise ready
        return ready

    def drop(self, url: DatabaseURL) -> None:
        """Done with ``url``: it will be emptied, migrated and handed to a later test."""
        self._jobs.put(url.redacted.rsplit("/", 1)[-1])

    def _create(self, conn: psycopg.Connection) -> DatabaseURL:
        name = f"{self.prefix}{uuid.uuid4().hex[:10]}"
        conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _work(self) -> None:
        used: list[str] = []
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            while (job := self._jobs.get()) is not None:
                if job != "make":
                    used.append(job)
                    continue
                try:
                    url = self._recycle(conn, used.pop()) if used else self._create(conn)
                    apply_migrations(url, DEFAULT_MIGRATIONS_DIR)
                    self._ready.put(url)
                except BaseException as exc:  # handed to the test that waits for it
                    self._ready.put(exc)

    def _recycle(self, admin: psycopg.Connection, name: str) -> DatabaseURL:
        """Empty a used database: end its sessions, then drop and recreate its schema."""
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        url = self.url(name)
        with psycopg.connect(url.dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        return url

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.join(timeout=60)
        rows = self.admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (self.prefix + "%",)
        ).fetchall()
        for (name,) in rows:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.close()


def sql(url: DatabaseURL, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement (``?`` placeholders) on the test database from outside the service,
    as an operator's shell would, and return its rows (committed at once)."""
    if url.path is not None:
        import sqlite3

        with sqlite3.connect(url.path, timeout=10) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
    with psycopg.connect(url.dsn, autocommit=True) as conn:
        if params:
            cursor = conn.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
        else:  # no parameters: a literal % (LIKE '%x%') stays as it is
            cursor = conn.execute(statement)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def plant_tokens(url: DatabaseURL, tokens: dict[str, tuple[str, str]]) -> None:
    """Store known tokens (hashed, as in production) in a migrated database."""
    for token, (user, scopes) in tokens.items():
        sql(
            url,
            'INSERT INTO auth_tokens ("user", name, token_hash, scopes, created_at) '
            "VALUES (?, 'test', ?, ?, '2026-01-01T00:00:00.000Z')",
            (user, hash_token(token), scopes),
        )


def wipe(url: DatabaseURL) -> None:
    """Make the database empty again (no tables, no migrations applied)."""
    if url.path is not None:
        url.path.unlink(missing_ok=True)
        return
    sql(url, "DROP SCHEMA public CASCADE")
    sql(url, "CREATE SCHEMA public")


def cli_db(url: DatabaseURL) -> str:
    """The ``--db`` value for ``url`` (test URLs carry no password)."""
    return str(url.path) if url.path is not None else url.dsn


@contextmanager
def write_lock_held_elsewhere(url: DatabaseURL, table: str = "status") -> Iterator[None]:
    """Another session (an operator's shell) holds the write lock until the block ends."""
    if url.path is not None:
        import sqlite3

        other = sqlite3.connect(url.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.rollback()
            other.close()
        return
    with psycopg.connect(url.dsn) as other:
        other.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            other.rollback()
