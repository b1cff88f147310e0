"""The hostile corpus (tests/hostile/corpus.py) against every route of a real server process,
on both backends: every answer is JSON and below 500, the hostile values are refused with a
4xx, the server stays healthy with a bounded RSS, and its log holds no traceback, no ERROR, no
token and no forged line.

All findings of a run are collected and reported together, so one run shows the whole list.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from service.db import DatabaseURL
from tests.hostile import corpus
from tests.support.auth import ADMIN_TOKEN, TEST_TOKENS, bearer, plant_test_tokens
from tests.support.server import Server
from tests.support.walk import GRAPH, write_documents

ADMIN = bearer(ADMIN_TOKEN)
# A valid body per write route: the hostile field values go into these one field at a time, so
# they reach the database rather than a "required field missing".
VALID_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/bobgen/status"): {"uptime": 1.0, "version": "1", "latency": 1.0, "error_rate": 0},
    ("POST", "/runs"): {"args": {"n": 1}},
    ("POST", "/runs/{run_id}/steps"): {"name": "build"},
    ("PATCH", "/runs/{run_id}/steps/{step_id}"): {"status": "running"},
    ("POST", "/tokens"): {"user": "bot", "scopes": ["read"]},
    ("POST", "/projects"): {"name": "p"},
    ("PATCH", "/projects/{project_id}"): {"name": "p2"},
    ("POST", "/projects/{project_id}/ideas"): {"title": "t"},
    ("PATCH", "/projects/{project_id}/ideas/{item_id}"): {"title": "t2"},
    ("POST", "/projects/{project_id}/context"): {"name": "n", "type": "file", "tokens": 3},
    ("PATCH", "/projects/{project_id}/context/{item_id}"): {"tokens": 4},
    ("POST", "/projects/{project_id}/workflows"): {"name": "w", "graph": GRAPH},
    ("PATCH", "/projects/{project_id}/workflows/{item_id}"): {"name": "w2"},
    ("POST", "/projects/{project_id}/gap-analyses"): {"report": {"gaps": []}},
    ("PATCH", "/projects/{project_id}/gap-analyses/{item_id}"): {"report": {"gaps": [1]}},
    ("POST", "/projects/{project_id}/workflows/{item_id}/runs"): {"input": {}},
    ("PATCH", "/projects/{project_id}/runs/{item_id}/nodes/{node_id}"): {"progress": 5},
    ("POST", "/repositories"): {"name": "app", "url": "git@x:app"},
    ("PATCH", "/repositories/{repository_id}"): {"name": "app2"},
    ("POST", "/repositories/{repository_id}/worktrees"): {"path": "/w/9"},
    ("PATCH", "/repositories/{repository_id}/worktrees/{worktree_id}"): {"branch": "dev"},
    ("POST", "/repositories/{repository_id}/worktrees/reserve"): {
        "session_id": "x1",
        "lease_s": 60,
    },
    ("POST", "/repositories/{repository_id}/worktrees/{worktree_id}/renew"): {
        "session_id": "x1",
        "lease_s": 60,
    },
    ("POST", "/repositories/{repository_id}/worktrees/{worktree_id}/release"): {"session_id": "x1"},
    ("POST", "/sessions"): {"repository_id": "x1"},
    ("POST", "/sessions/{session_id}/end"): {},
    ("POST", "/sessions/{session_id}/commands"): {"argv": ["ls"], "env": {"A": "b"}},
    ("PATCH", "/commands/{command_id}"): {"state": "succeeded", "exit_code": 0},
    ("POST", "/commands/{command_id}/logs"): {
        "chunks": [{"seq": 1, "stream": "stdout", "text": "hi"}]
    },
    ("POST", "/sessions/{session_id}/artifacts"): {"name": "a", "kind": "text", "uri": "/t"},
    ("PUT", "/sessions/{session_id}/debugger"): {"state": {"pc": 1}},
    ("POST", "/admin/seed"): {"rows": 0},
}
FORGED = re.compile(r"^\S+ \S+ INFO service\.tokens: token 7 revoked", re.MULTILINE)


async def _setup(session: aiohttp.ClientSession, url: str) -> dict[str, str]:
    """Objects for every path parameter to name (client-chosen id x1 where ids may be chosen)."""

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with session.post(url + path, json=body, headers=ADMIN) as resp:
            assert resp.status == 201, (path, resp.status, await resp.text())
            return dict(await resp.json())

    await post("/bobgen/status", VALID_BODIES[("POST", "/bobgen/status")])
    run = await post("/runs", {})
    await post(f"/runs/{run['run_id']}/steps", {"name": "s"})
    token = await post("/tokens", {"user": "bot", "scopes": ["read"]})
    await post("/projects", {"id": "x1", "name": "p"})
    for kind, body in (
        ("ideas", {"title": "t"}),
        ("context", {"name": "n", "type": "file", "tokens": 3}),
        ("workflows", {"name": "w", "graph": GRAPH}),
        ("gap-analyses", {"report": {}}),
    ):
        await post(f"/projects/x1/{kind}", {"id": "x1", **body})
    workflow_run = await post("/projects/x1/workflows/x1/runs", {})
    await post("/repositories", {"id": "x1", "name": "app", "url": "git@x:app"})
    await post("/repositories/x1/worktrees", {"id": "x1", "path": "/w/1"})
    await post("/sessions", {"id": "x1", "repository_id": "x1"})
    await post("/sessions/x1/commands", {"id": "x1", "argv": ["ls"]})
    await post("/sessions/x1/artifacts", {"id": "x1", "name": "a", "kind": "k", "uri": "/a"})
    async with session.get(url + "/documents", headers=ADMIN) as resp:
        document = (await resp.json())["items"][0]
    return {
        "run_id": run["run_id"],
        "step_id": "1",
        "token_id": str(token["id"]),
        "workflow_run": workflow_run["id"],
        "document_id": document["id"],
        "persona": "Walker",
    }


def _fill(template: str, ids: dict[str, str], hostile: str | None = None, at: str = "") -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == at and hostile is not None:
            return hostile
        if name == "id":
            if template.startswith("/documents"):
                return ids["document_id"]
            return ids["token_id"] if template.startswith("/tokens") else "1"
        if name == "item_id" and "/runs/" in template and "/workflows/" not in template:
            return ids["workflow_run"]
        if name == "node_id":
            return "a"
        if name == "name":
            return ids["persona"] if "/personas" in template else "Walk"
        return ids.get(name, "x1")

    return re.sub(r"\{([^}]+)\}", value, template)


class Findings:
    def __init__(self) -> None:
        self.items: list[str] = []

    async def check(
        self, resp: aiohttp.ClientResponse, what: str, *, refused: bool = False
    ) -> None:
        body = await resp.read()
        if resp.status >= 500:
            self.items.append(f"{resp.status} {what}: {body[:200]!r}")
            return
        if refused and not 400 <= resp.status < 500:
            self.items.append(f"{resp.status} (not refused) {what}")
        if resp.status in (204, 304) or not body:
            return
        if not resp.content_type.endswith("json"):
            if resp.status >= 400:
                self.items.append(f"{resp.status} not JSON ({resp.content_type}) {what}")
            return
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.items.append(f"{resp.status} invalid JSON {what}")
            return
        if resp.status >= 400 and set(data.get("error", {})) < {"code", "message", "details"}:
            self.items.append(f"{resp.status} without the error envelope {what}: {data}")


@dataclass(frozen=True)
class Target:
    """The server under attack: where it is, the ids it holds, and what was found."""

    session: aiohttp.ClientSession
    url: str
    ids: dict[str, str]
    findings: Findings


async def _raw_request(port: int, head: bytes) -> tuple[int, bytes]:
    """One request written byte for byte (headers no client library would send)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, answer


