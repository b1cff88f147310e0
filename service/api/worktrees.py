"""Repositories and their worktrees: CRUD, reserve, renew, release (docs/debug-metadata.md)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.api.common import id_segment, write
from service.api.debug_common import audit, insert_row, owned_session
from service.api.etag import etag, if_match
from service.api.openapi import operation, stored_row
from service.api.paging import versioned_page
from service.api.requests import load_json, load_match, load_query
from service.audit import AuditedWrite
from service.db import UniqueViolation, Work
from service.domain.debug import WORKTREE_TRANSITIONS, Missing, Refused, WorktreeState
from service.domain.statemachine import check_transition
from service.jsonutil import json_response
from service.keys import CLOCK_KEY, DB_KEY
from service.repositories import debug as repo
from service.repositories import versioned
from service.schemas import debug as schemas

_REPOSITORY_PATH, _WORKTREE_PATH = schemas.RepositoryPath(), schemas.WorktreePath()
_REPOSITORY_CREATE, _REPOSITORY_UPDATE = schemas.RepositoryCreate(), schemas.RepositoryUpdate()
_REPOSITORY_LIST = schemas.RepositoryListQuery()
_WORKTREE_CREATE, _WORKTREE_UPDATE = schemas.WorktreeCreate(), schemas.WorktreeUpdate()
_WORKTREE_LIST = schemas.WorktreeListQuery()
_RESERVE, _RENEW, _RELEASE = schemas.Reserve(), schemas.Renew(), schemas.Release()


# ---- repositories -------------------------------------------------------------------------

REPOSITORY_ROW = stored_row(_REPOSITORY_CREATE, scoped=False)
WORKTREE_ROW = stored_row(_WORKTREE_CREATE, scoped=False)


@operation("Create a repository", body=_REPOSITORY_CREATE, status=201, response=REPOSITORY_ROW)
async def create_repository(request: web.Request) -> web.Response:
    body = await load_json(_REPOSITORY_CREATE, request)

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        values = {**body, "created_at": w.now, "updated_at": w.now, "version": 1}
        return (yield from insert_row(w, repo.REPOSITORIES, "repository", values))

    row = await write(request, work)
    headers = {"Location": f"/repositories/{row['id']}", **etag(row["version"])}
    return json_response(row, status=201, headers=headers)


@operation("Repositories", query=_REPOSITORY_LIST, returns="page", response=REPOSITORY_ROW)
async def list_repositories(request: web.Request) -> web.Response:
    q = load_query(_REPOSITORY_LIST, request)
    return await versioned_page(request, repo.REPOSITORIES, q)


@operation("One repository", path=_REPOSITORY_PATH, response=REPOSITORY_ROW)
async def get_repository(request: web.Request) -> web.Response:
    repository_id = load_match(_REPOSITORY_PATH, request)["repository_id"]
    row = await request.app[DB_KEY].read(
        repo.require(repo.REPOSITORIES, "repository", repository_id)
    )
    return json_response(row, headers=etag(row["version"]))


@operation(
    "Change a repository",
    path=_REPOSITORY_PATH,
    body=_REPOSITORY_UPDATE,
    if_match="required",
    response=REPOSITORY_ROW,
)
async def update_repository(request: web.Request) -> web.Response:
    repository_id = load_match(_REPOSITORY_PATH, request)["repository_id"]
    expected = if_match(request, required=True)
    changes = await load_json(_REPOSITORY_UPDATE, request)

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        try:
            row = yield from versioned.update(
                repo.REPOSITORIES,
                None,
                repository_id,
                changes,
                expected_version=expected,
                now=w.now,
            )
        except UniqueViolation:
            raise Refused("already_exists", "a repository with this name exists already") from None
        if row is None:
            raise Missing("repository", repository_id)
        audit(w, "repository.updated", f"repository {repository_id} updated", id=repository_id)
        return row

    row = await write(request, work)
    return json_response(row, headers=etag(row["version"]))


@operation(
    "Delete a repository and all under it (409 while a session is active)",
    path=_REPOSITORY_PATH,
    status=204,
    returns="empty",
    if_match="optional",
)
async def delete_repository(request: web.Request) -> web.Response:
    repository_id = load_match(_REPOSITORY_PATH, request)["repository_id"]
    expected = if_match(request, required=False)

    def work(w: AuditedWrite) -> Work[None]:
        yield from repo.delete_repository(repository_id, expected_version=expected)
        audit(w, "repository.deleted", f"repository {repository_id} deleted", id=repository_id)

    await write(request, work)
    return web.Response(status=204)


# ---- worktrees ----------------------------------------------------------------------------


@operation(
    "Add a worktree to a repository",
    path=_REPOSITORY_PATH,
    body=_WORKTREE_CREATE,
    status=201,
    response=WORKTREE_ROW,
)
async def create_worktree(request: web.Request) -> web.Response:
    repository_id = load_match(_REPOSITORY_PATH, request)["repository_id"]
    body = await load_json(_WORKTREE_CREATE, request)

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        yield from repo.require(repo.REPOSITORIES, "repository", repository_id)
        values = {
            **body,
            "repository_id": repository_id,
            "state": WorktreeState.FREE.value,
            "created_at": w.now,
            "updated_at": w.now,
            "version": 1,
        }
        return (yield from insert_row(w, repo.WORKTREES, "worktree", values))

    row = await write(request, work)
    location = f"/repositories/{repository_id}/worktrees/{row['id']}"
    return json_response(row, status=201, headers={"Location": location, **etag(row["version"])})


@operation(
    "Worktrees of a repository",
    path=_REPOSITORY_PATH,
    query=_WORKTREE_LIST,
    returns="page",
    response=WORKTREE_ROW,
)
async def list_worktrees(request: web.Request) -> web.Response:
    repository_id = load_match(_REPOSITORY_PATH, request)["repository_id"]
    q = load_query(_WORKTREE_LIST, request)
    await request.app[DB_KEY].read(repo.require(repo.REPOSITORIES, "repository", repository_id))
    state = q["state"] and q["state"].value
    filters = {"repository_id": repository_id, "state": state}
    return await versioned_page(request, repo.WORKTREES, q, filters=filters)


@operation("One worktree", path=_WORKTREE_PATH, response=WORKTREE_ROW)
async def get_worktree(request: web.Request) -> web.Response:
    path = load_match(_WORKTREE_PATH, request)
    row = await request.app[DB_KEY].read(repo.worktree_in(**path))
    return json_response(row, headers=etag(row["version"]))


@operation(
    "Change a worktree's branch, retire it or put it back",
    path=_WORKTREE_PATH,
    body=_WORKTREE_UPDATE,
    if_match="required",
    response=WORKTREE_ROW,
)
async def update_worktree(request: web.Request) -> web.Response:
    path = load_match(_WORKTREE_PATH, request)
    expected = if_match(request, required=True)
    changes = await load_json(_WORKTREE_UPDATE, request)

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        current = yield from repo.worktree_in(**path)
        if "state" in changes:
            state = changes["state"]
            check_transition(WORKTREE_TRANSITIONS, WorktreeState(current["state"]), state)
            changes["state"] = state.value
        row = yield from versioned.update(
            repo.WORKTREES, None, path["worktree_id"], changes, expected_version=expected, now=w.now
        )
        assert row is not None
        audit(w, "worktree.updated", f"worktree {row['id']} updated", id=row["id"])
        return row

    row = await write(request, work)
    return json_response(row, headers=etag(row["version"]))


@operation(
    "Delete a worktree (409 while reserved)", path=_WORKTREE_PATH, status=204, returns="empty"
)
async def delete_worktree(request: web.Request) -> web.Response:
    path = load_match(_WORKTREE_PATH, request)

    def work(w: AuditedWrite) -> Work[None]:
        yield from repo.delete_worktree(**path)
        audit(w, "worktree.deleted", f"worktree {path['worktree_id']} deleted", **path)

    await write(request, work)
    return web.Response(status=204)


@operation(
    "Reserve a free (or expired) worktree for a session, atomically",
    path=_REPOSITORY_PATH,
    body=_RESERVE,
    status=201,
    response=WORKTREE_ROW,
)
async def reserve_worktree(request: web.Request) -> web.Response:
    repository_id = load_match(_REPOSITORY_PATH, request)["repository_id"]
    body = await load_json(_RESERVE, request)
    clock = request.app[CLOCK_KEY]

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        yield from owned_session(request, body["session_id"])
        got = yield from repo.reserve(
            repository_id,
            body["session_id"],
            branch=body["branch"],
            clock_now=clock.iso(),
            lease_until=clock.iso(body["lease_s"]),
            now=w.now,
        )
        _audit_reservation(w, got, body["session_id"])
        return got.worktree

    row = await write(request, work)
    location = f"/repositories/{repository_id}/worktrees/{row['id']}"
    return json_response(row, status=201, headers={"Location": location, **etag(row["version"])})


def _audit_reservation(w: AuditedWrite, got: repo.Reservation, session_id: str) -> None:
    """One write, one audit row: a reclaim names both sessions and when the lease ran out."""
    wt_id = got.worktree["id"]
    if got.reclaimed_from is None:
        message = f"worktree {wt_id} reserved by session {session_id}"
        audit(w, "worktree.reserved", message, id=wt_id, session_id=session_id)
        return
    message = (
        f"worktree {wt_id} reclaimed by session {session_id} from session "
        f"{got.reclaimed_from}, whose lease expired at {got.expired_at}"
    )
    audit(
        w,
        "worktree.reclaimed",
        message,
        id=wt_id,
        session_id=session_id,
        from_session=got.reclaimed_from,
        lease_expired_at=got.expired_at,
    )


@operation(
    "Extend the lease (holder only)", path=_WORKTREE_PATH, body=_RENEW, response=WORKTREE_ROW
)
async def renew_worktree(request: web.Request) -> web.Response:
    path = load_match(_WORKTREE_PATH, request)
    body = await load_json(_RENEW, request)
    lease_until = request.app[CLOCK_KEY].iso(body["lease_s"])

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        yield from owned_session(request, body["session_id"])
        row = yield from repo.renew(
            **path, session_id=body["session_id"], lease_until=lease_until, now=w.now
        )
        audit(
            w, "worktree.renewed", f"worktree {row['id']} renewed", id=row["id"], until=lease_until
        )
        return row

    row = await write(request, work)
    return json_response(row, headers=etag(row["version"]))


@operation(
    "Release the worktree (holder only)", path=_WORKTREE_PATH, body=_RELEASE, response=WORKTREE_ROW
)
async def release_worktree(request: web.Request) -> web.Response:
    path = load_match(_WORKTREE_PATH, request)
    session_id = (await load_json(_RELEASE, request))["session_id"]

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        yield from owned_session(request, session_id)
        row = yield from repo.release(**path, session_id=session_id, now=w.now)
        message = f"worktree {row['id']} released by session {session_id}"
        audit(w, "worktree.released", message, id=row["id"], session_id=session_id)
        return row

    row = await write(request, work)
    return json_response(row, headers=etag(row["version"]))


def setup_worktree_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/repositories", create_repository)
    r.add_get("/repositories", list_repositories)
    r.add_get("/repositories/{repository_id}", get_repository)
    r.add_patch("/repositories/{repository_id}", update_repository)
    r.add_delete("/repositories/{repository_id}", delete_repository)
    r.add_post("/repositories/{repository_id}/worktrees", create_worktree)
    r.add_get("/repositories/{repository_id}/worktrees", list_worktrees)
    r.add_post("/repositories/{repository_id}/worktrees/reserve", reserve_worktree)
    base = f"/repositories/{{repository_id}}/worktrees/{id_segment('worktree_id')}"
    r.add_get(base, get_worktree)
    r.add_patch(base, update_worktree)
    r.add_delete(base, delete_worktree)
    r.add_post(f"{base}/renew", renew_worktree)
    r.add_post(f"{base}/release", release_worktree)
