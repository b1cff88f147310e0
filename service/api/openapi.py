"""The OpenAPI 3.1 document, generated from the routes and the marshmallow schemas they use.

Each handler says what it takes and gives with :func:`operation` (query, path and body schemas,
the success status and shape); the generic project resources are described from their
:class:`~service.api.resources.Resource`. :func:`build_spec` walks the app's router, so a route
without a description fails the build (and a test) instead of going missing from the document.
Built once per app, served at ``/openapi.json``; ``/docs`` renders it with Swagger UI served
from the ``swagger-ui-py`` package's files (no CDN).
"""

from __future__ import annotations

import re
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
from service.api.auth import ADMIN_ROOTS
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
    response: Any = None  # the object returned (or each item of a page): a Schema or a dict


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


TIMESTAMP = {"type": "string", "format": "date-time", "description": "ISO-8601, UTC"}


def stored_row(create: Schema, *, key: str = "id", scoped: bool = True) -> dict[str, Any]:
    """A row as the API returns it: what ``create`` takes, plus its key, its version (the
    ETag) and its timestamps (and its project, for project-scoped rows)."""
    properties: dict[str, Any] = {
        key: {"type": "string"},
        "version": {"type": "integer", "minimum": 1, "description": "the row version (ETag)"},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    }
    if scoped:
        properties["project_id"] = {"type": "string"}
    added = {"type": "object", "required": sorted(properties), "properties": properties}
    # Marked for _tighten: the create schema refuses unknown keys, a returned row has more.
    return {"allOf": [create, added], "x-row": True}


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
        "items": {"type": "array", "items": {"type": "object"}},
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
    untyped.converter.add_attribute_function(_field_extras)
    spec.components.schema("Error", ERROR)
    spec.components.schema("Page", PAGE)
    spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "description": "a BobGen token"}
    )
    for name, header in HEADERS.items():
        spec.components.header(name, header)
    for tag in TAGS:
        spec.tag(tag)
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        resource = route.resource
        if route.method in ("HEAD", "OPTIONS") or resource is None:  # OPTIONS: CORS preflight
            continue
        op = _describe(route.handler, route.method)
        method = route.method.lower()
        path = resource.canonical
        paths.setdefault(path, {})[method] = _operation(op, method, path)
    for path, operations in sorted(paths.items()):
        spec.path(path=path, operations=operations)
    document: dict[str, Any] = spec.to_dict()
    _tighten(document)
    return document


def _field_extras(converter: Any, field: fields.Field[Any], **_: Any) -> dict[str, Any]:
    """What apispec does not say of our fields, so that a request the document allows is one
    the validators accept (schemathesis checks exactly that)."""
    extra: dict[str, Any] = {}
    if isinstance(field, Cursor):
        extra.update(
            minLength=1,
            pattern=r"^[A-Za-z0-9_-]+$",
            description="opaque: the 'next' of the previous page, as given (a cursor not "
            "made by the server is a 400)",
        )
    elif isinstance(field, FieldList):
        extra.update(
            minLength=1,
            pattern=rf"^({'|'.join(field.choices)})(,({'|'.join(field.choices)}))*$",
            description="a comma-separated list of " + ", ".join(field.choices),
        )
    if isinstance(field, fields.Dict) and field.key_field is not None:
        for validator in field.key_field.validators:
            if isinstance(validator, validate.Length):
                names = {"minLength": validator.min, "maxLength": validator.max}
                extra["propertyNames"] = {k: v for k, v in names.items() if v is not None}
    if isinstance(field, fields.Enum):  # an Enum narrowed by OneOf: only what is accepted
        for validator in field.validators:
            if isinstance(validator, validate.OneOf):
                extra["enum"] = [getattr(c, "value", c) for c in validator.choices]
    return extra


def _tighten(document: dict[str, Any]) -> None:
    """Rules the marshmallow schemas hold in code: a PATCH changes at least one field, the
    open-named ``field.<path>`` filters, and each schema's own ``openapi_extra``."""
    components = document["components"]["schemas"]
    for operations in document["paths"].values():
        patch = operations.get("patch", {}).get("requestBody")
        if patch:
            ref = patch["content"]["application/json"]["schema"].get("$ref", "")
            if ref:
                components[ref.rsplit("/", 1)[-1]]["minProperties"] = 1
        for op in operations.values():
            op["parameters"] = [_explained(_field_filters(p)) for p in op.get("parameters", [])]
    for op in _OPERATIONS.values():
        extra = getattr(op.body, "openapi_extra", None)
        if extra is not None:
            components[_schema_name(op.body)].update(extra)
    _open_rows(document["paths"], components)


