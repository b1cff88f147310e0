"""Loading data: ``bobgen import`` (a dump of the old services) and ``bobgen documents ...``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from service.cli.common import (
    backup_first,
    cli_actor,
    open_database,
    run_context,
)
from service.config import Config


def import_dump(config: Config, args: argparse.Namespace) -> int:
    from service.jobs.importer import DumpUnreadable, import_dump, summary

    try:
        dump = json.loads(args.file.read_bytes())
    except (OSError, ValueError) as exc:
        print(f"bobgen: error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2

    async def run() -> Any:
        async with open_database(config, migrate=True) as db:
            if not args.dry_run and not args.no_backup:
                await backup_first(config, db, "import")
            return await import_dump(
                db,
                dump,
                dry_run=args.dry_run,
                actor=cli_actor(),
                context=run_context(config),
                source=args.file.name,
            )

    try:
        report = asyncio.run(run())
    except DumpUnreadable as exc:
        print(f"bobgen: error: {args.file}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else summary(report))
    return 0 if report.ok else 1


def documents_sync(config: Config, args: argparse.Namespace) -> int:
    report = _documents_report(config, args, dry_run=args.dry_run)
    if report is None:
        return 2
    return 0 if not report.errors else 1


def documents_verify(config: Config, args: argparse.Namespace) -> int:
    """The comparison of ``sync --dry-run``: any difference or bad file is exit 1."""
    report = _documents_report(config, args, dry_run=True)
    if report is None:
        return 2
    differs = report.added or report.updated or report.deleted or report.errors
    return 1 if differs else 0


def _documents_report(config: Config, args: argparse.Namespace, *, dry_run: bool) -> Any:
    """Reconcile (or compare, with ``dry_run``) and print the report; None for a bad --dir."""
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"bobgen: error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return None
    report = asyncio.run(_documents_sync_async(config, args.dirs, dry_run))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return report
    verb = "would change" if report.dry_run else "changed"
    counts = ", ".join(f"{n} {k}" for k, n in report.counts().items())
    print(f"documents {verb}: {counts} ({report.seconds:.2f}s)")
    for kind in ("added", "updated", "deleted"):
        for path in getattr(report, kind):
            print(f"  {kind:<8} {path}")
    for error in report.errors:
        print(f"  error    {error.file}: {error.reason}")
    return report


async def _documents_sync_async(config: Config, dirs: list[Path], dry_run: bool) -> Any:
    from service.documents.sync import reconcile

    async with open_database(config, migrate=True) as db:
        return await reconcile(db, dirs, actor=cli_actor(), dry_run=dry_run)
