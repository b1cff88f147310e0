from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.audit import AuditedWrite, UnauditedWrite, audited_write
from service.config import Config
from service.db import DatabaseURL, ForeignKeyViolation, Work, execute
from service.domain.auth import InvalidScopes, Scope
from service.keys import DB_KEY, RUN_CONTEXT_KEY
from tests.backends import sql, wipe
from tests.helpers import VALID, assert_error
from tests.support import wait_for_seed
from tests.support.auth import WRITER_TOKEN


def audit_rows(url: DatabaseURL) -> list[tuple[Any, ...]]:
    return sql(url, "SELECT actor, scope, event, run_id, data_json FROM audit_log ORDER BY id")


async def new_run(client: TestClient, **body: Any) -> dict[str, Any]:
    resp = await client.post("/runs", json=body)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_create_and_get_run(client: TestClient) -> None:
    resp = await client.post("/runs", json={"args": {"n": 1}, "git_sha": "abc1234"})
    assert resp.status == 201
    run = await resp.json()
    assert resp.headers["Location"] == f"/runs/{run['run_id']}"
    assert run["args"] == {"n": 1} and run["git_sha"] == "abc1234" and run["config_hash"] is None
    got = await (await client.get(f"/runs/{run['run_id']}")).json()
    assert got == {**run, "steps": [], "status": "empty"}


@pytest.mark.parametrize(
    "body",
    [
        {"args": []},
        {"git_sha": "XYZ"},
        {"config_hash": "abc"},
        {"surprise": 1},
        {"args": {str(i): i for i in range(101)}},
    ],
)
async def test_bad_run_bodies(
    client: TestClient, db_url: DatabaseURL, body: dict[str, Any]
) -> None:
    before = audit_rows(db_url)
    resp = await client.post("/runs", json=body)
    assert resp.status == 400
    assert_error(await resp.json(), "validation_failed")
    assert audit_rows(db_url) == before


@pytest.mark.parametrize("run_id", ["nope", "0" * 31, "G" * 32])
async def test_bad_run_ids_are_400(client: TestClient, run_id: str) -> None:
    assert (await client.get(f"/runs/{run_id}")).status == 400


async def test_unknown_run_is_404_and_a_step_for_it_leaves_no_row(
    client: TestClient, db_url: DatabaseURL
) -> None:
    missing = "0" * 32
    assert (await client.get(f"/runs/{missing}")).status == 404
    before = audit_rows(db_url)
    resp = await client.post(f"/runs/{missing}/steps", json={"name": "x"})
    assert resp.status == 404
    assert sql(db_url, "SELECT count(*) FROM run_steps") == [(0,)]
    assert audit_rows(db_url) == before


async def test_foreign_keys_are_enforced_by_the_database(client: TestClient) -> None:
    with pytest.raises(ForeignKeyViolation):
        await client.app[DB_KEY].write(
            execute(
                "INSERT INTO run_steps (run_id, name, status, stats_json) "
                "VALUES ('missing', 's', 'pending', '{}')"
            )
        )


async def test_step_lifecycle_and_transitions(client: TestClient) -> None:
    run = await new_run(client)
    base = f"/runs/{run['run_id']}/steps"
    created = await client.post(base, json={"name": "build", "stats": {"files": 3}})
    assert created.status == 201
    step = await created.json()
    assert (step["status"], step["started_at"], step["finished_at"]) == ("pending", None, None)
    url = f"{base}/{step['step_id']}"
    assert created.headers["Location"] == url

    running = await (await client.patch(url, json={"status": "running"})).json()
    assert running["status"] == "running" and running["started_at"] and not running["finished_at"]
    assert running["stats"] == {"files": 3}
    stats_only = await (await client.patch(url, json={"stats": {"files": 9}})).json()
    assert stats_only["status"] == "running" and stats_only["stats"] == {"files": 9}
    done = await (await client.patch(url, json={"status": "succeeded"})).json()
    assert done["finished_at"] and done["started_at"] == running["started_at"]

    again = await client.patch(url, json={"status": "running"})
    assert again.status == 409
    details = assert_error(await again.json(), "invalid_transition")
    assert details == {"from": "succeeded", "to": "running", "allowed": []}
    frozen = await client.patch(url, json={"stats": {"late": True}})
    assert frozen.status == 409  # a finished step is final

    other = await (await client.post(base, json={"name": "test"})).json()
    skip = await client.patch(f"{base}/{other['step_id']}", json={"status": "succeeded"})
    assert skip.status == 409
    assert (await skip.json())["error"]["details"]["allowed"] == ["failed", "running", "skipped"]
    failed = await client.patch(f"{base}/{other['step_id']}", json={"status": "failed"})
    assert failed.status == 200

    full = await (await client.get(f"/runs/{run['run_id']}")).json()
    assert [s["name"] for s in full["steps"]] == ["build", "test"]
    assert full["status"] == "failed"


