"""Operator commands as an operator runs them: real processes on real files."""

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.db import DatabaseURL
from service.domain.auth import hash_token
from tests.backends import cli_db, sql, sqlite_only, wipe
from tests.helpers import ALL_MIGRATIONS, VALID, run_cli


def dump(db: Path) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    with sqlite3.connect(db) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("status", "runs", "run_steps", "audit_log", "auth_tokens", "meta")
        }


def doctor(db: Path | DatabaseURL) -> tuple[int, dict]:  # type: ignore[type-arg]
    target = cli_db(db) if isinstance(db, DatabaseURL) else str(db)
    result = run_cli("doctor", "--json", "--db", target)
    assert "Traceback" not in result.stderr
    return result.returncode, json.loads(result.stdout)


def check(report: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(c for c in report["checks"] if c["name"] == name)


def test_doctor_on_a_missing_database(db_path: Path) -> None:
    plain = run_cli("doctor", "--db", str(db_path))
    assert plain.returncode == 1
    assert "not initialized yet" in plain.stdout and "Traceback" not in plain.stderr
    code, report = doctor(db_path)
    assert code == 1 and report["ok"] is False
    assert "not initialized yet" in report["checks"][0]["detail"]
    assert not db_path.exists()  # the doctor never creates the file


def test_doctor_on_a_fresh_database(db_url: DatabaseURL) -> None:
    assert run_cli("db", "migrate", "--db", cli_db(db_url)).returncode == 0
    code, report = doctor(db_url)
    assert (code, report["ok"]) == (0, True), report
    names = {c["name"] for c in report["checks"]}
    assert {"migrations", "schema_version", "migration_lock"} <= names
    if db_url.path is not None:
        assert {"integrity", "wal", "foreign_keys", "free_disk"} <= names
    else:
        assert check(report, "database")["detail"].startswith("reachable, PostgreSQL")
    head = len(ALL_MIGRATIONS)
    assert check(report, "schema_version")["detail"] == f"schema_version={head}, head={head}"


def test_doctor_on_an_outdated_database(db_url: DatabaseURL) -> None:
    db = cli_db(db_url)
    run_cli("db", "migrate", "--db", db)
    rolled = run_cli("db", "rollback", "--db", db)
    assert rolled.returncode == 0 and ALL_MIGRATIONS[-1] in rolled.stdout
    code, report = doctor(db_url)
    assert code == 1
    assert ALL_MIGRATIONS[-1] in check(report, "migrations")["detail"]
    assert check(report, "schema_version")["ok"] is False
    status = run_cli("db", "status", "--db", db)
    assert status.returncode == 1 and f"pending:        {ALL_MIGRATIONS[-1]}" in status.stdout


def test_doctor_on_a_corrupted_database(db_path: Path) -> None:
    run_cli("db", "migrate", "--db", str(db_path))
    data = bytearray(db_path.read_bytes())
    data[0:100] = b"\x00garbage" * 12 + b"\x00" * 4  # destroy the header
    db_path.write_bytes(bytes(data))
    code, report = doctor(db_path)
    assert code == 1 and report["ok"] is False
    assert "corrupted" in report["checks"][0]["detail"] or "cannot open" in str(report)


def test_doctor_after_the_file_is_deleted(db_path: Path) -> None:
    run_cli("db", "migrate", "--db", str(db_path))
    db_path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    code, report = doctor(db_path)
    assert code == 1 and "not initialized yet" in report["checks"][0]["detail"]


def test_doctor_warns_about_a_leftover_initial_token_file(db_path: Path) -> None:
    run_cli("db", "migrate", "--db", str(db_path))
    Path(f"{db_path}.admin-token").write_text("x")
    code, report = doctor(db_path)
    leftover = check(report, "initial_token_file")
    assert code == 0 and leftover["warning"] is True and leftover["ok"] is False


def test_operator_commands_on_a_missing_database_are_clean(db_path: Path) -> None:
    backup = str(db_path.with_name("b.db"))
    commands = (
        ["db", "status"],
        ["db", "rollback"],
        ["db", "vacuum"],
        ["token", "list"],
        ["db", "backup", backup],
        ["token", "revoke", "1"],
    )
    for args in commands:
        result = run_cli(*args, "--db", str(db_path))
        assert result.returncode == 1, args
        assert "not initialized yet" in result.stderr and "Traceback" not in result.stderr
    assert not db_path.exists()


def test_token_cli_lifecycle(db_url: DatabaseURL) -> None:
    db = cli_db(db_url)
    created = run_cli(
        "token",
        "create",
        "--user",
        "ops",
        "--scopes",
        "read,admin",
        "--name",
        "deploy",
        "--db",
        db,
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("bgt_") and "\n" not in token
    assert "shown only this once" in created.stderr and token not in created.stderr
    stored = sql(db_url, 'SELECT "user", scopes, token_hash FROM auth_tokens')
    assert stored == [("ops", "admin,read", hash_token(token))]
    if db_url.path is not None:
        raw = db_url.path.read_bytes() + Path(f"{db_url.path}-wal").read_bytes()
        assert token.encode() not in raw  # only the hash is stored

    listed = run_cli("token", "list", "--json", "--db", db)
    records = json.loads(listed.stdout)
    assert records[0]["scopes"] == "admin,read" and "token_hash" not in records[0]
    assert token not in listed.stdout and hash_token(token) not in listed.stdout

    assert run_cli("token", "revoke", "1", "--db", db).returncode == 0
    again = run_cli("token", "revoke", "1", "--db", db)
    assert again.returncode == 1 and "no active token" in again.stderr
    table = run_cli("token", "list", "--db", db).stdout
    assert "ops" in table and "-\n" not in table.splitlines()[1] + "\n"  # revoked_at is filled


@pytest.mark.parametrize(
    "args",
    [["--scopes", "read,root"], ["--scopes", ""], ["--scopes", "read", "--user", ""]],
)
def test_token_create_rejects_bad_input(db_url: DatabaseURL, args: list[str]) -> None:
    base = ["token", "create", "--user", "ops", "--db", cli_db(db_url)]
    result = run_cli(*base, *args)
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr


def test_operator_actions_are_audited(db_url: DatabaseURL) -> None:
    wipe(db_url)  # so that the first command migrates, and records that
    db = cli_db(db_url)
    run_cli("token", "create", "--user", "ops", "--scopes", "read", "--db", db)
    run_cli("token", "revoke", "1", "--db", db)
    assert run_cli("db", "vacuum", "--db", db).returncode == 0
    rows = sql(db_url, "SELECT actor, event FROM audit_log ORDER BY id")
    assert [e for _, e in rows] == ["db.apply", "token.created", "token.revoked", "db.vacuum"]
    assert all(actor.startswith("cli:") for actor, _ in rows)


@sqlite_only  # the file copy; PostgreSQL's pg_dump is tested below
async def test_backup_then_restore_gives_the_same_rows(
    make_client,
    db_path: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    client: TestClient = await make_client(seed_rows=0)
    await client.post("/admin/seed", json={"rows": 700})
    from tests.support import wait_for_seed

    await wait_for_seed(client.app)
    await client.post("/bobgen/status", json=VALID)
    backup_path = tmp_path / "backups" / "bobgen-1.db"
    result = run_cli("db", "backup", str(backup_path), "--db", str(db_path))  # server still up
    assert result.returncode == 0, result.stderr
    assert "integrity ok" in result.stdout
    assert oct(backup_path.stat().st_mode & 0o777) == "0o600"
    original = dump(db_path)
    restored = dump(backup_path)
    # The backup's own audit row is written after the copy: everything else is identical.
    assert restored["audit_log"] == original["audit_log"][:-1]
    assert {k: v for k, v in restored.items() if k != "audit_log"} == {
        k: v for k, v in original.items() if k != "audit_log"
    }
    assert len(restored["status"]) == 701

    # Restore: serve the copy and read the same data back over HTTP.
    restored_client = await make_client(db=backup_path)
    page = await (await restored_client.get("/bobgen/status?limit=1&offset=700")).json()
    assert page["total"] == 701 and page["items"][0]["version"] == VALID["version"]

    refused = run_cli("db", "backup", str(backup_path), "--db", str(db_path))
    assert refused.returncode == 1 and "exists already" in refused.stderr


def test_a_postgresql_backup_restores(pg_url: DatabaseURL, pg_cluster: Any, tmp_path: Path) -> None:
    db = cli_db(pg_url)
    assert run_cli("seed", "--rows", "300", "--db", db).returncode == 0
    target = tmp_path / "dump" / "bobgen.pgdump"
    done = run_cli("db", "backup", str(target), "--db", db)  # pg_dump: required (.ci/run)
    assert done.returncode == 0, done.stderr
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert target.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
    # The restore the docs give (docs/scale-out.md), into an empty database.
    restored = pg_cluster.create(migrated=False)
    try:
        command = ["pg_restore", "--no-owner", f"--dbname={restored.dsn}", str(target)]
        loaded = subprocess.run(command, capture_output=True, text=True)
        assert loaded.returncode == 0, loaded.stderr
        query = "SELECT count(*), sum(id) FROM status"
        assert sql(restored, query) == sql(pg_url, query) == [(300, 300 * 301 // 2)]
        tokens = "SELECT count(*) FROM auth_tokens"
        assert sql(restored, tokens) == sql(pg_url, tokens)
        status = run_cli("db", "status", "--db", cli_db(restored)).stdout
        assert re.search(r"^pending:\s+-$", status, re.M), status  # the schema came back too
    finally:
        pg_cluster.drop(restored)
    # Without pg_dump on the PATH: one line that says what to do, no file.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    missing = run_cli("db", "backup", str(tmp_path / "other.pgdump"), "--db", db, env=env)
    assert missing.returncode == 1 and "pg_dump is not installed" in missing.stderr
    assert "postgresql-client" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "other.pgdump").exists()


def test_vacuum_reports_sizes(db_path: Path) -> None:
    """SQLite: the file shrinks. (PostgreSQL's VACUUM (ANALYZE) runs in the audit test.)"""
    run_cli("seed", "--rows", "3000", "--db", str(db_path))
    with sqlite3.connect(db_path) as conn:
        conn.execute("DELETE FROM status WHERE id > 100")
    result = run_cli("db", "vacuum", "--db", str(db_path))
    assert result.returncode == 0
    before, after = (int(x) for x in result.stdout.split(": ")[1].split(" bytes")[0].split(" -> "))
    assert after < before


def test_rollback_steps(db_url: DatabaseURL) -> None:
    db = cli_db(db_url)
    run_cli("db", "migrate", "--db", db)
    result = run_cli("db", "rollback", "--steps", str(len(ALL_MIGRATIONS)), "--db", db)
    assert result.returncode == 0
    assert result.stdout.strip() == (
        f"rolled back {len(ALL_MIGRATIONS)} migration(s): {', '.join(ALL_MIGRATIONS[::-1])}"
    )
    assert run_cli("db", "rollback", "--steps", "0", "--db", db).returncode == 2
