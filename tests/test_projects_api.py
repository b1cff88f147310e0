import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.db import DatabaseURL, ForeignKeyViolation, execute
from service.keys import DB_KEY
from tests.backends import sql
from tests.helpers import assert_error
from tests.support.auth import READER_TOKEN, bearer

GRAPH = {
    "nodes": [{"id": "fetch"}, {"id": "parse", "label": "Parse"}, {"id": "report"}],
    "edges": [{"from": "fetch", "to": "parse"}, {"from": "parse", "to": "report"}],
}


async def post(client: TestClient, url: str, body: dict[str, Any], status: int = 201) -> Any:
    resp = await client.post(url, json=body)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def patch(client: TestClient, url: str, body: dict[str, Any], version: Any) -> Any:
    return await client.patch(url, json=body, headers={"If-Match": f'"{version}"'})


@pytest.fixture
async def project(client: TestClient) -> str:
    return (await post(client, "/projects", {"name": "Alpha", "description": "first"}))["id"]


@pytest.fixture
async def other_project(client: TestClient) -> str:
    return (await post(client, "/projects", {"name": "Beta"}))["id"]


async def collect(client: TestClient, url: str) -> list[dict[str, Any]]:
    """Follow ``next`` cursors to the end."""
    items, cursor = [], None
    sep = "&" if "?" in url else "?"
    while True:
        page = await (await client.get(url + (f"{sep}cursor={cursor}" if cursor else ""))).json()
        items += page["items"]
        if (cursor := page["next"]) is None:
            return items


# ---- projects ----------------------------------------------------------------------------


async def test_project_crud(client: TestClient) -> None:
    resp = await client.post("/projects", json={"name": "Alpha"})
    assert resp.status == 201
    project = await resp.json()
    assert (
        resp.headers["ETag"] == '"1"' and resp.headers["Location"] == f"/projects/{project['id']}"
    )
    assert project["description"] == "" and project["version"] == 1
    url = f"/projects/{project['id']}"
    assert (await (await client.get(url)).json()) == project

    assert (await client.patch(url, json={"name": "A2"})).status == 428
    stale = await patch(client, url, {"name": "A2"}, 7)
    assert stale.status == 412 and stale.headers["ETag"] == '"1"'
    assert assert_error(await stale.json(), "version_mismatch") == {"current_version": 1}
    ok = await patch(client, url, {"name": "A2"}, 1)
    assert ok.status == 200 and ok.headers["ETag"] == '"2"'
    assert (await ok.json())["name"] == "A2"

    assert (await client.delete(url, headers={"If-Match": '"1"'})).status == 412
    assert (await client.delete(url)).status == 204
    assert (await client.get(url)).status == 404
    assert (await client.delete(url)).status == 404


async def test_project_ids_and_listing(client: TestClient) -> None:
    await post(client, "/projects", {"id": "legacy-1", "name": "Imported"})
    taken = await client.post("/projects", json={"id": "legacy-1", "name": "Again"})
    assert taken.status == 409
    assert_error(await taken.json(), "id_taken")
    for name in "cab":
        await post(client, "/projects", {"name": name})
    names = [p["name"] for p in await collect(client, "/projects?limit=2&sort=name")]
    assert names == ["Imported", "a", "b", "c"]
    for bad in ("sort=size", "limit=0", "cursor=xyz"):
        assert (await client.get(f"/projects?{bad}")).status == 400


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x" * 201},
        {"name": "x", "id": "bad id"},
        {"name": "x", "owner": "me"},
        {"name": 5},
    ],
)
async def test_bad_project_bodies(client: TestClient, body: dict[str, Any]) -> None:
    assert (await client.post("/projects", json=body)).status == 400


async def test_deleting_a_non_empty_project_needs_cascade(client: TestClient, project: str) -> None:
    await post(client, f"/projects/{project}/ideas", {"title": "i"})
    wf = await post(client, f"/projects/{project}/workflows", {"name": "w", "graph": GRAPH})
    await post(client, f"/projects/{project}/workflows/{wf['id']}/runs", {})
    refused = await client.delete(f"/projects/{project}")
    assert refused.status == 409
    details = assert_error(await refused.json(), "project_not_empty")
    assert details == {"idea_tickets": 1, "workflow_graphs": 1, "workflow_runs": 1}
    assert (await client.delete(f"/projects/{project}?cascade=true")).status == 204
    db = client.app[DB_KEY]
    for table in ("idea_tickets", "workflow_runs", "workflow_node_states", "workflow_graphs"):
        assert await db.fetchall(f"SELECT count(*) FROM {table}") == [(0,)]


