"""``bobgen doctor``: read-only checks of a database, for operators and monitoring.

On SQLite everything opens the file read-only (``mode=ro``), and on PostgreSQL only SELECTs
run, so running the doctor can never create, migrate or repair anything by accident: it only
reports.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from service.db import DatabaseError, DatabaseOptions, DatabaseURL, connect
from service.db.maintenance import migration_ids, schema_version

MIN_FREE_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    warning: bool = False  # reported, but does not make the database unhealthy


@dataclass(frozen=True, slots=True)
class Report:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok or c.warning for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def diagnose(url: DatabaseURL, migrations_dir: Path, token_file: Path) -> Report:
    """Every check for ``url``; ``token_file`` is where a first start leaves the initial
    admin token (its presence is a warning)."""
    if url.path is None:
        return asyncio.run(_diagnose_server(url, migrations_dir, token_file))
    return _diagnose_file(url.path, migrations_dir, token_file)


async def _diagnose_server(url: DatabaseURL, migrations_dir: Path, token_file: Path) -> Report:
    """PostgreSQL: reachable, schema version, pending migrations, migration lock."""
    db = connect(url, DatabaseOptions(pool_size=1, connect_timeout_s=5, command_timeout_s=10))
    try:
        await db.open()
    except DatabaseError as exc:
        return Report([Check("database", False, f"cannot reach {url}: {exc}")])
    try:
        server = await db.fetchone("SELECT current_setting('server_version')")
        checks = [Check("database", True, f"reachable, PostgreSQL {server[0] if server else '?'}")]
        applied: set[str] = set()
        if await db.table_exists("_yoyo_migration"):
            applied = {r[0] for r in await db.fetchall("SELECT migration_id FROM _yoyo_migration")}
        checks.append(_migration_check(applied, migrations_dir))
        checks.append(_version_check(await schema_version(db), migrations_dir))
        holders = []
        if await db.table_exists("yoyo_lock"):
            holders = [r[0] for r in await db.fetchall("SELECT pid FROM yoyo_lock")]
        checks.append(_lock_check(holders))
        checks.append(_token_file_check(token_file))
        return Report(checks)
    except DatabaseError as exc:
        return Report([Check("database", False, f"{url}: {exc}")])
    finally:
        await db.close()


def _diagnose_file(db_path: Path, migrations_dir: Path, token_file: Path) -> Report:
    if not db_path.exists():
        detail = f"not initialized yet: {db_path} does not exist (start the server or migrate)"
        return Report([Check("database", False, detail)])
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return Report([Check("database", False, f"cannot open {db_path}: {exc}")])
    try:
        return Report(_checks(conn, db_path, migrations_dir, token_file))
    finally:
        conn.close()


def _checks(
    conn: sqlite3.Connection, db_path: Path, migrations_dir: Path, token_file: Path
) -> list[Check]:
    try:
        result = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
        return [Check("integrity", False, f"corrupted: {exc}")]
    problems = [line for r in result for line in str(r).splitlines()]
    checks = [
        Check(
            "integrity",
            result == ["ok"],
            "ok" if result == ["ok"] else "corrupted: " + "; ".join(problems[:5]),
        )
    ]
    # A damaged file can fail any later read: report that check as failed, go on with the rest.
    later: list[tuple[str, Callable[[], Check]]] = [
        ("migrations", partial(_migrations, conn, migrations_dir)),
        ("schema_version", partial(_schema_version, conn, migrations_dir)),
        ("wal", partial(_wal, conn)),
        ("foreign_keys", partial(_foreign_keys, conn)),
        ("yoyo_lock", partial(_yoyo_lock, conn)),
    ]
    for name, check in later:
        try:
            checks.append(check())
        except sqlite3.DatabaseError as exc:
            checks.append(Check(name, False, f"unreadable: {exc}"))
    checks.append(_free_disk(db_path))
    checks.append(_token_file_check(token_file))
    return checks


def _token_file_check(token_file: Path) -> Check:
    if token_file.exists():
        advice = f"{token_file} still exists: store the token safely, then delete the file"
        return Check("initial_token_file", False, advice, warning=True)
    return Check("initial_token_file", True, "absent")


def _wal(conn: sqlite3.Connection) -> Check:
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return Check("wal", mode == "wal", f"journal_mode={mode}")


def _foreign_keys(conn: sqlite3.Connection) -> Check:
    conn.execute("PRAGMA foreign_keys = ON")
    enforced = conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    violations = conn.execute("PRAGMA foreign_key_check").fetchall() if enforced else []
    if not enforced:
        detail = "this SQLite build cannot enforce foreign keys"
    elif violations:
        detail = f"{len(violations)} violation(s), first: {violations[0]}"
    else:
        detail = "enforced, no violations"
    return Check("foreign_keys", enforced and not violations, detail)


def _migrations(conn: sqlite3.Connection, migrations_dir: Path) -> Check:
    try:
        applied = {r[0] for r in conn.execute("SELECT migration_id FROM _yoyo_migration")}
    except sqlite3.OperationalError:
        applied = set()
    return _migration_check(applied, migrations_dir)


def _migration_check(applied: set[str], migrations_dir: Path) -> Check:
    known = migration_ids(migrations_dir)
    pending = [m for m in known if m not in applied]
    unknown = sorted(applied - set(known))
    if unknown:
        return Check("migrations", False, f"applied but unknown to this version: {unknown}")
    if pending:
        return Check(
            "migrations", False, f"pending: {', '.join(pending)} (run 'bobgen db migrate')"
        )
    return Check("migrations", True, f"{len(known)} applied, none pending")


def _schema_version(conn: sqlite3.Connection, migrations_dir: Path) -> Check:
    try:
        version = conn.execute("SELECT schema_version FROM meta").fetchone()[0]
    except (sqlite3.OperationalError, TypeError):
        version = None
    return _version_check(version, migrations_dir)


def _version_check(version: int | None, migrations_dir: Path) -> Check:
    known = migration_ids(migrations_dir)
    head = int(known[-1][:4]) if known else 0
    if version is None:
        return Check("schema_version", False, f"no meta row; head is {head}")
    return Check("schema_version", version == head, f"schema_version={version}, head={head}")


def _yoyo_lock(conn: sqlite3.Connection) -> Check:
    try:
        holders = [r[0] for r in conn.execute("SELECT pid FROM yoyo_lock")]
    except sqlite3.OperationalError:
        holders = []
    return _lock_check(holders)


def _lock_check(holders: list[Any]) -> Check:
    if holders:
        detail = f"held by pid {holders[0]}; if it is gone, run 'yoyo break-lock' (see runbook)"
        return Check("migration_lock", False, detail)
    return Check("migration_lock", True, "free")


def _free_disk(db_path: Path) -> Check:
    free = shutil.disk_usage(db_path.parent).free
    size = db_path.stat().st_size
    needed = max(MIN_FREE_BYTES, 2 * size)  # VACUUM and backups need about the file's size again
    return Check(
        "free_disk", free >= needed, f"{free // 2**20} MiB free, want {needed // 2**20} MiB"
    )


def render(report: Report) -> str:
    def mark(c: Check) -> str:
        return "ok  " if c.ok else ("WARN" if c.warning else "BAD ")

    lines = [f"{mark(c)} {c.name:<20} {c.detail}" for c in report.checks]
    lines.append("healthy" if report.ok else "problems found")
    return "\n".join(lines)
