"""Scheduled online backups: ``--backup-dir``, ``--backup-every``, ``--backup-keep``.

Each backup is the one ``bobgen db backup`` takes (``service/db/maintenance.py``: SQLite's
backup API into a temporary file, ``integrity_check``, then a rename; ``pg_dump -Fc`` on
PostgreSQL), named ``bobgen-<UTC time to the ms>.db`` (``.pgdump``), and recorded by an audit row
``backup.scheduled`` in the same database. That row is the schedule's memory: the next backup
is due ``every`` after the newest one, whichever process took it, across restarts. Of several
instances on one PostgreSQL database, the one holding the advisory lock takes it
(``Database.exclusive``); the others see the row and wait. The newest ``keep`` scheduled
backups are kept; older ones are removed (other files in the folder are left alone).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.audit import SYSTEM_ACTOR, AuditedWrite, audited_write
from service.db import Database, DatabaseUnavailable, returning
from service.db.maintenance import BackupError, BackupResult, backup

log = logging.getLogger(__name__)

EVENT = "backup.scheduled"
LOCK = "bobgen.backup"
RETRY_S = 300.0  # after a failure, try again this soon (or at the interval, if shorter)
_NAME = re.compile(r"bobgen-[0-9]{8}T[0-9]{9}Z(-[0-9]+)?\.(db|pgdump)")


def backup_name(now: datetime, *, sqlite: bool, prefix: str = "bobgen", n: int = 0) -> str:
    """``bobgen-20261129T193000123Z.db`` (to the millisecond: two imports in one second each
    get their own): sorts as it was taken. ``n`` > 0 tells apart two in one millisecond."""
    stamp = now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"
    return f"{prefix}-{stamp}{f'-{n}' if n else ''}.{'db' if sqlite else 'pgdump'}"


@dataclass(slots=True)
class BackupStatus:
    """What the metrics and /health show of the schedule."""

    every_s: float
    last_success: float | None = None  # epoch seconds of the newest scheduled backup
    last_duration_s: float | None = None
    failures: int = 0
    last_error: str | None = None


async def newest_backup_time(db: Database) -> float | None:
    """When the newest scheduled backup was taken (any process), from its audit row."""
    row = await db.fetchone(
        "SELECT ts FROM audit_log WHERE event = ? ORDER BY id DESC LIMIT 1", (EVENT,)
    )
    if row is None:
        return None
    return datetime.fromisoformat(str(row[0]).replace("Z", "+00:00")).timestamp()


async def take_backup(
    db: Database, folder: Path, *, event: str, actor: str, prefix: str = "bobgen"
) -> BackupResult:
    """One verified backup into ``folder``, recorded by an audit row ``event``."""
    started = time.perf_counter()
    now, sqlite = datetime.now(UTC), db.url.path is not None
    target = folder / backup_name(now, sqlite=sqlite, prefix=prefix)
    n = 0
    while await asyncio.to_thread(target.exists):  # another process, the same millisecond
        n += 1
        target = folder / backup_name(now, sqlite=sqlite, prefix=prefix, n=n)
    result = await backup(db, target)
    data: dict[str, Any] = {
        "path": str(result.path),
        "bytes": result.bytes,
        "seconds": round(time.perf_counter() - started, 3),
    }

    def record(w: AuditedWrite) -> Any:
        w.audit(event, scope="db", message=f"backup written to {result.path}", data=data)
        return returning(None)

    await audited_write(db, actor, record)
    return result


def prune(folder: Path, keep: int) -> list[Path]:
    """Remove the oldest scheduled backups beyond ``keep``; return what was removed."""
    ours = sorted(p for p in folder.iterdir() if _NAME.fullmatch(p.name))
    removed = ours[:-keep] if len(ours) > keep else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


class BackupSchedule:
    """The background job: sleep until due, take the backup if this process holds the lock,
    prune, repeat. Never dies on a failed backup: it counts it, logs one line and retries."""

    def __init__(self, db: Database, folder: Path, *, every_s: float, keep: int) -> None:
        self.db, self.folder, self.keep = db, folder, keep
        self.status = BackupStatus(every_s=every_s)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="backups")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                delay = await self._due_in()
                if delay > 0:
                    # Look again at least every minute: another instance's backup moves it.
                    await asyncio.sleep(min(delay, 60.0))
                    continue
                async with self.db.exclusive(LOCK) as mine:
                    # Under the lock, look again: another instance may have just taken it.
                    if mine and await self._due_in() <= 0:
                        await self._take()
                        continue
                await asyncio.sleep(min(self.status.every_s, 60.0))
            except DatabaseUnavailable as exc:  # an outage is reported by the database layer
                log.debug("backup schedule waits for the database: %s", exc)
                await asyncio.sleep(min(self.status.every_s, RETRY_S))

    async def _due_in(self) -> float:
        self.status.last_success = await newest_backup_time(self.db)
        if self.status.last_success is None:
            return 0.0
        return self.status.last_success + self.status.every_s - time.time()

    async def _take(self) -> None:
        started = time.perf_counter()
        try:
            result = await take_backup(self.db, self.folder, event=EVENT, actor=SYSTEM_ACTOR)
        except (BackupError, OSError) as exc:
            self.status.failures += 1
            self.status.last_error = str(exc)
            log.warning("scheduled backup failed: %s", exc)
            await asyncio.sleep(min(self.status.every_s, RETRY_S))
            return
        self.status.last_duration_s = time.perf_counter() - started
        self.status.last_error = None
        removed = await asyncio.to_thread(prune, self.folder, self.keep)
        log.info(
            "backup written to %s (%d bytes, %.1f s)%s",
            result.path,
            result.bytes,
            self.status.last_duration_s,
            f"; removed {len(removed)} older" if removed else "",
        )
