"""The OpenAPI document covers the router exactly, and /docs works offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from aiohttp.test_utils import TestClient

from service.api.openapi import Undocumented, build_spec, operation
from tests.support import REPO_ROOT, eventually
from tests.support.walk import (
    NOT_JSON,
    as_templates,
    first_sync_done,
    walk_every_route,
    write_documents,
)


def router_operations(client: TestClient) -> set[tuple[str, str]]:
    return {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


async def test_every_route_is_documented_and_nothing_else(client: TestClient) -> None:
    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"] == "3.1.0"
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert documented == router_operations(client)


async def test_operations_carry_parameters_bodies_responses_and_security(
    client: TestClient,
) -> None:
    spec = await (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    reserve = paths["/repositories/{repository_id}/worktrees/reserve"]["post"]
    assert reserve["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DebugReserve"
    }
    assert set(reserve["responses"]) == {"201", "default"}
    body = spec["components"]["schemas"]["DebugReserve"]
    assert set(body["required"]) == {"session_id", "lease_s"}
    status_list = paths["/bobgen/status"]["get"]
    assert {"limit", "offset", "cursor", "fields", "version"} <= {
        p["name"] for p in status_list["parameters"]
    }
    page = status_list["responses"]["200"]["content"]["application/json"]["schema"]
    assert page["allOf"][0] == {"$ref": "#/components/schemas/Page"}
    items = page["allOf"][1]["properties"]["items"]["items"]
    assert items["properties"]["id"]["type"] == "integer"  # typed, not a bare object
    assert status_list["responses"]["200"]["headers"]["Link"]
    assert status_list["tags"] == ["status"] and status_list["operationId"] == "get_bobgen_status"
    error = spec["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["code", "message", "details"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert paths["/livez"]["get"]["security"] == []
    assert reserve["security"] == [{"bearer": []}]  # writes: a token, no anonymous alternative
    assert paths["/tokens"]["get"]["security"] == [{"bearer": []}]  # admin reads too
    assert status_list["security"] == [{"bearer": []}, {}]  # reads: open without --auth-reads
    ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    patch = paths["/projects/{project_id}/ideas/{item_id}"]["patch"]
    assert {"name": "If-Match", "in": "header"}.items() <= next(
        p for p in patch["parameters"] if p["in"] == "header"
    ).items()


def test_a_route_without_a_description_fails_the_build() -> None:
    from aiohttp import web

    app = web.Application()

    @operation("documented")
    async def known(request: web.Request) -> web.Response:
        return web.Response()

    async def unknown(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/known", known)
    app.router.add_get("/unknown", unknown)
    with pytest.raises(Undocumented, match="unknown"):
        build_spec(app)


async def test_the_docs_page_is_served_offline(make_client: Any) -> None:
    client = await make_client(token=None, auth_reads=True)
    # Under --auth-reads the page, its files and the API's description stay readable (so
    # that a person can use Authorize); what the page then calls needs the token.
    for path in ("/docs", "/docs/static/swagger-ui.css", "/openapi.json"):
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/bobgen/status")).status == 401
    assert (await client.get("/docs/../bobgen/status")).status in (401, 404)
    open_client = await make_client(token=None)
    page = await open_client.get("/docs")
    html = await page.text()
    assert page.status == 200
    assert "http://" not in html
    assert "https://" not in html  # no CDN: every asset is served by the app
    for asset in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"):
        assert asset in html
        resp = await open_client.get(asset)
        assert resp.status == 200
        assert len(await resp.read()) > 10_000
    init = await open_client.get("/docs/static/init.js")
    assert "/openapi.json" in await init.text()
    assert (await open_client.get("/docs/static/../../etc/passwd")).status == 404
    assert (await open_client.get("/docs/static/nope.js")).status == 404


async def test_the_api_docs_name_every_documented_path(client: TestClient) -> None:
    """docs/api.md (with the pages it links for whole domains) is checked against the
    generated document: a route missing from the prose fails here."""
    spec = await (await client.get("/openapi.json")).json()
    docs = "".join(
        (REPO_ROOT / "docs" / name).read_text()
        for name in ("api.md", "debug-metadata.md", "documents.md", "observability.md")
    )
    missing = [
        path for path in spec["paths"] if f"`{path}`" not in docs and f" {path}`" not in docs
    ]
    assert missing == []


# Success responses still documented as a bare object or an untyped page (issue 15: every
# one gets a real schema). The list may only shrink: a new operation must come typed.
def _untyped(schema: Any) -> bool:
    """A bare object, a bare page, or a page of bare objects."""
    bare = ({"type": "object"}, {"$ref": "#/components/schemas/Page"})
    if schema in bare:
        return True
    parts = schema.get("allOf", []) if isinstance(schema, dict) else []
    items = [p["properties"]["items"]["items"] for p in parts if "items" in p.get("properties", {})]
    return any(item in ({"type": "object"}, {}) for item in items)


async def test_every_success_response_is_typed(client: TestClient) -> None:
    spec = await (await client.get("/openapi.json")).json()
    untyped = set()
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for code, response in op["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if code.startswith("2") and schema is not None and _untyped(schema):
                    untyped.add(f"{method.upper()} {path}")
    assert untyped == set()


async def test_every_answer_is_what_its_schema_says(make_client: Any, tmp_path: Path) -> None:
    """The route walk's answers, each validated against the schema /openapi.json declares for
    its operation and status: a schema looser or stricter than the server fails here (the
    contract run reaches few successful writes; this walk reaches them all)."""
    client: TestClient = await make_client(documents_dirs=str(write_documents(tmp_path / "d")))
    await eventually(first_sync_done(client), what="the first documents sync")
    spec = await (await client.get("/openapi.json")).json()
    templates = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    covered: set[tuple[str, str]] = set()

    async def call(
        method: str, template: str, body: Any = None, *, status: int, **params: str
    ) -> dict[str, Any]:
        path = template.format(**params)
        resp = await client.request(method, path, json=body, headers={"If-Match": "*"})
        data = await resp.json() if resp.status != 204 else {}
        assert resp.status == status, (method, path, resp.status, data)
        ((_, name),) = as_templates({(method, template)}, templates)
        covered.add((method, name))
        declared = spec["paths"][name][method.lower()]["responses"][str(status)]
        schema = declared.get("content", {}).get("application/json", {}).get("schema")
        assert (schema is not None) == (status != 204), (method, name)
        if schema is not None:
            validator = jsonschema_rs.Draft202012Validator(
                {**schema, "components": spec["components"]}
            )
            errors = [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(data)]
            assert not errors, (method, name, errors[:5], data)
        return data

    await walk_every_route(call)
    assert templates - NOT_JSON == covered


async def test_every_parameter_says_what_it_means(client: TestClient) -> None:
    spec = await (await client.get("/openapi.json")).json()
    parameters = [
        (path, p)
        for path, operations in spec["paths"].items()
        for op in operations.values()
        for p in op["parameters"]
    ]
    assert [(path, p["name"]) for path, p in parameters if not p.get("description")] == []
    by_name = {(path, p["name"]): p["description"] for path, p in parameters}
    # Bounds come from the parameter's own schema: the log tail pages further than a list.
    assert by_name[("/runs", "limit")] == "items per page, 1 to 500 (default 50)"
    assert by_name[("/commands/{command_id}/logs", "limit")].startswith("items per page, 1 to 1000")
    assert by_name[("/runs/{run_id}", "run_id")] == "the run's id"
