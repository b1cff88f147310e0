"""HTTP conventions every route follows, as middlewares: a request id on every response,
conditional GETs (``ETag`` / ``If-None-Match`` -> 304) and compression for clients that ask;
and the security headers every answer carries (:func:`security_headers`).
"""

from __future__ import annotations

import hashlib

from aiohttp import web
from aiohttp.typedefs import Middleware

from service.errors import Handler
from service.keys import REQUEST_ID_KEY
from service.requestcontext import REQUEST_ID_HEADER, current_request_id, request_id_for

# Below this, compressing costs more than the bytes it saves (and a 304 carries no body).
MIN_COMPRESSED_BYTES = 1024


def request_id_middleware() -> Middleware:
    @web.middleware
    async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request_id_for(request.headers.get(REQUEST_ID_HEADER))
        request[REQUEST_ID_KEY] = rid
        token = current_request_id.set(rid)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # what the error middleware lets through (redirects)
            exc.headers[REQUEST_ID_HEADER] = rid
            raise
        finally:
            current_request_id.reset(token)
        response.headers[REQUEST_ID_HEADER] = rid
        return response

    return request_id


def _single_resource(request: web.Request) -> bool:
    """A GET of one thing (``/documents/{id}``), not of a list: it gets an ETag."""
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical.endswith("}")


def _matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))


def conventions_middleware() -> Middleware:
    @web.middleware
    async def conventions(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
            return response
        body = response.body
        if request.method == "GET" and response.status == 200:
            etag = response.headers.get("ETag")
            if etag is None and _single_resource(request):
                # Resources without a version get a weak tag of their content.
                etag = f'W/"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'
                response.headers["ETag"] = etag
            given = request.headers.get("If-None-Match")
            if etag is not None and given is not None and _matches(given, etag):
                return web.Response(status=304, headers={"ETag": etag})
        if len(body) >= MIN_COMPRESSED_BYTES:
            response.headers["Vary"] = "Accept-Encoding"
            accepted = request.headers.get("Accept-Encoding", "")
            if "gzip" in accepted or "deflate" in accepted:
                response.enable_compression()
        return response

    return conventions


# The pages (/ui, /docs) load only their own files; nothing may frame them (clickjacking of
# the ops page, which holds an admin token). No inline script or style: Swagger UI sets its
# styles through the DOM, which a policy does not restrict.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGES = frozenset({"/ui", "/docs"})


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer: no MIME sniffing; on the pages a content security policy; and on an
    answer to a request that carried credentials, no caching anywhere (a shared cache must
    not hand one client's data to the next)."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.path in PAGES:
        response.headers["Content-Security-Policy"] = PAGE_POLICY
        response.headers["X-Frame-Options"] = "DENY"  # for browsers without frame-ancestors
    if "Authorization" in request.headers:
        response.headers["Cache-Control"] = "no-store"
