"""Operator endpoints."""

from __future__ import annotations

from aiohttp import web

from service.api.auth import principal
from service.api.openapi import operation
from service.api.requests import load_json
from service.documents.watcher import DocumentWatcher, ReloadRunning
from service.errors import Conflict, NotFound
from service.jobs.seeding import SeedAlreadyRunning
from service.jsonutil import json_response
from service.keys import DOCUMENTS_KEY, SEEDER_KEY
from service.schemas.admin import (
    RELOAD_STARTED,
    SEED_ANSWER,
    SYNC_STATUS,
    SeedRequestSchema,
)

_SEED = SeedRequestSchema()


@operation(
    "Start seeding the status table in the background (202; 409 while one runs)",
    body=_SEED,
    status=202,
    response=SEED_ANSWER,
)
async def start_seed(request: web.Request) -> web.Response:
    body = await load_json(_SEED, request)
    seeder = request.app[SEEDER_KEY]
    try:
        seeder.start(body["rows"], batch_size=body["batch_size"], actor=principal(request).user)
    except SeedAlreadyRunning as exc:
        raise Conflict(str(exc), details={"seed": seeder.progress.public()}) from None
    return json_response(
        {"seed": seeder.progress.public()}, status=202, headers={"Location": "/admin/seed"}
    )


@operation("Seed progress", response=SEED_ANSWER)
async def seed_progress(request: web.Request) -> web.Response:
    return json_response({"seed": request.app[SEEDER_KEY].progress.public()})


def _watcher(request: web.Request) -> DocumentWatcher:
    watcher = request.app[DOCUMENTS_KEY]
    if watcher is None:
        raise NotFound("document sync is off: start the server with --documents-dir")
    return watcher


@operation("Document sync status: watcher state, last full sync, errors", response=SYNC_STATUS)
async def sync_status(request: web.Request) -> web.Response:
    return json_response(await _watcher(request).describe())


@operation(
    "Rescan the document files in the background (202; 409 while one runs)",
    status=202,
    response=RELOAD_STARTED,
)
async def sync_reload(request: web.Request) -> web.Response:
    watcher = _watcher(request)
    try:
        watcher.reload()
    except ReloadRunning as exc:
        raise Conflict(str(exc), details={"state": watcher.summary()["state"]}) from None
    return json_response({"state": "syncing"}, status=202, headers={"Location": "/admin/sync"})
