"""Operator maintenance: integrity check, backup, VACUUM, schema version, on either backend.

:func:`backup`, :func:`vacuum` and :func:`schema_version` take an open :class:`Database` and
do what its backend needs. On SQLite they use their own connections (synchronous sqlite3 work,
run in a thread): they are operator actions, usually from a CLI process beside a running
server, and SQLite serializes them with the server's writer. On PostgreSQL, backup is
``pg_dump`` (when installed) and vacuum is ``VACUUM (ANALYZE)``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from service.db.database import Database
from service.db.errors import DatabaseNotWritable, DatabaseUnavailable
from service.db.sqlite import JOURNAL_SIZE_LIMIT_BYTES
from service.db.sqlite_locks import not_in_use
from service.db.url import DatabaseURL


class DatabaseCorrupt(DatabaseUnavailable):
    """The file is not a SQLite database, or fails ``PRAGMA quick_check``."""


def check_writable(db_path: Path) -> None:
    """Raise :class:`DatabaseNotWritable` naming the file or folder this process cannot write
    (a read-only file, a folder of another owner, a read-only mount). SQLite would otherwise
    open it, fail at the first write, and the migration lock would wait for its timeout."""
    folder = db_path.parent if str(db_path.parent) else Path(".")
    if db_path.exists() and not os.access(db_path, os.R_OK | os.W_OK):
        raise DatabaseNotWritable(
            f"{db_path}: permission denied: this process cannot write the database file "
            "(read-only file, another owner, or a read-only file system)"
        )
    if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseNotWritable(
            f"{folder}: permission denied: this process cannot create files in the database's "
            "folder (SQLite keeps its -wal and -shm files there)"
        )


def quick_check(db_path: Path, *, busy_timeout_s: float = 5.0) -> None:
    """Refuse to serve a damaged file: raise :class:`DatabaseCorrupt` naming the problem.

    ``quick_check`` reads every page (O(file size): about 0.1 s per 100 MB here) but skips
    the index cross-checks of ``integrity_check``. A missing file is fine: it gets created.
    """
    if not db_path.exists():
        return
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=busy_timeout_s)
        try:
            # One line per problem (SQLite puts several on some rows), for a one-line error.
            problems = [
                line.strip()
                for row in conn.execute("PRAGMA quick_check(5)")
                for line in str(row[0]).splitlines()
                if line.strip() and line.strip() != "*** in database main ***"
            ]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise DatabaseCorrupt(
            f"{db_path} is not a usable SQLite database ({exc}); run 'bobgen doctor' and "
            "restore a backup (docs/runbook.md)"
        ) from exc
    if problems != ["ok"]:
        raise DatabaseCorrupt(
            f"{db_path} is corrupt: {'; '.join(problems)}; run 'bobgen doctor' and restore "
            "a backup (docs/runbook.md)"
        )


class BackupError(RuntimeError):
    """The backup could not be written, or did not verify."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    bytes: int
    pages: int


async def backup(db: Database, target: Path) -> BackupResult:
    """Write a verified copy of the database to ``target`` (a new file)."""
    if await asyncio.to_thread(target.exists):
        raise BackupError(f"{target} exists already; choose a new file name")
    if db.url.path is not None:
        return await asyncio.to_thread(sqlite_backup, db.url.path, target)
    return await _pg_dump(db.url, target)


async def vacuum(db: Database) -> tuple[int, int]:
    """Reclaim space and refresh planner statistics; returns the size before and after."""
    if db.url.path is not None:
        return await asyncio.to_thread(sqlite_vacuum, db.url.path)
    size = "SELECT pg_database_size(current_database())"
    before = (await db.fetchone(size) or (0,))[0]
    await db.run_outside_transaction("VACUUM (ANALYZE)")
    after = (await db.fetchone(size) or (0,))[0]
    return int(before), int(after)


async def schema_version(db: Database) -> int | None:
    """The ``meta`` row's schema version, or None before the migration that creates it."""
    if not await db.table_exists("meta"):
        return None
    row = await db.fetchone("SELECT schema_version FROM meta")
    return int(row[0]) if row and row[0] is not None else None