async def test_unknown_project_is_404_everywhere(client: TestClient) -> None:
    for url in (
        "/projects/nope/ideas",
        "/projects/nope/context",
        "/projects/nope/runs",
        "/projects/nope/context/totals",
        "/projects/nope/gap-analyses",
    ):
        resp = await client.get(url)
        assert resp.status == 404, url
    assert (await client.post("/projects/nope/ideas", json={"title": "x"})).status == 404
    assert (await client.get("/projects/bad%20id/ideas")).status == 400


async def test_writes_need_the_write_scope(client: TestClient, project: str) -> None:
    resp = await client.post(
        f"/projects/{project}/ideas", json={"title": "x"}, headers=bearer(READER_TOKEN)
    )
    assert resp.status == 403


# ---- ideas -------------------------------------------------------------------------------


async def test_idea_crud_and_etags(client: TestClient, project: str) -> None:
    base = f"/projects/{project}/ideas"
    idea = await post(client, base, {"title": "Faster seeds"})
    assert (idea["status"], idea["priority"], idea["version"]) == ("open", "medium", 1)
    url = f"{base}/{idea['id']}"
    got = await client.get(url)
    assert got.headers["ETag"] == '"1"' and await got.json() == idea

    missing = await client.patch(url, json={"status": "done"})
    assert missing.status == 428
    assert_error(await missing.json(), "precondition_required")
    for bad_tag in ("v1", "", '"1",', '"1" "2"', '"x"'):
        bad = await client.patch(url, json={"status": "done"}, headers={"If-Match": bad_tag})
        assert bad.status == 400, bad_tag
    done = await client.patch(url, json={"status": "done"}, headers={"If-Match": 'W/"1"'})
    assert done.status == 200
    body = await done.json()
    assert (body["status"], body["version"]) == ("done", 2)
    assert body["updated_at"] >= idea["updated_at"] and body["created_at"] == idea["created_at"]
    stale = await patch(client, url, {"title": "late"}, 1)
    assert stale.status == 412
    star = await client.patch(url, json={"priority": "high"}, headers={"If-Match": "*"})
    assert star.status == 200 and (await star.json())["version"] == 3
    # A list of ETags (RFC 9110): any of them may be the current one.
    listed = {"If-Match": '"7", W/"3" , "9"'}
    low = await client.patch(url, json={"priority": "low"}, headers=listed)
    assert low.status == 200 and (await low.json())["version"] == 4
    assert (await client.delete(url, headers={"If-Match": '"2", "3"'})).status == 412
    assert (await client.delete(url, headers={"If-Match": '"1", "4"'})).status == 204
    assert (await client.get(url)).status == 404


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": ""},
        {"title": "x", "status": "closed"},
        {"title": "x", "priority": "urgent"},
        {"title": "x", "project_id": "other"},
        {"title": "x", "version": 4},
    ],
)
async def test_bad_idea_bodies(client: TestClient, project: str, body: dict[str, Any]) -> None:
    resp = await client.post(f"/projects/{project}/ideas", json=body)
    assert resp.status == 400
    assert_error(await resp.json(), "validation_failed")


async def test_ideas_are_scoped_to_their_project(
    client: TestClient, project: str, other_project: str
) -> None:
    idea = await post(client, f"/projects/{project}/ideas", {"title": "mine"})
    foreign = f"/projects/{other_project}/ideas/{idea['id']}"
    assert (await client.get(foreign)).status == 404
    assert (await patch(client, foreign, {"title": "stolen"}, 1)).status == 404
    assert (await client.delete(foreign)).status == 404
    assert (await (await client.get(f"/projects/{other_project}/ideas")).json())["items"] == []
    mine = await (await client.get(f"/projects/{project}/ideas/{idea['id']}")).json()
    assert mine["title"] == "mine" and mine["version"] == 1


