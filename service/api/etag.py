"""Optimistic locking over HTTP: ``ETag`` is the row version, ``If-Match`` must name it."""

from __future__ import annotations

from aiohttp import web

from service.errors import ApiError, InvalidParameter, PreconditionFailed

__all__ = ["PreconditionFailed", "PreconditionRequired", "etag", "if_match"]


class PreconditionRequired(ApiError):
    status, code = 428, "precondition_required"


def etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def if_match(request: web.Request, *, required: bool) -> int | None:
    """The version named by ``If-Match``; None for ``*`` or (when allowed) no header."""
    raw = request.headers.get("If-Match")
    if raw is None:
        if required:
            raise PreconditionRequired(
                "send If-Match with the ETag of the version you are changing"
            )
        return None
    raw = raw.strip()
    if raw == "*":
        return None
    value = raw.removeprefix("W/").strip('"')
    if not value.isdigit() or len(value) > 18:
        raise InvalidParameter(
            "If-Match must be an ETag from a previous response", details={"If-Match": raw}
        )
    return int(value)
