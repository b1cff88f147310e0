"""A scripted session that calls every JSON route of the router once with a valid request.

Tests that must hold for every route (one audit row per write, every answer as its OpenAPI
schema says) drive this one script with their own check, and compare what it covered with
``/openapi.json``: a new route without a step here fails them instead of going unchecked.
The client must hold the admin token and serve a documents root made by
:func:`write_documents`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests.helpers import VALID

# Routes that start background work: their jobs write (seed.batch, documents.synced) after
# the answer, so the script calls them last.
BACKGROUND_JOBS = {("POST", "/admin/seed"), ("POST", "/admin/sync/reload")}
# Routes whose answer is not JSON, or not an API row (the document itself, the files of the
# pages): the walk leaves them to their own tests.
NOT_JSON = {
    ("GET", "/docs"),
    ("GET", "/docs/static/{name}"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/ui"),
    ("GET", "/ui/static/{name}"),
}
GRAPH = {"nodes": [{"id": "a"}, {"id": "b"}], "edges": [{"from": "a", "to": "b"}]}
PERSONA = {"name": "Walker", "description": "walks every route", "model": "gpt-4o"}
PROMPT = "---\nname: Walk\ndescription: a walk\n---\nuser:\nWalk {{route}}\n"

# call(method, template, body, status=..., **path parameters) -> the answer's JSON ({} for 204)
Call = Callable[..., Awaitable[dict[str, Any]]]


def write_documents(root: Path) -> Path:
    """A documents root with one persona and one prompt template."""
    (root / "personas").mkdir(parents=True)
    (root / "prompts").mkdir()
    (root / "personas" / "walker.json").write_text(json.dumps(PERSONA))
    (root / "prompts" / "walk.prompty").write_text(PROMPT)
    return root


def first_sync_done(client: TestClient) -> Callable[[], Awaitable[bool]]:
    """A check for :func:`tests.support.eventually`: the documents root's first sync is
    written (its audit row with it)."""

    async def check() -> bool:
        sync = await (await client.get("/admin/sync")).json()
        return sync["last_full_sync"] is not None

    return check


async def walk_every_route(call: Call) -> None:
    """Every JSON route once (and a few twice, where a state needs it), answers as expected."""
    for path in ("/-/versions", "/health", "/livez", "/readyz", "/admin/seed", "/ui/data"):
        await call("GET", path, status=200)
    await call("GET", "/admin/sync", status=200)

    sid = (await call("POST", "/bobgen/status", VALID, status=201))["id"]
    await call("GET", "/bobgen/status", status=200)
    await call("GET", "/bobgen/status/{i}", status=200, i=str(sid))

    r = (await call("POST", "/runs", {"args": {"n": 1}}, status=201))["run_id"]
    step = await call("POST", "/runs/{r}/steps", {"name": "build"}, status=201, r=r)
    body = {"status": "running"}
    await call("PATCH", "/runs/{r}/steps/{s}", body, status=200, r=r, s=str(step["step_id"]))
    await call("GET", "/runs", status=200)
    await call("GET", "/runs/{r}", status=200, r=r)
    await call("GET", "/audit", status=200)

    token = await call("POST", "/tokens", {"user": "bot", "scopes": ["read"]}, status=201)
    await call("GET", "/tokens", status=200)
    await call("DELETE", "/tokens/{id}", status=204, id=str(token["id"]))

    p = (await call("POST", "/projects", {"name": "Alpha"}, status=201))["id"]
    await call("PATCH", "/projects/{p}", {"name": "Alpha 2"}, status=200, p=p)
    await call("GET", "/projects", status=200)
    await call("GET", "/projects/{p}", status=200, p=p)
    bodies = {
        "ideas": ({"title": "t"}, {"title": "t2"}),
        "context": ({"name": "n", "type": "file", "tokens": 3}, {"tokens": 4}),
        "workflows": ({"name": "w", "graph": GRAPH}, {"name": "w2"}),
        "gap-analyses": ({"report": {"gaps": []}}, {"report": {"gaps": [1]}}),
    }
    items = {}
    for kind, (create, update) in bodies.items():
        base = "/projects/{p}/" + kind
        i = (await call("POST", base, create, status=201, p=p))["id"]
        await call("PATCH", base + "/{i}", update, status=200, p=p, i=i)
        await call("GET", base, status=200, p=p)
        await call("GET", base + "/{i}", status=200, p=p, i=i)
        items[kind] = i
    c = items["context"]
    await call("POST", "/projects/{p}/context/{i}/pin", status=200, p=p, i=c)
    await call("POST", "/projects/{p}/context/{i}/unpin", status=200, p=p, i=c)
    await call("GET", "/projects/{p}/context/totals", status=200, p=p)
    w = items["workflows"]
    wr = (await call("POST", "/projects/{p}/workflows/{i}/runs", {}, status=201, p=p, i=w))["id"]
    node = "/projects/{p}/runs/{i}/nodes/{n}"
    await call("PATCH", node, {"status": "running"}, status=200, p=p, i=wr, n="a")
    await call("GET", "/projects/{p}/runs", status=200, p=p)
    await call("GET", "/projects/{p}/runs/{i}", status=200, p=p, i=wr)

    repo = await call("POST", "/repositories", {"name": "app", "url": "git@x:app"}, status=201)
    rp = repo["id"]
    await call("PATCH", "/repositories/{r}", {"name": "app2"}, status=200, r=rp)
    await call("GET", "/repositories", status=200)
    await call("GET", "/repositories/{r}", status=200, r=rp)
    trees = "/repositories/{r}/worktrees"
    wt = (await call("POST", trees, {"path": "/w/0"}, status=201, r=rp))["id"]
    spare = (await call("POST", trees, {"path": "/w/1"}, status=201, r=rp))["id"]
    await call("PATCH", trees + "/{w}", {"branch": "dev"}, status=200, r=rp, w=spare)
    await call("GET", trees, status=200, r=rp)
    await call("GET", trees + "/{w}", status=200, r=rp, w=spare)
    await call("DELETE", trees + "/{w}", status=204, r=rp, w=spare)
    sess = (await call("POST", "/sessions", {"repository_id": rp}, status=201))["id"]
    await call("GET", "/sessions", status=200)
    await call("GET", "/sessions/{s}", status=200, s=sess)
    held = {"session_id": sess, "lease_s": 60}
    assert (await call("POST", trees + "/reserve", held, status=201, r=rp))["id"] == wt
    await call("POST", trees + "/{w}/renew", held, status=200, r=rp, w=wt)
    await call("POST", trees + "/{w}/release", {"session_id": sess}, status=200, r=rp, w=wt)
    cmd = await call("POST", "/sessions/{s}/commands", {"argv": ["ls"]}, status=201, s=sess)
    k = cmd["id"]
    logs = {"chunks": [{"seq": 1, "stream": "stdout", "text": "hi"}]}
    await call("POST", "/commands/{k}/logs", logs, status=200, k=k)
    await call("GET", "/commands/{k}/logs", status=200, k=k)
    await call("PATCH", "/commands/{k}", {"state": "succeeded", "exit_code": 0}, status=200, k=k)
    await call("GET", "/commands/{k}", status=200, k=k)
    await call("GET", "/sessions/{s}/commands", status=200, s=sess)
    art = {"name": "log", "kind": "text", "uri": "/tmp/log"}
    a = (await call("POST", "/sessions/{s}/artifacts", art, status=201, s=sess))["id"]
    await call("GET", "/sessions/{s}/artifacts", status=200, s=sess)
    await call("GET", "/artifacts/{a}", status=200, a=a)
    await call("DELETE", "/artifacts/{a}", status=204, a=a)
    await call("PUT", "/sessions/{s}/debugger", {"state": {"pc": 1}}, status=200, s=sess)
    await call("GET", "/sessions/{s}/debugger", status=200, s=sess)
    # Ending a session that holds a worktree and runs a command changes three kinds of rows.
    await call("POST", trees + "/reserve", held, status=201, r=rp)
    await call("POST", "/sessions/{s}/commands", {"argv": ["sleep"]}, status=201, s=sess)
    await call("POST", "/sessions/{s}/end", {}, status=200, s=sess)
    await call("DELETE", trees + "/{w}", status=204, r=rp, w=wt)

    documents = await call("GET", "/documents", status=200)
    await call("GET", "/documents/{d}", status=200, d=documents["items"][0]["id"])
    await call("GET", "/personas", status=200)
    await call("GET", "/personas/{n}", status=200, n=PERSONA["name"])
    await call("GET", "/prompts", status=200)
    await call("GET", "/prompts/{n}", status=200, n="Walk")

    unused = {"name": "unused", "graph": GRAPH}  # the first workflow has a run: 409 to delete
    second = await call("POST", "/projects/{p}/workflows", unused, status=201, p=p)
    items["workflows"] = second["id"]
    for kind, i in items.items():
        await call("DELETE", "/projects/{p}/" + kind + "/{i}", status=204, p=p, i=i)
    await call("DELETE", "/projects/{p}?cascade=true", status=204, p=p)
    await call("DELETE", "/repositories/{r}?cascade=true", status=204, r=rp)

    await call("POST", "/admin/sync/reload", status=202)
    await call("POST", "/admin/seed", {"rows": 10}, status=202)


async def spec_operations(client: TestClient) -> set[tuple[str, str]]:
    """Every (METHOD, template) of the served OpenAPI document."""
    spec = await (await client.get("/openapi.json")).json()
    return {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}


def as_templates(
    called: set[tuple[str, str]], templates: set[tuple[str, str]]
) -> set[tuple[str, str]]:
    """The script's (METHOD, path template) pairs named as the OpenAPI templates (the script's
    own parameter names differ; a query string is dropped)."""

    def shape(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", path.split("?")[0])

    by_shape = {(m, shape(p)): p for m, p in templates}
    return {(m, by_shape.get((m, shape(t)), t)) for m, t in called}
