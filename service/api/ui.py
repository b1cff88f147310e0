"""The ops page: ``/ui`` is a static page (plain JS, served from ``service/ui/``, no build
step, no CDN) that polls ``/ui/data``, one JSON snapshot gathered here: health and readiness,
seed progress, request rate and p99 per route (from this app's own metrics), recent audit
entries and runs, and the document sync. ``/ui/data`` needs an ``admin`` token when
``--auth-reads`` is on (the page asks for one); the page's files carry no data and are open.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from marshmallow import Schema, fields, validate

from service.api.auth import principal
from service.api.openapi import operation
from service.db import DatabaseUnavailable
from service.domain.auth import Scope
from service.jsonutil import json_response
from service.keys import DB_KEY, DOCUMENTS_KEY, LIFECYCLE_KEY, METRICS_KEY, SEEDER_KEY, STARTED_KEY
from service.metrics import Metrics
from service.repositories import audit as audit_repo
from service.repositories import runs as runs_repo
from service.schemas.probes import OPS_SNAPSHOT

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
UI_FILES = {"ops.js": "application/javascript", "ops.css": "text/css"}
RECENT = 10


@dataclass(slots=True)
class TrafficWindow:
    """The previous snapshot of the request counters, so a rate covers the time since the
    page last asked (about its poll interval) rather than the whole uptime."""

    at: float = field(default_factory=time.monotonic)
    counts: dict[str, float] = field(default_factory=dict)


TRAFFIC_KEY = web.AppKey("ui_traffic", TrafficWindow)


def traffic(metrics: Metrics, window: TrafficWindow) -> list[dict[str, Any]]:
    """Per route: requests so far, requests per second since the last call, and the p99
    latency since start (estimated from the histogram buckets, as Prometheus would)."""
    counts: dict[str, float] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in metrics.collect():
        for sample in family.samples:
            route = sample.labels.get("route")
            if route is None:
                continue
            if sample.name == "http_requests_total":
                counts[route] = counts.get(route, 0.0) + sample.value
            elif sample.name == "http_request_duration_seconds_bucket":
                bound = float(sample.labels["le"])
                per_route = buckets.setdefault(route, [])
                per_route.append((bound, sample.value))
    now = time.monotonic()
    elapsed = max(now - window.at, 1e-3)
    rows = []
    for route, total in sorted(counts.items()):
        rate = (total - window.counts.get(route, 0.0)) / elapsed
        rows.append(
            {
                "route": route,
                "requests": int(total),
                "rate_per_s": round(max(rate, 0.0), 2),
                "p99_ms": _p99_ms(buckets.get(route, [])),
            }
        )
    window.at, window.counts = now, counts
    return rows


def _p99_ms(buckets: list[tuple[float, float]]) -> float | None:
    """The upper bound of the bucket holding the 99th percentile (histograms of several
    methods of one route are summed bucket by bucket)."""
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    if not merged:
        return None
    total = merged[max(merged)]
    if total == 0:
        return None
    for bound in sorted(merged):
        if merged[bound] >= 0.99 * total:
            return None if bound == float("inf") else round(bound * 1000, 2)
    return None


@operation(
    "Everything the ops page shows, in one snapshot (admin under --auth-reads)",
    response=OPS_SNAPSHOT,
)
async def ui_data(request: web.Request) -> web.Response:
    app = request.app
    db = app[DB_KEY]
    body: dict[str, Any] = {
        "uptime_s": round(time.monotonic() - app[STARTED_KEY], 1),
        "ready": not app[LIFECYCLE_KEY].stopping,
        "seed": app[SEEDER_KEY].progress.public(),
        "traffic": traffic(app[METRICS_KEY], app[TRAFFIC_KEY]),
    }
    try:
        row = await db.check("SELECT count(*) FROM status")
        body["db"] = {"up": True, "status_rows": row[0] if row else 0}
        body["audit"] = (await audit_repo.list_page(db, limit=RECENT))[0]
        body["runs"] = (await runs_repo.list_runs(db, limit=RECENT))[0]
    except DatabaseUnavailable as exc:
        body["db"] = {"up": False, "reason": str(exc)}
        body["ready"] = False
    body["documents"] = await _documents(request)
    return json_response(body)


async def _documents(request: web.Request) -> dict[str, Any] | None:
    """The sync as ``/admin/sync`` shows it (roots, failing files) to an admin, as ``/health``
    shows it (state and counts) to anyone else: the page is open unless --auth-reads."""
    watcher = request.app[DOCUMENTS_KEY]
    if watcher is None:
        return None
    if Scope.ADMIN in principal(request).scopes:
        return await watcher.describe()
    return watcher.summary()


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
    app[TRAFFIC_KEY] = TrafficWindow()
    app.router.add_get("/ui", ui_page)
    app.router.add_get("/ui/data", ui_data)
    app.router.add_get("/ui/static/{name}", ui_static)
