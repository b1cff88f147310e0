"""HTTP handlers, one module per domain."""

from __future__ import annotations

from aiohttp import web

from service.api import admin, health, status


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", health.health)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_get("/bobgen/status", status.list_statuses)
    app.router.add_post("/bobgen/status", status.create_status)
    app.router.add_get("/bobgen/status/{id}", status.get_status, name="status")
    app.router.add_post("/admin/seed", admin.start_seed)
    app.router.add_get("/admin/seed", admin.seed_progress)
