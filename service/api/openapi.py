"""The OpenAPI 3.1 document, generated from the routes and the marshmallow schemas they use.

Each handler says what it takes and gives with :func:`operation` (query, path and body schemas,
the success status and shape); the generic project resources are described from their
:class:`~service.api.resources.Resource`. :func:`build_spec` walks the app's router, so a route
without a description fails the build (and a test) instead of going missing from the document.
Built once per app, served at ``/openapi.json``; ``/docs`` renders it with Swagger UI served
from the ``swagger-ui-py`` package's files (no CDN).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_cls
from marshmallow import Schema, fields, validate

from service import __version__
from service.schemas.common import Cursor, FieldList

H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])


@dataclass(slots=True)
class SpecCache:
    """The document, built on the first request for it (tens of milliseconds: not worth
    paying at every start, nor more than once)."""

    spec: dict[str, Any] | None = None


SPEC_KEY = web.AppKey("openapi_spec", SpecCache)


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    query: Schema | None = None
    path: Schema | None = None
    body: Schema | None = None
    status: int = 200
    returns: str = "object"  # object | page | empty | text | html | json (any) | asset
    if_match: str | None = None  # "required" or "optional"
    open: bool = False  # no token ever (probes)


_OPERATIONS: dict[Callable[..., Any], Operation] = {}


def describe(handler: Callable[..., Any], op: Operation) -> None:
    """Record ``op`` as the description of ``handler`` (a function, or a bound method of a
    handler object that describes its own methods, as ResourceHandlers does)."""
    _OPERATIONS[handler] = op


def operation(summary: str, **details: Any) -> Callable[[H], H]:
    """Describe a handler for the OpenAPI document (see :class:`Operation`)."""

    def mark(handler: H) -> H:
        describe(handler, Operation(summary, **details))
        return handler

    return mark


class Undocumented(LookupError):
    """A route has no :func:`operation` description."""


def _describe(handler: Any, method: str) -> Operation:
    found = _OPERATIONS.get(handler)
    if found is None:
        raise Undocumented(f"{method} handler {handler!r} has no OpenAPI description")
    return found


def _schema_name(schema: Any) -> str:
    cls = cast(type[Schema], resolve_schema_cls(schema))
    module = cls.__module__.rsplit(".", 1)[-1].title()
    return f"{module}{cls.__name__.removesuffix('Schema')}"


ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string", "description": "stable, machine-readable"},
                "message": {"type": "string"},
                "details": {},
                "request_id": {"type": "string"},
            },
        }
    },
}
PAGE = {
    "type": "object",
    "required": ["items", "limit", "next", "next_url"],
    "properties": {
        "items": {"type": "array", "items": {}},
        "limit": {"type": "integer"},
        "next": {"type": ["string", "null"], "description": "the cursor of the next page"},
        "next_url": {"type": ["string", "null"], "description": "the next page's URL"},
    },
}
_BODIES = {
    "object": {"application/json": {"schema": {"type": "object"}}},
    "json": {"application/json": {"schema": {}}},
    "page": {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}}},
    "text": {"text/plain": {"schema": {"type": "string"}}},
    "html": {"text/html": {"schema": {"type": "string"}}},
    # The files of /docs and /ui: scripts, style sheets, icons.
    "asset": {
        media: {"schema": {"type": "string"}}
        for media in ("application/javascript", "text/css", "image/png")
    },
}


def build_spec(app: web.Application) -> dict[str, Any]:
    plugin = MarshmallowPlugin(schema_name_resolver=_schema_name)
    spec = APISpec(
        title="BobGen",
        version=__version__,
        openapi_version="3.1.0",
        plugins=[plugin],
        info={
            "description": "A durable, fast, observable store behind a REST API. Errors are "
            'always the envelope `{"error": {"code", "message", "details"}}`.'
        },
    )
    untyped: Any = plugin  # apispec's plugin methods carry no annotations
    untyped.map_to_openapi_type(Cursor, "string", None)
    untyped.map_to_openapi_type(FieldList, "string", None)
    spec.components.schema("Error", ERROR)
    spec.components.schema("Page", PAGE)
    spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "description": "a BobGen token"}
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        resource = route.resource
        if route.method in ("HEAD", "OPTIONS") or resource is None:  # OPTIONS: CORS preflight
            continue
        op = _describe(route.handler, route.method)
        method = route.method.lower()
        paths.setdefault(resource.canonical, {})[method] = _operation(op, method)
    for path, operations in sorted(paths.items()):
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _operation(op: Operation, method: str) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    if op.path is not None:
        parameters.append({"in": "path", "schema": op.path})
    if op.query is not None:
        parameters.append({"in": "query", "schema": op.query})
    if op.if_match is not None:
        parameters.append(
            {
                "in": "header",
                "name": "If-Match",
                "required": op.if_match == "required",
                "schema": {"type": "string"},
                "description": "the ETag of the version being changed (428 without, 412 stale)",
            }
        )
    success: dict[str, Any] = {"description": "success"}
    if op.returns != "empty":
        success["content"] = _BODIES[op.returns]
    result: dict[str, Any] = {
        "summary": op.summary,
        "parameters": parameters,
        "responses": {
            str(op.status): success,
            "default": {
                "description": "an error (4xx, or 503 when the database is unavailable)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
        "security": [] if op.open else [{"bearer": []}, {}],
    }
    if method == "get" and op.returns == "object":
        result["responses"]["304"] = {"description": "not modified (If-None-Match matched)"}
    if op.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": op.body}},
        }
    return result


# ---- serving ------------------------------------------------------------------------------

SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>BobGen API</title>
<link rel="icon" href="/docs/static/favicon-32x32.png">
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/static/init.js"></script></body></html>
"""
INIT_JS = """window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
  deepLinking: true, persistAuthorization: true});
"""


