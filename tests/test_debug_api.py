"""Debug-server metadata over real HTTP, on both backends: repositories, worktrees and their
reservations, sessions, commands and logs, artifacts, debugger state."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.db import DatabaseURL
from tests.backends import sql
from tests.helpers import ManualClock, assert_error
from tests.support.auth import READER_TOKEN, WRITER_TOKEN, bearer


async def call(
    client: TestClient, method: str, url: str, body: Any = None, status: int = 200, **kw: Any
) -> Any:
    resp = await client.request(method, url, json=body, **kw)
    data = await resp.json() if resp.status != 204 else None
    assert resp.status == status, (resp.status, data)
    return data


async def make_repository(client: TestClient, name: str = "app", worktrees: int = 0) -> str:
    repo = await call(client, "POST", "/repositories", {"name": name, "url": f"git@x:{name}"}, 201)
    for i in range(worktrees):
        body = {"path": f"/w/{name}/{i}", "branch": "main"}
        await call(client, "POST", f"/repositories/{repo['id']}/worktrees", body, 201)
    return str(repo["id"])


async def make_session(client: TestClient, repository_id: str, **metadata: Any) -> str:
    body = {"repository_id": repository_id, "metadata": metadata}
    return str((await call(client, "POST", "/sessions", body, 201))["id"])


async def reserve(
    client: TestClient, repository_id: str, session_id: str, status: int = 201, lease_s: int = 60
) -> Any:
    body = {"session_id": session_id, "lease_s": lease_s}
    return await call(
        client, "POST", f"/repositories/{repository_id}/worktrees/reserve", body, status
    )


async def audit_events(client: TestClient, event: str) -> list[dict[str, Any]]:
    data = await call(client, "GET", f"/audit?event={event}&limit=500")
    return list(data["items"])


# ---- repositories -------------------------------------------------------------------------


async def test_repository_crud_with_versions(client: TestClient) -> None:
    created = await call(
        client, "POST", "/repositories", {"name": "core", "url": "git@x:core"}, 201
    )
    assert created["default_branch"] == "main"
    assert created["version"] == 1
    url = f"/repositories/{created['id']}"
    assert (await call(client, "GET", url))["name"] == "core"
    await call(client, "PATCH", url, {"url": "git@y:core"}, 428)
    changed = await call(client, "PATCH", url, {"url": "git@y:core"}, headers={"If-Match": '"1"'})
    assert changed["version"] == 2
    stale = await call(client, "PATCH", url, {"url": "z"}, 412, headers={"If-Match": '"1"'})
    assert assert_error(stale, "version_mismatch")["current_version"] == 2
    dup = await call(client, "POST", "/repositories", {"name": "core", "url": "u"}, 409)
    assert_error(dup, "already_exists")
    listed = await call(client, "GET", "/repositories?sort=name")
    assert [r["name"] for r in listed["items"]] == ["core"]
    await call(client, "DELETE", url, status=204)
    assert_error(await call(client, "GET", url, status=404), "not_found")


async def test_deleting_a_repository_with_an_active_session_is_409_then_cascades(
    client: TestClient, db_url: DatabaseURL
) -> None:
    repository_id = await make_repository(client, worktrees=2)
    session_id = await make_session(client, repository_id)
    await reserve(client, repository_id, session_id)
    command = await call(client, "POST", f"/sessions/{session_id}/commands", {"argv": ["ls"]}, 201)
    refused = await call(client, "DELETE", f"/repositories/{repository_id}", status=409)
    assert assert_error(refused, "active_sessions")["sessions"] == [session_id]
    await call(client, "POST", f"/sessions/{session_id}/end", {}, 200)
    await call(client, "DELETE", f"/repositories/{repository_id}", status=204)
    for table in ("worktrees", "sessions", "commands", "debugger_state"):
        assert sql(db_url, f"SELECT count(*) FROM {table}") == [(0,)], table
    await call(client, "GET", f"/commands/{command['id']}", status=404)


# ---- worktrees and reservations -----------------------------------------------------------


async def test_reserve_renew_release(client: TestClient) -> None:
    repository_id = await make_repository(client, worktrees=1)
    session_id = await make_session(client, repository_id)
    other = await make_session(client, repository_id)
    wt = await reserve(client, repository_id, session_id)
    assert wt["state"] == "reserved"
    assert wt["reserved_by"] == session_id
    assert (await call(client, "GET", f"/sessions/{session_id}"))["worktree_id"] == wt["id"]
    assert_error(await reserve(client, repository_id, other, 409), "no_free_worktree")
    again = await reserve(client, repository_id, session_id, 409)
    assert assert_error(again, "session_has_worktree")["worktree_id"] == wt["id"]

    base = f"/repositories/{repository_id}/worktrees/{wt['id']}"
    body = {"session_id": other, "lease_s": 600}
    assert_error(await call(client, "POST", f"{base}/renew", body, 409), "not_holder")
    renewed = await call(client, "POST", f"{base}/renew", {**body, "session_id": session_id})
    assert renewed["lease_expires_at"] > wt["lease_expires_at"]
    not_mine = {"session_id": other}
    assert_error(await call(client, "POST", f"{base}/release", not_mine, 409), "not_holder")
    released = await call(client, "POST", f"{base}/release", {"session_id": session_id})
    assert released["state"] == "free"
    assert released["reserved_by"] is None
    assert (await call(client, "GET", f"/sessions/{session_id}"))["worktree_id"] is None
    assert (await reserve(client, repository_id, other))["id"] == wt["id"]
    assert len(await audit_events(client, "worktree.reserved")) == 2
    assert len(await audit_events(client, "worktree.released")) == 1


async def test_an_expired_lease_is_reclaimed_and_audited(make_client: Any) -> None:
    clock = ManualClock()
    client = await make_client(clock=clock)
    repository_id = await make_repository(client, worktrees=1)
    first, second = (
        await make_session(client, repository_id),
        await make_session(client, repository_id),
    )
    wt = await reserve(client, repository_id, first, lease_s=30)
    clock.advance(29)
    assert_error(await reserve(client, repository_id, second, 409), "no_free_worktree")
    clock.advance(2)
    taken = await reserve(client, repository_id, second)
    assert taken["id"] == wt["id"]
    assert taken["reserved_by"] == second
    assert (await call(client, "GET", f"/sessions/{first}"))["worktree_id"] is None
    [event] = await audit_events(client, "worktree.reclaimed")
    assert event["data"]["from_session"] == first and event["data"]["session_id"] == second
    assert len(await audit_events(client, "worktree.reserved")) == 1  # the first one only
    assert event["data"]["lease_expired_at"] == wt["lease_expires_at"]
    base = f"/repositories/{repository_id}/worktrees/{wt['id']}"
    late = await call(client, "POST", f"{base}/renew", {"session_id": first, "lease_s": 5}, 409)
    assert assert_error(late, "not_holder")["reserved_by"] == second


async def test_fifty_concurrent_reservers_share_ten_worktrees(
    client: TestClient, db_url: DatabaseURL
) -> None:
    repository_id = await make_repository(client, worktrees=10)
    sessions = [await make_session(client, repository_id) for _ in range(50)]
    body = {"lease_s": 60}
    url = f"/repositories/{repository_id}/worktrees/reserve"
    responses = await asyncio.gather(
        *(client.post(url, json={**body, "session_id": s}) for s in sessions)
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [201] * 10 + [409] * 40
    for resp in responses:
        if resp.status == 409:
            assert_error(await resp.json(), "no_free_worktree")
    holders = sql(db_url, "SELECT reserved_by FROM worktrees WHERE state = 'reserved'")
    assert len({h for (h,) in holders}) == 10
    held = sql(db_url, "SELECT worktree_id FROM sessions WHERE worktree_id IS NOT NULL")
    assert len({w for (w,) in held}) == 10


async def test_worktree_rules(client: TestClient) -> None:
    repository_id = await make_repository(client, worktrees=1)
    other_repo = await make_repository(client, name="other")
    [wt] = (await call(client, "GET", f"/repositories/{repository_id}/worktrees"))["items"]
    base = f"/repositories/{repository_id}/worktrees/{wt['id']}"
    dup = {"path": wt["path"]}
    assert_error(
        await call(client, "POST", f"/repositories/{other_repo}/worktrees", dup, 409),
        "already_exists",
    )
    await call(client, "GET", f"/repositories/{other_repo}/worktrees/{wt['id']}", status=404)
    retired = await call(client, "PATCH", base, {"state": "retired"}, headers={"If-Match": '"1"'})
    assert retired["state"] == "retired"
    session_id = await make_session(client, repository_id)
    assert_error(await reserve(client, repository_id, session_id, 409), "no_free_worktree")
    await call(client, "PATCH", base, {"state": "free"}, headers={"If-Match": '"2"'})
    foreign = await make_session(client, other_repo)
    assert_error(await reserve(client, repository_id, foreign, 409), "wrong_repository")
    await reserve(client, repository_id, session_id)
    assert_error(await call(client, "DELETE", base, status=409), "worktree_reserved")
    listed = await call(client, "GET", f"/repositories/{repository_id}/worktrees?state=reserved")
    assert [w["id"] for w in listed["items"]] == [wt["id"]]
    await call(client, "POST", f"/sessions/{session_id}/end", {"state": "failed"})
    await call(client, "DELETE", base, status=204)


# ---- sessions, commands, logs -------------------------------------------------------------


async def test_ending_a_session_releases_its_worktree_and_cancels_commands(
    client: TestClient,
) -> None:
    repository_id = await make_repository(client, worktrees=1)
    session_id = await make_session(client, repository_id, ticket="BUG-1")
    session = await call(client, "GET", f"/sessions/{session_id}")
    assert session["user"] == "ops"  # from the token
    assert session["metadata"] == {"ticket": "BUG-1"}
    wt = await reserve(client, repository_id, session_id)
    command = await call(
        client, "POST", f"/sessions/{session_id}/commands", {"argv": ["make"]}, 201
    )
    ended = await call(client, "POST", f"/sessions/{session_id}/end", {"state": "ended"})
    assert ended["state"] == "ended"
    assert ended["ended_at"] is not None
    assert ended["worktree_id"] is None
    wt_now = await call(client, "GET", f"/repositories/{repository_id}/worktrees/{wt['id']}")
    assert wt_now["state"] == "free"
    assert (await call(client, "GET", f"/commands/{command['id']}"))["state"] == "cancelled"
    again = await call(client, "POST", f"/sessions/{session_id}/end", {}, 409)
    assert_error(again, "invalid_transition")
    late = await call(client, "POST", f"/sessions/{session_id}/commands", {"argv": ["x"]}, 409)
    assert_error(late, "session_not_active")
    assert_error(await reserve(client, repository_id, session_id, 409), "session_not_active")


async def test_session_lists_filter_and_page(client: TestClient) -> None:
    a, b = await make_repository(client, "a"), await make_repository(client, "b")
    ids = [await make_session(client, a) for _ in range(3)] + [await make_session(client, b)]
    await call(client, "POST", f"/sessions/{ids[0]}/end", {})
    seen: list[str] = []
    url = f"/sessions?repository_id={a}&limit=2"
    while url:
        data = await call(client, "GET", url)
        seen += [s["id"] for s in data["items"]]
        url = f"/sessions?repository_id={a}&limit=2&cursor={data['next']}" if data["next"] else ""
    # Ordered by (started_at, id): sessions started in the same millisecond by their ids.
    started = {i: (await call(client, "GET", f"/sessions/{i}"))["started_at"] for i in ids}
    assert seen == sorted(ids[:3], key=lambda i: (started[i], i))
    active = await call(client, "GET", f"/sessions?repository_id={a}&state=active")
    assert [s["id"] for s in active["items"]] == sorted(ids[1:3], key=lambda i: (started[i], i))
    mine = await call(client, "GET", "/sessions?user=ops&since=2000-01-01T00:00:00Z")
    assert len(mine["items"]) == 4
    future = await call(client, "GET", "/sessions?since=2999-01-01T00:00:00Z")
    assert future["items"] == []
    assert_error(
        await call(client, "GET", "/sessions?state=bogus", status=400), "invalid_parameter"
    )


async def test_command_secrets_are_redacted_everywhere(
    client: TestClient, db_url: DatabaseURL
) -> None:
    repository_id = await make_repository(client)
    session_id = await make_session(client, repository_id)
    env = {
        "PATH": "/bin",
        "GITHUB_TOKEN": "ghp_secret1",
        "db_password": "hunter2",
        "API_KEY": "k",
        # By name (docs/security.md's patterns)...
        "DB_PASS": "pass-secret2",
        "HTTP_COOKIE": "sid=cookie-secret3",
        "GH_PAT": "pat-secret4",
        "AUTHORIZATION": "Bearer bgt_secret5",
        "DATABASE_URL": "postgresql://app:url-secret6@db/app",
        # ...and by value, whatever the name.
        "UPSTREAM": "https://bot:url-secret7@git.example.com/repo.git",
        "NOTE": "use bgt_secret8 for the bot",
        "PATCHES": "3",  # a name that merely contains PAT is not a secret
    }
    argv = ["curl", "-H", "Authorization: Bearer bgt_secret9", "https://u:secret10@x.org/"]
    body = {"argv": argv, "cwd": "/w/app", "env": env}
    command = await call(client, "POST", f"/sessions/{session_id}/commands", body, 201)
    assert command["env"] == {
        "PATH": "/bin",
        "GITHUB_TOKEN": "***",
        "db_password": "***",
        "API_KEY": "***",
        "DB_PASS": "***",
        "HTTP_COOKIE": "***",
        "GH_PAT": "***",
        "AUTHORIZATION": "***",
        "DATABASE_URL": "***",
        "UPSTREAM": "https://bot:***@git.example.com/repo.git",
        "NOTE": "use bgt_*** for the bot",
        "PATCHES": "3",
    }
    assert command["argv"] == ["curl", "-H", "Authorization: Bearer ***", "https://u:***@x.org/"]
    fetched = await call(client, "GET", f"/commands/{command['id']}")
    dump = (
        repr(sql(db_url, "SELECT * FROM commands"))
        + repr(sql(db_url, "SELECT * FROM audit_log"))
        + repr(fetched)
    )
    secrets = ["ghp_secret1", "hunter2", *(f"secret{i}" for i in range(2, 11))]
    assert [secret for secret in secrets if secret in dump] == []


async def test_command_transitions(client: TestClient) -> None:
    repository_id = await make_repository(client)
    session_id = await make_session(client, repository_id)
    command = await call(client, "POST", f"/sessions/{session_id}/commands", {"argv": ["ls"]}, 201)
    url = f"/commands/{command['id']}"
    missing_code = await call(client, "PATCH", url, {"state": "succeeded"}, 400)
    assert "exit_code" in assert_error(missing_code, "validation_failed")
    done = await call(client, "PATCH", url, {"state": "failed", "exit_code": 2})
    assert done["state"] == "failed"
    assert done["exit_code"] == 2
    assert done["ended_at"] is not None
    again = await call(client, "PATCH", url, {"state": "running"}, 409)
    assert_error(again, "invalid_transition")
    listed = await call(client, "GET", f"/sessions/{session_id}/commands?state=failed")
    assert [c["id"] for c in listed["items"]] == [command["id"]]


async def test_log_appends_are_idempotent_and_refuse_gaps_and_conflicts(
    client: TestClient, db_url: DatabaseURL
) -> None:
    repository_id = await make_repository(client)
    session_id = await make_session(client, repository_id)
    command = await call(client, "POST", f"/sessions/{session_id}/commands", {"argv": ["ls"]}, 201)
    url = f"/commands/{command['id']}/logs"

    def chunks(first: int, count: int, text: str = "line") -> dict[str, Any]:
        return {
            "chunks": [
                {"seq": first + i, "stream": "stdout", "text": f"{text} {first + i}"}
                for i in range(count)
            ]
        }

    stored = await call(client, "POST", url, chunks(1, 3))
    assert stored == {
        "command_id": command["id"],
        "last_seq": 3,
        "stored": [1, 2, 3],
        "already_stored": [],
    }
    retried = await call(client, "POST", url, chunks(1, 3))
    assert retried["stored"] == []
    assert retried["already_stored"] == [1, 2, 3]
    overlap = await call(client, "POST", url, chunks(3, 3))
    assert overlap["stored"] == [4, 5]
    gap = await call(client, "POST", url, chunks(8, 1), 409)
    assert assert_error(gap, "log_conflict")["expected_seq"] == 6
    conflict = await call(client, "POST", url, chunks(2, 1, text="other"), 409)
    assert assert_error(conflict, "log_conflict")["seq"] == 2
    assert sql(db_url, "SELECT count(*) FROM command_logs") == [(5,)]

    page = await call(client, "GET", f"{url}?after_seq=1&limit=2")
    assert [c["seq"] for c in page["items"]] == [2, 3]
    assert page["items"][0]["text"] == "line 2"
    assert page["next_after_seq"] == 3
    rest = await call(client, "GET", f"{url}?after_seq=3")
    assert [c["seq"] for c in rest["items"]] == [4, 5]


async def test_concurrent_log_appends_to_one_command_take_turns(client: TestClient) -> None:
    repository_id = await make_repository(client)
    session_id = await make_session(client, repository_id)
    command = await call(client, "POST", f"/sessions/{session_id}/commands", {"argv": ["ls"]}, 201)
    url = f"/commands/{command['id']}/logs"
    batch = {"chunks": [{"seq": i, "stream": "stderr", "text": f"e{i}"} for i in range(1, 11)]}
    responses = await asyncio.gather(*(client.post(url, json=batch) for _ in range(8)))
    assert [r.status for r in responses] == [200] * 8
    bodies = [await r.json() for r in responses]
    assert sorted(len(b["stored"]) for b in bodies) == [0] * 7 + [10]
    logs = await call(client, "GET", f"{url}?limit=100")
    assert [c["seq"] for c in logs["items"]] == list(range(1, 11))


async def test_log_sizes_are_bounded(client: TestClient) -> None:
    repository_id = await make_repository(client)
    session_id = await make_session(client, repository_id)
    command = await call(client, "POST", f"/sessions/{session_id}/commands", {"argv": ["ls"]}, 201)
    url = f"/commands/{command['id']}/logs"
    too_long = {"chunks": [{"seq": 1, "stream": "stdout", "text": "x" * 16_385}]}
    assert_error(await call(client, "POST", url, too_long, 413), "payload_too_large")
    too_many = {"chunks": [{"seq": i, "stream": "stdout", "text": ""} for i in range(1, 1002)]}
    assert_error(await call(client, "POST", url, too_many, 413), "payload_too_large")
    huge = {"chunks": [{"seq": 1, "stream": "stdout", "text": "y" * 70_000}]}
    assert_error(await call(client, "POST", url, huge, 413), "payload_too_large")
    assert (await call(client, "GET", url))["items"] == []


# ---- artifacts and debugger ---------------------------------------------------------------


async def test_artifacts(client: TestClient) -> None:
    repository_id = await make_repository(client)
    session_id = await make_session(client, repository_id)
    other_session = await make_session(client, repository_id)
    command = await call(client, "POST", f"/sessions/{session_id}/commands", {"argv": ["ls"]}, 201)
    body = {
        "name": "core.dump",
        "kind": "core",
        "uri": "s3://bucket/core.dump",
        "size_bytes": 1024,
        "sha256": "a" * 64,
        "content_type": "application/octet-stream",
        "command_id": command["id"],
    }
    artifact = await call(client, "POST", f"/sessions/{session_id}/artifacts", body, 201)
    assert artifact["session_id"] == session_id
    assert (await call(client, "GET", f"/artifacts/{artifact['id']}"))["sha256"] == "a" * 64
    dup = await call(client, "POST", f"/sessions/{session_id}/artifacts", body, 409)
    assert_error(dup, "already_exists")
    elsewhere = await call(client, "POST", f"/sessions/{other_session}/artifacts", body, 409)
    assert_error(elsewhere, "command_not_in_session")
    bad_sha = await call(
        client, "POST", f"/sessions/{session_id}/artifacts", {**body, "sha256": "A" * 64}, 400
    )
    assert "sha256" in assert_error(bad_sha, "validation_failed")
    listed = await call(
        client, "GET", f"/sessions/{session_id}/artifacts?command_id={command['id']}"
    )
    assert [a["name"] for a in listed["items"]] == ["core.dump"]
    await call(client, "DELETE", f"/artifacts/{artifact['id']}", status=204)
    await call(client, "DELETE", f"/artifacts/{artifact['id']}", status=404)


async def test_debugger_state_needs_if_match(client: TestClient) -> None:
    repository_id = await make_repository(client)
    session_id = await make_session(client, repository_id)
    url = f"/sessions/{session_id}/debugger"
    resp = await client.get(url)
    assert resp.headers["ETag"] == '"1"'
    assert (await resp.json())["state"] == {}
    state = {"breakpoints": [{"file": "a.py", "line": 3}], "frame": 0}
    assert_error(await call(client, "PUT", url, {"state": state}, 428), "precondition_required")
    put = await call(client, "PUT", url, {"state": state}, headers={"If-Match": '"1"'})
    assert put["version"] == 2
    assert put["state"] == state
    stale = await call(client, "PUT", url, {"state": {}}, 412, headers={"If-Match": '"1"'})
    assert_error(stale, "version_mismatch")
    assert (await call(client, "GET", url))["state"] == state
    await call(client, "GET", "/sessions/nope/debugger", status=404)


# ---- bad input and auth -------------------------------------------------------------------

BAD_BODIES = [
    ("POST", "/repositories", {"name": "", "url": "u"}),
    ("POST", "/repositories", {"name": "n", "url": "u", "extra": 1}),
    ("POST", "/repositories/{repo}/worktrees", {"path": 5}),
    ("POST", "/repositories/{repo}/worktrees/reserve", {"session_id": "{session}", "lease_s": 0}),
    (
        "POST",
        "/repositories/{repo}/worktrees/reserve",
        {"session_id": "{session}", "lease_s": True},
    ),
    ("POST", "/repositories/{repo}/worktrees/reserve", {"lease_s": 5}),
    ("POST", "/sessions", {"repository_id": "{repo}", "metadata": [1]}),
    ("POST", "/sessions/{session}/end", {"state": "active"}),
    ("POST", "/sessions/{session}/commands", {"argv": []}),
    ("POST", "/sessions/{session}/commands", {"argv": ["ls"], "env": {"A": 1}}),
    ("POST", "/commands/{command}/logs", {"chunks": [{"seq": 0, "stream": "stdout", "text": ""}]}),
    ("POST", "/commands/{command}/logs", {"chunks": [{"seq": 1, "stream": "stdin", "text": ""}]}),
    (
        "POST",
        "/commands/{command}/logs",
        {
            "chunks": [
                {"seq": 2, "stream": "stdout", "text": ""},
                {"seq": 1, "stream": "stdout", "text": ""},
            ]
        },
    ),
    (
        "POST",
        "/sessions/{session}/artifacts",
        {"name": "a", "kind": "k", "uri": "u", "size_bytes": -1},
    ),
    ("PUT", "/sessions/{session}/debugger", {"state": "not an object"}),
]


async def test_bad_bodies_are_json_400s_and_write_nothing(
    client: TestClient, db_url: DatabaseURL
) -> None:
    repository_id = await make_repository(client)
    session_id = await make_session(client, repository_id)
    command = await call(client, "POST", f"/sessions/{session_id}/commands", {"argv": ["ls"]}, 201)
    before = sql(db_url, "SELECT count(*) FROM audit_log")
    ids = {"repo": repository_id, "session": session_id, "command": command["id"]}
    for method, template, body in BAD_BODIES:
        url = template.format(**ids)
        filled = {k: (v.format(**ids) if isinstance(v, str) else v) for k, v in body.items()}
        headers = {"If-Match": '"1"'}
        data = await call(client, method, url, filled, 400, headers=headers)
        assert_error(data, "validation_failed")
    not_json = await client.post(
        "/repositories", data="{", headers={"Content-Type": "application/json"}
    )
    assert not_json.status == 400
    assert sql(db_url, "SELECT count(*) FROM audit_log") == before


async def test_writes_need_a_write_token(make_client: Any) -> None:
    client = await make_client(token=READER_TOKEN)
    refused = await call(client, "POST", "/repositories", {"name": "n", "url": "u"}, 403)
    assert_error(refused, "forbidden")
    anonymous = await call(
        client, "POST", "/sessions", {"repository_id": "r"}, 401, headers={"Authorization": ""}
    )
    assert_error(anonymous, "unauthorized")
    assert (await call(client, "GET", "/repositories", headers=bearer(READER_TOKEN)))["items"] == []


@pytest.mark.parametrize(
    "path", ["/repositories/bad id", "/sessions/x%00y", "/commands/" + "a" * 65]
)
async def test_bad_ids_in_paths_are_400(client: TestClient, path: str) -> None:
    assert_error(await call(client, "GET", path, status=400), "invalid_parameter")


async def test_only_the_sessions_user_or_an_admin_may_end_it_or_act_in_it(
    client: TestClient,
) -> None:
    """docs/debug-metadata.md "Who may change a session": the user whose token started it
    (any of that user's tokens) or an admin; any other write token gets 403."""
    other = await call(
        client, "POST", "/tokens", {"user": "intruder", "scopes": ["read", "write"]}, 201
    )
    second = await call(client, "POST", "/tokens", {"user": "ci-bot", "scopes": ["write"]}, 201)
    intruder = bearer(other["token"])
    owner, owners_other_token = bearer(WRITER_TOKEN), bearer(second["token"])
    repository_id = await make_repository(client, worktrees=1)
    body = {"repository_id": repository_id}
    session = await call(client, "POST", "/sessions", body, 201, headers=owner)
    assert session["user"] == "ci-bot"
    s = session["id"]
    command = await call(
        client, "POST", f"/sessions/{s}/commands", {"argv": ["ls"]}, 201, headers=owner
    )
    artifact = {"name": "a", "kind": "log", "uri": "/a"}
    art = await call(client, "POST", f"/sessions/{s}/artifacts", artifact, 201, headers=owner)
    trees = f"/repositories/{repository_id}/worktrees"
    held = {"session_id": s, "lease_s": 60}
    worktree = await call(client, "POST", trees + "/reserve", held, 201, headers=owner)

    refused = [
        ("POST", f"/sessions/{s}/end", {}),
        ("POST", f"/sessions/{s}/commands", {"argv": ["rm"]}),
        ("POST", f"/sessions/{s}/artifacts", artifact),
        ("PUT", f"/sessions/{s}/debugger", {"state": {"pc": 1}}),
        ("PATCH", f"/commands/{command['id']}", {"state": "cancelled"}),
        (
            "POST",
            f"/commands/{command['id']}/logs",
            {"chunks": [{"seq": 1, "stream": "stdout", "text": "x"}]},
        ),
        ("DELETE", f"/artifacts/{art['id']}", None),
        ("POST", trees + "/reserve", held),
        ("POST", f"{trees}/{worktree['id']}/renew", held),
        ("POST", f"{trees}/{worktree['id']}/release", {"session_id": s}),
    ]
    for method, url, payload in refused:
        headers = {**intruder, "If-Match": "*"}
        error = await call(client, method, url, payload, 403, headers=headers)
        assert error["error"]["code"] == "not_session_owner", (method, url)
        assert error["error"]["details"] == {"session_id": s, "owner": "ci-bot"}

    # The owner (with another of their tokens) and an admin may.
    await call(
        client,
        "POST",
        f"/commands/{command['id']}/logs",
        {"chunks": [{"seq": 1, "stream": "stdout", "text": "x"}]},
        headers=owners_other_token,
    )
    await call(
        client,
        "PUT",
        f"/sessions/{s}/debugger",
        {"state": {"pc": 2}},
        headers={**owner, "If-Match": "*"},
    )
    ended = await call(client, "POST", f"/sessions/{s}/end", {})  # the client's admin token
    assert ended["state"] == "ended"
