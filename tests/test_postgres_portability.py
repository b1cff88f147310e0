"""The migrations must also run on PostgreSQL (the scale-out backend).

Needs the server on 127.0.0.1:5432 (override with BOBGEN_TEST_PG_DSN); skipped when absent
(a failure in CI).
"""

import pytest

from service.config import DEFAULT_MIGRATIONS_DIR
from service.db import DatabaseURL
from service.db.migrations import apply_migrations, migration_state, rollback_migrations
from tests.helpers import ALL_MIGRATIONS

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (test extra)")


@pytest.fixture
def pg_database(pg_url: DatabaseURL) -> str:
    """An empty PostgreSQL database from the test cluster (recycled, not dropped: DROP
    DATABASE forces a checkpoint, seconds on a busy server), as yoyo's psycopg URI."""
    return pg_url.yoyo_uri()


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