def _open_rows(node: Any, components: dict[str, Any]) -> None:
    """Each ``stored_row`` takes its create schema's properties as an inline copy that allows
    the row's other columns (the request schema itself stays closed)."""
    if isinstance(node, list):
        for item in node:
            _open_rows(item, components)
        return
    if not isinstance(node, dict):
        return
    if node.pop("x-row", False):
        create = node["allOf"][0]
        name = create.get("$ref", "").rsplit("/", 1)[-1]
        if name:
            node["allOf"][0] = {
                k: v for k, v in components[name].items() if k != "additionalProperties"
            }
    for value in node.values():
        _open_rows(value, components)


# What each parameter means, where its field does not say: filled in with the bounds of the
# parameter's own schema, so a limit changed in code cannot leave a stale number here.
_MEANINGS = {
    "id": "the row's id",
    "name": "the name, exactly (case-sensitive)",
    "node_id": "the node's id in the workflow's graph",
    "limit": "items per page, {minimum} to {maximum} (default {default})",
    "after_seq": "chunks after this seq (default 0: from the start); the answer's next_after_seq "
    "continues",
    "cascade": "true: delete what belongs to it too (otherwise 409 while anything does)",
    "offset": "skip this many rows (at most {maximum}; slower than a cursor on deep pages)",
    "since": "only rows at or after this moment (ISO-8601 with a time zone)",
    "sort": "the order: a column, descending with a leading '-'",
    "q": "full-text search: rows holding every word, best first (no query syntax; one page)",
    "version": "the reporting tool's version, exactly",
    "git_sha": "the git commit the run was made from (7 to 64 hex digits, exact)",
    "config_hash": "the SHA-256 of the run's configuration",
    "pinned": "true or false: pinned items only, or unpinned only",
    "user": "started by this token user",
    "run_id": "entries of this run",
    "scope": "entries of this scope (runs, status, projects, documents, ...)",
    "event": "entries of this event (e.g. run.created)",
}


def _explained(parameter: dict[str, Any]) -> dict[str, Any]:
    """The parameter with a description: its own, a meaning from the table, or (for a filter or
    an id in the path) what it selects."""
    if "description" in parameter:
        return parameter
    name, schema = parameter["name"], parameter.get("schema", {})
    if name in _MEANINGS and (parameter["in"] == "query" or name in _PATH_MEANINGS):
        text = _MEANINGS[name].format_map({k: schema.get(k, "") for k in _BOUNDS})
    elif parameter["in"] == "path":
        text = f"the {name.removesuffix('_id').replace('_', ' ')}'s id"
    else:
        text = f"only rows whose {name.replace('_', ' ')} is this"
    return {**parameter, "description": text}


_BOUNDS = ("minimum", "maximum", "default")
_PATH_MEANINGS = frozenset({"id", "name", "node_id"})


def _field_filters(parameter: dict[str, Any]) -> dict[str, Any]:
    if parameter.get("name") != "field_filters":
        return parameter
    from service.repositories.documents import JSON_PATH
    from service.schemas.documents import FIELD_PREFIX, MAX_FIELD_FILTERS

    name = "^" + re.escape(FIELD_PREFIX) + JSON_PATH.pattern + "$"
    return {
        "in": "query",
        "name": "field",
        "style": "form",
        "explode": True,
        "description": "field.<path>=<value>: documents whose JSON has that value at that "
        f"dotted path (at most {MAX_FIELD_FILTERS}; e.g. field.model=gpt-4o)",
        "schema": {
            "type": "object",
            "patternProperties": {name: {"type": "string", "minLength": 1, "maxLength": 300}},
            "additionalProperties": False,
            "maxProperties": MAX_FIELD_FILTERS,
        },
    }


