"""One write, one audit row (docs/security.md), over every write route of the router.

A scripted session calls each write route once with a valid request and counts the audit rows
it adds: exactly one per successful write. The script must cover every write route the router
has, so a new route without an entry here fails this test instead of going unchecked.
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from service.db import DatabaseURL
from tests.backends import sql
from tests.helpers import VALID
from tests.support.auth import READER_TOKEN

# Routes that start background work rather than write: their jobs audit each batch they
# commit (seed.batch, documents.synced), which a request-scoped count cannot hold.
BACKGROUND_JOBS = {("POST", "/admin/seed"), ("POST", "/admin/sync/reload")}
ANY = {"If-Match": "*"}
GRAPH = {"nodes": [{"id": "a"}, {"id": "b"}], "edges": [{"from": "a", "to": "b"}]}


class Script:
    def __init__(self, client: TestClient, db_url: DatabaseURL):
        self.client, self.db_url = client, db_url
        self.covered: set[tuple[str, str]] = set()

    def audit_rows(self) -> int:
        return int(sql(self.db_url, "SELECT count(*) FROM audit_log")[0][0])

    async def call(
        self, method: str, template: str, body: Any = None, *, status: int, **params: str
    ) -> dict[str, Any]:
        """``method template`` (path parameters from ``params``); one audit row, or none
        when the write is refused."""
        before = self.audit_rows()
        path = template.format(**params)
        resp = await self.client.request(method, path, json=body, headers=ANY)
        data = await resp.json() if resp.status != 204 else {}
        assert resp.status == status, (method, path, resp.status, data)
        added = self.audit_rows() - before
        assert added == (1 if resp.status < 300 else 0), (method, template, added)
        self.covered.add((method, template))
        return data


async def test_every_write_route_adds_exactly_one_audit_row(
    client: TestClient, db_url: DatabaseURL
) -> None:
    s = Script(client, db_url)
    await s.call("POST", "/bobgen/status", VALID, status=201)
    run = await s.call("POST", "/runs", {"args": {"n": 1}}, status=201)
    r = run["run_id"]
    step = await s.call("POST", "/runs/{r}/steps", {"name": "build"}, status=201, r=r)
    body = {"status": "running"}
    await s.call("PATCH", "/runs/{r}/steps/{s}", body, status=200, r=r, s=str(step["step_id"]))

    token = await s.call("POST", "/tokens", {"user": "bot", "scopes": ["read"]}, status=201)
    await s.call("DELETE", "/tokens/{id}", status=204, id=str(token["id"]))

    p = (await s.call("POST", "/projects", {"name": "Alpha"}, status=201))["id"]
    await s.call("PATCH", "/projects/{p}", {"name": "Alpha 2"}, status=200, p=p)
    bodies = {
        "ideas": ({"title": "t"}, {"title": "t2"}),
        "context": ({"name": "n", "type": "file", "tokens": 3}, {"tokens": 4}),
        "workflows": ({"name": "w", "graph": GRAPH}, {"name": "w2"}),
        "gap-analyses": ({"report": {"gaps": []}}, {"report": {"gaps": [1]}}),
    }
    items = {}
    for kind, (create, update) in bodies.items():
        base = "/projects/{p}/" + kind
        i = (await s.call("POST", base, create, status=201, p=p))["id"]
        await s.call("PATCH", base + "/{i}", update, status=200, p=p, i=i)
        items[kind] = i
    c = items["context"]
    await s.call("POST", "/projects/{p}/context/{i}/pin", status=200, p=p, i=c)
    await s.call("POST", "/projects/{p}/context/{i}/unpin", status=200, p=p, i=c)
    w = items["workflows"]
    wr = (await s.call("POST", "/projects/{p}/workflows/{i}/runs", {}, status=201, p=p, i=w))["id"]
    node = "/projects/{p}/runs/{i}/nodes/{n}"
    await s.call("PATCH", node, {"status": "running"}, status=200, p=p, i=wr, n="a")

    repo = await s.call("POST", "/repositories", {"name": "app", "url": "git@x:app"}, status=201)
    rp = repo["id"]
    await s.call("PATCH", "/repositories/{r}", {"name": "app2"}, status=200, r=rp)
    trees = "/repositories/{r}/worktrees"
    wt = (await s.call("POST", trees, {"path": "/w/0"}, status=201, r=rp))["id"]
    spare = (await s.call("POST", trees, {"path": "/w/1"}, status=201, r=rp))["id"]
    await s.call("PATCH", trees + "/{w}", {"branch": "dev"}, status=200, r=rp, w=spare)
    await s.call("DELETE", trees + "/{w}", status=204, r=rp, w=spare)
    sess = (await s.call("POST", "/sessions", {"repository_id": rp}, status=201))["id"]
    held = {"session_id": sess, "lease_s": 60}
    assert (await s.call("POST", trees + "/reserve", held, status=201, r=rp))["id"] == wt
    await s.call("POST", trees + "/{w}/renew", held, status=200, r=rp, w=wt)
    await s.call("POST", trees + "/{w}/release", {"session_id": sess}, status=200, r=rp, w=wt)
    cmd = await s.call("POST", "/sessions/{s}/commands", {"argv": ["ls"]}, status=201, s=sess)
    k = cmd["id"]
    logs = {"chunks": [{"seq": 1, "stream": "stdout", "text": "hi"}]}
    await s.call("POST", "/commands/{k}/logs", logs, status=200, k=k)
    await s.call("PATCH", "/commands/{k}", {"state": "succeeded", "exit_code": 0}, status=200, k=k)
    art = {"name": "log", "kind": "text", "uri": "/tmp/log"}
    a = (await s.call("POST", "/sessions/{s}/artifacts", art, status=201, s=sess))["id"]
    await s.call("DELETE", "/artifacts/{a}", status=204, a=a)
    await s.call("PUT", "/sessions/{s}/debugger", {"state": {"pc": 1}}, status=200, s=sess)
    # Ending a session that holds a worktree and runs a command changes three kinds of rows:
    # still one audit row.
    await s.call("POST", trees + "/reserve", held, status=201, r=rp)
    await s.call("POST", "/sessions/{s}/commands", {"argv": ["sleep"]}, status=201, s=sess)
    await s.call("POST", "/sessions/{s}/end", {}, status=200, s=sess)
    await s.call("DELETE", trees + "/{w}", status=204, r=rp, w=wt)

    unused = {"name": "unused", "graph": GRAPH}  # the first workflow has a run: 409 to delete
    second = await s.call("POST", "/projects/{p}/workflows", unused, status=201, p=p)
    items["workflows"] = second["id"]
    for kind, i in items.items():
        await s.call("DELETE", "/projects/{p}/" + kind + "/{i}", status=204, p=p, i=i)
    await s.call("DELETE", "/projects/{p}?cascade=true", status=204, p=p)
    await s.call("DELETE", "/repositories/{r}?cascade=true", status=204, r=rp)

    # A refused write adds none.
    refused = await client.post("/bobgen/status", json={"uptime": "x"})
    assert refused.status == 400
    forbidden = await client.post(
        "/runs", json={}, headers={"Authorization": f"Bearer {READER_TOKEN}"}
    )
    assert forbidden.status == 403

    spec = await (await client.get("/openapi.json")).json()
    writes = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if method in ("post", "put", "patch", "delete")
    }
    covered = {(m, t.split("?")[0]) for m, t in s.covered}
    assert writes - BACKGROUND_JOBS == _templates(covered, spec)


def _templates(covered: set[tuple[str, str]], spec: dict[str, Any]) -> set[tuple[str, str]]:
    """The script's paths named as the OpenAPI templates (its own parameter names differ)."""
    import re

    def shape(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", path)

    by_shape = {(shape(p)): p for p in spec["paths"]}
    return {(m, by_shape[shape(t)]) for m, t in covered}
