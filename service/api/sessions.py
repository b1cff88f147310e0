"""Sessions and what happens in them: commands, their logs, artifacts, debugger state."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.api.auth import principal
from service.api.common import write
from service.api.debug_common import audit, insert_row, owned_command, owned_session
from service.api.etag import etag, if_match
from service.api.openapi import operation
from service.api.paging import versioned_page
from service.api.requests import load_json, load_match, load_query
from service.audit import AuditedWrite
from service.db import Work
from service.domain.debug import CommandState, Missing, SessionState
from service.domain.secrets import redact, redact_all, redact_env
from service.errors import PayloadTooLarge
from service.jsonutil import json_response
from service.keys import DB_KEY
from service.repositories import debug as repo
from service.repositories import versioned
from service.schemas import debug as schemas
from service.timeutil import utc_iso

_SESSION_PATH, _COMMAND_PATH = schemas.SessionPath(), schemas.CommandPath()
_ARTIFACT_PATH = schemas.ArtifactPath()
_SESSION_CREATE, _SESSION_END = schemas.SessionCreate(), schemas.SessionEnd()
_SESSION_LIST = schemas.SessionListQuery()
_COMMAND_CREATE, _COMMAND_UPDATE = schemas.CommandCreate(), schemas.CommandUpdate()
_COMMAND_LIST = schemas.CommandListQuery()
_LOG_APPEND, _LOG_QUERY = schemas.LogAppend(), schemas.LogQuery()
_ARTIFACT_CREATE, _ARTIFACT_LIST = schemas.ArtifactCreate(), schemas.ArtifactListQuery()
_DEBUGGER_PUT = schemas.DebuggerPut()


def _session_id(request: web.Request) -> str:
    return str(load_match(_SESSION_PATH, request)["session_id"])


def _command_id(request: web.Request) -> str:
    return str(load_match(_COMMAND_PATH, request)["command_id"])


# ---- sessions -----------------------------------------------------------------------------


@operation("Start a session", body=_SESSION_CREATE, status=201, response=schemas.SESSION_RECORD)
async def create_session(request: web.Request) -> web.Response:
    body = await load_json(_SESSION_CREATE, request)
    user = principal(request).user

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        yield from repo.require(repo.REPOSITORIES, "repository", body["repository_id"])
        values = {
            **body,
            "user": user,
            "state": SessionState.ACTIVE.value,
            "started_at": w.now,
            "version": 1,
        }
        session = yield from insert_row(w, repo.SESSIONS, "session", values)
        debugger = {"session_id": session["id"], "state": {}, "updated_at": w.now, "version": 1}
        yield from versioned.insert(repo.DEBUGGER, debugger)
        return session

    row = await write(request, work)
    headers = {"Location": f"/sessions/{row['id']}", **etag(row["version"])}
    return json_response(row, status=201, headers=headers)


@operation("Sessions", query=_SESSION_LIST, returns="page", response=schemas.SESSION_RECORD)
async def list_sessions(request: web.Request) -> web.Response:
    q = load_query(_SESSION_LIST, request)
    filters = {
        "repository_id": q["repository_id"],
        "state": q["state"] and q["state"].value,
        "user": q["user"],
    }
    since = {"started_at": utc_iso(q["since"]) if q["since"] else None}
    return await versioned_page(request, repo.SESSIONS, q, filters=filters, at_least=since)


@operation("One session", path=_SESSION_PATH, response=schemas.SESSION_RECORD)
async def get_session(request: web.Request) -> web.Response:
    work = repo.require(repo.SESSIONS, "session", _session_id(request))
    row = await request.app[DB_KEY].read(work)
    return json_response(row, headers=etag(row["version"]))


@operation(
    "End a session: releases its worktree, cancels running commands",
    path=_SESSION_PATH,
    body=_SESSION_END,
    response=schemas.SESSION_RECORD,
)
async def end_session(request: web.Request) -> web.Response:
    session_id = _session_id(request)
    state = (await load_json(_SESSION_END, request))["state"]

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        yield from owned_session(request, session_id)
        row = yield from repo.end_session(session_id, state, now=w.now)
        audit(w, f"session.{state}", f"session {session_id} {state}", id=session_id)
        return row

    row = await write(request, work)
    return json_response(row, headers=etag(row["version"]))


# ---- commands -----------------------------------------------------------------------------


@operation(
    "Record a command of a session (secrets in env redacted)",
    path=_SESSION_PATH,
    body=_COMMAND_CREATE,
    status=201,
    response=schemas.COMMAND_RECORD,
)
async def create_command(request: web.Request) -> web.Response:
    session_id = _session_id(request)
    body = await load_json(_COMMAND_CREATE, request)
    # Before anything stores or logs it: secret-named variables, and secrets in any value.
    body["env"] = redact_env(body["env"])
    body["argv"] = redact_all(body["argv"])
    if body.get("cwd"):
        body["cwd"] = redact(body["cwd"])

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        yield from owned_session(request, session_id)
        yield from repo.active_session(session_id)
        values = {
            **body,
            "session_id": session_id,
            "state": CommandState.RUNNING.value,
            "started_at": w.now,
            "log_seq": 0,
            "version": 1,
        }
        return (yield from insert_row(w, repo.COMMANDS, "command", values))

    row = await write(request, work)
    headers = {"Location": f"/commands/{row['id']}", **etag(row["version"])}
    return json_response(row, status=201, headers=headers)


@operation(
    "Commands of a session",
    path=_SESSION_PATH,
    query=_COMMAND_LIST,
    returns="page",
    response=schemas.COMMAND_RECORD,
)
async def list_commands(request: web.Request) -> web.Response:
    session_id = _session_id(request)
    q = load_query(_COMMAND_LIST, request)
    await request.app[DB_KEY].read(repo.require(repo.SESSIONS, "session", session_id))
    state = q["state"] and q["state"].value
    filters = {"session_id": session_id, "state": state}
    return await versioned_page(request, repo.COMMANDS, q, filters=filters)


@operation("One command", path=_COMMAND_PATH, response=schemas.COMMAND_RECORD)
async def get_command(request: web.Request) -> web.Response:
    row = await request.app[DB_KEY].read(
        repo.require(repo.COMMANDS, "command", _command_id(request))
    )
    return json_response(row, headers=etag(row["version"]))


@operation(
    "Finish or cancel a command",
    path=_COMMAND_PATH,
    body=_COMMAND_UPDATE,
    response=schemas.COMMAND_RECORD,
)
async def update_command(request: web.Request) -> web.Response:
    command_id = _command_id(request)
    body = await load_json(_COMMAND_UPDATE, request)

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        yield from owned_command(request, command_id)
        row = yield from repo.change_command(
            command_id, body["state"], body["exit_code"], now=w.now
        )
        message = f"command {command_id} {row['state']}"
        audit(
            w,
            "command.updated",
            message,
            id=command_id,
            state=row["state"],
            exit_code=row["exit_code"],
        )
        return row

    row = await write(request, work)
    return json_response(row, headers=etag(row["version"]))


@operation(
    "Append log chunks (idempotent for retried batches)",
    path=_COMMAND_PATH,
    body=_LOG_APPEND,
    response=schemas.LOGS_APPENDED,
)
async def append_logs(request: web.Request) -> web.Response:
    command_id = _command_id(request)
    chunks = (await load_json(_LOG_APPEND, request))["chunks"]
    _check_log_sizes(chunks)
    batch = [(c["seq"], c["stream"].value, c["text"]) for c in chunks]

    def work(w: AuditedWrite) -> Work[repo.Appended]:
        yield from owned_command(request, command_id)
        got = yield from repo.append_logs(command_id, batch, now=w.now)
        message = f"{len(got.stored)} log chunk(s) of command {command_id}"
        audit(
            w,
            "command.logs_appended",
            message,
            id=command_id,
            seqs=got.stored[:1] + got.stored[-1:],
        )
        return got

    got = await write(request, work)
    body = {"command_id": command_id, "last_seq": got.last_seq, "stored": got.stored}
    return json_response({**body, "already_stored": got.already_stored})


def _check_log_sizes(chunks: list[dict[str, Any]]) -> None:
    if len(chunks) > schemas.MAX_CHUNKS:
        details = {"chunks": len(chunks), "max_chunks": schemas.MAX_CHUNKS}
        raise PayloadTooLarge(f"at most {schemas.MAX_CHUNKS} chunks a request", details=details)
    for chunk in chunks:
        if len(chunk["text"]) > schemas.MAX_CHUNK_CHARS:
            details = {"seq": chunk["seq"], "max_chunk_chars": schemas.MAX_CHUNK_CHARS}
            raise PayloadTooLarge("a log chunk is too long", details=details)


@operation(
    "Log chunks after a seq, for tailing",
    path=_COMMAND_PATH,
    query=_LOG_QUERY,
    response=schemas.LOG_TAIL,
)
async def read_logs(request: web.Request) -> web.Response:
    command_id = _command_id(request)
    q = load_query(_LOG_QUERY, request)
    work = repo.read_logs(command_id, after_seq=q["after_seq"], limit=q["limit"])
    items = await request.app[DB_KEY].read(work)
    last = items[-1]["seq"] if items else q["after_seq"]
    return json_response({"items": items, "limit": q["limit"], "next_after_seq": last})


# ---- artifacts ----------------------------------------------------------------------------


@operation(
    "Record an artifact (metadata only)",
    path=_SESSION_PATH,
    body=_ARTIFACT_CREATE,
    status=201,
    response=schemas.ARTIFACT_RECORD,
)
async def create_artifact(request: web.Request) -> web.Response:
    session_id = _session_id(request)
    body = await load_json(_ARTIFACT_CREATE, request)

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        yield from owned_session(request, session_id)
        if body["command_id"] is not None:
            yield from repo.command_in_session(body["command_id"], session_id)
        values = {**body, "session_id": session_id, "created_at": w.now}
        return (yield from insert_row(w, repo.ARTIFACTS, "artifact", values))

    row = await write(request, work)
    return json_response(row, status=201, headers={"Location": f"/artifacts/{row['id']}"})


@operation(
    "Artifacts of a session",
    path=_SESSION_PATH,
    query=_ARTIFACT_LIST,
    returns="page",
    response=schemas.ARTIFACT_RECORD,
)
async def list_artifacts(request: web.Request) -> web.Response:
    session_id = _session_id(request)
    q = load_query(_ARTIFACT_LIST, request)
    await request.app[DB_KEY].read(repo.require(repo.SESSIONS, "session", session_id))
    filters = {"session_id": session_id, "command_id": q["command_id"]}
    return await versioned_page(request, repo.ARTIFACTS, q, filters=filters)


@operation("One artifact", path=_ARTIFACT_PATH, response=schemas.ARTIFACT_RECORD)
async def get_artifact(request: web.Request) -> web.Response:
    artifact_id = load_match(_ARTIFACT_PATH, request)["artifact_id"]
    row = await request.app[DB_KEY].read(repo.require(repo.ARTIFACTS, "artifact", artifact_id))
    return json_response(row)


@operation("Delete an artifact's record", path=_ARTIFACT_PATH, status=204, returns="empty")
async def delete_artifact(request: web.Request) -> web.Response:
    artifact_id = load_match(_ARTIFACT_PATH, request)["artifact_id"]

    def work(w: AuditedWrite) -> Work[None]:
        artifact = yield from repo.require(repo.ARTIFACTS, "artifact", artifact_id)
        yield from owned_session(request, artifact["session_id"])
        if not (
            yield from versioned.delete(repo.ARTIFACTS, None, artifact_id, expected_version=None)
        ):
            raise Missing("artifact", artifact_id)
        audit(w, "artifact.deleted", f"artifact {artifact_id} deleted", id=artifact_id)

    await write(request, work)
    return web.Response(status=204)


# ---- debugger state -----------------------------------------------------------------------


@operation(
    "The debugger state of a session (ETag = version)",
    path=_SESSION_PATH,
    response=schemas.DEBUGGER_RECORD,
)
async def get_debugger(request: web.Request) -> web.Response:
    row = await request.app[DB_KEY].read(
        repo.require(repo.DEBUGGER, "session", _session_id(request))
    )
    return json_response(row, headers=etag(row["version"]))


@operation(
    "Replace the debugger state",
    path=_SESSION_PATH,
    body=_DEBUGGER_PUT,
    if_match="required",
    response=schemas.DEBUGGER_RECORD,
)
async def put_debugger(request: web.Request) -> web.Response:
    session_id = _session_id(request)
    expected = if_match(request, required=True)
    state = (await load_json(_DEBUGGER_PUT, request))["state"]

    def work(w: AuditedWrite) -> Work[dict[str, Any]]:
        yield from owned_session(request, session_id)
        row = yield from versioned.update(
            repo.DEBUGGER, None, session_id, {"state": state}, expected_version=expected, now=w.now
        )
        if row is None:
            raise Missing("session", session_id)
        audit(
            w,
            "debugger.updated",
            f"debugger state of session {session_id} updated",
            id=session_id,
            version=row["version"],
        )
        return row

    row = await write(request, work)
    return json_response(row, headers=etag(row["version"]))


def setup_session_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/sessions", create_session)
    r.add_get("/sessions", list_sessions)
    r.add_get("/sessions/{session_id}", get_session)
    r.add_post("/sessions/{session_id}/end", end_session)
    r.add_post("/sessions/{session_id}/commands", create_command)
    r.add_get("/sessions/{session_id}/commands", list_commands)
    r.add_get("/commands/{command_id}", get_command)
    r.add_patch("/commands/{command_id}", update_command)
    r.add_post("/commands/{command_id}/logs", append_logs)
    r.add_get("/commands/{command_id}/logs", read_logs)
    r.add_post("/sessions/{session_id}/artifacts", create_artifact)
    r.add_get("/sessions/{session_id}/artifacts", list_artifacts)
    r.add_get("/artifacts/{artifact_id}", get_artifact)
    r.add_delete("/artifacts/{artifact_id}", delete_artifact)
    r.add_get("/sessions/{session_id}/debugger", get_debugger)
    r.add_put("/sessions/{session_id}/debugger", put_debugger)
