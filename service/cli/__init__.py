"""The ``bobgen`` command line: the parser and the dispatch live here, the commands in one
module per group (serve, db, tokens, data), their shared helpers in ``common``.

Flags default to ``None`` so that :meth:`Config.from_sources` can tell "not given" apart
from a value, and fall back to ``BOBGEN_*`` variables, then to the dataclass defaults.
Operator commands print one clear line and exit non-zero on failure; never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from service import __version__, logs
from service.cli import data as data_commands
from service.cli import db as db_commands
from service.cli import serve as serve_commands
from service.cli import tokens as token_commands
from service.cli.common import OPERATOR_ERRORS, add_backup_first, add_common
from service.config import Config, ConfigError

log = logging.getLogger("service")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bobgen", description="BobGen status service.")
    parser.add_argument("--version", action="version", version=f"bobgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (migrates and seeds on its own)")
    add_common(serve)
    serve.add_argument("--host", help="bind address (BOBGEN_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (BOBGEN_PORT; default 8080)")
    serve.add_argument(
        "--workers",
        help="serving processes on one port: a number or auto, the usable cores "
        "(BOBGEN_WORKERS; default 1; docs/scale-out.md)",
    )
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
    serve.add_argument(
        "--max-body-bytes", type=int, help="largest request body (default 65536; then 413)"
    )
    serve.add_argument(
        "--busy-timeout-ms",
        type=int,
        help="wait for a lock: SQLite busy_timeout, PostgreSQL lock_timeout (default 5000)",
    )
    serve.add_argument(
        "--token-cache-ttl-s", type=float, help="longest a checked token is cached (default 30)"
    )
    serve.add_argument(
        "--shutdown-grace-s",
        type=float,
        help="on SIGTERM, /readyz says 503 this long before the listener closes (default 5)",
    )
    serve.add_argument(
        "--shutdown-timeout-s",
        type=float,
        help="then, the longest wait for requests and background work to finish (default 10)",
    )
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
    serve.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="append",
        help="allow browser pages from this origin (https://app.example.com) to call the API; "
        "repeatable (BOBGEN_CORS_ORIGINS, comma-separated); off by default",
    )
    backups = serve.add_argument_group("scheduled backups (docs/operations.md)")
    backups.add_argument(
        "--backup-dir", help="take online backups into this folder (BOBGEN_BACKUP_DIR; off)"
    )
    backups.add_argument("--backup-every", help="how often: 30m, 6h, 1d (default 1d)")
    backups.add_argument("--backup-keep", type=int, help="how many to keep (default 7)")
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
    add_common(seed)
    seed.add_argument("--rows", type=int, dest="seed_rows", help="target row count")
    seed.add_argument("--batch-size", type=int, dest="seed_batch_size", help="rows per batch")

    add_common(sub.add_parser("migrate", help="apply pending migrations (= db migrate)"))

    db = sub.add_parser("db", help="database operations").add_subparsers(dest="db_command")
    db.required = True
    add_common(db.add_parser("migrate", help="apply pending migrations"))
    add_common(db.add_parser("status", help="applied and pending migrations, schema version"))
    rollback = db.add_parser("rollback", help="roll back the newest migration(s)")
    add_common(rollback)
    rollback.add_argument("--steps", type=int, default=1, help="how many (default 1)")
    add_backup_first(rollback)
    add_common(
        db.add_parser("vacuum", help="reclaim space (SQLite: VACUUM; PostgreSQL: VACUUM (ANALYZE))")
    )
    backup = db.add_parser(
        "backup", help="online backup to PATH (SQLite: verified copy; PostgreSQL: pg_dump)"
    )
    add_common(backup)
    backup.add_argument("path", type=Path, help="the new backup file")
    restore = db.add_parser(
        "restore",
        help="replace the database with a backup (SQLite: the server must be stopped; "
        "PostgreSQL: pg_restore)",
    )
    add_common(restore)
    restore.add_argument("path", type=Path, help="a backup written by bobgen")

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command")
    token.required = True
    create = token.add_parser("create", help="create a token and print it (once)")
    add_common(create)
    create.add_argument("--user", required=True, help="who the token is for (audit actor)")
    create.add_argument("--scopes", required=True, help="comma-separated: read,write,admin")
    create.add_argument("--name", default="", help="what the token is for")
    listing = token.add_parser("list", help="list tokens (never the tokens themselves)")
    add_common(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = token.add_parser("revoke", help="revoke a token by id; refused at once")
    add_common(revoke)
    revoke.add_argument("id", type=int)

    imp = sub.add_parser("import", help="import a JSON dump of the old in-memory services")
    add_common(imp)
    imp.add_argument("file", type=Path, help="the dump (format: docs/import.md)")
    imp.add_argument("--dry-run", action="store_true", help="validate and count, write nothing")
    imp.add_argument("--json", action="store_true", help="print the report as JSON")
    add_backup_first(imp)

    documents = sub.add_parser("documents", help="persona and prompt files in the database")
    docs = documents.add_subparsers(dest="documents_command")
    docs.required = True
    sync = docs.add_parser("sync", help="reconcile the documents table with the files, once")
    add_common(sync)
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
    add_common(verify)
    verify.add_argument("--dir", dest="dirs", action="append", type=Path, required=True)
    verify.add_argument("--json", action="store_true", help="print the report as JSON")

    doctor = sub.add_parser("doctor", help="check a database (read-only)")
    add_common(doctor)
    doctor.add_argument("--json", action="store_true", help='print {"ok": ..., "checks": [...]}')
    return parser


_CONFIG_FLAGS = set(Config.__dataclass_fields__)


def main(argv: Sequence[str] | None = None) -> int:
    # Everything BobGen creates (database, WAL, backups, token files, signal files) is for
    # its own user only: the database holds token hashes and every row.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k in _CONFIG_FLAGS}
    if isinstance(flags.get("documents_dirs"), list):  # a repeatable flag: one setting
        flags["documents_dirs"] = os.pathsep.join(flags["documents_dirs"])
    if isinstance(flags.get("cors_origins"), list):
        flags["cors_origins"] = ",".join(flags["cors_origins"])
    try:
        config = Config.from_sources(flags)
    except ConfigError as exc:
        print(f"bobgen: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format)
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
    except OPERATOR_ERRORS as exc:
        log.debug("command failed", exc_info=True)
        print(f"bobgen: error: {exc}", file=sys.stderr)
        return 1


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "serve": serve_commands.serve,
    "seed": serve_commands.seed,
    "migrate": db_commands.migrate,
    "db migrate": db_commands.migrate,
    "db status": db_commands.db_status,
    "db rollback": db_commands.rollback,
    "db vacuum": db_commands.vacuum,
    "db backup": db_commands.backup,
    "db restore": db_commands.restore,
    "token create": token_commands.token_create,
    "token list": token_commands.token_list,
    "token revoke": token_commands.token_revoke,
    "import": data_commands.import_dump,
    "documents sync": data_commands.documents_sync,
    "documents verify": data_commands.documents_verify,
    "doctor": db_commands.doctor,
}