def _operation(op: Operation, method: str, path: str) -> dict[str, Any]:
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
                "schema": {"type": "string", "pattern": IF_MATCH_PATTERN},
                "description": "the ETag of the version being changed, a comma-separated list "
                "of ETags (any may be current), or * (428 without, when required; 412 stale)",
            }
        )
    success: dict[str, Any] = {"description": "success", "headers": _success_headers(op, method)}
    if op.returns != "empty":
        success["content"] = _BODIES[op.returns]
    if op.response is not None and op.returns == "object":
        success["content"] = {"application/json": {"schema": op.response}}
    elif op.response is not None and op.returns == "page":
        items = {"type": "object", "properties": {"items": {"type": "array", "items": op.response}}}
        page = {"allOf": [{"$ref": "#/components/schemas/Page"}, items]}
        success["content"] = {"application/json": {"schema": page}}
    result: dict[str, Any] = {
        "summary": op.summary,
        "operationId": operation_id(method, path),
        "tags": [tag_of(path)],
        "parameters": parameters,
        "responses": {
            str(op.status): success,
            "default": {
                "description": "an error (4xx, or 503 when the database is unavailable, with "
                "Retry-After)",
                "headers": {
                    "X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"},
                    "Retry-After": {"$ref": "#/components/headers/Retry-After"},
                },
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
        "security": security(op, method, path),
    }
    if method == "get" and op.returns == "object":
        result["responses"]["304"] = {"description": "not modified (If-None-Match matched)"}
    if op.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": op.body}},
        }
    return result


# An ETag is the row version in quotes (weak W/ accepted); If-Match takes one, a list, or *.
_ETAG = r'(W/)?"[0-9]{1,18}"'
IF_MATCH_PATTERN = rf"^(\*|{_ETAG}([ \t]*,[ \t]*{_ETAG})*)$"

HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "the request's id: echoed when the client sent one, made otherwise; in "
        "error bodies and logs too",
        "schema": {"type": "string"},
    },
    "ETag": {
        "description": "the row version, quoted; send it back as If-Match to change the row",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'the next page as <url>; rel="next" (RFC 8288), when there is one',
        "schema": {"type": "string"},
    },
    "Location": {"description": "the new resource's URL", "schema": {"type": "string"}},
    "Retry-After": {
        "description": "seconds to wait before retrying (503 database busy or unavailable, "
        "507 disk full)",
        "schema": {"type": "integer"},
    },
}


def _success_headers(op: Operation, method: str) -> dict[str, Any]:
    names = ["X-Request-ID"]
    if op.returns == "page":
        names.append("Link")
    if op.status in (201, 202):  # the new resource; for a 202, where to follow the job
        names.append("Location")
    if op.returns == "object" and (method == "get" or op.if_match is not None):
        names.append("ETag")
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


TAGS = [
    {"name": "status", "description": "status records (/bobgen/status)"},
    {"name": "runs and audit", "description": "runs of jobs, their steps, the audit log"},
    {"name": "projects", "description": "projects, ideas, context, workflows and their runs"},
    {"name": "documents", "description": "personas and prompt templates synced from files"},
    {"name": "debug metadata", "description": "repositories, worktrees, sessions, commands"},
    {"name": "admin", "description": "seeding, document sync, tokens (admin scope)"},
    {"name": "probes", "description": "health, readiness, metrics, versions, these docs, /ui"},
]
_TAG_BY_PREFIX = {
    "bobgen": "status",
    "runs": "runs and audit",
    "audit": "runs and audit",
    "projects": "projects",
    "documents": "documents",
    "personas": "documents",
    "prompts": "documents",
    "repositories": "debug metadata",
    "sessions": "debug metadata",
    "commands": "debug metadata",
    "artifacts": "debug metadata",
    "admin": "admin",
    "tokens": "admin",
}


def tag_of(path: str) -> str:
    """The domain a path belongs to (its first segment decides)."""
    return _TAG_BY_PREFIX.get(path.strip("/").split("/", 1)[0], "probes")


def operation_id(method: str, path: str) -> str:
    """``get_projects_project_id_ideas_item_id``: unique, since (method, path) is."""
    words = re.findall(r"[A-Za-z0-9]+", path)
    return "_".join([method, *words]) if words else method


def security(op: Operation, method: str, path: str) -> list[dict[str, list[str]]]:
    """What the auth middleware asks (api/auth.py): nothing for probes; a token for writes
    and for admin paths; reads are open unless the server runs with --auth-reads."""
    if op.open:
        return []
    first = "/" + path.strip("/").split("/", 1)[0]
    if method in ("post", "put", "patch", "delete") or first in ADMIN_ROOTS:
        return [{"bearer": []}]
    return [{"bearer": []}, {}]


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
  deepLinking: true, persistAuthorization: false});
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