async def test_idea_listing_filters_sorting_and_paging(client: TestClient, project: str) -> None:
    base = f"/projects/{project}/ideas"
    made = []
    for i, (status, priority) in enumerate(
        [
            ("open", "low"),
            ("done", "critical"),
            ("open", "high"),
            ("rejected", "medium"),
            ("open", "critical"),
            ("in_progress", "low"),
            ("open", "medium"),
        ]
    ):
        made.append(
            await post(client, base, {"title": f"i{i}", "status": status, "priority": priority})
        )
    by_created = await collect(client, f"{base}?limit=2")
    keys = [(i["created_at"], i["id"]) for i in by_created]
    assert keys == sorted(keys) and {i["id"] for i in by_created} == {m["id"] for m in made}

    rank = {"low": 1, "medium": 2, "high": 3, "critical": 4}
    by_priority = await collect(client, f"{base}?limit=3&sort=-priority")
    ranks = [rank[i["priority"]] for i in by_priority]
    assert ranks == sorted(ranks, reverse=True) and len(by_priority) == 7

    open_ideas = await collect(client, f"{base}?status=open&limit=2")
    assert sorted(i["title"] for i in open_ideas) == ["i0", "i2", "i4", "i6"]
    critical_open = await collect(client, f"{base}?status=open&priority=critical")
    assert [i["title"] for i in critical_open] == ["i4"]
    for bad in ("status=closed", "priority=p1", "sort=title", "limit=501", "cursor=e30"):
        assert (await client.get(f"{base}?{bad}")).status == 400, bad


async def test_concurrent_patches_of_one_idea_have_exactly_one_winner(
    client: TestClient, project: str
) -> None:
    idea = await post(client, f"/projects/{project}/ideas", {"title": "contested"})
    url = f"/projects/{project}/ideas/{idea['id']}"
    resps = await asyncio.gather(
        *(patch(client, url, {"title": f"writer {i}"}, 1) for i in range(50))
    )
    statuses = [r.status for r in resps]
    assert statuses.count(200) == 1 and statuses.count(412) == 49
    winner = await next(r for r in resps if r.status == 200).json()
    final = await (await client.get(url)).json()
    assert final["version"] == 2 and final["title"] == winner["title"]  # no lost update


async def test_fifty_concurrent_writers_never_see_database_locked(
    client: TestClient, project: str
) -> None:
    resps = await asyncio.gather(
        *(client.post(f"/projects/{project}/ideas", json={"title": f"t{i}"}) for i in range(50))
    )
    assert [r.status for r in resps] == [201] * 50
    assert len(await collect(client, f"/projects/{project}/ideas?limit=500")) == 50


async def test_writes_are_audited(client: TestClient, project: str, db_url: DatabaseURL) -> None:
    idea = await post(client, f"/projects/{project}/ideas", {"title": "x"})
    await patch(client, f"/projects/{project}/ideas/{idea['id']}", {"title": "y"}, 1)
    await client.delete(f"/projects/{project}/ideas/{idea['id']}")
    await patch(client, f"/projects/{project}/ideas/{idea['id']}", {"title": "z"}, 2)  # 404
    rows = sql(db_url, "SELECT event FROM audit_log WHERE scope = 'projects' ORDER BY id")
    events = [r[0] for r in rows]
    assert events == ["project.created", "idea.created", "idea.updated", "idea.deleted"]


async def test_foreign_keys_hold_at_the_database_level(client: TestClient) -> None:
    with pytest.raises(ForeignKeyViolation, match=r"FOREIGN KEY|foreign key"):
        await client.app[DB_KEY].write(
            execute(
                "INSERT INTO idea_tickets (id, project_id, title, description, status, priority,"
                " version, created_at, updated_at) VALUES ('i', 'ghost', 't', '', 'open', 1, 1,"
                " 't', 't')"
            )
        )


# ---- context items -----------------------------------------------------------------------


