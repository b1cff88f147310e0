"""HTTP conventions on every route, both backends: routing before auth, probes, request ids,
conditional GETs, compression, Link headers, versions and the process metrics."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import VALID, assert_error
from tests.support.auth import READER_TOKEN, bearer

NO_TOKEN = {"Authorization": ""}


async def test_routing_answers_before_auth(make_client: Any) -> None:
    client = await make_client(token=None, auth_reads=True)
    unknown = await client.post("/nope", json={})
    assert unknown.status == 404
    assert_error(await unknown.json(), "not_found")
    wrong_method = await client.delete("/bobgen/status")
    assert wrong_method.status == 405
    assert "GET" in wrong_method.headers["Allow"]
    assert_error(await wrong_method.json(), "method_not_allowed")
    known = await client.post("/bobgen/status", json=VALID)
    assert known.status == 401
    assert_error(await known.json(), "unauthorized")


async def test_probes_are_open_and_cheap(make_client: Any) -> None:
    client = await make_client(token=None, auth_reads=True)
    live = await client.get("/livez")
    assert live.status == 200
    assert (await live.json()) == {"status": "alive"}
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json()) == {"status": "ready"}
    assert (await client.get("/health")).status == 401  # /health stays behind --auth-reads


async def test_readiness_ends_when_shutdown_starts(client: TestClient) -> None:
    await client.app.shutdown()  # what SIGTERM starts: on_shutdown signals, before cleanup
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["reason"] == "shutting down"
    assert (await client.get("/livez")).status == 200


async def test_request_ids_are_echoed_or_made(client: TestClient) -> None:
    given = await client.get("/livez", headers={"X-Request-ID": "trace-42.a:b"})
    assert given.headers["X-Request-ID"] == "trace-42.a:b"
    made = await client.get("/livez")
    assert len(made.headers["X-Request-ID"]) == 32
    forged = await client.get("/livez", headers={"X-Request-ID": "a b <script>"})
    assert len(forged.headers["X-Request-ID"]) == 32  # replaced, not echoed
    error = await client.get("/bobgen/status/999999", headers={"X-Request-ID": "req-1"})
    assert error.status == 404
    assert (await error.json())["error"]["request_id"] == "req-1"
    assert error.headers["X-Request-ID"] == "req-1"


async def test_compression_only_for_clients_that_ask(seeded_client: TestClient) -> None:
    plain = await seeded_client.get("/bobgen/status?limit=500", headers={"Accept-Encoding": ""})
    raw = await plain.read()
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["Vary"] == "Accept-Encoding"
    asked = await seeded_client.get(
        "/bobgen/status?limit=500", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert asked.headers["Content-Encoding"] == "gzip"
    compressed = await asked.read()
    assert gzip.decompress(compressed) == raw
    assert len(compressed) < len(raw) / 4
    small = await seeded_client.get("/livez", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in small.headers


async def test_conditional_gets_answer_304(client: TestClient) -> None:
    created = await (await client.post("/bobgen/status", json=VALID)).json()
    first = await client.get(f"/bobgen/status/{created['id']}")
    etag = first.headers["ETag"]
    assert etag.startswith('W/"')
    again = await client.get(f"/bobgen/status/{created['id']}", headers={"If-None-Match": etag})
    assert again.status == 304
    assert again.headers["ETag"] == etag
    assert await again.read() == b""
    other = await client.get(f"/bobgen/status/{created['id']}", headers={"If-None-Match": '"x"'})
    assert other.status == 200
    project = await (await client.post("/projects", json={"name": "p"})).json()
    versioned = await client.get(f"/projects/{project['id']}", headers={"If-None-Match": '"1"'})
    assert versioned.status == 304
    lists = await client.get("/projects")
    assert "ETag" not in lists.headers


@pytest.mark.parametrize("path", ["/projects", "/bobgen/status", "/runs", "/audit"])
async def test_pages_link_to_the_next(seeded_client: TestClient, path: str) -> None:
    for _ in range(3):
        await seeded_client.post("/projects", json={"name": "p"})
        await seeded_client.post("/runs", json={})
    resp = await seeded_client.get(f"{path}?limit=2")
    page = await resp.json()
    assert page["next"] is not None
    assert resp.headers["Link"] == f'<{page["next_url"]}>; rel="next"'
    following = await (await seeded_client.get(page["next_url"])).json()
    assert following["items"]
    assert following["items"][0] != page["items"][0]
    assert "limit=2" in page["next_url"]


async def test_offset_pages_link_with_a_cursor(seeded_client: TestClient) -> None:
    page = await (await seeded_client.get("/bobgen/status?limit=3&offset=6")).json()
    assert "offset" not in page["next_url"]
    following = await (await seeded_client.get(page["next_url"])).json()
    assert following["items"][0]["id"] == page["items"][-1]["id"] + 1


async def test_versions(client: TestClient, backend: str) -> None:
    versions = await (await client.get("/-/versions", headers=bearer(READER_TOKEN))).json()
    assert set(versions) == {"bobgen", "python", "aiohttp", "database", "git_sha"}
    assert versions["database"].startswith(
        {"sqlite": "SQLite 3.", "postgresql": "PostgreSQL "}[backend]
    )


async def test_metrics_carry_process_build_and_database_figures(client: TestClient) -> None:
    text = await (await client.get("/metrics")).text()
    for name in (
        "process_resident_memory_bytes",
        "python_info",
        "python_gc_objects_collected_total",
    ):
        assert f"\n{name}" in text, name
    assert 'bobgen_build_info{git_sha="' in text
    assert "\nbobgen_db_up 1.0" in text


async def test_nul_characters_are_refused_alike_on_both_backends(client: TestClient) -> None:
    body = await client.post("/projects", json={"name": "a\x00b"})
    assert body.status == 400
    refused = await body.json()
    assert_error(refused, "validation_failed")
    assert "NUL" in refused["error"]["message"]
    query = await client.get("/documents?name=a%00b")
    assert query.status == 400
    assert_error(await query.json(), "invalid_parameter")
    path = await client.get("/personas/a%00b")
    assert path.status == 400
    literal = await client.post("/projects", json={"name": "backslash \\u0000 is text"})
    assert literal.status == 201
    assert (await literal.json())["name"] == "backslash \\u0000 is text"
    assert (await client.get("/projects")).status == 200


async def test_cors_is_off_unless_asked_for(make_client: Any) -> None:
    plain = await make_client()
    resp = await plain.get("/livez", headers={"Origin": "https://app.example.com"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    client = await make_client(token=None, auth_reads=True, cors_origins="https://app.example.com")
    preflight = await client.options(
        "/repositories",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert preflight.status == 200  # no token needed for a preflight, even under --auth-reads
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "AUTHORIZATION" in preflight.headers["Access-Control-Allow-Headers"].upper()
    actual = await client.get(
        "/livez", headers={"Origin": "https://app.example.com", "X-Request-ID": "cors-1"}
    )
    assert actual.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "X-REQUEST-ID" in actual.headers["Access-Control-Expose-Headers"].upper()
    other = await client.options(
        "/repositories",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    spec = await (await client.get("/openapi.json", headers=bearer(READER_TOKEN))).json()
    assert all("options" not in ops for ops in spec["paths"].values())


def test_cors_origins_are_validated() -> None:
    from service.config import Config, ConfigError

    with pytest.raises(ConfigError, match="cors origin"):
        Config(cors_origins="not a url")
    assert Config(cors_origins="https://a.example, http://b.example:8080").cors_origin_list == [
        "https://a.example",
        "http://b.example:8080",
    ]
