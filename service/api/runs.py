"""Runs, their steps, and the audit log."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.api.common import write
from service.api.openapi import operation
from service.api.paging import page_response
from service.api.requests import load_json, load_match, load_query
from service.audit import AuditedWrite
from service.db import Work
from service.domain.runs import new_run_id
from service.errors import NotFound
from service.jsonutil import json_response
from service.keys import DB_KEY
from service.repositories import audit as audit_repo
from service.repositories import runs as runs_repo
from service.schemas.common import encode_cursor
from service.schemas.runs import (
    AUDIT_RECORD,
    RUN_RECORD,
    RUN_WITH_STEPS,
    STEP_RECORD,
    AuditQuerySchema,
    RunCreateSchema,
    RunIdSchema,
    RunListQuerySchema,
    StepCreateSchema,
    StepPathSchema,
    StepUpdateSchema,
)
from service.timeutil import utc_iso

_RUN_CREATE, _RUN_ID, _RUN_LIST = RunCreateSchema(), RunIdSchema(), RunListQuerySchema()
_STEP_CREATE, _STEP_PATH, _STEP_UPDATE = StepCreateSchema(), StepPathSchema(), StepUpdateSchema()
_AUDIT_QUERY = AuditQuerySchema()


@operation("Create a run", body=_RUN_CREATE, status=201, response=RUN_RECORD)
async def create_run(request: web.Request) -> web.Response:
    body = await load_json(_RUN_CREATE, request)

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        run = yield from runs_repo.insert_run(run_id=new_run_id(), now=w.now, **body)
        w.audit(
            "run.created",
            scope="runs",
            run_id=run["run_id"],
            message=f"run {run['run_id']} created",
            data={"run_id": run["run_id"]},
        )
        return run

    run = await write(request, work)
    return json_response(run, status=201, headers={"Location": f"/runs/{run['run_id']}"})


@operation("Runs, newest first", query=_RUN_LIST, returns="page", response=RUN_RECORD)
async def list_runs(request: web.Request) -> web.Response:
    q = load_query(_RUN_LIST, request)
    since = utc_iso(q["since"]) if q["since"] else None
    items, next_position = await runs_repo.list_runs(
        request.app[DB_KEY],
        limit=q["limit"],
        before=q["cursor"],
        since=since,
        git_sha=q["git_sha"],
        config_hash=q["config_hash"],
    )
    next_cursor = encode_cursor(list(next_position)) if next_position else None
    return page_response(request, items, q["limit"], next_cursor)


@operation("A run with its steps and derived status", path=_RUN_ID, response=RUN_WITH_STEPS)
async def get_run(request: web.Request) -> web.Response:
    run_id = load_match(_RUN_ID, request)["run_id"]
    run = await runs_repo.get_run(request.app[DB_KEY], run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found", details={"run_id": run_id})
    return json_response(run)


@operation("Add a step to a run", path=_RUN_ID, body=_STEP_CREATE, status=201, response=STEP_RECORD)
async def create_step(request: web.Request) -> web.Response:
    run_id = load_match(_RUN_ID, request)["run_id"]
    body = await load_json(_STEP_CREATE, request)

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        if not (yield from runs_repo.run_exists(run_id)):
            raise NotFound(f"run {run_id} not found", details={"run_id": run_id})
        step = yield from runs_repo.insert_step(run_id=run_id, now=w.now, **body)
        w.audit(
            "run_step.created",
            scope="runs",
            run_id=run_id,
            message=f"step {step['step_id']} ({step['name']}) added",
            data={"step_id": step["step_id"], "status": step["status"]},
        )
        return step

    step = await write(request, work)
    location = f"/runs/{run_id}/steps/{step['step_id']}"
    return json_response(step, status=201, headers={"Location": location})


@operation(
    "Change a step (status transitions are checked)",
    path=_STEP_PATH,
    body=_STEP_UPDATE,
    response=STEP_RECORD,
)
async def update_step(request: web.Request) -> web.Response:
    path = load_match(_STEP_PATH, request)
    body = await load_json(_STEP_UPDATE, request)

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        try:
            step, old = yield from runs_repo.change_step(**path, **body, now=w.now)
        except runs_repo.StepNotFound as exc:
            raise NotFound(str(exc), details=path) from None
        w.audit(
            "run_step.updated",
            scope="runs",
            run_id=path["run_id"],
            message=f"step {step['step_id']} {old} -> {step['status']}",
            data={"step_id": step["step_id"], "from": old, "to": step["status"]},
        )
        return step

    return json_response(await write(request, work))


@operation("The audit log, newest first", query=_AUDIT_QUERY, returns="page", response=AUDIT_RECORD)
async def list_audit(request: web.Request) -> web.Response:
    q = load_query(_AUDIT_QUERY, request)
    items, next_id = await audit_repo.list_page(
        request.app[DB_KEY],
        limit=q["limit"],
        before_id=q["cursor"],
        run_id=q["run_id"],
        scope=q["scope"],
        event=q["event"],
        since=utc_iso(q["since"]) if q["since"] else None,
    )
    next_cursor = encode_cursor(next_id) if next_id is not None else None
    return page_response(request, items, q["limit"], next_cursor)
