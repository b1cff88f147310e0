"""Optimistic locking over HTTP: ``ETag`` is the row version, ``If-Match`` must name it."""

from __future__ import annotations

import re

from aiohttp import web

from service.errors import ApiError, InvalidParameter, PreconditionFailed

__all__ = ["PreconditionFailed", "PreconditionRequired", "etag", "if_match"]


class PreconditionRequired(ApiError):
    status, code = 428, "precondition_required"


def etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


MAX_VERSION = 2**31 - 1  # the version columns are 32-bit integers
ETAG = re.compile(r'\s*(?:W/)?"(\d{1,18})"\s*')


def if_match(request: web.Request, *, required: bool) -> frozenset[int] | None:
    """The versions named by ``If-Match`` (one ETag, or a list as RFC 9110 allows:
    ``"3", "4"``); None for ``*`` or (when allowed) no header."""
    raw = request.headers.get("If-Match")
    if raw is None:
        if required:
            raise PreconditionRequired(
                "send If-Match with the ETag of the version you are changing"
            )
        return None
    if raw.strip() == "*":
        return None
    tags = [ETAG.fullmatch(part) for part in raw.split(",")]
    if not raw.strip() or not all(tags):
        raise InvalidParameter(
            "If-Match must be an ETag from a previous response, a list of them, or *",
            details={"If-Match": raw},
        )
    # A version beyond the column's range can never be current: it matches nothing (412),
    # and 0 stands for "nothing" (versions start at 1) so the list is never empty.
    versions = frozenset(int(tag.group(1)) for tag in tags if tag)
    return frozenset(v for v in versions if v <= MAX_VERSION) or frozenset({0})