async def test_context_items_pinning_and_totals(client: TestClient, project: str) -> None:
    base = f"/projects/{project}/context"
    a = await post(client, base, {"name": "README", "type": "file", "tokens": 120})
    b = await post(
        client,
        base,
        {
            "name": "spec",
            "type": "document",
            "tokens": 300,
            "pinned": True,
            "canonical_document_id": "doc-7",
        },
    )
    await post(client, base, {"name": "tip", "type": "note", "tokens": 5})
    assert a["pinned"] is False and b["pinned"] is True

    pinned = await client.post(f"{base}/{a['id']}/pin")
    assert pinned.status == 200 and (await pinned.json())["version"] == 2
    again = await (await client.post(f"{base}/{a['id']}/pin")).json()
    assert again["version"] == 2  # idempotent: nothing changed
    pinned = await collect(client, f"{base}?pinned=true")  # both may share a millisecond
    assert sorted(i["name"] for i in pinned) == ["README", "spec"]
    assert [i["name"] for i in await collect(client, f"{base}?type=note")] == ["tip"]

    totals = await (await client.get(f"{base}/totals")).json()
    assert totals == {
        "project_id": project,
        "items": 3,
        "tokens": 425,
        "pinned_items": 2,
        "pinned_tokens": 420,
        "by_type": {
            "document": {"items": 1, "tokens": 300},
            "file": {"items": 1, "tokens": 120},
            "note": {"items": 1, "tokens": 5},
        },
    }
    unpinned = await (await client.post(f"{base}/{b['id']}/unpin")).json()
    assert unpinned["pinned"] is False
    edited = await patch(client, f"{base}/{b['id']}", {"tokens": 10}, unpinned["version"])
    assert edited.status == 200
    assert (await (await client.get(f"{base}/totals")).json())["tokens"] == 135
    for bad in (
        {"name": "x"},
        {"name": "x", "type": "video"},
        {"name": "x", "type": "file", "tokens": -1},
    ):
        assert (await client.post(base, json=bad)).status == 400
    assert (await client.post(f"{base}/missing/pin")).status == 404


# ---- workflows and runs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("graph", "problem"),
    [
        ({"nodes": [{"id": "a"}, {"id": "a"}]}, {"duplicate_node_ids": ["a"]}),
        (
            {"nodes": [{"id": "a"}], "edges": [{"from": "a", "to": "b"}]},
            {"unknown_nodes_in_edges": [{"edge": 0, "from": "a", "to": "b"}]},
        ),
        (
            {
                "nodes": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
                "edges": [
                    {"from": "a", "to": "b"},
                    {"from": "b", "to": "c"},
                    {"from": "c", "to": "b"},
                ],
            },
            {"cycle": ["b", "c", "b"]},
        ),
        ({"nodes": [{"id": "a"}], "edges": [{"from": "a", "to": "a"}]}, {"cycle": ["a", "a"]}),
    ],
)
async def test_invalid_graphs_are_422(
    client: TestClient, project: str, graph: dict[str, Any], problem: dict[str, Any]
) -> None:
    resp = await client.post(f"/projects/{project}/workflows", json={"name": "w", "graph": graph})
    assert resp.status == 422
    assert assert_error(await resp.json(), "invalid_graph") == problem


@pytest.mark.parametrize(
    "graph",
    [
        {},
        {"nodes": []},
        {"nodes": [{"name": "a"}]},
        {"nodes": [{"id": "a"}], "edges": [{"from": "a"}]},
        {"nodes": "a"},
    ],
)
async def test_malformed_graphs_are_400(
    client: TestClient, project: str, graph: dict[str, Any]
) -> None:
    resp = await client.post(f"/projects/{project}/workflows", json={"name": "w", "graph": graph})
    assert resp.status == 400


async def test_workflow_update_revalidates_the_graph(client: TestClient, project: str) -> None:
    wf = await post(client, f"/projects/{project}/workflows", {"name": "w", "graph": GRAPH})
    url = f"/projects/{project}/workflows/{wf['id']}"
    cyclic = {**GRAPH, "edges": [*GRAPH["edges"], {"from": "report", "to": "fetch"}]}
    assert (await patch(client, url, {"graph": cyclic}, 1)).status == 422
    renamed = await patch(client, url, {"name": "w2"}, 1)
    assert renamed.status == 200 and (await renamed.json())["graph"] == {
        "nodes": [
            {"id": "fetch", "label": None, "kind": None, "config": {}},
            {"id": "parse", "label": "Parse", "kind": None, "config": {}},
            {"id": "report", "label": None, "kind": None, "config": {}},
        ],
        "edges": GRAPH["edges"],
    }
    assert len(await collect(client, f"/projects/{project}/workflows")) == 1