async def describe(db: Database, migrations_dir: Path) -> dict[str, Any]:
    """What the ops page shows of the database: backend, engine, size (and the WAL's on
    SQLite, beside the size it is truncated back to), schema version, and the migrations
    applied out of those this build ships (``pending`` names what a start would apply)."""
    sizes = await asyncio.to_thread(db.file_sizes)
    if sizes is None:
        row = await db.fetchone("SELECT pg_database_size(current_database())")
        sizes = {"db": int(row[0]) if row else 0}
    known = _shipped_migrations(migrations_dir)
    applied: set[str] = set()
    if await db.table_exists("_yoyo_migration"):
        applied = {r[0] for r in await db.fetchall("SELECT migration_id FROM _yoyo_migration")}
    return {
        "backend": db.backend,
        "engine": await db.engine_version(),
        "size_bytes": sizes["db"],
        "wal_bytes": sizes.get("wal"),
        "wal_limit_bytes": JOURNAL_SIZE_LIMIT_BYTES if "wal" in sizes else None,
        "schema_version": await schema_version(db),
        "migrations": {
            "applied": len(applied),
            "known": len(known),
            "head": max(applied) if applied else None,
            "pending": [m for m in known if m not in applied],
        },
    }


def migration_ids(migrations_dir: Path) -> list[str]:
    """The migrations in ``migrations_dir``, in the order they apply."""
    return sorted(
        p.stem
        for p in migrations_dir.glob("*.*")
        if p.suffix in (".sql", ".py") and not p.name.endswith(".rollback.sql")
    )


@functools.cache
def _shipped_migrations(migrations_dir: Path) -> tuple[str, ...]:
    """:func:`migration_ids`, listed once per process: what a build ships does not change
    while it runs, and the ops page asks every two seconds from the event loop."""
    return tuple(migration_ids(migrations_dir))


async def _pg_dump(url: DatabaseURL, target: Path) -> BackupResult:
    """``pg_dump --format=custom`` into ``target``; the password goes through the
    environment, never the command line (which other users can read in ``ps``)."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError(
            "pg_dump is not installed: install the PostgreSQL client tools (Debian: "
            "apt install postgresql-client, same major version as the server) and run "
            "'bobgen db backup' again, or back up with your provider's snapshots"
        )
    parts = urlsplit(url.dsn)
    args = [pg_dump, "--format=custom", "--no-owner", f"--file={target}.partial"]
    args += _pg_connection_args(parts)
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    partial = Path(f"{target}.partial")
    proc = await asyncio.create_subprocess_exec(
        *args, env=_pg_env(parts), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
        first = stderr.decode(errors="replace").strip().splitlines()[:1]
        raise BackupError(f"pg_dump failed: {first[0] if first else proc.returncode}")
    return await asyncio.to_thread(_finish_dump, partial, target)


def _finish_dump(partial: Path, target: Path) -> BackupResult:
    os.chmod(partial, 0o600)  # it holds token hashes and everything else
    os.replace(partial, target)
    return BackupResult(target, target.stat().st_size, 0)


def sqlite_backup(db_path: Path, target: Path, *, busy_timeout_s: float = 5.0) -> BackupResult:
    """Copy a live database with SQLite's backup API, then verify the copy.

    The copy is written to a temporary file and renamed into place only after
    ``PRAGMA integrity_check`` passes, so ``target`` is never a half-written or corrupt file.
    """
    if not db_path.exists():
        raise BackupError(f"{db_path} does not exist")
    if target.exists():
        raise BackupError(f"{target} exists already; choose a new file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    # The copy holds token hashes and everything else: readable by its owner only.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=busy_timeout_s)
    dest = sqlite3.connect(partial)
    try:
        # One step: one read transaction, a snapshot. In WAL mode the server's writers go on
        # meanwhile. In several steps, any write by another connection between two steps
        # restarts the copy from the first page: under steady writes it might never end.
        source.backup(dest, pages=-1)
        dest.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
        check = [r[0] for r in dest.execute("PRAGMA integrity_check")]
        pages = dest.execute("PRAGMA page_count").fetchone()[0]
    finally:
        dest.close()
        source.close()
    if check != ["ok"]:
        partial.unlink(missing_ok=True)
        raise BackupError(f"backup failed verification: {'; '.join(check[:5])}")
    os.replace(partial, target)
    return BackupResult(target, target.stat().st_size, pages)


async def restore(url: DatabaseURL, source: Path) -> str:
    """Replace the database's content with the backup ``source``; what was done, in a line."""
    if not await asyncio.to_thread(source.is_file):
        raise BackupError(f"{source}: no such backup file")
    if url.path is not None:
        return await asyncio.to_thread(sqlite_restore, source, url.path)
    return await _pg_restore(url, source)