async def test_the_hostile_corpus_gets_json_4xx_and_leaves_no_trace(
    tmp_path: Path, db_url: DatabaseURL
) -> None:
    plant_test_tokens(db_url)
    documents = write_documents(tmp_path / "documents")
    db = db_url.dsn if db_url.path is None else str(db_url.path)
    args = ["--documents-dir", str(documents), "--access-log"]
    server = Server(tmp_path / "bobgen.db", args, db=db, quiet=False)
    findings = Findings()
    try:
        await server.start()
        async with aiohttp.ClientSession() as session:
            ids = await _setup(session, server.url)
            async with session.get(server.url + "/openapi.json") as resp:
                spec = await resp.json()
            operations = [
                (method.upper(), path, op)
                for path, ops in spec["paths"].items()
                for method, op in ops.items()
                if not path.startswith(("/docs", "/ui/static"))
            ]
            rss_before = server.rss_mib()
            at = Target(session, server.url, ids, findings)
            for method, template, op in operations:
                await _hostile_paths(at, method, template, op)
                await _hostile_queries(at, method, template, op)
                await _hostile_bodies(at, method, template, op)
            await _hostile_headers(server.port, findings)
            async with session.get(server.url + "/health") as resp:
                assert resp.status == 200, await resp.text()
            assert server.rss_mib() < rss_before + 150, (rss_before, server.rss_mib())
    finally:
        await server.stop()
    log = server.log()
    unhandled = sorted(set(re.findall(r"unhandled error on (.+)", log)))
    findings.items += [f"traceback in the log: {line}" for line in unhandled]
    errors = [line for line in log.splitlines() if " ERROR " in line or '"ERROR"' in line]
    findings.items += [
        f"ERROR in the log: {line[:200]}" for line in errors if "unhandled" not in line
    ]
    if "Traceback" in log and not unhandled:
        findings.items.append("a traceback in the log")
    if FORGED.search(log):
        findings.items.append(f"a forged log line: {FORGED.search(log)}")
    findings.items += [f"a token in the log: {t}" for t in [*TEST_TOKENS, "bgt_é"] if t in log]
    assert findings.items == [], f"{len(findings.items)} findings:\n" + "\n".join(
        findings.items[:1000]
    )


