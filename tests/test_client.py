"""service.client against real servers on both backends: every route group, errors by
family, pages followed to the end, ETag-guarded updates, and retries only where safe."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from service.client import (
    BobGen,
    BobGenSync,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidRequest,
    NotFound,
    Retries,
    Unauthorized,
    Unavailable,
)
from service.client.api import PAGES, ROUTES
from service.db import DatabaseURL
from tests.backends import write_lock_held_elsewhere
from tests.helpers import VALID
from tests.support import eventually
from tests.support.auth import ADMIN_TOKEN, READER_TOKEN

QUICK = Retries(attempts=4, backoff_s=0.01, max_wait_s=2.0)


@pytest.fixture
async def connect(make_client: Any) -> AsyncIterator[Callable[..., Awaitable[BobGen]]]:
    """``await connect(token=...)``: a BobGen client on a fresh server (one per test)."""
    opened: list[BobGen] = []
    server: list[Any] = []

    async def factory(token: str | None = ADMIN_TOKEN, **overrides: Any) -> BobGen:
        if not server:
            server.append(await make_client(**overrides))
        bobgen = BobGen(str(server[0].make_url("")), token, retries=QUICK, timeout_s=10)
        opened.append(bobgen)
        return bobgen

    yield factory
    for bobgen in opened:
        await bobgen.close()


async def collect(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


async def test_every_route_has_a_client_method(connect: Any) -> None:
    """A route added to the server without a method here fails this test (and vice versa)."""
    bobgen = await connect()
    spec = await bobgen.openapi()
    served = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
    assert served - PAGES - ROUTES == set(), "routes without a client method"
    assert ROUTES - served == set(), "client methods for routes the server does not have"


async def test_status_records_pages_and_errors(connect: Any) -> None:
    bobgen = await connect()
    created = [await bobgen.status.create(**{**VALID, "version": f"v{i % 2}"}) for i in range(5)]
    assert (await bobgen.status.get(created[0]["id"]))["version"] == "v0"
    assert await bobgen.status.get(created[1]["id"], fields=["id"]) == {"id": created[1]["id"]}
    page = await bobgen.status.page(limit=2, fields=["id", "version"])
    assert page["total"] == 5 and len(page["items"]) == 2 and page["next"]
    every = await collect(bobgen.status.list(limit=2))  # three pages followed
    assert [r["id"] for r in every] == [r["id"] for r in created]
    assert len(await collect(bobgen.status.list(version="v1", limit=1))) == 2

    with pytest.raises(NotFound) as missing:
        await bobgen.status.get(999_999)
    assert missing.value.status == 404 and missing.value.code == "not_found"
    assert missing.value.request_id  # to quote in a report
    with pytest.raises(InvalidRequest) as invalid:
        await bobgen.status.create(**{**VALID, "uptime": 101})
    assert invalid.value.code == "validation_failed" and "uptime" in invalid.value.details


async def test_updates_carry_the_etag_they_read_and_a_stale_one_is_a_conflict(
    connect: Any,
) -> None:
    bobgen = await connect()
    project = await bobgen.projects.create("demo", id="demo")
    ideas = bobgen.projects("demo").ideas
    idea = await ideas.create(title="first", priority="high")
    assert idea.etag == '"1"'
    changed = await ideas.update(idea, {"title": "second"})
    assert changed["title"] == "second" and changed.etag == '"2"'
    with pytest.raises(Conflict) as stale:  # based on version 1, the row is at 2
        await ideas.update(idea, {"title": "lost update"})
    assert stale.value.status == 412 and stale.value.current_version == 2
    assert (await ideas.get(idea["id"]))["title"] == "second"
    with pytest.raises(Conflict):
        await ideas.delete(idea)  # stale too
    await ideas.delete(changed)
    assert await collect(ideas.list()) == []
    renamed = await bobgen.projects.update(project, {"name": "renamed"})
    assert (await bobgen.projects.get("demo"))["name"] == renamed["name"] == "renamed"
    with pytest.raises(Conflict) as taken:
        await bobgen.projects.create("again", id="demo")
    assert taken.value.status == 409


async def test_project_groups_context_workflows_runs_and_gap_analyses(connect: Any) -> None:
    bobgen = await connect()
    await bobgen.projects.create("p", id="p")
    p = bobgen.projects("p")
    item = await p.context.create(name="notes", type="note", tokens=120)
    assert (await p.context.pin(item["id"]))["pinned"] is True
    assert (await p.context.totals())["pinned_tokens"] == 120
    assert (await p.context.unpin(item["id"]))["pinned"] is False
    graph = {"nodes": [{"id": "a"}, {"id": "b"}], "edges": [{"from": "a", "to": "b"}]}
    flow = await p.workflows.create(name="flow", graph=graph)
    run = await p.workflows.start_run(flow["id"], input={"x": 1})
    moved = await p.runs.update_node(run["id"], "a", status="running", progress=50)
    assert moved["run"]["status"] == "running"
    assert [r["id"] for r in await collect(p.runs.list())] == [run["id"]]
    assert len((await p.runs.get(run["id"]))["nodes"]) == 2
    gap = await p.gap_analyses.create(report={"missing": ["tests"]})
    assert (await p.gap_analyses.get(gap["id"]))["report"] == {"missing": ["tests"]}
    with pytest.raises(InvalidRequest) as cyclic:
        await p.workflows.create(
            name="loop", graph={"nodes": [{"id": "a"}], "edges": [{"from": "a", "to": "a"}]}
        )
    assert cyclic.value.status == 422
    with pytest.raises(Conflict):
        await bobgen.projects.delete("p")  # not empty
    await bobgen.projects.delete("p", cascade=True)
    assert await collect(bobgen.projects.list()) == []


async def test_runs_steps_and_the_audit_log(connect: Any) -> None:
    bobgen = await connect()
    run = await bobgen.runs.create({"command": "import"}, git_sha="0123abc")
    step = await bobgen.runs.add_step(run["run_id"], "load", status="running")
    done = await bobgen.runs.update_step(run["run_id"], step["step_id"], status="succeeded")
    assert done["status"] == "succeeded"
    assert (await bobgen.runs.get(run["run_id"]))["status"] == "succeeded"
    assert [r["run_id"] for r in await collect(bobgen.runs.list())] == [run["run_id"]]
    with pytest.raises(Conflict) as moved:
        await bobgen.runs.update_step(run["run_id"], step["step_id"], status="running")
    assert moved.value.code == "invalid_transition"
    events = {e["event"] async for e in bobgen.audit.list(run_id=run["run_id"])}
    assert {"run.created", "run_step.created", "run_step.updated"} <= events


async def test_debug_metadata_from_repository_to_debugger_state(connect: Any) -> None:
    bobgen = await connect()
    repo = await bobgen.repositories.create("svc", "https://git.example.com/svc.git")
    trees = bobgen.repositories.worktrees(repo["id"])
    tree = await trees.create("/work/svc-1", branch="main")
    session = await bobgen.sessions.create(repo["id"], metadata={"ticket": "T-1"})
    held = await trees.reserve(session["id"], 60)
    assert held["id"] == tree["id"] and held["state"] == "reserved"
    assert (await trees.renew(tree["id"], session["id"], 120))["id"] == tree["id"]
    assert (await trees.release(tree["id"], session["id"]))["state"] == "free"

    command = await bobgen.sessions.run_command(session["id"], ["pytest", "-q"], env={"A": "1"})
    chunks = [{"seq": i, "stream": "stdout", "text": f"line {i}\n"} for i in (1, 2, 3)]
    assert (await bobgen.commands.append_logs(command["id"], chunks))["last_seq"] == 3
    again = await bobgen.commands.append_logs(command["id"], chunks)  # a retried batch
    assert again["stored"] == [] and again["already_stored"] == [1, 2, 3]
    assert [c["seq"] async for c in bobgen.commands.logs(command["id"], after_seq=1)] == [2, 3]
    finished = await bobgen.commands.finish(command["id"], "succeeded", exit_code=0)
    assert finished["exit_code"] == 0
    assert [c["id"] for c in await collect(bobgen.sessions.commands(session["id"]))] == [
        command["id"]
    ]
    artifact = await bobgen.sessions.add_artifact(session["id"], "log", "log", "file:///tmp/x")
    assert (await bobgen.artifacts.get(artifact["id"]))["name"] == "log"
    assert len(await collect(bobgen.sessions.artifacts(session["id"]))) == 1
    await bobgen.artifacts.delete(artifact["id"])

    state = await bobgen.sessions.debugger(session["id"])
    saved = await bobgen.sessions.put_debugger(state, {"breakpoints": ["a.py:3"]})
    assert saved["state"] == {"breakpoints": ["a.py:3"]}
    with pytest.raises(Conflict):
        await bobgen.sessions.put_debugger(state, {"breakpoints": []})  # read before the put
    assert (await bobgen.sessions.end(session["id"]))["state"] == "ended"
    assert len(await collect(bobgen.sessions.list(state="ended"))) == 1
    assert (await bobgen.repositories.update(repo, {"default_branch": "dev"}))["version"] == 2
    await bobgen.repositories.delete(repo["id"])
    assert await collect(bobgen.repositories.list()) == []


async def test_tokens_scopes_and_revocation(connect: Any) -> None:
    admin = await connect()
    made = await admin.tokens.create("svc", "reader", ["read"])
    reader = await connect(token=made["token"])
    assert (await reader.status.page())["total"] == 0
    with pytest.raises(Forbidden) as refused:
        await reader.status.create(**VALID)
    assert refused.value.details["required_scope"] == "write"
    assert made["id"] in [t["id"] async for t in admin.tokens.list()]
    await admin.tokens.revoke(made["id"])

    async def refused_now() -> bool:
        try:
            await reader.tokens.list().__anext__()
        except Unauthorized:
            return True
        except Forbidden:
            return False
        return False

    await eventually(refused_now, timeout=5)
    with pytest.raises(Unauthorized):
        await (await connect(token="bgt_not-a-token")).admin.seed_progress()


async def test_health_probes_admin_documents_and_the_ops_snapshot(connect: Any) -> None:
    bobgen = await connect()
    assert (await bobgen.health())["status"] in ("ok", "degraded")
    assert await bobgen.live() and await bobgen.ready()
    assert "bobgen" in (await bobgen.versions())
    assert "http_requests_total" in await bobgen.metrics()
    assert isinstance(await bobgen.ops_snapshot(), dict)
    assert (await bobgen.admin.seed_progress())["seed"]["state"]
    started = await bobgen.admin.seed(20, batch_size=10)
    assert started["seed"]["target"] == 20
    await eventually(lambda: _seed_done(bobgen), timeout=10)
    assert (await bobgen.status.page())["total"] == 20
    with pytest.raises(NotFound):  # no --documents-dir: nothing is watched
        await bobgen.admin.sync_status()
    assert await collect(bobgen.documents.list()) == []
    assert await collect(bobgen.documents.personas()) == []
    assert await collect(bobgen.documents.prompts()) == []
    with pytest.raises(NotFound):
        await bobgen.documents.persona("nobody")


async def _seed_done(bobgen: BobGen) -> bool:
    return (await bobgen.admin.seed_progress())["seed"]["state"] == "complete"


async def test_an_idempotent_write_is_retried_through_a_busy_database_and_a_plain_post_is_not(
    connect: Any, db_url: DatabaseURL
) -> None:
    """503 database_busy with Retry-After: a create with the caller's id is sent again once the
    lock is gone; a POST that would make a second record if repeated raises at once."""
    bobgen = await connect(busy_timeout_ms=100)
    with write_lock_held_elsewhere(db_url, "projects"):
        creating = asyncio.create_task(bobgen.projects.create("p", id="p"))
        await eventually(lambda: bobgen.http.retried >= 1 or creating.done(), timeout=10)
        assert not creating.done()  # still trying, behind the lock
    project = await creating
    assert project["id"] == "p" and bobgen.http.retried >= 1
    tried = bobgen.http.retried
    with write_lock_held_elsewhere(db_url, "status"), pytest.raises(Unavailable) as busy:
        await bobgen.status.create(**VALID)
    assert busy.value.code == "database_busy" and busy.value.retry_after is not None
    assert bobgen.http.retried == tried  # not sent again
    assert (await bobgen.status.page())["total"] == 0


async def test_the_blocking_wrapper_for_scripts(connect: Any) -> None:
    url = (await connect()).http.base_url

    def script() -> tuple[list[int], Any, str]:
        """What a script without asyncio writes: the same calls, no await."""
        with BobGenSync(url, ADMIN_TOKEN, retries=QUICK) as bobgen:
            made = [bobgen.status.create(**VALID)["id"] for _ in range(3)]
            listed = [row["id"] for row in bobgen.status.list(limit=2)]  # two pages
            assert listed == made
            bobgen.projects.create("scripted", id="scripted")
            ideas = bobgen.projects("scripted").ideas
            idea = ideas.create(title="first")
            ideas.update(idea, {"title": "second"})
            with pytest.raises(Conflict):
                ideas.update(idea, {"title": "stale"})  # the same errors as the async client
            return listed, bobgen.health()["status"], ideas.get(idea["id"])["title"]

    listed, health, title = await asyncio.to_thread(script)
    assert len(listed) == 3 and health == "ok" and title == "second"
    with pytest.raises(RuntimeError, match="running event loop"):
        BobGenSync(url, ADMIN_TOKEN)  # in async code, use the async client


async def test_an_unreachable_server_is_tried_again_then_reported() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    async with BobGen(f"http://127.0.0.1:{port}", "t", retries=QUICK) as bobgen:
        with pytest.raises(ConnectionFailed) as failed:
            await bobgen.status.page()
        assert failed.value.status == 0 and bobgen.http.retried == QUICK.attempts - 1


async def test_url_and_token_come_from_the_environment(
    connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await connect()
    monkeypatch.setenv("BOBGEN_URL", server.http.base_url)
    monkeypatch.setenv("BOBGEN_TOKEN", READER_TOKEN)
    async with BobGen() as bobgen:
        assert bobgen.http.base_url == server.http.base_url
        with pytest.raises(Forbidden):
            await bobgen.status.create(**VALID)
