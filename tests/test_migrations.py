import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import DEFAULT_MIGRATIONS_DIR
from service.db.migrations import (
    MigrationError,
    apply_migrations,
    migration_state,
    rollback_migrations,
)
from tests.helpers import ALL_MIGRATIONS
from tests.support import REPO_ROOT


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


# Tables each migration creates, newest last.
TABLES_BY_MIGRATION = {
    "0001_create_status": {"status"},
    "0002_security_audit": {"meta", "auth_tokens", "runs", "run_steps", "audit_log"},
    "0003_projects": {
        "projects",
        "idea_tickets",
        "context_items",
        "workflow_graphs",
        "workflow_runs",
        "workflow_node_states",
        "gap_analyses",
    },
    "0004_assigned_ids": set(),  # identity columns on PostgreSQL; nothing new on SQLite
    "0005_documents": {"documents"},
    "0006_documents_search": {"documents_fts"},  # SQLite; PostgreSQL: a column and a function
    "0007_debug_metadata": {
        "repositories",
        "worktrees",
        "sessions",
        "commands",
        "command_logs",
        "artifacts",
        "debugger_state",
    },
    "0008_ops_indexes": set(),  # partial indexes for the ops page
}


def schema_version(db: Path) -> int | None:
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute("SELECT schema_version FROM meta").fetchone()[0]
        except sqlite3.OperationalError:
            return None


def test_every_migration_is_known_to_these_tests() -> None:
    assert list(TABLES_BY_MIGRATION) == ALL_MIGRATIONS


def test_fresh_to_head_to_rollback_and_back(db_path: Path) -> None:
    state = migration_state(db_path, DEFAULT_MIGRATIONS_DIR)
    assert state.applied == [] and state.pending == ALL_MIGRATIONS

    assert apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR) == ALL_MIGRATIONS
    every_table = set().union(*TABLES_BY_MIGRATION.values())
    assert every_table <= tables(db_path)
    state = migration_state(db_path, DEFAULT_MIGRATIONS_DIR)
    assert state.pending == [] and state.head == ALL_MIGRATIONS[-1]
    assert schema_version(db_path) == int(ALL_MIGRATIONS[-1][:4])
    assert apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR) == []  # idempotent

    # Roll back one migration at a time: its tables go, the older ones stay.
    for index in range(len(ALL_MIGRATIONS) - 1, -1, -1):
        migration = ALL_MIGRATIONS[index]
        assert rollback_migrations(db_path, DEFAULT_MIGRATIONS_DIR) == [migration]
        assert not TABLES_BY_MIGRATION[migration] & tables(db_path)
        for older in ALL_MIGRATIONS[:index]:
            assert TABLES_BY_MIGRATION[older] <= tables(db_path)
        if index >= 2:
            assert schema_version(db_path) == int(ALL_MIGRATIONS[index - 1][:4])
    assert migration_state(db_path, DEFAULT_MIGRATIONS_DIR).pending == ALL_MIGRATIONS

    assert apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR) == ALL_MIGRATIONS
    assert every_table <= tables(db_path)


def test_rollback_of_several_steps(db_path: Path) -> None:
    apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR)
    rolled = rollback_migrations(db_path, DEFAULT_MIGRATIONS_DIR, steps=len(ALL_MIGRATIONS))
    assert rolled == ALL_MIGRATIONS[::-1]
    assert not {"status", "audit_log"} & tables(db_path)


def test_status_schema_has_the_specified_columns(db_path: Path) -> None:
    apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR)
    with sqlite3.connect(db_path) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(status)")]
        indexes = [r[1] for r in conn.execute("PRAGMA index_list(status)")]
    assert cols == [
        "id",
        "uptime",
        "version",
        "latency",
        "error_rate",
        "last_run",
        "blocks",
        "runbook_link",
        "dashboard_link",
        "created_at",
        "updated_at",
    ]
    assert "status_version_idx" in indexes


def test_migrations_are_portable_sql() -> None:
    for path in DEFAULT_MIGRATIONS_DIR.glob("*.sql"):
        lines = path.read_text().upper().splitlines()
        text = "\n".join(line for line in lines if not line.lstrip().startswith("--"))
        assert "AUTOINCREMENT" not in text, path
        assert "DATETIME(" not in text and "STRFTIME(" not in text, path


def test_every_migration_has_a_rollback() -> None:
    forward = [p for p in DEFAULT_MIGRATIONS_DIR.glob("*.sql") if ".rollback" not in p.name]
    assert forward
    for path in forward:
        assert path.with_name(path.stem + ".rollback.sql").exists(), path


def test_concurrent_migrate_processes_apply_once(db_path: Path) -> None:
    """Two servers (or a server and an operator) starting at once must not both migrate."""
    cmd = [sys.executable, "-m", "service", "migrate", "--db", str(db_path)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert outputs == [
        "applied 0 migration(s)",
        "applied 0 migration(s)",
        f"applied {len(ALL_MIGRATIONS)} migration(s): {', '.join(ALL_MIGRATIONS)}",
    ]
    assert "status" in tables(db_path)


def test_operators_can_use_the_yoyo_cli_with_the_repo_ini(db_path: Path) -> None:
    yoyo = Path(sys.executable).with_name("yoyo")
    uri = f"sqlite:///{db_path}"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    run = dict(cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    applied = subprocess.run([yoyo, "apply", "--batch", "--database", uri], **run)
    assert applied.returncode == 0, applied.stderr
    assert "status" in tables(db_path)
    listed = subprocess.run([yoyo, "list", "--database", uri], **run)
    assert listed.returncode == 0 and "0001_create_status" in listed.stdout
    rolled = subprocess.run([yoyo, "rollback", "--batch", "--database", uri], **run)
    assert rolled.returncode == 0, rolled.stderr  # batch mode rolls back the newest one
    assert not TABLES_BY_MIGRATION[ALL_MIGRATIONS[-1]] & tables(db_path)
    assert "status" in tables(db_path)


def test_stale_yoyo_lock_is_a_clear_error_and_break_lock_recovers(db_path: Path) -> None:
    apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR)
    with sqlite3.connect(db_path) as conn:  # what a migrator killed mid-way leaves behind
        conn.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, '2026-01-01', 999999)")
    with pytest.raises(MigrationError, match="break-lock"):
        apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR, lock_timeout_s=0.5)
    yoyo = Path(sys.executable).with_name("yoyo")
    broke = subprocess.run(
        [yoyo, "break-lock", "--batch", "--database", f"sqlite:///{db_path}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert broke.returncode == 0, broke.stderr
    assert apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR, lock_timeout_s=0.5) == []