async def _hostile_paths(at: Target, method: str, template: str, op: dict[str, Any]) -> None:
    session, url, ids, findings = at.session, at.url, at.ids, at.findings
    names = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
    body = VALID_BODIES.get((method, template))
    for name in names:
        for segment in corpus.SEGMENTS:
            path = _fill(template, ids, segment, at=name)
            async with session.request(
                method,
                aiohttp.client.URL(url + path, encoded=True),
                json=body,
                headers={**ADMIN, "If-Match": "*"},
            ) as resp:
                await findings.check(resp, f"{method} {path}")


async def _hostile_queries(at: Target, method: str, template: str, op: dict[str, Any]) -> None:
    session, url, ids, findings = at.session, at.url, at.ids, at.findings
    if method != "GET":
        return
    path = _fill(template, ids)
    names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
    cases: list[tuple[str, str, bool]] = []
    if "cursor" in names:
        sorts = _enum(op, "sort") or [""]
        for sort in sorts:
            extra = f"&sort={sort}" if sort else ""
            cases += [(f"cursor={quote(c)}{extra}", "cursor", True) for c in corpus.CURSORS]
    for name in names & {"limit", "offset", "after_seq"}:
        cases += [(f"{name}={quote(n)}", name, True) for n in corpus.NUMBERS]
    for name in names & {"since"}:
        cases += [(f"since={quote(t)}", name, True) for t in corpus.TIMES]
    for name in names - {"cursor", "limit", "offset", "after_seq", "since", "field"}:
        cases += [(f"{name}={t}", name, False) for t in corpus.QUERY_TEXTS]
    if "field" in names:
        cases += [(f"field.a={t}", "field", False) for t in corpus.QUERY_TEXTS]
        cases += [(f"field.{'a.' * 300}a=1", "field", True)]
    for query, _, refused in cases:
        async with session.get(
            aiohttp.client.URL(f"{url}{path}?{query}", encoded=True), headers=ADMIN
        ) as resp:
            await findings.check(resp, f"GET {path}?{query[:120]}", refused=refused)


