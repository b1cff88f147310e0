"""Projects and everything scoped to them."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.api.common import (
    id_segment,
    project_not_found,
    project_path,
    require_changes,
    write,
)
from service.api.etag import etag, if_match
from service.api.openapi import operation, stored_row
from service.api.paging import versioned_page
from service.api.requests import load_json, load_match, load_query
from service.api.resources import Resource, ResourceHandlers, insert_new, not_found
from service.audit import AuditedWrite
from service.db import Work
from service.domain.projects import InvalidGraph, validate_graph
from service.errors import Conflict, UnprocessableEntity
from service.jsonutil import json_response
from service.keys import DB_KEY
from service.repositories import projects as projects_repo
from service.repositories import versioned
from service.repositories.projects import (
    CONTEXT_ITEMS,
    GAP_ANALYSES,
    IDEAS,
    PROJECTS,
    WORKFLOWS,
)
from service.schemas import projects as s


def check_graph(values: dict[str, Any]) -> None:
    if "graph" in values:
        try:
            validate_graph(values["graph"])
        except InvalidGraph as exc:
            raise UnprocessableEntity(
                "the workflow graph is invalid", code="invalid_graph", details=exc.problems
            ) from None


IDEA = Resource(
    IDEAS,
    "idea",
    "ideas",
    s.IdeaCreate(),
    s.IdeaUpdate(),
    s.IdeaListQuery(),
    filters=("status", "priority"),
)
CONTEXT = Resource(
    CONTEXT_ITEMS,
    "context_item",
    "context",
    s.ContextCreate(),
    s.ContextUpdate(),
    s.ContextListQuery(),
    filters=("pinned", "type"),
)
WORKFLOW = Resource(
    WORKFLOWS,
    "workflow",
    "workflows",
    s.WorkflowCreate(),
    s.WorkflowUpdate(),
    s.ListQuery(),
    check=check_graph,
)
GAP = Resource(
    GAP_ANALYSES,
    "gap_analysis",
    "gap-analyses",
    s.GapAnalysisCreate(),
    s.GapAnalysisUpdate(),
    s.ListQuery(),
)
PROJECT = Resource(
    PROJECTS, "project", "projects", s.ProjectCreate(), s.ProjectUpdate(), s.ProjectListQuery()
)

_PROJECT_PATH, _ITEM_PATH, _DELETE = s.ProjectPath(), s.ItemPath(), s.DeleteQuery()


# ---- projects (not scoped to anything, so not the generic handlers) ----------------------


PROJECT_ROW = stored_row(PROJECT.create, scoped=False)


@operation("Create a project", body=PROJECT.create, status=201, response=PROJECT_ROW)
async def create_project(request: web.Request) -> web.Response:
    values = await load_json(PROJECT.create, request)

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        row = yield from insert_new(w, PROJECT, values)
        w.audit(
            "project.created",
            scope="projects",
            message=f"project {row['id']} created",
            data={"project_id": row["id"], "name": row["name"]},
        )
        return row

    row = await write(request, work)
    headers = {"Location": f"/projects/{row['id']}", **etag(row["version"])}
    return json_response(row, status=201, headers=headers)


@operation("Projects", query=PROJECT.list_query, returns="page", response=PROJECT_ROW)
async def list_projects(request: web.Request) -> web.Response:
    q = load_query(PROJECT.list_query, request)
    return await versioned_page(request, PROJECTS, q)


@operation("One project", path=_PROJECT_PATH, response=PROJECT_ROW)
async def get_project(request: web.Request) -> web.Response:
    project_id = load_match(_PROJECT_PATH, request)["project_id"]
    row = await request.app[DB_KEY].read(versioned.get(PROJECTS, None, project_id))
    if row is None:
        raise project_not_found(project_id)
    return json_response(row, headers=etag(row["version"]))


@operation(
    "Change a project",
    path=_PROJECT_PATH,
    body=PROJECT.update,
    if_match="required",
    response=PROJECT_ROW,
)
async def update_project(request: web.Request) -> web.Response:
    project_id = load_match(_PROJECT_PATH, request)["project_id"]
    expected = if_match(request, required=True)
    changes = require_changes(await load_json(PROJECT.update, request))

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        row = yield from versioned.update(
            PROJECTS, None, project_id, changes, expected_version=expected, now=w.now
        )
        if row is None:
            raise project_not_found(project_id)
        w.audit(
            "project.updated",
            scope="projects",
            message=f"project {project_id} updated",
            data={"project_id": project_id, "version": row["version"]},
        )
        return row

    row = await write(request, work)
    return json_response(row, headers=etag(row["version"]))


@operation(
    "Delete a project (cascade=true: with its contents)",
    path=_PROJECT_PATH,
    query=_DELETE,
    status=204,
    returns="empty",
    if_match="optional",
)
async def delete_project(request: web.Request) -> web.Response:
    project_id = load_match(_PROJECT_PATH, request)["project_id"]
    cascade = load_query(_DELETE, request)["cascade"]
    expected = if_match(request, required=False)

    def work(w: AuditedWrite) -> Work[None]:
        counts = yield from projects_repo.child_counts(project_id)
        if counts and not cascade:
            message = "the project is not empty; ?cascade=true deletes everything in it"
            raise Conflict(message, code="project_not_empty", details=counts)
        yield from projects_repo.delete_children(project_id)
        found = yield from versioned.delete(PROJECTS, None, project_id, expected_version=expected)
        if not found:
            raise project_not_found(project_id)
        w.audit(
            "project.deleted",
            scope="projects",
            message=f"project {project_id} deleted",
            data={"project_id": project_id, "deleted": counts},
        )

    await write(request, work)
    return web.Response(status=204)


# ---- context extras ----------------------------------------------------------------------


@operation(
    "Token totals of a project's context items", path=_PROJECT_PATH, response=s.CONTEXT_TOTALS
)
async def context_totals(request: web.Request) -> web.Response:
    project_id = await project_path(request)
    totals = await projects_repo.context_totals(request.app[DB_KEY], project_id)
    return json_response({"project_id": project_id, **totals})


@operation("Pin a context item", path=_ITEM_PATH, response=stored_row(CONTEXT.create))
async def pin_item(request: web.Request) -> web.Response:
    """``POST .../pin``: idempotent, so no If-Match needed."""
    return await _set_pinned(request, True)


@operation("Unpin a context item", path=_ITEM_PATH, response=stored_row(CONTEXT.create))
async def unpin_item(request: web.Request) -> web.Response:
    return await _set_pinned(request, False)


async def _set_pinned(request: web.Request, pinned: bool) -> web.Response:
    path = load_match(_ITEM_PATH, request)

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        row = yield from versioned.get(CONTEXT_ITEMS, path["project_id"], path["item_id"])
        if row is None:
            raise not_found(CONTEXT, path)
        if row["pinned"] != pinned:
            row = yield from versioned.update(
                CONTEXT_ITEMS,
                path["project_id"],
                path["item_id"],
                {"pinned": pinned},
                expected_version=None,
                now=w.now,
            )
            assert row is not None
        w.audit(
            "context_item.pinned" if pinned else "context_item.unpinned",
            scope="projects",
            message=f"context item {row['id']} pinned={pinned}",
            data={"project_id": row["project_id"], "id": row["id"]},
        )
        return row

    row = await write(request, work)
    return json_response(row, headers=etag(row["version"]))


def setup_project_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/projects", create_project)
    r.add_get("/projects", list_projects)
    r.add_get("/projects/{project_id}", get_project)
    r.add_patch("/projects/{project_id}", update_project)
    r.add_delete("/projects/{project_id}", delete_project)
    r.add_get("/projects/{project_id}/context/totals", context_totals)
    for resource in (IDEA, CONTEXT, WORKFLOW, GAP):
        h = ResourceHandlers(resource)
        base = f"/projects/{{project_id}}/{resource.collection}"
        r.add_post(base, h.create)
        r.add_get(base, h.list)
        item = f"{base}/{id_segment('item_id')}"
        r.add_get(item, h.get)
        r.add_patch(item, h.update)
        r.add_delete(item, h.delete)
    r.add_post("/projects/{project_id}/context/{item_id}/pin", pin_item)
    r.add_post("/projects/{project_id}/context/{item_id}/unpin", unpin_item)
