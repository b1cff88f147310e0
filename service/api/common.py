"""Helpers every handler module may import (downward only): writes, ids, project paths."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from aiohttp import web

from service.api.auth import principal
from service.api.requests import load_match
from service.audit import Body, audited_write
from service.errors import InvalidBody, NotFound
from service.keys import DB_KEY
from service.repositories.projects import project_exists
from service.schemas.common import RESERVED_IDS
from service.schemas.projects import ProjectPath

T = TypeVar("T")
_PROJECT_PATH = ProjectPath()


async def write(request: web.Request, body: Body[T]) -> T:
    """Run ``body`` as one audited unit of work on behalf of the request's token user."""
    return await audited_write(request.app[DB_KEY], principal(request).user, body)


def id_segment(name: str) -> str:
    """A path segment ``{name}`` that matches any id but the reserved words, so that a fixed
    route beside it (``/context/totals``) is the only route for that path: a request there
    reaches one handler, and a 405's ``Allow`` lists that route's methods only."""
    reserved = "|".join(sorted(RESERVED_IDS))
    return f"{{{name}:(?!(?:{reserved})$)[^{{}}/]+}}"


def new_id() -> str:
    return uuid.uuid4().hex


async def project_path(request: web.Request) -> str:
    """The project id of the URL, which must exist (404 otherwise)."""
    project_id: str = load_match(_PROJECT_PATH, request)["project_id"]
    if not await request.app[DB_KEY].read(project_exists(project_id)):
        raise project_not_found(project_id)
    return project_id


def project_not_found(project_id: str) -> NotFound:
    return NotFound(f"project {project_id} not found", details={"project_id": project_id})


def require_changes(changes: dict[str, Any]) -> dict[str, Any]:
    if not changes:
        raise InvalidBody("nothing to change: give at least one field", code="validation_failed")
    return changes
