"""Projects and everything scoped to them."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.api.etag import PreconditionFailed, etag, if_match
from service.api.requests import load_json, load_match, load_query
from service.api.resources import (
    Handler,
    Resource,
    handlers,
    insert_new,
    not_found,
    project_path,
    require_changes,
    writing,
)
from service.errors import Conflict, NotFound, UnprocessableEntity
from service.jsonutil import json_response
from service.keys import DB_KEY
from service.projects import InvalidGraph, validate_graph
from service.repositories import projects as projects_repo
from service.repositories import versioned
from service.repositories.projects import (
    CONTEXT_ITEMS,
    GAP_ANALYSES,
    IDEAS,
    PROJECTS,
    WORKFLOWS,
)
from service.repositories.versioned import Sort, VersionMismatch
from service.schemas import projects as s
from service.schemas.common import encode_cursor


def check_graph(values: dict[str, Any]) -> None:
    if "graph" in values:
        try:
            validate_graph(values["graph"])
        except InvalidGraph as exc:
            raise UnprocessableEntity(
                "the workflow graph is invalid", code="invalid_graph", details=exc.problems
            ) from None


IDEA = Resource(IDEAS, "idea", "ideas", s.IdeaCreate(), s.IdeaUpdate(), s.IdeaListQuery(),
                filters=("status", "priority"))  # fmt: skip
CONTEXT = Resource(CONTEXT_ITEMS, "context_item", "context", s.ContextCreate(),
                   s.ContextUpdate(), s.ContextListQuery(), filters=("pinned", "type"))  # fmt: skip
WORKFLOW = Resource(WORKFLOWS, "workflow", "workflows", s.WorkflowCreate(), s.WorkflowUpdate(),
                    s.ListQuery(), check=check_graph)  # fmt: skip
GAP = Resource(GAP_ANALYSES, "gap_analysis", "gap-analyses", s.GapAnalysisCreate(),
               s.GapAnalysisUpdate(), s.ListQuery())  # fmt: skip
PROJECT = Resource(PROJECTS, "project", "projects", s.ProjectCreate(), s.ProjectUpdate(),
                   s.ProjectListQuery())  # fmt: skip

_PROJECT_PATH, _ITEM_PATH, _DELETE = s.ProjectPath(), s.ItemPath(), s.DeleteQuery()


# ---- projects (not scoped to anything, so not the generic handlers) ----------------------


async def create_project(request: web.Request) -> web.Response:
    values = await load_json(PROJECT.create, request)
    async with writing(request) as w:
        row = await insert_new(w, PROJECT, values)
        w.audit("project.created", scope="projects", message=f"project {row['id']} created",
                data={"project_id": row["id"], "name": row["name"]})  # fmt: skip
    headers = {"Location": f"/projects/{row['id']}", **etag(row["version"])}
    return json_response(row, status=201, headers=headers)


async def list_projects(request: web.Request) -> web.Response:
    q = load_query(PROJECT.list_query, request)
    items, position = await versioned.list_page(
        request.app[DB_KEY], PROJECTS, None, limit=q["limit"], sort=Sort.parse(q["sort"]),
        after=q["cursor"],
    )  # fmt: skip
    next_cursor = encode_cursor(position) if position else None
    return json_response({"items": items, "limit": q["limit"], "next": next_cursor})


async def get_project(request: web.Request) -> web.Response:
    project_id = await project_path(request)
    row = await versioned.get(request.app[DB_KEY], PROJECTS, None, project_id)
    assert row is not None
    return json_response(row, headers=etag(row["version"]))


async def update_project(request: web.Request) -> web.Response:
    project_id = load_match(_PROJECT_PATH, request)["project_id"]
    expected = if_match(request, required=True)
    changes = require_changes(await load_json(PROJECT.update, request))
    async with writing(request) as w:
        try:
            row = await versioned.update(w.conn, PROJECTS, None, project_id, changes,
                                         expected_version=expected, now=w.now)  # fmt: skip
        except VersionMismatch as exc:
            raise PreconditionFailed(exc.current) from None
        if row is None:
            raise NotFound(f"project {project_id} not found", details={"project_id": project_id})
        w.audit("project.updated", scope="projects", message=f"project {project_id} updated",
                data={"project_id": project_id, "version": row["version"]})  # fmt: skip
    return json_response(row, headers=etag(row["version"]))


async def delete_project(request: web.Request) -> web.Response:
    project_id = load_match(_PROJECT_PATH, request)["project_id"]
    cascade = load_query(_DELETE, request)["cascade"]
    expected = if_match(request, required=False)
    async with writing(request) as w:
        counts = await projects_repo.child_counts(w.conn, project_id)
        if counts and not cascade:
            message = "the project is not empty; ?cascade=true deletes everything in it"
            raise Conflict(message, code="project_not_empty", details=counts)
        await projects_repo.delete_children(w.conn, project_id)
        try:
            found = await versioned.delete(w.conn, PROJECTS, None, project_id,
                                           expected_version=expected)  # fmt: skip
        except VersionMismatch as exc:
            raise PreconditionFailed(exc.current) from None
        if not found:
            raise NotFound(f"project {project_id} not found", details={"project_id": project_id})
        w.audit("project.deleted", scope="projects", message=f"project {project_id} deleted",
                data={"project_id": project_id, "deleted": counts})  # fmt: skip
    return web.Response(status=204)


# ---- context extras ----------------------------------------------------------------------


async def context_totals(request: web.Request) -> web.Response:
    project_id = await project_path(request)
    totals = await projects_repo.context_totals(request.app[DB_KEY], project_id)
    return json_response({"project_id": project_id, **totals})


def pin_handler(pinned: bool) -> Handler:
    """``POST .../pin`` and ``.../unpin``: idempotent, so no If-Match needed."""

    async def pin(request: web.Request) -> web.Response:
        path = load_match(_ITEM_PATH, request)
        async with writing(request) as w:
            row = await versioned.get(w.conn, CONTEXT_ITEMS, path["project_id"], path["item_id"])
            if row is None:
                raise not_found(CONTEXT, path)
            if row["pinned"] != pinned:
                row = await versioned.update(
                    w.conn, CONTEXT_ITEMS, path["project_id"], path["item_id"],
                    {"pinned": pinned}, expected_version=None, now=w.now,
                )  # fmt: skip
                assert row is not None
            w.audit("context_item.pinned" if pinned else "context_item.unpinned",
                    scope="projects", message=f"context item {row['id']} pinned={pinned}",
                    data={"project_id": row["project_id"], "id": row["id"]})  # fmt: skip
        return json_response(row, headers=etag(row["version"]))

    return pin


def setup_project_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/projects", create_project)
    r.add_get("/projects", list_projects)
    r.add_get("/projects/{project_id}", get_project)
    r.add_patch("/projects/{project_id}", update_project)
    r.add_delete("/projects/{project_id}", delete_project)
    r.add_get("/projects/{project_id}/context/totals", context_totals)
    for resource in (IDEA, CONTEXT, WORKFLOW, GAP):
        h = handlers(resource)
        base = f"/projects/{{project_id}}/{resource.collection}"
        r.add_post(base, h["create"])
        r.add_get(base, h["list"])
        r.add_get(base + "/{item_id}", h["get"])
        r.add_patch(base + "/{item_id}", h["update"])
        r.add_delete(base + "/{item_id}", h["delete"])
    r.add_post("/projects/{project_id}/context/{item_id}/pin", pin_handler(True))
    r.add_post("/projects/{project_id}/context/{item_id}/unpin", pin_handler(False))
