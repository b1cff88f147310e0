"""HTTP handlers, one module per domain."""

from __future__ import annotations

from aiohttp import web

from service.api import admin, documents, health, probes, runs, status
from service.api.openapi import setup_openapi
from service.api.projects import setup_project_routes
from service.api.sessions import setup_session_routes
from service.api.tokens import setup_token_routes
from service.api.ui import setup_ui
from service.api.workflow_runs import setup_workflow_run_routes
from service.api.worktrees import setup_worktree_routes


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/livez", probes.livez)
    app.router.add_get("/readyz", probes.readyz)
    app.router.add_get("/-/versions", probes.versions)
    app.router.add_get("/health", health.health)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_get("/bobgen/status", status.list_statuses)
    app.router.add_post("/bobgen/status", status.create_status)
    app.router.add_get("/bobgen/status/{id}", status.get_status, name="status")
    app.router.add_post("/admin/seed", admin.start_seed)
    app.router.add_get("/admin/seed", admin.seed_progress)
    app.router.add_get("/admin/sync", admin.sync_status)
    app.router.add_post("/admin/sync/reload", admin.sync_reload)
    app.router.add_post("/runs", runs.create_run)
    app.router.add_get("/runs", runs.list_runs)
    app.router.add_get("/runs/{run_id}", runs.get_run)
    app.router.add_post("/runs/{run_id}/steps", runs.create_step)
    app.router.add_patch("/runs/{run_id}/steps/{step_id}", runs.update_step)
    app.router.add_get("/audit", runs.list_audit)
    app.router.add_get("/documents", documents.list_documents)
    app.router.add_get("/documents/{id}", documents.get_document)
    app.router.add_get("/personas", documents.list_personas)
    app.router.add_get("/personas/{name}", documents.get_persona)
    app.router.add_get("/prompts", documents.list_prompts)
    app.router.add_get("/prompts/{name}", documents.get_prompt)
    setup_token_routes(app)
    setup_project_routes(app)
    setup_workflow_run_routes(app)
    setup_worktree_routes(app)
    setup_session_routes(app)
    setup_ui(app)
    setup_openapi(app)  # last: it documents every route above
