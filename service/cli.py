"""The ``bobgen`` command line.

Flags default to ``None`` so that :meth:`Config.from_sources` can tell "not given" apart
from a value, and fall back to ``BOBGEN_*`` variables, then to the dataclass defaults.
Operator commands print one clear line and exit non-zero on failure; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from service import __version__
from service.config import PROJECT_ROOT, Config, ConfigError
from service.db import Database, DatabaseError, DatabaseUnavailable, connect
from service.db.maintenance import BackupError
from service.db.migrations import MigrationError
from service.runs import RunContext, current_git_sha

log = logging.getLogger("service")


def cli_actor() -> str:
    """How operator actions appear in the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        help="a SQLite file, or postgresql://user@host:port/dbname "
        "(BOBGEN_DB; default data/bobgen.db)",
    )
    p.add_argument("--migrations-dir", help="yoyo migrations folder (BOBGEN_MIGRATIONS_DIR)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (BOBGEN_LOG_LEVEL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bobgen", description="BobGen status service.")
    parser.add_argument("--version", action="version", version=f"bobgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (migrates and seeds on its own)")
    _add_common(serve)
    serve.add_argument("--host", help="bind address (BOBGEN_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (BOBGEN_PORT; default 8080)")
    serve.add_argument("--seed-rows", type=int, help="seed target, 0 disables (default 100000)")
    serve.add_argument("--seed-batch-size", type=int, help="rows per seed transaction")
    serve.add_argument("--read-connections", type=int, help="reader pool size (default 2)")
    serve.add_argument(
        "--write-batch-max", type=int, help="most writes per group commit (default 64)"
    )
    serve.add_argument(
        "--write-batch-wait-ms", type=float, help="wait for more writes under load (default 0)"
    )
    serve.add_argument("--body-timeout-s", type=float, help="to receive a body (default 30)")
    serve.add_argument("--request-timeout-s", type=float, help="to answer (default 60)")
    serve.add_argument("--access-log", action="store_const", const=True, help="log every request")
    serve.add_argument(
        "--auth-reads", action="store_const", const=True, help="require a 'read' token for reads"
    )
    serve.add_argument(
        "--documents-dir",
        dest="documents_dirs",
        action="append",
        help="a documents root (personas/, prompts/) to sync and watch; repeatable "
        "(BOBGEN_DOCUMENTS_DIRS, separated by ':')",
    )
    serve.add_argument(
        "--documents-debounce-ms", type=int, help="wait for a burst of saves (default 500)"
    )
    pg = serve.add_argument_group("PostgreSQL (with a postgresql:// --db)")
    pg.add_argument("--pg-pool-size", type=int, help="connections per process (default 10)")
    pg.add_argument("--pg-command-timeout-s", type=float, help="longest statement (default 30)")
    pg.add_argument("--pg-connect-timeout-s", type=float, help="to connect (default 5)")
    pg.add_argument(
        "--pg-statement-cache-size",
        type=int,
        help="prepared statements per connection; 0 behind pgbouncer in transaction mode "
        "(default 100)",
    )

    seed = sub.add_parser("seed", help="seed the status table in the foreground")
    _add_common(seed)
    seed.add_argument("--rows", type=int, dest="seed_rows", help="target row count")
    seed.add_argument("--batch-size", type=int, dest="seed_batch_size", help="rows per batch")

    _add_common(sub.add_parser("migrate", help="apply pending migrations (= db migrate)"))

    db = sub.add_parser("db", help="database operations").add_subparsers(dest="db_command")
    db.required = True
    _add_common(db.add_parser("migrate", help="apply pending migrations"))
    _add_common(db.add_parser("status", help="applied and pending migrations, schema version"))
    rollback = db.add_parser("rollback", help="roll back the newest migration(s)")
    _add_common(rollback)
    rollback.add_argument("--steps", type=int, default=1, help="how many (default 1)")
    _add_common(
        db.add_parser("vacuum", help="reclaim space (SQLite: VACUUM; PostgreSQL: VACUUM (ANALYZE))")
    )
    backup = db.add_parser(
        "backup", help="online backup to PATH (SQLite: verified copy; PostgreSQL: pg_dump)"
    )
    _add_common(backup)
    backup.add_argument("path", type=Path, help="the new backup file")

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command")
    token.required = True
    create = token.add_parser("create", help="create a token and print it (once)")
    _add_common(create)
    create.add_argument("--user", required=True, help="who the token is for (audit actor)")
    create.add_argument("--scopes", required=True, help="comma-separated: read,write,admin")
    create.add_argument("--name", default="", help="what the token is for")
    listing = token.add_parser("list", help="list tokens (never the tokens themselves)")
    _add_common(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = token.add_parser("revoke", help="revoke a token by id; refused at once")
    _add_common(revoke)
    revoke.add_argument("id", type=int)

    imp = sub.add_parser("import", help="import a JSON dump of the old in-memory services")
    _add_common(imp)
    imp.add_argument("file", type=Path, help="the dump (format: docs/import.md)")
    imp.add_argument("--dry-run", action="store_true", help="validate and count, write nothing")
    imp.add_argument("--json", action="store_true", help="print the report as JSON")

    documents = sub.add_parser("documents", help="persona and prompt files in the database")
    docs = documents.add_subparsers(dest="documents_command")
    docs.required = True
    sync = docs.add_parser("sync", help="reconcile the documents table with the files, once")
    _add_common(sync)
    sync.add_argument(
        "--dir",
        dest="dirs",
        action="append",
        type=Path,
        required=True,
        help="a documents root holding personas/ and prompts/ (repeatable; the first wins)",
    )
    sync.add_argument("--dry-run", action="store_true", help="say what would change, write nothing")
    sync.add_argument("--json", action="store_true", help="print the report as JSON")
    verify = docs.add_parser(
        "verify", help="exit 1 and list the differences if table and files differ"
    )
    _add_common(verify)
    verify.add_argument("--dir", dest="dirs", action="append", type=Path, required=True)
    verify.add_argument("--json", action="store_true", help="print the report as JSON")

    doctor = sub.add_parser("doctor", help="check a database (read-only)")
    _add_common(doctor)
    doctor.add_argument("--json", action="store_true", help='print {"ok": ..., "checks": [...]}')
    return parser


_CONFIG_FLAGS = set(Config.__dataclass_fields__)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k in _CONFIG_FLAGS}
    if isinstance(flags.get("documents_dirs"), list):  # a repeatable flag: one setting
        flags["documents_dirs"] = os.pathsep.join(flags["documents_dirs"])
    try:
        config = Config.from_sources(flags)
    except ConfigError as exc:
        print(f"bobgen: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if config.log_level.upper() != "DEBUG":
        logging.getLogger("yoyo").setLevel(logging.WARNING)  # one line per step is noise
    name = " ".join(
        v
        for v in (
            args.command,
            getattr(args, "db_command", None),
            getattr(args, "token_command", None),
            getattr(args, "documents_command", None),
        )
        if v
    )
    try:
        return COMMANDS[name](config, args)
    except KeyboardInterrupt:
        return 130
    except (MigrationError, DatabaseError, BackupError, OSError) as exc:
        # Operator-facing failures (unwritable path, port in use, stale lock): one clear line.
        log.debug("command failed", exc_info=True)
        print(f"bobgen: error: {exc}", file=sys.stderr)
        return 1


def _serve(config: Config, args: argparse.Namespace) -> int:
    from aiohttp import web

    from service.app import create_app

    log.info(
        "bobgen %s serving on http://%s:%d with %s",
        __version__,
        config.host,
        config.port,
        config.db,
    )
    web.run_app(
        create_app(config),
        host=config.host,
        port=config.port,
        shutdown_timeout=config.shutdown_timeout_s,
        access_log=logging.getLogger("aiohttp.access") if config.access_log else None,
        print=None,
        backlog=1024,  # bursts of new connections wait in the kernel, not refused
        loop=_event_loop(),
    )
    return 0


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed: it cuts the event loop's share of each request by about half."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@asynccontextmanager
async def _open(config: Config, *, migrate: bool) -> AsyncIterator[Database]:
    """Open the database for a CLI command, migrating it first if asked (one open either way)."""
    if migrate:
        applied = await _apply_or_rollback(config, "apply")
    else:
        _require_initialized(config)
    # One reader and a small pool: a command does one thing at a time.
    options = dataclasses.replace(config.database_options(), read_connections=1, pool_size=2)
    db = connect(config.db, options)
    await db.open()
    try:
        if migrate:
            await _after_migrations(config, db, applied, "apply")
        yield db
    finally:
        await db.close()


def _require_initialized(config: Config) -> None:
    """A SQLite file that does not exist is not created by a read-only command."""
    path = config.db.path
    if path is not None and not path.exists():
        raise DatabaseUnavailable(f"not initialized yet: {path} does not exist")


def _run_context(config: Config) -> RunContext:
    return RunContext(current_git_sha(PROJECT_ROOT), config.config_hash())


async def _apply_or_rollback(config: Config, direction: str, steps: int = 1) -> list[str]:
    """yoyo is synchronous: run it in a thread."""
    from service.db.migrations import apply_migrations, rollback_migrations

    if direction == "apply":
        return await asyncio.to_thread(apply_migrations, config.db, config.migrations_dir)
    return await asyncio.to_thread(rollback_migrations, config.db, config.migrations_dir, steps)


async def _after_migrations(config: Config, db: Database, ids: list[str], direction: str) -> None:
    from service.lifecycle import after_migrations

    await after_migrations(
        db, ids, direction=direction, actor=cli_actor(), context=_run_context(config)
    )


async def _migrate_and_record(config: Config, *, direction: str, steps: int = 1) -> list[str]:
    ids = await _apply_or_rollback(config, direction, steps)
    async with _open(config, migrate=False) as db:
        await _after_migrations(config, db, ids, direction)
    return ids


def _migrate(config: Config, args: argparse.Namespace) -> int:
    applied = asyncio.run(_migrate_and_record(config, direction="apply"))
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def _rollback(config: Config, args: argparse.Namespace) -> int:
    _require_initialized(config)
    if args.steps < 1:
        print("bobgen: error: --steps must be at least 1", file=sys.stderr)
        return 2
    rolled = asyncio.run(_migrate_and_record(config, direction="rollback", steps=args.steps))
    print(f"rolled back {len(rolled)} migration(s)" + (f": {', '.join(rolled)}" if rolled else ""))
    return 0


def _db_status(config: Config, args: argparse.Namespace) -> int:
    from service.db.migrations import migration_state

    _require_initialized(config)
    state = migration_state(config.db, config.migrations_dir)
    version = asyncio.run(_schema_version(config))
    print(f"database:       {config.db}")
    print(f"schema_version: {version}")
    print(f"applied:        {', '.join(state.applied) or '-'}")
    print(f"pending:        {', '.join(state.pending) or '-'}")
    return 0 if not state.pending else 1


async def _schema_version(config: Config) -> int | None:
    from service.db.maintenance import schema_version

    async with _open(config, migrate=False) as db:
        return await schema_version(db)


def _vacuum(config: Config, args: argparse.Namespace) -> int:
    return asyncio.run(_maintenance(config, "vacuum", None))


def _backup(config: Config, args: argparse.Namespace) -> int:
    return asyncio.run(_maintenance(config, "backup", args.path))


async def _maintenance(config: Config, what: str, target: Path | None) -> int:
    from service.audit import AuditedWrite, audited_write
    from service.db import maintenance, returning

    async with _open(config, migrate=False) as db:
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


def _seed(config: Config, args: argparse.Namespace) -> int:
    return asyncio.run(_seed_async(config))


async def _seed_async(config: Config) -> int:
    from service.seeding import Seeder, SeedProgress, SeedState

    bar = _ProgressBar(sys.stderr)

    def on_progress(p: SeedProgress) -> None:
        bar.update(p.rows, p.target)

    async with _open(config, migrate=True) as db:
        seeder = Seeder(db, batch_size=config.seed_batch_size, context=_run_context(config))
        progress = await seeder.run(config.seed_rows, on_progress=on_progress, actor=cli_actor())
    bar.finish()
    elapsed = (progress.finished_at or 0) - (progress.started_at or 0)
    print(
        f"seed {progress.state}: {progress.rows}/{progress.target} rows, "
        f"{progress.inserted} inserted in {elapsed:.2f}s"
    )
    return 0 if progress.state is SeedState.COMPLETE else 1


def _token_create(config: Config, args: argparse.Namespace) -> int:
    from service.auth import InvalidScopes, parse_scopes
    from service.tokens import create_token

    try:
        scopes = parse_scopes(args.scopes)
    except InvalidScopes as exc:
        print(f"bobgen: error: {exc}", file=sys.stderr)
        return 2
    user = args.user.strip()
    if not user or len(user) > 64:
        print("bobgen: error: --user must be 1 to 64 characters", file=sys.stderr)
        return 2

    async def create() -> tuple[str, Any]:
        async with _open(config, migrate=True) as db:
            return await create_token(
                db, user=user, name=args.name, scopes=scopes, actor=cli_actor()
            )

    token, record = asyncio.run(create())
    print(token)  # stdout holds only the token, for scripts: TOKEN=$(bobgen token create ...)
    print(
        f"token {record.id} for {record.user} with scopes {','.join(sorted(scopes))}; "
        "it is shown only this once",
        file=sys.stderr,
    )
    return 0


def _token_list(config: Config, args: argparse.Namespace) -> int:
    from service.tokens import list_tokens

    async def fetch() -> list[Any]:
        async with _open(config, migrate=False) as db:
            return await list_tokens(db)

    records = [r.public() for r in asyncio.run(fetch())]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    print(f"{'id':>4}  {'user':<16} {'scopes':<18} {'created':<24} {'last used':<24} revoked")
    for r in records:
        print(
            f"{r['id']:>4}  {r['user']:<16} {r['scopes']:<18} {r['created_at']:<24} "
            f"{r['last_used_at'] or '-':<24} {r['revoked_at'] or '-'}"
        )
    return 0


def _token_revoke(config: Config, args: argparse.Namespace) -> int:
    from service.tokens import TokenNotFound, revoke_token

    async def revoke() -> None:
        async with _open(config, migrate=False) as db:
            await revoke_token(db, args.id, actor=cli_actor())

    try:
        asyncio.run(revoke())
    except TokenNotFound as exc:
        print(f"bobgen: error: {exc}", file=sys.stderr)
        return 1
    print(f"token {args.id} revoked")
    return 0


def _import(config: Config, args: argparse.Namespace) -> int:
    from service.importer import DumpUnreadable, import_dump, summary

    try:
        dump = json.loads(args.file.read_bytes())
    except (OSError, ValueError) as exc:
        print(f"bobgen: error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2

    async def run() -> Any:
        async with _open(config, migrate=True) as db:
            return await import_dump(
                db,
                dump,
                dry_run=args.dry_run,
                actor=cli_actor(),
                context=_run_context(config),
                source=args.file.name,
            )

    try:
        report = asyncio.run(run())
    except DumpUnreadable as exc:
        print(f"bobgen: error: {args.file}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else summary(report))
    return 0 if report.ok else 1


def _documents_sync(config: Config, args: argparse.Namespace) -> int:
    report = _documents_report(config, args, dry_run=args.dry_run)
    if report is None:
        return 2
    return 0 if not report.errors else 1


def _documents_verify(config: Config, args: argparse.Namespace) -> int:
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
    from service.document_sync import reconcile

    async with _open(config, migrate=True) as db:
        return await reconcile(db, dirs, actor=cli_actor(), dry_run=dry_run)


def _doctor(config: Config, args: argparse.Namespace) -> int:
    from service.db.doctor import diagnose, render
    from service.tokens import initial_token_path

    report = diagnose(config.db, config.migrations_dir, initial_token_path(config.db))
    print(json.dumps(report.to_dict(), indent=2) if args.json else render(report))
    return 0 if report.ok else 1


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "serve": _serve,
    "seed": _seed,
    "migrate": _migrate,
    "db migrate": _migrate,
    "db status": _db_status,
    "db rollback": _rollback,
    "db vacuum": _vacuum,
    "db backup": _backup,
    "token create": _token_create,
    "token list": _token_list,
    "token revoke": _token_revoke,
    "import": _import,
    "documents sync": _documents_sync,
    "documents verify": _documents_verify,
    "doctor": _doctor,
}


class _ProgressBar:
    """A one-line text progress bar; silent when the stream is not a terminal."""

    WIDTH = 40

    def __init__(self, stream: Any):
        self.stream = stream
        self.tty = stream.isatty()
        self._last = 0.0

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.tty or (now - self._last < 0.1 and done < total):
            return
        self._last = now
        frac = done / total if total else 1.0
        filled = int(frac * self.WIDTH)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total}")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
