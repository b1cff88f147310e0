"""The application factory: resources live in ``cleanup_ctx`` generators, in dependency order.

Start-up: migrations (yoyo, in a thread, before any app connection) -> database -> seeder.
Shutdown runs the same generators backwards: stop the seeder at a batch boundary, then close
every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from service import __version__
from service.api import setup_routes
from service.api.auth import TOKEN_CACHE_KEY, TokenCache, auth_middleware
from service.api.conventions import (
    conventions_middleware,
    request_id_middleware,
    security_headers,
)
from service.audit import SYSTEM_ACTOR
from service.config import PROJECT_ROOT, Config
from service.db import connect
from service.db.maintenance import check_writable, quick_check
from service.db.migrations import apply_migrations
from service.domain.runs import RunContext, current_git_sha
from service.errors import answer_protocol_errors_in_json, error_middleware
from service.jobs.seeding import Seeder
from service.keys import (
    BACKUPS_KEY,
    CLOCK_KEY,
    CONFIG_KEY,
    DB_KEY,
    DOCUMENT_FILES_KEY,
    DOCUMENTS_KEY,
    LIFECYCLE_KEY,
    METRICS_KEY,
    RUN_CONTEXT_KEY,
    SEEDER_KEY,
    STARTED_KEY,
    WORKER_KEY,
    Lifecycle,
)
from service.lifecycle import after_migrations
from service.metrics import Metrics
from service.timeutil import Clock
from service.tokens import ensure_initial_admin_token
from service.workers import Leadership, WorkerContext

log = logging.getLogger(__name__)


async def _loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    """Time the event loop's lateness (``bobgen_event_loop_lag_seconds``) while the app runs."""
    task = asyncio.create_task(app[METRICS_KEY].loop_lag.watch(), name="loop-lag")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG_KEY]
    if config.db.is_sqlite:
        check_writable(config.db.sqlite_path)  # one clear line now, not a lock timeout later
    if config.startup_check and config.db.is_sqlite:
        await asyncio.to_thread(quick_check, config.db.sqlite_path)  # before anything writes
    applied = await asyncio.to_thread(apply_migrations, config.db, config.migrations_dir)
    if applied:
        log.info("applied %d migration(s) to %s", len(applied), config.db)
    db = connect(config.db, config.database_options())
    await db.open()
    app[DB_KEY] = db
    app[TOKEN_CACHE_KEY] = TokenCache(db, max_age_s=config.token_cache_ttl_s)
    try:
        context = app[RUN_CONTEXT_KEY]
        await after_migrations(db, applied, direction="apply", actor=SYSTEM_ACTOR, context=context)
        await ensure_initial_admin_token(db, config.data_dir)
    except BaseException:
        await db.close()
        raise
    background = [asyncio.create_task(run()) for run in db.background_tasks()]
    maintenance = db.maintenance_tasks(config.checkpoint_interval_s)
    worker = app[WORKER_KEY]
    if maintenance and worker is not None:
        background.append(
            asyncio.create_task(_as_leader(worker.leadership("maintenance"), maintenance))
        )
    else:
        background += [asyncio.create_task(run()) for run in maintenance]
    try:
        yield
    finally:
        for task in background:
            task.cancel()
        # Bounded: a task stuck in a driver call that ignores cancellation must not hold
        # the shutdown (db.close() below terminates what is left).
        stuck: set[asyncio.Task[None]] = set()
        if background:
            _, stuck = await asyncio.wait(background, timeout=config.shutdown_timeout_s)
        for task in stuck:
            log.warning("background task %s did not stop in time", task.get_name())
        await db.close()
        log.info("database closed")


async def _as_leader(leadership: Leadership, jobs: list[Callable[[], Any]]) -> None:
    """Run ``jobs`` once this worker holds ``leadership``: one worker of a server does them,
    and another takes over within a second of its death (service/workers/shared.py)."""
    try:
        await leadership.take()
        log.debug("this worker took the %s role", leadership.path.stem)
        await asyncio.gather(*(job() for job in jobs))
    finally:
        leadership.release()


async def _worker_ctx(app: web.Application) -> AsyncIterator[None]:
    """As one of ``--workers``: publish this worker's metrics for the others every second,
    and drain and stop if the supervisor is gone (killed: nobody would restart or stop us)."""
    worker = app[WORKER_KEY]
    if worker is None:
        yield
        return
    from service.workers.metrics import SNAPSHOT_EVERY_S

    metrics = app[METRICS_KEY]

    async def tend() -> None:
        while True:
            try:
                metrics.publish()
            except OSError as exc:  # the run directory went (a stop under way): go on watching
                log.debug("metrics snapshot not written: %s", exc)
            if os.getppid() != worker.parent_pid:
                log.warning("the supervisor (pid %d) is gone: stopping", worker.parent_pid)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            await asyncio.sleep(SNAPSHOT_EVERY_S)

    task = asyncio.create_task(tend(), name="worker-tend")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(OSError):  # the last counts, before the supervisor files them
            metrics.publish()  # as a dead worker's


