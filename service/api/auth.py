"""Bearer-token authentication and scope checks, as one middleware.

Rules: ``/admin/*`` and ``/tokens*`` need ``admin`` (reads too); every other mutating request
needs ``write``; reads, ``/health`` and ``/metrics`` are open unless ``--auth-reads``, which
makes them need ``read``.
Scopes are independent: a token has exactly the scopes it was given.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from service.db import Database, DatabaseUnavailable
from service.db.coalescing import BatchedLookup
from service.domain.auth import Scope, hash_token, hashes_match
from service.errors import ApiError, Handler
from service.keys import CONFIG_KEY, DB_KEY
from service.repositories import tokens as tokens_repo
from service.repositories.tokens import TokenRecord
from service.timeutil import utc_now

log = logging.getLogger(__name__)

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TOUCH_INTERVAL_S = 60.0  # last_used_at is kept to the minute: a write per request would be waste


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="bobgen"'}


class Forbidden(ApiError):
    status, code = 403, "forbidden"
    headers = {"WWW-Authenticate": 'Bearer realm="bobgen", error="insufficient_scope"'}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is making the request. ``user`` is what the audit log records as the actor."""

    user: str
    token_id: int | None
    scopes: frozenset[Scope]


ANONYMOUS = Principal("anonymous", None, frozenset())
PRINCIPAL_KEY = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    found: Principal = request.get(PRINCIPAL_KEY, ANONYMOUS)
    return found


OPEN_PATHS = frozenset({"/livez", "/readyz", "/ui", "/docs", "/openapi.json"})
PAGE_FILES = ("/ui/static/", "/docs/static/")
ADMIN_ROOTS = frozenset({"/admin", "/tokens"})  # these and everything below them: admin only
ADMIN_PREFIXES = tuple(f"{root}/" for root in sorted(ADMIN_ROOTS))


def required_scope(request: web.Request, *, auth_reads: bool) -> Scope | None:
    path = request.path
    if request.method == "OPTIONS":
        return None  # CORS preflights carry no credentials by design
    if path in OPEN_PATHS or path.startswith(PAGE_FILES):
        # Probes, and the pages and files that hold no data: the ops page's, and the API's
        # description with Swagger UI, so that under --auth-reads a person can still read
        # the docs and enter a token with Authorize (the calls it makes need the token).
        return None
    if path == "/ui/data":
        if auth_reads:
            return Scope.ADMIN
        # Open, but a token sent is checked: what the page shows depends on who asks (an
        # admin sees the failing document files), and a wrong token is as wrong here as
        # anywhere.
        return Scope.READ if "Authorization" in request.headers else None
    if path in ADMIN_ROOTS or path.startswith(ADMIN_PREFIXES):
        return Scope.ADMIN
    if request.method in MUTATING_METHODS:
        return Scope.WRITE
    return Scope.READ if auth_reads else None


MAX_TOKEN_LENGTH = 512


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send a token as 'Authorization: Bearer <token>'")
    token = token.strip()
    # Tokens are printable ASCII; anything else (bytes that are not UTF-8 arrive as
    # surrogates) names no token, and would not even hash.
    if not (token.isascii() and token.isprintable()) or len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("invalid or revoked token")
    return token


class TokenCache:
    """Token records by hash, so a request pays no database hop to be authenticated.

    Every commit that revokes a token notifies ``auth_tokens`` (see ``tokens_repo.revoke``),
    which moves ``db.change_marker`` at once in the committing process (the next request is
    refused) and, through the signal file, within ``SIGNAL_POLL_S`` (0.1 s) in any other
    process on the same file (the CLI revoking beside a running server). A moved marker
    empties the cache. ``max_age_s`` bounds how long an entry lives even if a signal is lost
    (the file deleted, a revocation done with raw SQL). Unknown tokens are never cached.
    """

    def __init__(self, db: Database, *, max_age_s: float = 30.0, max_entries: int = 4096) -> None:
        self._db = db
        self._max_age_s = max_age_s
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, TokenRecord]] = {}
        self._marker = -1
        self._lookup = BatchedLookup(self._fetch)

    def __len__(self) -> int:
        return len(self._entries)

    async def find(self, digest: str) -> TokenRecord | None:
        marker = self._db.change_marker(tokens_repo.TOKENS_CHANNEL)
        if marker != self._marker:
            self._entries.clear()
            self._marker = marker
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is not None and now - entry[0] < self._max_age_s:
            return entry[1]
        record = await self._lookup.get(digest)
        # Keep it only if no revocation committed while it was being read.
        if record is not None and self._db.change_marker(tokens_repo.TOKENS_CHANNEL) == marker:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[digest] = (now, record)
        return record

    async def _fetch(self, digests: Sequence[str]) -> dict[str, TokenRecord]:
        return await tokens_repo.find_by_hashes(self._db, digests)


TOKEN_CACHE_KEY = web.AppKey("token_cache", TokenCache)


class _Toucher:
    """Updates ``last_used_at`` at most once per interval per token, off the request path."""

    def __init__(self) -> None:
        self._last: dict[int, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def maybe_touch(self, db: Database, token_id: int) -> None:
        now = time.monotonic()
        if now - self._last.get(token_id, -TOUCH_INTERVAL_S) < TOUCH_INTERVAL_S:
            return
        self._last[token_id] = now
        task = asyncio.get_running_loop().create_task(self._touch(db, token_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _touch(self, db: Database, token_id: int) -> None:
        try:
            await db.write(tokens_repo.touch(token_id, utc_now()))
        except DatabaseUnavailable as exc:  # an outage, reported once by the database layer
            log.debug("could not record last use of token %d: %s", token_id, exc)
        except Exception:
            log.warning("could not record last use of token %d", token_id, exc_info=True)


def auth_middleware() -> Middleware:
    toucher = _Toucher()

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        needed = required_scope(request, auth_reads=request.app[CONFIG_KEY].auth_reads)
        if needed is None or request.match_info.http_exception is not None:
            # Routing first: an unknown path is 404 and a wrong method 405, token or not.
            return await handler(request)
        digest = hash_token(_bearer(request))
        record = await request.app[TOKEN_CACHE_KEY].find(digest)
        # The index found the row by hash; compare again in constant time all the same.
        if record is None or not hashes_match(record.token_hash, digest) or record.revoked:
            log.warning(
                "rejected a bearer token from %s on %s %s",
                request.remote,
                request.method,
                request.path,
            )
            raise Unauthorized("invalid or revoked token")
        if needed not in record.scopes:
            raise Forbidden(
                f"this token lacks the '{needed}' scope",
                details={"required_scope": str(needed), "token_scopes": sorted(record.scopes)},
            )
        request[PRINCIPAL_KEY] = Principal(record.user, record.id, record.scopes)
        toucher.maybe_touch(request.app[DB_KEY], record.id)
        return await handler(request)

    return authenticate
