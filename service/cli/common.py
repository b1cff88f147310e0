"""What every command shares: the audit actor, opening the database, progress output."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TextIO

from service.config import PROJECT_ROOT, Config
from service.db import Database, DatabaseError, DatabaseUnavailable, connect
from service.db.maintenance import BackupError
from service.db.migrations import MigrationError
from service.domain.runs import RunContext, current_git_sha

log = logging.getLogger("service")


# Operator-facing failures (an unwritable path, a port in use, a stale lock): one clear line,
# never a traceback.
OPERATOR_ERRORS = (MigrationError, DatabaseError, BackupError, OSError)


def cli_actor() -> str:
    """How operator actions appear in the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        help="a SQLite file, or postgresql://user@host:port/dbname "
        "(BOBGEN_DB; default data/bobgen.db)",
    )
    p.add_argument("--migrations-dir", help="yoyo migrations folder (BOBGEN_MIGRATIONS_DIR)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (BOBGEN_LOG_LEVEL)")
    p.add_argument(
        "--log-format", choices=("text", "json"), help="text (default) or json (BOBGEN_LOG_FORMAT)"
    )
    p.add_argument(
        "--data-dir",
        help="where the initial admin token of a PostgreSQL database is written "
        "(BOBGEN_DATA_DIR; default data/; a SQLite database keeps it next to its file)",
    )


@asynccontextmanager
async def open_database(config: Config, *, migrate: bool) -> AsyncIterator[Database]:
    """Open the database for a CLI command, migrating it first if asked (one open either way)."""
    if migrate:
        applied = await apply_or_rollback(config, "apply")
    else:
        require_initialized(config)
    # One reader and a small pool: a command does one thing at a time.
    options = dataclasses.replace(config.database_options(), read_connections=1, pool_size=2)
    db = connect(config.db, options)
    await db.open()
    try:
        if migrate:
            await after_migrations(config, db, applied, "apply")
        yield db
    finally:
        await db.close()


def require_initialized(config: Config) -> None:
    """A SQLite file that does not exist is not created by a read-only command."""
    path = config.db.path
    if path is not None and not path.exists():
        raise DatabaseUnavailable(f"not initialized yet: {path} does not exist")


def run_context(config: Config) -> RunContext:
    return RunContext(current_git_sha(PROJECT_ROOT), config.config_hash())


class SeedDisplay:
    """Seed progress for ``bobgen seed``: on a terminal a rich bar (rows, rate, ETA) with log
    lines routed through rich's handler so they print above the bar instead of through it;
    otherwise a plain line every few seconds (logs and CI output stay readable)."""

    PLAIN_EVERY_S = 5.0

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.tty = stream.isatty()
        self._started = time.monotonic()
        self._last_line = 0.0
        self._progress: Any = None
        self._task: Any = None
        self._saved_handlers: list[logging.Handler] = []

    def __enter__(self) -> SeedDisplay:
        if self.tty:
            from rich.console import Console
            from rich.logging import RichHandler
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            console = Console(file=self.stream)
            self._progress = Progress(
                TextColumn("seed"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} rows/s"),
                TimeRemainingColumn(),
                console=console,
            )
            self._task = self._progress.add_task("seed", total=None, rate="-")
            root = logging.getLogger()
            self._saved_handlers = root.handlers[:]
            root.handlers[:] = [RichHandler(console=console, show_path=False)]
            self._progress.start()
        return self

    def update(self, done: int, total: int) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = done / elapsed
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total, rate=f"{rate:,.0f}")
            return
        now = time.monotonic()
        if now - self._last_line < self.PLAIN_EVERY_S and done < total:
            return
        self._last_line = now
        eta = (total - done) / rate if rate > 0 else 0.0
        percent = 100.0 * done / total if total else 100.0
        print(
            f"seed: {done:,}/{total:,} rows ({percent:.0f}%), {rate:,.0f} rows/s, ETA {eta:.0f} s",
            file=self.stream,
            flush=True,
        )

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            logging.getLogger().handlers[:] = self._saved_handlers


async def apply_or_rollback(config: Config, direction: str, steps: int = 1) -> list[str]:
    """yoyo is synchronous: run it in a thread."""
    from service.db.migrations import apply_migrations, rollback_migrations

    if direction == "apply":
        return await asyncio.to_thread(apply_migrations, config.db, config.migrations_dir)
    return await asyncio.to_thread(rollback_migrations, config.db, config.migrations_dir, steps)


async def after_migrations(config: Config, db: Database, ids: list[str], direction: str) -> None:
    from service.lifecycle import after_migrations

    await after_migrations(
        db, ids, direction=direction, actor=cli_actor(), context=run_context(config)
    )


def add_backup_first(p: argparse.ArgumentParser) -> None:
    """The flags of a command that takes a backup before it changes the database."""
    p.add_argument(
        "--backup-dir",
        help="where the backup taken first goes (BOBGEN_BACKUP_DIR; default backups/ beside "
        "a SQLite file, <data dir>/backups for PostgreSQL)",
    )
    p.add_argument(
        "--no-backup", action="store_true", help="do not take a backup first (not recommended)"
    )


async def backup_first(config: Config, db: Database, before: str) -> None:
    """A verified backup named for what follows (``bobgen-before-import-<time>.db``), audited
    as ``db.backup``: an import or a rollback that goes wrong can be undone with
    ``bobgen db restore``. Failing to take it stops the command (``--no-backup`` skips it)."""
    from service.jobs.backups import take_backup

    result = await take_backup(
        db,
        config.backup_folder(),
        event="db.backup",
        actor=cli_actor(),
        prefix=f"bobgen-before-{before}",
    )
    print(f"backup before {before}: {result.path}", file=sys.stderr)