async def _stopping(app: web.Application) -> None:
    app[LIFECYCLE_KEY].stopping = True  # /readyz says 503 from here on


async def _documents_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sync and watch the documents roots, when there are any (docs/documents.md)."""
    config = app[CONFIG_KEY]
    if not config.document_roots:
        app[DOCUMENTS_KEY] = app[DOCUMENT_FILES_KEY] = None
        yield
        return
    from service.documents.files import FileView
    from service.documents.watcher import DocumentWatcher, SharedWatch

    app[DOCUMENT_FILES_KEY] = FileView(config.document_roots, max_bytes=config.documents_max_bytes)
    worker = app[WORKER_KEY]
    shared = None
    if worker is not None:  # one worker of the server watches (service/documents/watcher.py)
        shared = SharedWatch(
            worker.leadership("documents"),
            status_file=worker.shared_file("documents.json"),
            reload_file=worker.shared_file("documents.reload"),
        )
    watcher = DocumentWatcher(
        app[DB_KEY],
        config.document_roots,
        debounce_ms=config.documents_debounce_ms,
        max_bytes=config.documents_max_bytes,
        shared=shared,
    )
    app[DOCUMENTS_KEY] = watcher
    app[METRICS_KEY].register_documents(watcher)
    watcher.start()
    try:
        yield
    finally:
        await watcher.stop(timeout=config.shutdown_timeout_s)


async def _seeder_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG_KEY]
    seeder = Seeder(app[DB_KEY], batch_size=config.seed_batch_size, context=app[RUN_CONTEXT_KEY])
    app[SEEDER_KEY] = seeder
    app[METRICS_KEY].register_state(app[DB_KEY], seeder)
    if config.seed_rows > 0:
        seeder.start(config.seed_rows)
    try:
        yield
    finally:
        await seeder.stop(timeout=config.shutdown_timeout_s)


async def _backups_ctx(app: web.Application) -> AsyncIterator[None]:
    """Scheduled backups, when ``--backup-dir`` is set (service/jobs/backups.py)."""
    config = app[CONFIG_KEY]
    if not config.backup_dir:
        app[BACKUPS_KEY] = None
        yield
        return
    from service.jobs.backups import BackupSchedule

    schedule = BackupSchedule(
        app[DB_KEY], Path(config.backup_dir), every_s=config.backup_every_s, keep=config.backup_keep
    )
    app[BACKUPS_KEY] = schedule
    app[METRICS_KEY].register_backups(schedule)
    schedule.start()
    try:
        yield
    finally:
        await schedule.stop()


def _allow_cors(app: web.Application, origins: list[str]) -> None:
    """Let browser pages from ``origins`` call every route (``--cors-origin``). No cookies are
    involved (tokens travel in a header), so credentials stay off."""
    import aiohttp_cors

    cors_lib: Any = aiohttp_cors  # it has no type annotations
    options = cors_lib.ResourceOptions(
        allow_credentials=False,
        allow_headers=(
            "Authorization",
            "Content-Type",
            "If-Match",
            "If-None-Match",
            "X-Request-ID",
        ),
        expose_headers=("ETag", "Link", "Location", "Retry-After", "X-Request-ID"),
        allow_methods="*",
        max_age=600,
    )
    cors = cors_lib.setup(app, defaults=dict.fromkeys(origins, options))
    for route in list(app.router.routes()):
        if route.method != "HEAD":
            cors.add(route)


def create_app(
    config: Config, *, clock: Clock | None = None, worker: WorkerContext | None = None
) -> web.Application:
    """The app for ``config``; ``clock`` tells the time that leases expire by (tests move it);
    ``worker`` is its place among a server's ``--workers`` (service/workers)."""
    answer_protocol_errors_in_json()
    metrics = Metrics()
    if worker is not None:
        metrics.share(worker)
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[
            request_id_middleware(),
            metrics.middleware(),
            error_middleware(request_timeout_s=config.request_timeout_s),
            conventions_middleware(),
            auth_middleware(),
        ],
    )
    app.on_response_prepare.append(security_headers)
    app[CONFIG_KEY] = config
    app[CLOCK_KEY] = clock or Clock()
    app[METRICS_KEY] = metrics
    app[STARTED_KEY] = time.monotonic()
    app[RUN_CONTEXT_KEY] = RunContext(current_git_sha(PROJECT_ROOT), config.config_hash())
    app[LIFECYCLE_KEY] = lifecycle = Lifecycle()
    app[WORKER_KEY] = worker
    metrics.register_process(__version__, app[RUN_CONTEXT_KEY].git_sha, lifecycle)
    app.on_shutdown.append(_stopping)
    app.cleanup_ctx.extend(
        [_loop_lag_ctx, _database_ctx, _documents_ctx, _seeder_ctx, _backups_ctx, _worker_ctx]
    )
    setup_routes(app)
    if config.cors_origin_list:
        _allow_cors(app, config.cors_origin_list)
    log.debug("created app version %s", __version__)
    return app
