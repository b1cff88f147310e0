"""The ops page: ``/ui`` is a static page (plain JS, served from ``service/ui/``, no build
step, no CDN) that polls ``/ui/data``, one JSON snapshot gathered here: health and readiness,
seed progress, traffic per route and method and its 15-minute history (service/traffic.py,
sampled from this app's own metrics), the database (size, WAL, migrations, backups), recent
runs with their status, debug metadata (active sessions, reserved worktrees, running
commands), recent audit entries, and the document sync.
``/ui/data`` needs an ``admin`` token when ``--auth-reads`` is on (the page asks for one); the
page's files carry no data and are open.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from marshmallow import Schema, fields, validate

from service import __version__
from service.api.auth import principal
from service.api.openapi import operation
from service.db import DatabaseUnavailable, maintenance
from service.domain.auth import Scope
from service.jobs.backups import newest_backup_time
from service.jsonutil import json_response
from service.keys import (
    BACKUPS_KEY,
    CLOCK_KEY,
    CONFIG_KEY,
    DB_KEY,
    DOCUMENTS_KEY,
    LIFECYCLE_KEY,
    METRICS_KEY,
    RUN_CONTEXT_KEY,
    SEEDER_KEY,
    STARTED_KEY,
)
from service.repositories import audit as audit_repo
from service.repositories import documents as documents_repo
from service.repositories import ops as ops_repo
from service.schemas.probes import OPS_SNAPSHOT
from service.timeutil import utc_iso
from service.traffic import TrafficHistory, read, sampling

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
UI_FILES = {"ops.js": "application/javascript", "ops.css": "text/css"}
RECENT = 10  # rows per list on the page
LEASE_EXPIRING_S = 300  # a worktree lease ending sooner than this shows as expiring


TRAFFIC_KEY = web.AppKey("ui_traffic", TrafficHistory)


@operation(
    "Everything the ops page shows, in one snapshot (admin under --auth-reads)",
    response=OPS_SNAPSHOT,
)
async def ui_data(request: web.Request) -> web.Response:
    app = request.app
    body: dict[str, Any] = {
        "uptime_s": round(time.monotonic() - app[STARTED_KEY], 1),
        "build": {"version": __version__, "git_sha": app[RUN_CONTEXT_KEY].git_sha},
        "ready": not app[LIFECYCLE_KEY].stopping,
        "seed": app[SEEDER_KEY].progress.public(),
    }
    now = read(app[METRICS_KEY].collect())
    body["traffic"] = app[TRAFFIC_KEY].table(now)
    body["history"] = app[TRAFFIC_KEY].chart(now)
    watcher = app[DOCUMENTS_KEY]
    try:
        body.update(await _from_the_database(app))
        body["documents"] = await _documents(request)
    except DatabaseUnavailable as exc:
        # The page still shows what this process knows: traffic, seed, the sync's state.
        body["db"] = {"up": False, "reason": str(exc)}
        body["ready"] = False
        body["documents"] = watcher.summary() if watcher is not None else None
    return json_response(body)


async def _from_the_database(app: web.Application) -> dict[str, Any]:
    """The panels read from the database; any of them failing makes the database down."""
    db, clock = app[DB_KEY], app[CLOCK_KEY]
    row = await db.check("SELECT count(*) FROM status")
    now = clock.now()
    return {
        "db": {
            "up": True,
            "status_rows": row[0] if row else 0,
            **await maintenance.describe(db, app[CONFIG_KEY].migrations_dir),
            "backups": await _backups(app),
        },
        "audit": (await audit_repo.list_page(db, limit=RECENT))[0],
        "runs": await ops_repo.recent_runs(db, limit=RECENT),
        "debug": await ops_repo.debug_summary(
            db,
            now=utc_iso(now),
            soon=utc_iso(now + timedelta(seconds=LEASE_EXPIRING_S)),
            limit=RECENT,
        ),
    }


async def _backups(app: web.Application) -> dict[str, Any] | None:
    """The backup schedule (None without --backup-dir); the newest backup is read from its
    audit row, so any worker answers for the one that took it."""
    schedule = app[BACKUPS_KEY]
    if schedule is None:
        return None
    newest = await newest_backup_time(app[DB_KEY])
    return {
        "every_s": schedule.status.every_s,
        "last_success_at": utc_iso(datetime.fromtimestamp(newest, UTC)) if newest else None,
        "failures": schedule.status.failures,
        "last_error": schedule.status.last_error,
    }


async def _documents(request: web.Request) -> dict[str, Any] | None:
    """The sync as ``/admin/sync`` shows it (roots, failing files) to an admin; to anyone
    else as ``/health`` shows it (state and counts) with the documents stored, by type, which
    ``GET /documents`` shows anyone: the page is open unless --auth-reads."""
    watcher = request.app[DOCUMENTS_KEY]
    if watcher is None:
        return None
    if Scope.ADMIN in principal(request).scopes:
        return await watcher.describe()
    return {**watcher.summary(), "documents": await documents_repo.count_by_type(watcher.db)}


@operation("The ops page (HTML; its data comes from /ui/data)", returns="html")
async def ui_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(UI_DIR / "index.html")


class UiAsset(Schema):
    name = fields.String(required=True, validate=validate.OneOf(sorted(UI_FILES)))


@operation("A file of the ops page", path=UiAsset(), returns="asset")
async def ui_static(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in UI_FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(UI_DIR / name, headers={"Content-Type": UI_FILES[name]})


def setup_ui(app: web.Application) -> None:
    app[TRAFFIC_KEY] = TrafficHistory()
    app.cleanup_ctx.append(_sample_traffic)
    app.router.add_get("/ui", ui_page)
    app.router.add_get("/ui/data", ui_data)
    app.router.add_get("/ui/static/{name}", ui_static)


async def _sample_traffic(app: web.Application) -> AsyncIterator[None]:
    """The traffic history, sampled in the background for as long as the app runs."""
    async with sampling(app[TRAFFIC_KEY], app[METRICS_KEY].collect):
        yield
