"""Scheduled online backups (docs/operations.md, "Backups"), on both backends: taken while the
server serves, verified, kept to --backup-keep, remembered across instances and restarts by
their audit row, and visible in /metrics."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from service.db import DatabaseURL
from tests.backends import cli_db, sql
from tests.helpers import VALID, run_cli
from tests.support import REPO_ROOT, eventually
from tests.support.server import Server


def scheduled(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("bobgen-*") if not p.name.endswith(".partial"))


async def metric(client: TestClient, name: str) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


async def test_backups_are_taken_on_schedule_verified_and_pruned(
    make_client: Any, db_url: DatabaseURL, tmp_path: Path
) -> None:
    folder = tmp_path / "backups"
    client: TestClient = await make_client(backup_dir=str(folder), backup_every="1s", backup_keep=2)
    for _ in range(20):
        assert (await client.post("/bobgen/status", json=VALID)).status == 201

    def three_taken() -> int:
        rows = sql(db_url, "SELECT count(*) FROM audit_log WHERE event = 'backup.scheduled'")
        return int(rows[0][0]) >= 3

    await eventually(three_taken, timeout=30, what="three scheduled backups")
    kept = await eventually(lambda: len(scheduled(folder)) == 2 and scheduled(folder))
    assert all(p.stat().st_mode & 0o077 == 0 for p in kept)
    if db_url.path is not None:  # a SQLite file: open it and count
        for path in kept:
            with sqlite3.connect(path) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                assert conn.execute("SELECT count(*) FROM status").fetchone()[0] >= 20
    else:
        assert all(p.read_bytes().startswith(b"PGDMP") for p in kept)
    assert await metric(client, "bobgen_backup_last_success_timestamp_seconds") > 0
    assert await metric(client, "bobgen_backup_interval_seconds") == 1.0
    assert await metric(client, "bobgen_backup_failures_total") == 0


async def test_the_schedule_remembers_the_last_backup_across_restarts(
    make_client: Any, db_url: DatabaseURL, tmp_path: Path
) -> None:
    folder = tmp_path / "backups"
    first: TestClient = await make_client(backup_dir=str(folder), backup_every="1d")

    def recorded() -> bool:  # the file, then its audit row: the schedule's memory
        rows = sql(db_url, "SELECT count(*) FROM audit_log WHERE event = 'backup.scheduled'")
        return len(scheduled(folder)) == 1 and rows[0][0] == 1

    await eventually(recorded, what="the first backup at start, recorded")
    await first.close()
    # A second start (or another instance) within the day takes none: the audit row says when.
    second: TestClient = await make_client(backup_dir=str(folder), backup_every="1d")

    async def seen() -> bool:
        return await metric(second, "bobgen_backup_last_success_timestamp_seconds") > 0

    await eventually(seen, what="the second start reading when the last backup was taken")
    assert len(scheduled(folder)) == 1


async def test_a_failing_backup_is_counted_and_the_server_goes_on(
    make_client: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backup folder should be")
    client: TestClient = await make_client(backup_dir=str(blocker), backup_every="1s")

    async def failed() -> bool:
        return await metric(client, "bobgen_backup_failures_total") >= 1

    await eventually(failed, timeout=20, what="a counted failure")
    assert (await client.post("/bobgen/status", json=VALID)).status == 201
    assert await metric(client, "bobgen_backup_last_success_timestamp_seconds") == 0


def test_restore_brings_back_exactly_the_backed_up_rows(
    db_url: DatabaseURL, tmp_path: Path
) -> None:
    """Write, back up, write more, restore: exactly the backed-up rows (both backends)."""
    db = cli_db(db_url)
    assert run_cli("seed", "--rows", "300", "--db", db).returncode == 0
    backup = tmp_path / "kept" / ("b.db" if db_url.path is not None else "b.pgdump")
    taken = run_cli("db", "backup", str(backup), "--db", db)
    assert taken.returncode == 0, taken.stderr
    assert run_cli("seed", "--rows", "500", "--db", db).returncode == 0
    assert sql(db_url, "SELECT count(*) FROM status") == [(500,)]

    restored = run_cli("db", "restore", str(backup), "--db", db)
    assert restored.returncode == 0, restored.stderr
    assert sql(db_url, "SELECT count(*), sum(id) FROM status") == [(300, 300 * 301 // 2)]
    events = [e for (e,) in sql(db_url, "SELECT event FROM audit_log ORDER BY id")]
    assert events[-1] == "db.restore" and "db.backup" not in events  # the backup's own row
    # came after its copy; the restore is recorded in the restored database


async def test_restore_refuses_while_a_bobgen_process_has_the_sqlite_file(
    db_path: Path, tmp_path: Path
) -> None:
    # SQLite's file is replaced in place; PostgreSQL's restore is one transaction.
    server = Server(db_path)
    await server.start()
    try:
        backup = tmp_path / "b.db"
        assert run_cli("db", "backup", str(backup), "--db", str(db_path)).returncode == 0
        refused = run_cli("db", "restore", str(backup), "--db", str(db_path))
        assert refused.returncode == 1
        assert "open in a BobGen process" in refused.stderr and "stop it first" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        await server.stop()
    assert run_cli("db", "restore", str(backup), "--db", str(db_path)).returncode == 0
    not_a_backup = tmp_path / "not.db"
    not_a_backup.write_text("not a database")
    bad = run_cli("db", "restore", str(not_a_backup), "--db", str(db_path))
    assert bad.returncode == 1 and "not a SQLite backup" in bad.stderr


def test_import_and_rollback_take_a_backup_first(db_url: DatabaseURL, tmp_path: Path) -> None:
    db, folder = cli_db(db_url), tmp_path / "safety"
    example = str(REPO_ROOT / "seeds" / "memory_dump_example.json")
    done = run_cli("import", example, "--db", db, "--backup-dir", str(folder))
    assert done.returncode == 0, done.stderr
    [before_import] = folder.glob("bobgen-before-import-*")
    assert str(before_import) in done.stderr
    skipped = run_cli("import", example, "--db", db, "--backup-dir", str(folder), "--no-backup")
    assert skipped.returncode == 0 and len(list(folder.glob("bobgen-before-import-*"))) == 1
    rolled = run_cli("db", "rollback", "--db", db, "--backup-dir", str(folder))
    assert rolled.returncode == 0, rolled.stderr
    [before_rollback] = folder.glob("bobgen-before-rollback-*")
    assert before_rollback.stat().st_size > 0