def _enum(op: dict[str, Any], name: str) -> list[str]:
    for p in op.get("parameters", []):
        if p["name"] == name:
            return [v for v in p.get("schema", {}).get("enum", []) if v is not None]
    return []


async def _hostile_bodies(at: Target, method: str, template: str, op: dict[str, Any]) -> None:
    session, url, ids, findings = at.session, at.url, at.ids, at.findings
    if "requestBody" not in op:
        return
    path = _fill(template, ids)
    headers = {**ADMIN, "If-Match": "*", "Content-Type": "application/json"}
    for raw in corpus.BODIES:
        async with session.request(method, url + path, data=raw, headers=headers) as resp:
            await findings.check(resp, f"{method} {path} body {raw[:40]!r}", refused=True)
    valid = VALID_BODIES.get((method, template), {})
    for key in valid:
        for value in corpus.FIELD_VALUES:
            body = json.dumps({**valid, key: value}).encode()
            async with session.request(method, url + path, data=body, headers=headers) as resp:
                await findings.check(resp, f"{method} {path} {key}={str(value)[:40]!r}")


async def _hostile_headers(port: int, findings: Findings) -> None:
    # A client that goes away mid-body: nothing to answer, nothing to log as an error.
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"
        b'Content-Length: 100\r\n\r\n{"args":'
    )
    await writer.drain()
    writer.close()

    for authorization in corpus.AUTHORIZATIONS:
        for target in (b"POST /runs", b"GET /tokens"):  # reads are open without --auth-reads
            head = (
                target + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2\r\nAuthorization: " + authorization + b"\r\n\r\n{}"
            )
            what = f"{target!r} with Authorization {authorization[:30]!r}"
            await _expect_json_4xx(port, head, what, findings, secret=b"bgt_")
    for line in (
        b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\x00",
        b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\x01",
        b"Authorization: Bearer\r\n " + ADMIN_TOKEN.encode(),
        b"X-Request-ID: a\x00b",
    ):
        head = b"GET /projects HTTP/1.1\r\nHost: x\r\n" + line + b"\r\n\r\n"
        what = f"header line {line[:40]!r}"
        await _expect_json_4xx(port, head, what, findings, secret=ADMIN_TOKEN.encode())


async def _expect_json_4xx(
    port: int, head: bytes, what: str, findings: Findings, *, secret: bytes
) -> None:
    """Send ``head`` as is: the answer must be a JSON 4xx that does not echo ``secret``."""
    status, answer = await _raw_request(port, head)
    if not 400 <= status < 500:
        findings.items.append(f"{status} {what}")
    elif b"application/json" not in answer.split(b"\r\n\r\n")[0]:
        findings.items.append(f"{status} not JSON: {what}")
    if secret in answer:
        findings.items.append(f"{status} echoes the token: {what}")


async def test_bodies_nested_deeper_than_the_limit_are_400(client: Any) -> None:
    from service.api.requests import MAX_JSON_DEPTH

    def post(levels: int) -> Any:  # the object {"args": ...} is one level more
        body = b'{"args":' + corpus.deep(levels - 1) + b"}"
        return client.post("/runs", data=body, headers={"Content-Type": "application/json"})

    assert (await post(MAX_JSON_DEPTH)).status == 201
    for levels in (MAX_JSON_DEPTH + 1, 300, 1000):
        resp = await post(levels)
        body = await resp.json()
        assert resp.status == 400, levels
        assert body["error"]["code"] == "validation_failed"
        assert body["error"]["details"] == {"max_depth": MAX_JSON_DEPTH}
