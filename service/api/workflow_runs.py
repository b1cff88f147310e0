"""Workflow runs: start a run of a graph, follow its nodes, list runs by status."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.api.common import new_id, project_path, write
from service.api.etag import etag
from service.api.openapi import operation
from service.api.paging import versioned_page
from service.api.requests import load_json, load_match, load_query
from service.audit import AuditedWrite
from service.db import UniqueViolation, Work
from service.domain.projects import RunStatus
from service.errors import Conflict, NotFound
from service.jsonutil import json_response
from service.keys import DB_KEY
from service.repositories import projects as projects_repo
from service.repositories import versioned
from service.repositories.projects import WORKFLOW_RUNS, WORKFLOWS
from service.schemas import projects as s

_ITEM_PATH, _NODE_PATH = s.ItemPath(), s.NodePath()
_CREATE, _LIST, _NODE_UPDATE = s.RunCreate(), s.RunListQuery(), s.NodeUpdate()


@operation(
    "Start a run of a workflow",
    path=_ITEM_PATH,
    body=_CREATE,
    status=201,
    response=s.WORKFLOW_RUN_WITH_NODES,
)
async def start_run(request: web.Request) -> web.Response:
    path = load_match(_ITEM_PATH, request)  # item_id is the workflow
    body = await load_json(_CREATE, request)

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        workflow = yield from versioned.get(WORKFLOWS, path["project_id"], path["item_id"])
        if workflow is None:
            raise NotFound(f"workflow {path['item_id']} not found", details=path)
        values = {
            "id": body["id"] or new_id(),
            "project_id": path["project_id"],
            "workflow_id": workflow["id"],
            "status": RunStatus.PENDING.value,
            "input": body["input"],
            "version": 1,
            "created_at": w.now,
        }
        node_ids = [n["id"] for n in workflow["graph"]["nodes"]]
        try:
            run = yield from projects_repo.create_run(values, node_ids)
        except UniqueViolation:
            raise Conflict(
                f"run {values['id']} exists already", details={"id": values["id"]}, code="id_taken"
            ) from None
        w.audit(
            "workflow_run.created",
            scope="projects",
            message=f"run {run['id']} started",
            data={"project_id": path["project_id"], "id": run["id"], "workflow_id": workflow["id"]},
        )
        run["nodes"] = yield from projects_repo.get_nodes(run["id"])
        return run

    run = await write(request, work)
    location = f"/projects/{path['project_id']}/runs/{run['id']}"
    return json_response(run, status=201, headers={"Location": location, **etag(run["version"])})


@operation(
    "Workflow runs of a project",
    path=s.ProjectPath(),
    query=_LIST,
    returns="page",
    response=s.WORKFLOW_RUN_RECORD,
)
async def list_workflow_runs(request: web.Request) -> web.Response:
    project_id = await project_path(request)
    q = load_query(_LIST, request)
    filters = {"status": q["status"]}
    return await versioned_page(request, WORKFLOW_RUNS, q, project_id=project_id, filters=filters)


@operation("A workflow run with its nodes", path=_ITEM_PATH, response=s.WORKFLOW_RUN_WITH_NODES)
async def get_workflow_run(request: web.Request) -> web.Response:
    path = load_match(_ITEM_PATH, request)

    def work() -> Work[dict[str, Any] | None]:
        run = yield from versioned.get(WORKFLOW_RUNS, path["project_id"], path["item_id"])
        if run is not None:
            run["nodes"] = yield from projects_repo.get_nodes(run["id"])
        return run

    run = await request.app[DB_KEY].read(work())
    if run is None:
        raise NotFound(f"run {path['item_id']} not found", details=path)
    return json_response(run, headers=etag(run["version"]))


@operation(
    "Change a node of a workflow run", path=_NODE_PATH, body=_NODE_UPDATE, response=s.NODE_CHANGED
)
async def update_node(request: web.Request) -> web.Response:
    path = load_match(_NODE_PATH, request)
    changes = await load_json(_NODE_UPDATE, request)

    def work(w: AuditedWrite) -> Work[tuple[dict[str, Any], dict[str, Any]]]:
        try:
            node, run = yield from projects_repo.change_node(
                path["project_id"], path["item_id"], path["node_id"], changes, now=w.now
            )
        except projects_repo.RunNotFound:
            raise NotFound("no such run in this project", details=path) from None
        except projects_repo.NodeNotFound:
            raise NotFound("no such node in this run", details=path) from None
        except projects_repo.RunFinished as exc:
            raise Conflict(str(exc), code="run_finished", details=path) from None
        w.audit(
            "workflow_node.updated",
            scope="projects",
            message=f"run {run['id']} node {node['node_id']}: {node['status']}",
            data={
                "project_id": path["project_id"],
                "run_id": run["id"],
                "node_id": node["node_id"],
                "status": node["status"],
                "run_status": run["status"],
            },
        )
        return node, run

    node, run = await write(request, work)
    return json_response({"node": node, "run": run}, headers=etag(run["version"]))


def setup_workflow_run_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/projects/{project_id}/workflows/{item_id}/runs", start_run)
    r.add_get("/projects/{project_id}/runs", list_workflow_runs)
    r.add_get("/projects/{project_id}/runs/{item_id}", get_workflow_run)
    r.add_patch("/projects/{project_id}/runs/{item_id}/nodes/{node_id}", update_node)
