"""The ``bobgen`` command line: serve, seed, migrate.

Flags default to ``None`` so that :meth:`Config.from_sources` can tell "not given" apart
from a value, and fall back to ``BOBGEN_*`` variables, then to the dataclass defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import Any

from service import __version__
from service.config import Config, ConfigError
from service.db import DatabaseUnavailable
from service.db.migrations import MigrationError

log = logging.getLogger("service")


def _add_db_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="SQLite database file (BOBGEN_DB; default data/bobgen.db)")
    p.add_argument("--migrations-dir", help="yoyo migrations folder (BOBGEN_MIGRATIONS_DIR)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (BOBGEN_LOG_LEVEL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bobgen", description="BobGen status service.")
    parser.add_argument("--version", action="version", version=f"bobgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (migrates and seeds on its own)")
    _add_db_flags(serve)
    serve.add_argument("--host", help="bind address (BOBGEN_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (BOBGEN_PORT; default 8080)")
    serve.add_argument("--seed-rows", type=int, help="seed target, 0 disables (default 100000)")
    serve.add_argument("--seed-batch-size", type=int, help="rows per seed transaction")
    serve.add_argument("--read-connections", type=int, help="reader pool size (default 2)")
    serve.add_argument("--access-log", action="store_const", const=True, help="log every request")

    seed = sub.add_parser("seed", help="seed the status table in the foreground")
    _add_db_flags(seed)
    seed.add_argument("--rows", type=int, dest="seed_rows", help="target row count")
    seed.add_argument("--batch-size", type=int, dest="seed_batch_size", help="rows per batch")

    migrate = sub.add_parser("migrate", help="apply pending migrations")
    _add_db_flags(migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k != "command"}
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
    command = {"serve": _serve, "seed": _seed, "migrate": _migrate}[args.command]
    try:
        return command(config)
    except KeyboardInterrupt:
        return 130
    except (MigrationError, DatabaseUnavailable, sqlite3.Error, OSError) as exc:
        # Operator-facing failures (unwritable path, port in use, stale lock): one clear line.
        log.debug("command failed", exc_info=True)
        print(f"bobgen: error: {exc}", file=sys.stderr)
        return 1


def _serve(config: Config) -> int:
    from aiohttp import web

    from service.app import create_app

    log.info("bobgen %s serving on http://%s:%d with %s", __version__, config.host, config.port,
             config.db)  # fmt: skip
    web.run_app(
        create_app(config),
        host=config.host,
        port=config.port,
        shutdown_timeout=config.shutdown_timeout_s,
        access_log=logging.getLogger("aiohttp.access") if config.access_log else None,
        print=None,
    )
    return 0


def _migrate(config: Config) -> int:
    from service.db.migrations import apply_migrations

    applied = apply_migrations(config.db, config.migrations_dir)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def _seed(config: Config) -> int:
    return asyncio.run(_seed_async(config))


async def _seed_async(config: Config) -> int:
    from service.db import Database
    from service.db.migrations import apply_migrations
    from service.seeding import Seeder, SeedProgress, SeedState

    await asyncio.to_thread(apply_migrations, config.db, config.migrations_dir)
    db = Database(config.db, read_connections=1, busy_timeout_ms=config.busy_timeout_ms)
    await db.open()
    bar = _ProgressBar(sys.stderr)

    def on_progress(p: SeedProgress) -> None:
        bar.update(p.rows, p.target)

    try:
        progress = await Seeder(db, batch_size=config.seed_batch_size).run(
            config.seed_rows, on_progress=on_progress
        )
    finally:
        await db.close()
    bar.finish()
    elapsed = (progress.finished_at or 0) - (progress.started_at or 0)
    print(f"seed {progress.state}: {progress.rows}/{progress.target} rows, "
          f"{progress.inserted} inserted in {elapsed:.2f}s")  # fmt: skip
    return 0 if progress.state is SeedState.COMPLETE else 1


class _ProgressBar:
    """A one-line text progress bar; silent when the stream is not a terminal, except at the end."""

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
