"""``bobgen serve`` and ``bobgen seed``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from service import __version__
from service.cli.common import (
    ProgressBar,
    cli_actor,
    open_database,
    run_context,
)
from service.config import Config

log = logging.getLogger("service")


def serve(config: Config, args: argparse.Namespace) -> int:
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


def seed(config: Config, args: argparse.Namespace) -> int:
    return asyncio.run(_seed_async(config))


async def _seed_async(config: Config) -> int:
    from service.seeding import Seeder, SeedProgress, SeedState

    bar = ProgressBar(sys.stderr)

    def on_progress(p: SeedProgress) -> None:
        bar.update(p.rows, p.target)

    async with open_database(config, migrate=True) as db:
        seeder = Seeder(db, batch_size=config.seed_batch_size, context=run_context(config))
        progress = await seeder.run(config.seed_rows, on_progress=on_progress, actor=cli_actor())
    bar.finish()
    elapsed = (progress.finished_at or 0) - (progress.started_at or 0)
    print(
        f"seed {progress.state}: {progress.rows}/{progress.target} rows, "
        f"{progress.inserted} inserted in {elapsed:.2f}s"
    )
    return 0 if progress.state is SeedState.COMPLETE else 1
