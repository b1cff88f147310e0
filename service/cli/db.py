"""``bobgen migrate``, ``bobgen db ...`` and ``bobgen doctor``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from service.cli.common import (
    after_migrations,
    apply_or_rollback,
    backup_first,
    cli_actor,
    open_database,
    require_initialized,
)
from service.config import Config


async def _migrate_and_record(config: Config, *, direction: str, steps: int = 1) -> list[str]:
    ids = await apply_or_rollback(config, direction, steps)
    async with open_database(config, migrate=False) as db:
        await after_migrations(config, db, ids, direction)
    return ids


def migrate(config: Config, args: argparse.Namespace) -> int:
    applied = asyncio.run(_migrate_and_record(config, direction="apply"))
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def rollback(config: Config, args: argparse.Namespace) -> int:
    require_initialized(config)
    if args.steps < 1:
        print("bobgen: error: --steps must be at least 1", file=sys.stderr)
        return 2
    if not args.no_backup:
        asyncio.run(_backup_before(config, "rollback"))
    rolled = asyncio.run(_migrate_and_record(config, direction="rollback", steps=args.steps))
    print(f"rolled back {len(rolled)} migration(s)" + (f": {', '.join(rolled)}" if rolled else ""))
    return 0


async def _backup_before(config: Config, what: str) -> None:
    async with open_database(config, migrate=False) as db:
        await backup_first(config, db, what)


def restore(config: Config, args: argparse.Namespace) -> int:
    """Replace the database with a backup, then record the restore in it."""
    from service.audit import AuditedWrite, audited_write
    from service.db import maintenance, returning

    message = asyncio.run(maintenance.restore(config.db, args.path))

    async def record() -> None:
        async with open_database(config, migrate=False) as db:

            def work(w: AuditedWrite) -> Any:
                data = {"path": str(args.path)}
                w.audit("db.restore", scope="db", message=message, data=data)
                return returning(None)

            await audited_write(db, cli_actor(), work)

    asyncio.run(record())
    print(message)
    return 0


def db_status(config: Config, args: argparse.Namespace) -> int:
    from service.db.migrations import migration_state

    require_initialized(config)
    state = migration_state(config.db, config.migrations_dir)
    version = asyncio.run(_schema_version(config))
    print(f"database:       {config.db}")
    print(f"schema_version: {version}")
    print(f"applied:        {', '.join(state.applied) or '-'}")
    print(f"pending:        {', '.join(state.pending) or '-'}")
    return 0 if not state.pending else 1


async def _schema_version(config: Config) -> int | None:
    from service.db.maintenance import schema_version

    async with open_database(config, migrate=False) as db:
        return await schema_version(db)


def vacuum(config: Config, args: argparse.Namespace) -> int:
    return asyncio.run(_maintenance(config, "vacuum", None))


def backup(config: Config, args: argparse.Namespace) -> int:
    return asyncio.run(_maintenance(config, "backup", args.path))


async def _maintenance(config: Config, what: str, target: Path | None) -> int:
    from service.audit import AuditedWrite, audited_write
    from service.db import maintenance, returning

    async with open_database(config, migrate=False) as db:
        started = time.perf_counter()
        if what == "vacuum":
            before, after = await maintenance.vacuum(db)
            data: dict[str, Any] = {"bytes_before": before, "bytes_after": after}
            message = f"vacuum: {before} -> {after} bytes"
        else:
            assert target is not None
            result = await maintenance.backup(db, target)
            data = {"path": str(result.path), "bytes": result.bytes, "pages": result.pages}
            message = f"backup written to {result.path} ({result.bytes} bytes), integrity ok"
        data["seconds"] = round(time.perf_counter() - started, 3)

        def record(w: AuditedWrite) -> Any:
            w.audit(f"db.{what}", scope="db", message=message, data=data)
            return returning(None)

        await audited_write(db, cli_actor(), record)
    print(message)
    return 0


def doctor(config: Config, args: argparse.Namespace) -> int:
    from service.db.doctor import diagnose, render
    from service.tokens import initial_token_path

    report = diagnose(
        config.db, config.migrations_dir, initial_token_path(config.db, config.data_dir)
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else render(report))
    return 0 if report.ok else 1
