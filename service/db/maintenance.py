"""Online backup and VACUUM: synchronous sqlite3 work, meant for ``asyncio.to_thread``.

Both use their own connection: they are operator actions, usually from a CLI process beside
a running server, and SQLite serializes them with the server's writer.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from service.db.errors import DatabaseUnavailable


class DatabaseCorrupt(DatabaseUnavailable):
    """The file is not a SQLite database, or fails ``PRAGMA quick_check``."""


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


def backup(db_path: Path, target: Path, *, busy_timeout_s: float = 5.0) -> BackupResult:
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
        source.backup(dest, pages=1024)  # steps, so a running server is not blocked throughout
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


def vacuum(db_path: Path, *, busy_timeout_s: float = 30.0) -> tuple[int, int]:
    """Rebuild the file to reclaim free pages; returns its size before and after."""
    before = db_path.stat().st_size
    conn = sqlite3.connect(db_path, timeout=busy_timeout_s, isolation_level=None)
    try:
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return before, db_path.stat().st_size
