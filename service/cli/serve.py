"""``bobgen serve`` and ``bobgen seed``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from service import __version__
from service.cli.common import (
    SeedDisplay,
    cli_actor,
    open_database,
    run_context,
)
from service.config import Config

if TYPE_CHECKING:
    from aiohttp import web

    from service.workers import WorkerContext

log = logging.getLogger("service")


def serve(config: Config, args: argparse.Namespace) -> int:
    if config.worker_count > 1:
        from service.workers.supervisor import Supervisor

        return Supervisor(config, serve_worker).run()
    # Bind first: a busy port fails here, before anything migrates or makes a token.
    sock = bind(config.host, config.port)

    def serving() -> None:
        host, port = sock.getsockname()[:2]
        log.info("bobgen %s serving on http://%s:%d with %s", __version__, host, port, config.db)
        notify_systemd("READY=1")

    _run_server(config, sock, on_serving=serving)
    return 0


def serve_worker(
    config: Config, sock: socket.socket, worker: WorkerContext, ready: Callable[[], None]
) -> int:
    """One worker of ``bobgen serve --workers N`` (service/workers/supervisor.py forked it)."""
    from service.cli.common import OPERATOR_ERRORS

    def serving() -> None:
        log.info("worker %d (pid %d) serving", worker.index, os.getpid())
        ready()

    try:
        _run_server(config, sock, on_serving=serving, worker=worker)
    except OPERATOR_ERRORS as exc:
        log.debug("worker failed", exc_info=True)
        print(f"bobgen: error: {exc}", file=sys.stderr)  # as without workers
        return 1
    return 0


def _run_server(
    config: Config,
    sock: socket.socket,
    *,
    on_serving: Callable[[], None],
    worker: WorkerContext | None = None,
) -> None:
    from aiohttp import web

    from service.api.access_log import AccessLogger
    from service.app import create_app

    app = create_app(config, worker=worker)
    app.on_startup.append(
        partial(_drain_on_sigterm, grace_s=config.shutdown_grace_s, handle_sigint=bool(worker))
    )
    app.on_startup.append(_freeze_startup_objects)
    web.run_app(
        app,
        sock=sock,
        shutdown_timeout=config.shutdown_timeout_s,
        access_log=logging.getLogger("aiohttp.access") if config.access_log else None,
        access_log_class=AccessLogger,
        print=lambda _: on_serving(),  # run_app calls it once the app started and listens
        backlog=1024,  # bursts of new connections wait in the kernel, not refused
        loop=_event_loop(),
        # A worker's signals are all ours (SIGINT included): its supervisor sends them.
        handle_signals=worker is None,
    )


async def _drain_on_sigterm(
    app: web.Application, *, grace_s: float, handle_sigint: bool = False
) -> None:
    """Replace aiohttp's SIGTERM handler with a drain, as orchestrators expect.

    aiohttp closes the listener as soon as SIGTERM arrives, so a load balancer still sending
    traffic meets refused connections, and ``/readyz`` never gets to say 503. Instead: from
    SIGTERM on, ``/readyz`` answers 503 and systemd hears STOPPING=1, while every request, new
    or in flight, is still served; ``grace_s`` later the usual graceful exit runs (listener
    closed, in-flight requests finished within ``--shutdown-timeout-s``). A second SIGTERM
    ends the grace at once. SIGINT (Ctrl+C) keeps aiohttp's immediate exit; a worker, whose
    supervisor passes Ctrl+C on as the terminal did too, takes it here, once.
    """
    from aiohttp.web import GracefulExit

    from service.keys import LIFECYCLE_KEY  # not at the top: the CLI starts without aiohttp

    loop = asyncio.get_running_loop()
    lifecycle = app[LIFECYCLE_KEY]

    def exit_now() -> None:
        if lifecycle.exiting:  # a second SIGINT must not break into the clean-up
            return
        lifecycle.exiting = True
        raise GracefulExit  # a SystemExit: it leaves run_app's loop, which then cleans up

    def begin_drain() -> None:
        if lifecycle.stopping:
            exit_now()
        lifecycle.stopping = True
        notify_systemd("STOPPING=1")
        log.info("SIGTERM: draining for %.1f s (/readyz says 503), then stopping", grace_s)
        loop.call_later(grace_s, exit_now)

    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
        loop.add_signal_handler(signal.SIGTERM, begin_drain)
        if handle_sigint:
            loop.add_signal_handler(signal.SIGINT, exit_now)


async def _freeze_startup_objects(_: web.Application) -> None:
    """Put what start-up built out of the garbage collector's reach.

    Modules, schemas, routes and connections are most of a serving process's heap and live as
    long as it does, yet every full collection walked them all with the GIL held: a 20-40 ms
    stop of every request about once a minute, which set the soak's worst minutes. Frozen,
    they are never walked again; collections see only what requests allocate.
    """
    gc.collect()  # garbage made during start-up is freed, not frozen for good
    gc.freeze()


def notify_systemd(state: str) -> None:
    """Tell systemd how start-up or shutdown goes (``Type=notify`` units set NOTIFY_SOCKET);
    nothing when not started by systemd. Failing to tell it must not stop the server."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", state, exc)


def bind(host: str, port: int, *, reuseport: bool = False) -> socket.socket:
    """A socket bound to ``host:port`` (IPv4 or IPv6), or OSError naming the address.

    ``reuseport``: beside the other workers' sockets on the port (``--workers``; the kernel
    spreads connections over them). Without it a port some other process listens on fails,
    as a busy port must: ``SO_REUSEPORT`` alone would let a second server of the same user
    share it instead.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not past a live listener
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


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
    from service.jobs.seeding import Seeder, SeedProgress, SeedState

    with SeedDisplay(sys.stderr) as display:

        def on_progress(p: SeedProgress) -> None:
            display.update(p.rows, p.target)

        async with open_database(config, migrate=True) as db:
            seeder = Seeder(db, batch_size=config.seed_batch_size, context=run_context(config))
            progress = await seeder.run(
                config.seed_rows, on_progress=on_progress, actor=cli_actor()
            )
    elapsed = (progress.finished_at or 0) - (progress.started_at or 0)
    print(
        f"seed {progress.state}: {progress.rows}/{progress.target} rows, "
        f"{progress.inserted} inserted in {elapsed:.2f}s"
    )
    return 0 if progress.state is SeedState.COMPLETE else 1
