"""Liveness with a real database query, and Prometheus metrics."""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web

from service import __version__
from service.api.openapi import operation
from service.api.probes import database_problem
from service.db import DatabaseUnavailable
from service.jobs.seeding import SeedState
from service.jsonutil import json_response
from service.keys import (
    DB_KEY,
    DOCUMENTS_KEY,
    METRICS_KEY,
    SEEDER_KEY,
    STARTED_KEY,
    WORKER_KEY,
)
from service.metrics import CONTENT_TYPE
from service.schemas.probes import HEALTH


@operation("Health for people: database, seed and document sync state", response=HEALTH)
async def health(request: web.Request) -> web.Response:
    app = request.app
    body: dict[str, Any] = {
        "status": "ok",
        "db": "ok",
        "uptime_s": round(time.monotonic() - app[STARTED_KEY], 3),
        "version": __version__,
    }
    worker = app[WORKER_KEY]
    if worker is not None:
        body["worker"] = {"index": worker.index, "workers": worker.count, "pid": os.getpid()}
    seed = app[SEEDER_KEY].progress
    body["seed"] = {"state": str(seed.state), "rows": seed.rows, "target": seed.target}
    watcher = app[DOCUMENTS_KEY]
    if watcher is not None:
        body["documents"] = watcher.summary()
        if watcher.troubled:
            body["status"] = "degraded"  # still 200: the API serves; readiness is unaffected
    try:
        # Counting the status table proves the file, the schema and a reader all work.
        row = await app[DB_KEY].check("SELECT count(*) FROM status")
    except DatabaseUnavailable as exc:
        body.update(status="unavailable", db="error", reason=str(exc))
        return json_response(body, status=503, headers={"Retry-After": "5"})
    rows = body["seed"]["rows"] = row[0] if row else 0  # the live count, not a memory of it
    if seed.state is SeedState.ELSEWHERE:  # another instance seeds: the table tells how far
        body["seed"]["state"] = str(
            SeedState.COMPLETE if rows >= seed.target else SeedState.RUNNING
        )
    return json_response(body)


@operation("Prometheus metrics (text exposition format)", returns="text")
async def metrics(request: web.Request) -> web.Response:
    # bobgen_db_up is what the database says now: one cheap query per scrape (a collector
    # cannot await, and a background prober would be one more task to stop).
    await database_problem(request.app)
    # Content-Type with its parameters must go through headers: aiohttp's content_type=
    # argument rejects a value that carries a charset.
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