def swagger_dir() -> Path:
    return Path(str(resources.files("swagger_ui") / "static"))


@operation("The OpenAPI 3.1 document of this API", returns="json", open=True)
async def openapi_json(request: web.Request) -> web.Response:
    cache = request.app[SPEC_KEY]
    if cache.spec is None:
        cache.spec = build_spec(request.app)
    return web.json_response(cache.spec)


@operation("The API documentation page (Swagger UI, served by this app)", returns="html")
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_PAGE, content_type="text/html")


class DocsAsset(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))


@operation("A static file of the documentation page", path=DocsAsset(), returns="asset")
async def docs_static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == "init.js":
        return web.Response(text=INIT_JS, content_type="application/javascript")
    if name not in SWAGGER_FILES:
        raise web.HTTPNotFound()
    # Named here, not guessed from the platform's MIME table (which differs between Pythons).
    media = {".js": "application/javascript", ".css": "text/css", ".png": "image/png"}
    content_type = media[Path(name).suffix]
    return web.FileResponse(swagger_dir() / name, headers={"Content-Type": content_type})


def setup_openapi(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs_page)
    app.router.add_get("/docs/static/{name}", docs_static)
    app[SPEC_KEY] = SpecCache()


# ---- the route index of docs/api.md ---------------------------------------------------------

INDEX_START, INDEX_END = "<!-- route-index:start -->", "<!-- route-index:end -->"


def route_index(spec: dict[str, Any]) -> str:
    """Every operation of ``spec`` as a Markdown table (what docs/api.md's index holds)."""
    lines = ["| method | path | what it does |", "| --- | --- | --- |"]
    for path, operations in sorted(spec["paths"].items()):
        for method, op in sorted(operations.items()):
            lines.append(f"| {method.upper()} | `{path}` | {op['summary']} |")
    return "\n".join(lines)


def write_route_index(api_md: Path) -> None:
    """Regenerate the index in docs/api.md from a fresh app's document:
    ``.venv/bin/python -m service.api.openapi docs/api.md``."""
    from service.app import create_app
    from service.config import Config

    text = api_md.read_text()
    head, rest = text.split(INDEX_START, 1)
    _, tail = rest.split(INDEX_END, 1)
    index = route_index(build_spec(create_app(Config())))
    api_md.write_text(f"{head}{INDEX_START}\n{index}\n{INDEX_END}{tail}")


if __name__ == "__main__":
    import sys

    # As __main__ this file is a second copy of the module: use the one the handlers used.
    from service.api import openapi

    openapi.write_route_index(Path(sys.argv[1]))
