"""Probes for orchestrators and a versions page for people: cheap, and open even under
``--auth-reads`` (an orchestrator carries no token)."""

from __future__ import annotations

import platform

import aiohttp
from aiohttp import web

from service import __version__
from service.api.openapi import operation
from service.db import DatabaseUnavailable
from service.jsonutil import json_response
from service.keys import DB_KEY, LIFECYCLE_KEY, RUN_CONTEXT_KEY, WORKER_KEY
from service.schemas.probes import LIVE, READY, VERSIONS


@operation("Liveness: the process answers (no database access)", open=True, response=LIVE)
async def livez(request: web.Request) -> web.Response:
    """The process is up and its event loop answers; no database access."""
    return json_response({"status": "alive"})


@operation(
    "Readiness: migrated, the database answers, not shutting down (503 otherwise)",
    open=True,
    response=READY,
)
async def readyz(request: web.Request) -> web.Response:
    """Ready for traffic: migrated (the app only serves once they ran), the database answers
    ``SELECT 1``, not shutting down, and (``--workers``) every worker started. 503 with the
    reason otherwise."""
    if request.app[LIFECYCLE_KEY].stopping:
        return _not_ready("shutting down")
    worker = request.app[WORKER_KEY]
    if worker is not None and not worker.server_serving():
        return _not_ready("starting: not every worker serves yet")
    problem = await database_problem(request.app)
    if problem is not None:
        return _not_ready(f"database unavailable: {problem}")
    return json_response({"status": "ready"})


async def database_problem(app: web.Application) -> str | None:
    """Why the database does not answer ``SELECT 1`` within 1 s, or None; also what
    ``bobgen_db_up`` reports (checked here, by /readyz and each metrics scrape)."""
    try:
        await app[DB_KEY].check("SELECT 1", timeout=1.0)
    except DatabaseUnavailable as exc:
        app[LIFECYCLE_KEY].db_up = False
        return str(exc)
    app[LIFECYCLE_KEY].db_up = True
    return None


def _not_ready(reason: str) -> web.Response:
    body = {"status": "not_ready", "reason": reason}
    return json_response(body, status=503, headers={"Retry-After": "1"})


@operation("Versions of BobGen, Python, aiohttp and the database; the git sha", response=VERSIONS)
async def versions(request: web.Request) -> web.Response:
    try:
        database = await request.app[DB_KEY].engine_version()
    except DatabaseUnavailable:
        database = "unavailable"
    return json_response(
        {
            "bobgen": __version__,
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "database": database,
            "git_sha": request.app[RUN_CONTEXT_KEY].git_sha,
        }
    )
