"""Security headers (issue 16, item 5): nosniff on every answer, a content security policy
that forbids framing on the pages, no caching of answers to requests with credentials, and a
Swagger UI that forgets the token with the browser session. The pages working under the
policy in a real browser: tests/test_ops_page.py."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.auth import ADMIN_TOKEN, bearer


async def test_every_answer_says_nosniff_and_pages_carry_a_policy(make_client: Any) -> None:
    client: TestClient = await make_client(token=None)
    for path in ("/health", "/projects", "/nope", "/docs/static/swagger-ui.css", "/openapi.json"):
        resp = await client.get(path)
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
        assert "Content-Security-Policy" not in resp.headers, path
        assert "no-store" not in resp.headers.get("Cache-Control", ""), path
    for page in ("/ui", "/docs"):
        resp = await client.get(page)
        policy = resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert resp.headers["X-Frame-Options"] == "DENY"


async def test_answers_to_requests_with_credentials_are_not_cached(make_client: Any) -> None:
    client: TestClient = await make_client(token=None)
    for path in ("/projects", "/tokens", "/ui/data", "/nope"):
        resp = await client.get(path, headers=bearer(ADMIN_TOKEN))
        assert resp.headers["Cache-Control"] == "no-store", path
    refused = await client.post("/runs", json={}, headers=bearer("bgt_wrong"))
    assert refused.status == 401 and refused.headers["Cache-Control"] == "no-store"


async def test_swagger_does_not_keep_the_token(make_client: Any) -> None:
    client: TestClient = await make_client(token=None)
    init = await (await client.get("/docs/static/init.js")).text()
    assert "persistAuthorization: false" in init