@pytest.mark.parametrize(
    "body", [{}, {"status": "done"}, {"status": None}, {"stats": []}, {"name": "x"}]
)
async def test_bad_step_updates_are_400(client: TestClient, body: dict[str, Any]) -> None:
    run = await new_run(client)
    step = await (await client.post(f"/runs/{run['run_id']}/steps", json={"name": "s"})).json()
    resp = await client.patch(f"/runs/{run['run_id']}/steps/{step['step_id']}", json=body)
    assert resp.status == 400


async def test_step_of_another_run_is_404(client: TestClient) -> None:
    first, second = await new_run(client), await new_run(client)
    step = await (await client.post(f"/runs/{first['run_id']}/steps", json={"name": "s"})).json()
    resp = await client.patch(
        f"/runs/{second['run_id']}/steps/{step['step_id']}", json={"status": "running"}
    )
    assert resp.status == 404


async def test_new_steps_start_pending_or_running(client: TestClient) -> None:
    run = await new_run(client)
    resp = await client.post(f"/runs/{run['run_id']}/steps", json={"name": "s", "status": "failed"})
    assert resp.status == 400


async def test_list_runs_keyset_paging_and_filters(client: TestClient) -> None:
    made = [await new_run(client, git_sha="a" * 40 if i % 2 else "b" * 40) for i in range(7)]
    seen: list[dict[str, Any]] = []
    url, cursor = "/runs?limit=3", None
    while True:
        page = await (await client.get(url + (f"&cursor={cursor}" if cursor else ""))).json()
        seen += page["items"]
        cursor = page["next"]
        if cursor is None:
            break
    # Every run exactly once (the start-up migration run too), newest first; runs created in
    # the same millisecond are ordered by run_id.
    ids = [r["run_id"] for r in seen]
    assert len(ids) == len(set(ids)) and {r["run_id"] for r in made} <= set(ids)
    keys = [(r["created_at"], r["run_id"]) for r in seen]
    assert keys == sorted(keys, reverse=True)
    filtered = await (await client.get(f"/runs?git_sha={'a' * 40}&limit=500")).json()
    assert {r["run_id"] for r in filtered["items"]} == {r["run_id"] for r in made[1::2]}
    future = await (await client.get("/runs?since=2999-01-01T00:00:00Z")).json()
    assert future["items"] == []
    for bad in ("cursor=abc", "since=yesterday", "since=2026-01-01T00:00:00", "git_sha=zz"):
        assert (await client.get(f"/runs?{bad}")).status == 400, bad


async def test_every_write_is_audited_with_the_token_user(
    make_client,
    db_url: DatabaseURL,  # type: ignore[no-untyped-def]
) -> None:
    client = await make_client(token=WRITER_TOKEN)
    start = len(audit_rows(db_url))
    await client.post("/bobgen/status", json=VALID)
    run = await new_run(client)
    step = await (await client.post(f"/runs/{run['run_id']}/steps", json={"name": "s"})).json()
    await client.patch(f"/runs/{run['run_id']}/steps/{step['step_id']}", json={"status": "running"})
    rows = audit_rows(db_url)[start:]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("ci-bot", "status", "status.created"),
        ("ci-bot", "runs", "run.created"),
        ("ci-bot", "runs", "run_step.created"),
        ("ci-bot", "runs", "run_step.updated"),
    ]
    assert [r[3] for r in rows[1:]] == [run["run_id"]] * 3


async def test_failed_writes_leave_no_audit_row(client: TestClient, db_url: DatabaseURL) -> None:
    run = await new_run(client)
    step = await (await client.post(f"/runs/{run['run_id']}/steps", json={"name": "s"})).json()
    await client.patch(f"/runs/{run['run_id']}/steps/{step['step_id']}", json={"status": "failed"})
    before = audit_rows(db_url)
    attempts = [
        client.post("/bobgen/status", json={**VALID, "uptime": -1}),
        client.post("/bobgen/status", data=b"{", headers={"Content-Type": "application/json"}),
        client.post(f"/runs/{'0' * 32}/steps", json={"name": "s"}),
        client.patch(f"/runs/{run['run_id']}/steps/{step['step_id']}", json={"status": "running"}),
        client.post("/runs", json={"git_sha": "nope"}),
    ]
    statuses = [(await a).status for a in attempts]
    assert statuses == [400, 400, 404, 409, 400]
    assert audit_rows(db_url) == before


async def test_a_write_that_forgets_to_audit_is_rolled_back(client: TestClient) -> None:
    db = client.app[DB_KEY]

    def forgetful(w: AuditedWrite) -> Work[int]:
        return execute("INSERT INTO runs (run_id, created_at, args_json) VALUES ('r', 't', '{}')")

    with pytest.raises(UnauditedWrite):
        await audited_write(db, "test", forgetful)
    assert await db.fetchall("SELECT * FROM runs WHERE run_id = 'r'") == []