async def test_run_lifecycle_follows_its_nodes(client: TestClient, project: str) -> None:
    wf = await post(client, f"/projects/{project}/workflows", {"name": "w", "graph": GRAPH})
    run = await post(client, f"/projects/{project}/workflows/{wf['id']}/runs", {"input": {"n": 1}})
    assert run["status"] == "pending" and run["input"] == {"n": 1}
    assert [(n["node_id"], n["status"]) for n in run["nodes"]] == [
        ("fetch", "pending"),
        ("parse", "pending"),
        ("report", "pending"),
    ]
    node_url = f"/projects/{project}/runs/{run['id']}/nodes"

    started = await (await client.patch(f"{node_url}/fetch", json={"status": "running"})).json()
    assert started["run"]["status"] == "running" and started["run"]["started_at"]
    progress = await client.patch(f"{node_url}/fetch", json={"progress": 50, "messages": ["half"]})
    assert (await progress.json())["node"]["progress"] == 50
    bad = await client.patch(f"{node_url}/parse", json={"status": "completed"})
    assert bad.status == 409
    assert assert_error(await bad.json(), "invalid_transition")["allowed"] == ["failed", "running"]
    for node in ("fetch", "parse", "report"):
        if node != "fetch":
            await client.patch(f"{node_url}/{node}", json={"status": "running"})
        done = await (await client.patch(f"{node_url}/{node}", json={"status": "completed"})).json()
    assert done["run"]["status"] == "completed" and done["run"]["finished_at"]
    final = await (await client.get(f"/projects/{project}/runs/{run['id']}")).json()
    assert all(n["status"] == "completed" and n["progress"] == 100 for n in final["nodes"])
    assert final["nodes"][0]["messages"] == ["half"]
    late = await client.patch(f"{node_url}/fetch", json={"messages": ["more"]})
    assert late.status == 409
    assert_error(await late.json(), "run_finished")


async def test_one_failed_node_fails_the_run(client: TestClient, project: str) -> None:
    wf = await post(client, f"/projects/{project}/workflows", {"name": "w", "graph": GRAPH})
    run = await post(client, f"/projects/{project}/workflows/{wf['id']}/runs", {})
    node_url = f"/projects/{project}/runs/{run['id']}/nodes"
    await client.patch(f"{node_url}/fetch", json={"status": "running"})
    failed = await (
        await client.patch(f"{node_url}/fetch", json={"status": "failed", "error": "timeout"})
    ).json()
    assert failed["run"]["status"] == "failed"
    assert failed["run"]["last_message"] == "fetch: timeout"
    assert failed["node"]["error"] == "timeout"
    running = await collect(client, f"/projects/{project}/runs?status=running")
    failed_runs = await collect(client, f"/projects/{project}/runs?status=failed")
    assert running == [] and [r["id"] for r in failed_runs] == [run["id"]]
    assert (await client.get(f"/projects/{project}/runs?status=exploded")).status == 400


async def test_run_and_node_errors(client: TestClient, project: str, other_project: str) -> None:
    wf = await post(client, f"/projects/{project}/workflows", {"name": "w", "graph": GRAPH})
    assert (
        await client.post(f"/projects/{other_project}/workflows/{wf['id']}/runs", json={})
    ).status == 404
    run = await post(client, f"/projects/{project}/workflows/{wf['id']}/runs", {})
    node_url = f"/projects/{project}/runs/{run['id']}/nodes"
    assert (await client.patch(f"{node_url}/ghost", json={"status": "running"})).status == 404
    assert (
        await client.patch(
            f"/projects/{other_project}/runs/{run['id']}/nodes/fetch", json={"status": "running"}
        )
    ).status == 404
    for body in ({}, {"progress": 101}, {"status": "done"}, {"messages": "x"}):
        assert (await client.patch(f"{node_url}/fetch", json=body)).status == 400, body
    assert (await client.get(f"/projects/{other_project}/runs/{run['id']}")).status == 404


