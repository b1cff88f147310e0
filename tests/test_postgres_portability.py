"""The migrations must also run on PostgreSQL (the scale-out backend).

Needs the server on 127.0.0.1:5432 (override with BOBGEN_TEST_PG_DSN); skipped when absent.
"""

import os
import uuid

import pytest

from service.config import DEFAULT_MIGRATIONS_DIR
from service.db.migrations import apply_migrations, migration_state, rollback_migrations
from tests.helpers import ALL_MIGRATIONS

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (test extra)")

ADMIN_DSN = os.environ.get("BOBGEN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_database() -> str:
    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {ADMIN_DSN}: {exc}")
    name = f"bobgen_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
            yield f"{base}/{name}"
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def pg_tables(uri: str) -> set[str]:
    with psycopg.connect(uri.replace("+psycopg", "")) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def test_migrations_apply_and_roll_back_on_postgres(pg_database: str) -> None:
    applied = apply_migrations(pg_database, DEFAULT_MIGRATIONS_DIR)
    assert applied == ALL_MIGRATIONS
    assert {"status", "meta", "auth_tokens", "runs", "run_steps", "audit_log"} <= pg_tables(
        pg_database
    )
    assert migration_state(pg_database, DEFAULT_MIGRATIONS_DIR).pending == []
    with psycopg.connect(pg_database.replace("+psycopg", "")) as conn:
        conn.execute(
            "INSERT INTO status (id, uptime, version, latency, error_rate, created_at, updated_at)"
            " VALUES (1, 99.5, '1.0.0', 1.5, 0.01, '2026-01-01T00:00:00.000Z', "
            "'2026-01-01T00:00:00.000Z')"
        )
        assert conn.execute("SELECT uptime, blocks FROM status").fetchall() == [(99.5, 0)]
        assert conn.execute("SELECT schema_version FROM meta").fetchall() == [(len(applied),)]
        conn.execute(
            'INSERT INTO auth_tokens (id, "user", name, token_hash, scopes, created_at) '
            "VALUES (1, 'ops', 'n', repeat('a', 64), 'read', '2026-01-01T00:00:00.000Z')"
        )
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO run_steps (step_id, run_id, name, status, stats_json) "
                "VALUES (1, 'missing', 's', 'pending', '{}')"
            )
    rolled = rollback_migrations(pg_database, DEFAULT_MIGRATIONS_DIR, steps=len(applied))
    assert rolled == applied[::-1]
    assert not {"status", "audit_log", "meta"} & pg_tables(pg_database)