async def test_audit_listing_filters_and_paging(client: TestClient) -> None:
    run = await new_run(client)
    for i in range(5):
        await client.post(f"/runs/{run['run_id']}/steps", json={"name": f"s{i}"})
    await client.post("/bobgen/status", json=VALID)
    everything = await (await client.get("/audit?limit=500")).json()
    ids = [e["id"] for e in everything["items"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    seen, cursor = [], None
    while True:
        page = await (
            await client.get("/audit?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        ).json()
        seen += [e["id"] for e in page["items"]]
        if (cursor := page["next"]) is None:
            break
    assert seen == ids
    of_run = await (await client.get(f"/audit?run_id={run['run_id']}")).json()
    assert [e["event"] for e in of_run["items"]] == ["run_step.created"] * 5 + ["run.created"]
    assert all(e["actor"] == "ops" for e in of_run["items"])
    status_events = await (await client.get("/audit?scope=status&event=status.created")).json()
    assert len(status_events["items"]) == 1 and status_events["items"][0]["data"]["id"] == 1
    assert (await (await client.get("/audit?since=2999-01-01T00:00:00Z")).json())["items"] == []
    for bad in ("cursor=zz", "since=soon", "limit=0", "level=info"):
        assert (await client.get(f"/audit?{bad}")).status == 400, bad


async def test_seed_job_is_a_run_with_a_step_per_batch(make_client, db_url: DatabaseURL) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(seed_rows=1000, seed_batch_size=300)
    await wait_for_seed(client.app)
    runs = (await (await client.get("/runs")).json())["items"]
    seed_run = next(r for r in runs if r["args"].get("command") == "seed")
    assert seed_run["args"] == {"command": "seed", "target": 1000, "batch_size": 300}
    assert seed_run["config_hash"] == client.app[RUN_CONTEXT_KEY].config_hash
    full = await (await client.get(f"/runs/{seed_run['run_id']}")).json()
    assert full["status"] == "succeeded"
    assert [s["stats"]["inserted"] for s in full["steps"]] == [300, 300, 300, 100]
    assert full["steps"][-1]["stats"]["rows"] == 1000
    events = await (await client.get(f"/audit?run_id={seed_run['run_id']}&limit=500")).json()
    assert [e["event"] for e in events["items"]][::-1] == (
        ["seed.started"] + ["seed.batch"] * 4 + ["seed.complete"]
    )
    assert {e["actor"] for e in events["items"]} == {"system"}


async def test_admin_seed_run_is_attributed_to_the_token_user(client: TestClient) -> None:
    await client.post("/admin/seed", json={"rows": 20})
    await wait_for_seed(client.app)
    events = await (await client.get("/audit?event=seed.started")).json()
    assert events["items"][0]["actor"] == "ops"


async def test_startup_migrations_are_recorded_as_a_run(make_client, db_url: DatabaseURL) -> None:  # type: ignore[no-untyped-def]
    # planted_db migrated with the library call, which records nothing: start from scratch.
    wipe(db_url)
    client = await make_client()
    runs = (await (await client.get("/runs")).json())["items"]
    migrate = [r for r in runs if r["args"]["command"] == "migrate.apply"]
    assert len(migrate) == 1
    full = await (await client.get(f"/runs/{migrate[0]['run_id']}")).json()
    assert [s["name"] for s in full["steps"]] == migrate[0]["args"]["migrations"]
    assert full["status"] == "succeeded"


def test_config_hash_is_stable_and_sensitive() -> None:
    a = Config(port=1234, seed_rows=5)
    assert a.config_hash() == Config(seed_rows=5, port=1234).config_hash()
    assert (
        a.config_hash()
        == Config.from_sources({"port": 1234}, env={"BOBGEN_SEED_ROWS": "5"}).config_hash()
    )
    assert a.config_hash() != Config(port=1235, seed_rows=5).config_hash()
    assert len(a.config_hash()) == 64 and int(a.config_hash(), 16) >= 0


async def test_no_secrets_in_the_audit_log(make_client, db_url: DatabaseURL) -> None:  # type: ignore[no-untyped-def]
    from service.tokens import create_token

    client = await make_client()
    with pytest.raises(InvalidScopes):
        await create_token(client.app[DB_KEY], user="x", name="n", scopes=frozenset(), actor="t")
    token, record = await create_token(
        client.app[DB_KEY], user="x", name="n", scopes=frozenset({Scope.READ}), actor="cli:t"
    )
    rows = audit_rows(db_url)
    assert not any(token in str(r) or record.token_hash in str(r) for r in rows)
    assert rows[-1][2] == "token.created"
