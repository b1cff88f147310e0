"""Helpers the debug-metadata handlers share (worktrees.py and sessions.py import them
downward): their audit rows, inserts with an id, and the session ownership rule."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.api.auth import principal
from service.api.common import new_id
from service.audit import AuditedWrite
from service.db import UniqueViolation, Work
from service.domain.auth import Scope
from service.domain.debug import Refused, check_owner
from service.repositories import debug as repo
from service.repositories import versioned
from service.repositories.versioned import Table


def audit(w: AuditedWrite, event: str, message: str, **data: Any) -> None:
    w.audit(event, scope="debug", message=message, data=data)


def insert_row(
    w: AuditedWrite, table: Table, kind: str, values: dict[str, Any]
) -> Work[dict[str, Any]]:
    """Insert with a new id (unless given): a taken id or unique name is 409."""
    values = {**values, "id": values.get("id") or new_id()}
    try:
        row = yield from versioned.insert(table, values)
    except UniqueViolation:
        raise Refused(
            "already_exists", f"a {kind} with this id or name exists already", {"id": values["id"]}
        ) from None
    assert row is not None
    audit(w, f"{kind}.created", f"{kind} {row['id']} created", id=row["id"])
    return row


def owned_session(request: web.Request, session_id: str) -> Work[dict[str, Any]]:
    """The session, if the request's user started it or holds the admin scope (403
    otherwise, 404 when there is no such session)."""
    session = yield from repo.require(repo.SESSIONS, "session", session_id)
    caller = principal(request)
    check_owner(session, caller.user, admin=Scope.ADMIN in caller.scopes)
    return session


def owned_command(request: web.Request, command_id: str) -> Work[dict[str, Any]]:
    """The command, if its session is the caller's (see :func:`owned_session`)."""
    command = yield from repo.require(repo.COMMANDS, "command", command_id)
    yield from owned_session(request, command["session_id"])
    return command