async def test_gap_analyses(client: TestClient, project: str) -> None:
    base = f"/projects/{project}/gap-analyses"
    first = await post(client, base, {"report": {"missing": ["docs"], "score": 0.7}})
    await post(client, base, {"report": {"missing": []}})
    listed = await collect(client, base)
    assert [g["report"] for g in listed] == [{"missing": ["docs"], "score": 0.7}, {"missing": []}]
    got = await (await client.get(f"{base}/{first['id']}")).json()
    assert got["created_at"] and got["updated_at"] and got["version"] == 1
    assert (await client.post(base, json={"report": []})).status == 400


async def test_empty_and_id_changing_patches_are_refused(client: TestClient, project: str) -> None:
    gap = await post(client, f"/projects/{project}/gap-analyses", {"report": {"a": 1}})
    url = f"/projects/{project}/gap-analyses/{gap['id']}"
    assert (await patch(client, url, {"id": "hijack"}, 1)).status == 400
    assert (await patch(client, url, {}, 1)).status == 400
    assert (await patch(client, f"/projects/{project}", {}, 1)).status == 400
    ok = await patch(client, url, {"report": {"a": 2}}, 1)
    assert ok.status == 200 and (await ok.json())["report"] == {"a": 2}


async def test_a_workflow_with_runs_cannot_be_deleted(client: TestClient, project: str) -> None:
    wf = await post(client, f"/projects/{project}/workflows", {"name": "w", "graph": GRAPH})
    await post(client, f"/projects/{project}/workflows/{wf['id']}/runs", {})
    resp = await client.delete(f"/projects/{project}/workflows/{wf['id']}")
    assert resp.status == 409
    assert_error(await resp.json(), "in_use")
    assert (await client.get(f"/projects/{project}/workflows/{wf['id']}")).status == 200


@pytest.mark.parametrize(
    ("collection", "body", "change"),
    [
        ("ideas", {"title": "t"}, {"title": "t2"}),
        ("context", {"name": "n", "type": "url"}, {"tokens": 7}),
        ("workflows", {"name": "w", "graph": GRAPH}, {"description": "d"}),
        ("gap-analyses", {"report": {"x": 1}}, {"report": {"x": 2}}),
    ],
)
async def test_every_resource_round_trip(
    client: TestClient,
    project: str,
    collection: str,
    body: dict[str, Any],
    change: dict[str, Any],
) -> None:
    base = f"/projects/{project}/{collection}"
    created = await post(client, base, {**body, "id": "fixed-id"})
    assert created["id"] == "fixed-id" and created["project_id"] == project
    assert (await client.post(base, json={**body, "id": "fixed-id"})).status == 409
    url = f"{base}/fixed-id"
    assert (await (await client.get(url)).json()) == created
    assert [i["id"] for i in await collect(client, base)] == ["fixed-id"]
    changed = await patch(client, url, change, 1)
    assert changed.status == 200
    assert {k: (await changed.json())[k] for k in change} == change
    assert (await client.delete(url, headers={"If-Match": '"2"'})).status == 204
    assert (await client.get(url)).status == 404
    assert (await patch(client, url, change, 2)).status == 404


async def test_booleans_are_true_or_false_only(client: TestClient, project: str) -> None:
    base = f"/projects/{project}/context"
    for pinned in (0, 1, "true", None):
        body = {"name": "n", "type": "file", "pinned": pinned}
        assert (await client.post(base, json=body)).status == 400, pinned
    item = await post(client, base, {"name": "n", "type": "file", "pinned": True})
    assert item["pinned"] is True
    assert (await client.get(f"{base}?pinned=1")).status == 400
    assert (await client.get(f"{base}?pinned=True")).status == 400
    assert [i["id"] for i in (await (await client.get(f"{base}?pinned=true")).json())["items"]] == [
        item["id"]
    ]
    assert (await client.delete(f"/projects/{project}?cascade=1")).status == 400
