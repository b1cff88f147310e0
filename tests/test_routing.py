"""The router as a whole: no route shadows another, and a 405's ``Allow`` is exactly the
methods the OpenAPI document gives the path, for every path."""

from __future__ import annotations

import re

import pytest
from aiohttp.test_utils import TestClient

from service.schemas.common import RESERVED_IDS
from tests.helpers import assert_error

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
async def project(client: TestClient) -> str:
    resp = await client.post("/projects", json={"name": "Alpha"})
    return str((await resp.json())["id"])


def _concrete(path: str) -> str:
    """A path of the template with a plausible value for each parameter."""
    return re.sub(
        r"\{[^}]+\}", lambda m: "1" if m.group(0) in ("{id}", "{step_id}") else "x1", path
    )


async def test_allow_is_the_documented_methods_of_every_path(client: TestClient) -> None:
    spec = await (await client.get("/openapi.json")).json()
    checked = 0
    for path, operations in spec["paths"].items():
        documented = {m.upper() for m in operations}
        other = next(m for m in METHODS if m not in documented)
        resp = await client.request(other, _concrete(path))
        assert resp.status == 405, (other, path, resp.status)
        allowed = {m.strip() for m in resp.headers["Allow"].split(",")} - {"HEAD", "OPTIONS"}
        assert allowed == documented, (path, allowed, documented)
        checked += 1
    assert checked == len(spec["paths"]) > 60


async def test_a_fixed_segment_is_not_also_an_id(client: TestClient, project: str) -> None:
    base = f"/projects/{project}/context"
    totals = await client.patch(f"{base}/totals", json={"name": "x"}, headers={"If-Match": '"1"'})
    assert totals.status == 405 and totals.headers["Allow"] == "GET,HEAD"
    assert (await client.get(f"{base}/totals")).status == 200


async def test_an_id_that_names_a_route_is_refused_at_creation(
    client: TestClient, project: str
) -> None:
    assert {"totals", "reserve"} == RESERVED_IDS
    for word in sorted(RESERVED_IDS):
        body = {"id": word, "name": "n", "type": "file", "tokens": 1}
        resp = await client.post(f"/projects/{project}/context", json=body)
        assert resp.status == 400
        details = assert_error(await resp.json(), "validation_failed")
        assert "reserved" in str(details["id"])
    repo = await client.post("/repositories", json={"name": "app", "url": "git@x:app"})
    repository_id = (await repo.json())["id"]
    body = {"id": "reserve", "path": "/w/0", "branch": "main"}
    refused = await client.post(f"/repositories/{repository_id}/worktrees", json=body)
    assert refused.status == 400
    listed = await (await client.get(f"/repositories/{repository_id}/worktrees")).json()
    assert listed["items"] == []