def sqlite_restore(source: Path, db_path: Path) -> str:
    """Verify ``source``, then put a copy of it in place of ``db_path`` while no BobGen
    process has the database open (DatabaseInUse otherwise). The WAL and shared-memory files
    of the old database go first: left behind, SQLite would replay the old WAL onto the
    restored file."""
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as check:
        try:
            verdict = [r[0] for r in check.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{source} is not a SQLite backup: {exc}") from None
    if verdict != ["ok"]:
        raise BackupError(f"{source} failed verification: {'; '.join(verdict[:5])}")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with not_in_use(db_path):
        partial = db_path.with_name(db_path.name + ".restoring")
        partial.unlink(missing_ok=True)
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dest = sqlite3.connect(partial)
        try:
            src.backup(dest)
            pages = dest.execute("PRAGMA page_count").fetchone()[0]
        finally:
            dest.close()
            src.close()
        for suffix in ("-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        os.replace(partial, db_path)
    return f"restored {db_path} from {source} ({pages} pages, integrity ok)"


async def _pg_restore(url: DatabaseURL, source: Path) -> str:
    """``pg_restore --clean --if-exists`` in one transaction: the database is the backup's
    afterwards, or (on any error) as it was. Stop the servers first: their sessions would
    hold locks on the tables being replaced."""
    pg_restore = shutil.which("pg_restore")
    if pg_restore is None:
        raise BackupError(
            "pg_restore is not installed: install the PostgreSQL client tools (Debian: "
            "apt install postgresql-client) and run 'bobgen db restore' again"
        )
    parts = urlsplit(url.dsn)
    args = [pg_restore, "--clean", "--if-exists", "--no-owner", "--single-transaction"]
    args += _pg_connection_args(parts)
    args.append(str(source))
    proc = await asyncio.create_subprocess_exec(
        *args, env=_pg_env(parts), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        first = stderr.decode(errors="replace").strip().splitlines()[:1]
        raise BackupError(f"pg_restore failed: {first[0] if first else proc.returncode}")
    return f"restored {url} from {source}"


def _pg_env(parts: SplitResult) -> dict[str, str]:
    """The environment of a PostgreSQL client tool: the password goes here, never on the
    command line (which other users can read in ``ps``)."""
    env = {**os.environ}
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
    return env


def _pg_connection_args(parts: SplitResult) -> list[str]:
    """``--host``, ``--port``, ``--username`` and ``--dbname`` of a URL, never its password."""
    args = []
    if parts.hostname:
        args.append(f"--host={parts.hostname}")
    if parts.port:
        args.append(f"--port={parts.port}")
    if parts.username:
        args.append(f"--username={unquote(parts.username)}")
    args.append(f"--dbname={unquote(parts.path.lstrip('/'))}")
    return args


def sqlite_vacuum(db_path: Path, *, busy_timeout_s: float = 30.0) -> tuple[int, int]:
    """Rebuild the file to reclaim free pages; returns its size before and after."""
    before = db_path.stat().st_size
    conn = sqlite3.connect(db_path, timeout=busy_timeout_s, isolation_level=None)
    try:
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return before, db_path.stat().st_size
