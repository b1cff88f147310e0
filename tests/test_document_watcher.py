"""The live document sync: real files in tmp_path, the real watcher, real HTTP, both backends.

Asynchronous effects are awaited by polling with a deadline (``eventually``), never by sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.config import ConfigError
from service.db import DatabaseURL
from tests.backends import sql
from tests.helpers import assert_error
from tests.support import eventually
from tests.support.auth import READER_TOKEN, bearer

DEBOUNCE_MS = 100


def write(root: Path, relative: str, content: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def persona(name: str, **extra: Any) -> str:
    return json.dumps({"name": name, **extra})


async def names(client: TestClient) -> list[str]:
    body = await (await client.get("/documents?limit=500")).json()
    return [d["name"] for d in body["items"]]


async def sync_status(client: TestClient) -> dict[str, Any]:
    return await (await client.get("/admin/sync")).json()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "documents"
    write(root, "personas/alice.json", persona("Alice"))
    write(root, "personas/bob.json", persona("Bob"))
    write(
        root,
        "prompts/summarize.prompty",
        "---\nname: Summarize\nmodel: {api: chat}\n---\nSummarize {{text}}.\n",
    )
    return root


@pytest.fixture
async def watched(make_client: Any, root: Path) -> TestClient:
    client = await make_client(documents_dirs=str(root), documents_debounce_ms=DEBOUNCE_MS)

    async def watching() -> bool:
        return (await sync_status(client))["state"] == "watching"

    await eventually(watching)
    return client


def synced_audits(url: DatabaseURL) -> int:
    return int(sql(url, "SELECT count(*) FROM audit_log WHERE event = 'documents.synced'")[0][0])


async def test_the_initial_sync_is_reported_in_health_and_admin(watched: TestClient) -> None:
    assert await names(watched) == ["Alice", "Bob", "Summarize"]
    health = await (await watched.get("/health")).json()
    assert health["documents"]["state"] == "watching" and health["documents"]["errors"] == 0
    status = await sync_status(watched)
    assert status["last_full_sync"]["added"] == 3 and status["errors"] == []
    assert status["documents"] == {"persona": 2, "prompt_template": 1}


async def test_create_modify_delete_are_applied(watched: TestClient, root: Path) -> None:
    write(root, "personas/carol.json", persona("Carol"))
    await eventually(lambda: _has(watched, "Carol"))
    write(root, "personas/carol.json", persona("Caroline"))
    await eventually(lambda: _has(watched, "Caroline"))
    assert "Carol" not in await names(watched)
    (root / "personas" / "carol.json").unlink()

    async def gone() -> bool:
        return "Caroline" not in await names(watched)

    await eventually(gone)
    metrics = await (await watched.get("/metrics")).text()
    assert 'bobgen_documents{type="persona"} 2.0' in metrics
    assert 'bobgen_documents_sync_events_total{kind="added",outcome="ok"} 1.0' in metrics
    assert 'bobgen_documents_sync_events_total{kind="deleted",outcome="ok"} 1.0' in metrics
    assert "bobgen_documents_sync_errors 0.0" in metrics
    lag_count = next(
        line
        for line in metrics.splitlines()
        if line.startswith("bobgen_documents_sync_lag_seconds_count")
    )
    assert float(lag_count.split()[1]) >= 3  # create, modify, delete


async def _has(client: TestClient, name: str) -> bool:
    return name in await names(client)


async def test_a_rename_and_a_temp_file_save_end_with_one_correct_row(
    watched: TestClient, root: Path, db_url: DatabaseURL
) -> None:
    (root / "personas" / "bob.json").rename(root / "personas" / "robert.json")

    async def renamed() -> bool:
        paths = sql(db_url, "SELECT file_path FROM documents WHERE name = 'Bob'")
        return paths == [("personas/robert.json",)]

    await eventually(renamed)
    # An editor's save: write a temp file beside the target, then rename it over the target.
    temp = write(root, "personas/.alice.json.tmp", persona("Alice", mood="saved"))
    os.replace(temp, root / "personas" / "alice.json")

    async def saved() -> bool:
        rows = sql(db_url, "SELECT document FROM documents WHERE file_path LIKE '%alice%'")
        return len(rows) == 1 and json.loads(rows[0][0]).get("mood") == "saved"

    await eventually(saved)
    assert sql(db_url, "SELECT count(*) FROM documents") == [(3,)]


async def test_a_burst_of_saves_is_read_once_and_written_once(
    make_client: Any, root: Path, db_url: DatabaseURL
) -> None:
    # The default window (500 ms, quiet time 100 ms), as `make run` has it.
    client = await make_client(documents_dirs=str(root))
    await eventually(lambda: _state_is(client, "watching"))
    before = synced_audits(db_url)

    def save_in_a_burst() -> list[float]:
        """An editor saving every 15 ms (300 ms in all, truncate-then-write), from a thread so
        the test's event loop does not set the pace; returns when each save happened."""
        times = []
        for i in range(20):
            write(root, "personas/alice.json", persona("Alice", version=i))
            times.append(time.monotonic())
            time.sleep(0.015)  # the pace of the burst, not a wait for its effect
        return times

    times = await asyncio.to_thread(save_in_a_burst)
    # The promise holds for gaps under the quiet time (100 ms) within the window (500 ms); a
    # machine too busy to keep the pace made more than one burst, each one write at most.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    bursts = 1 + sum(g >= 0.1 for g in gaps) + int((times[-1] - times[0]) // 0.5)

    async def last_version() -> bool:
        rows = sql(db_url, "SELECT document FROM documents WHERE name = 'Alice'")
        return json.loads(rows[0][0]).get("version") == 19

    await eventually(last_version)

    async def counted() -> dict[str, Any]:
        status = await sync_status(client)
        return status if status["events"].get("updated:ok") else {}

    status = await eventually(counted)
    assert 1 <= synced_audits(db_url) - before <= bursts  # one read, one write a burst
    assert status["events"]["updated:ok"] == synced_audits(db_url) - before
    assert "change:error" not in status["events"] and status["errors"] == []

    written = synced_audits(db_url)
    write(root, "personas/alice.json", persona("Alice", version=19))  # the same bytes again

    async def seen_unchanged() -> bool:
        return (await sync_status(client))["events"].get("unchanged:ok", 0) >= 1

    await eventually(seen_unchanged)
    assert synced_audits(db_url) == written  # nothing written for it


async def test_a_file_read_empty_mid_save_gets_a_second_look_before_it_is_an_error(
    make_client: Any, root: Path, db_url: DatabaseURL
) -> None:
    client = await make_client(documents_dirs=str(root), documents_debounce_ms=2_000)
    await eventually(lambda: _state_is(client, "watching"))
    (root / "personas" / "alice.json").write_bytes(b"")  # the editor truncated, then stalls

    async def second_look_pending() -> bool:
        return (await sync_status(client))["events"].get("change:second_look", 0) >= 1

    await eventually(second_look_pending)  # read empty once: not an error yet
    assert (await sync_status(client))["errors"] == []
    write(root, "personas/alice.json", persona("Alice Saved"))  # ... and finishes the save
    await eventually(lambda: _has(client, "Alice Saved"))
    status = await sync_status(client)
    assert status["errors"] == [] and "change:error" not in status["events"]

    (root / "personas" / "bob.json").write_bytes(b"")  # empty for good: an error after a look

    async def reported() -> list[dict[str, Any]]:
        return (await sync_status(client))["errors"]

    errors = await eventually(reported)
    assert errors[0]["file"] == "personas/bob.json" and "Bob" in await names(client)


async def test_a_bad_file_is_listed_keeps_its_last_good_version_then_clears(
    watched: TestClient, root: Path
) -> None:
    write(root, "personas/alice.json", '{"name": "Alice", oops')

    async def listed() -> list[dict[str, Any]]:
        return (await sync_status(watched))["errors"]

    errors = await eventually(listed)
    assert errors[0]["file"] == "personas/alice.json" and "invalid JSON" in errors[0]["reason"]
    assert "Alice" in await names(watched)  # the last good version stays
    health = await (await watched.get("/health")).json()
    assert health["documents"]["errors"] == 1

    write(root, "personas/alice.json", persona("Alice Fixed"))
    await eventually(lambda: _has(watched, "Alice Fixed"))

    async def cleared() -> bool:
        return (await sync_status(watched))["errors"] == []

    await eventually(cleared)


async def test_personas_and_prompts_as_the_old_services_served_them(watched: TestClient) -> None:
    personas = await (await watched.get("/personas")).json()
    assert personas["items"] == [{"name": "Alice"}, {"name": "Bob"}]
    assert await (await watched.get("/personas/Bob")).json() == {"name": "Bob"}
    prompt = await (await watched.get("/prompts/Summarize")).json()
    assert prompt["metadata"]["model"] == {"api": "chat"}
    assert prompt["template"] == "Summarize {{text}}.\n"
    missing = await watched.get("/personas/Nobody")
    assert missing.status == 404
    assert_error(await missing.json(), "not_found")
    assert (await watched.get("/prompts?limit=0")).status == 400


async def test_reload_is_202_then_409_while_one_runs(watched: TestClient) -> None:
    first, second = await asyncio.gather(
        watched.post("/admin/sync/reload"), watched.post("/admin/sync/reload")
    )
    assert sorted([first.status, second.status]) == [202, 409]
    refused = first if first.status == 409 else second
    assert_error(await refused.json(), "conflict")


async def test_admin_sync_needs_an_admin_token(watched: TestClient) -> None:
    reader = await watched.get("/admin/sync", headers=bearer(READER_TOKEN))
    assert reader.status == 403
    nobody = await watched.get("/admin/sync", headers={"Authorization": ""})
    assert nobody.status == 401
    assert (await watched.post("/admin/sync/reload", headers=bearer(READER_TOKEN))).status == 403


async def test_admin_sync_without_documents_dirs_is_404(client: TestClient) -> None:
    resp = await client.get("/admin/sync")
    assert resp.status == 404
    assert_error(await resp.json(), "not_found")


async def test_start_up_reconciles_a_tree_changed_while_stopped(
    make_client: Any, root: Path, db_url: DatabaseURL
) -> None:
    first = await make_client(documents_dirs=str(root), documents_debounce_ms=DEBOUNCE_MS)
    await eventually(lambda: _has(first, "Summarize"))
    await first.close()
    write(root, "personas/alice.json", persona("Alicia"))
    (root / "personas" / "bob.json").unlink()
    write(root, "personas/dave.json", persona("Dave"))
    second = await make_client(documents_dirs=str(root), documents_debounce_ms=DEBOUNCE_MS)

    async def reconciled() -> bool:
        return await names(second) == ["Alicia", "Dave", "Summarize"]

    await eventually(reconciled)


async def test_shutdown_flushes_a_change_still_in_the_debounce_window(
    make_client: Any, root: Path, db_url: DatabaseURL
) -> None:
    client = await make_client(documents_dirs=str(root), documents_debounce_ms=5_000)
    await eventually(lambda: _has(client, "Summarize"))
    write(root, "personas/erin.json", persona("Erin"))
    await client.close()  # as SIGTERM does: the watcher stops, then one last sync
    assert sql(db_url, "SELECT name FROM documents WHERE file_path = 'personas/erin.json'") == [
        ("Erin",)
    ]


def test_a_documents_dir_that_does_not_exist_is_a_configuration_error(tmp_path: Path) -> None:
    from service.config import Config

    with pytest.raises(ConfigError, match="not a directory"):
        Config.from_sources({"documents_dirs": str(tmp_path / "nope")}, env={})


async def test_reads_fall_back_to_the_files_when_the_database_is_unavailable(
    watched: TestClient, root: Path
) -> None:
    from service.keys import DB_KEY

    listed = await (await watched.get("/documents")).json()
    assert "X-BobGen-Source" not in (await watched.get("/documents")).headers
    await watched.app[DB_KEY].close()  # the database is gone for this app
    write(root, "personas/zoe.json", persona("Zoe", model="gpt-4o"))  # only the files know

    resp = await watched.get("/documents")
    assert resp.status == 200 and resp.headers["X-BobGen-Source"] == "files"
    items = (await resp.json())["items"]
    assert [d["name"] for d in items] == ["Alice", "Bob", "Summarize", "Zoe"]
    assert {k: v for k, v in items[0].items() if k not in ("created_at", "updated_at")} == {
        k: v for k, v in listed["items"][0].items() if k not in ("created_at", "updated_at")
    }  # the same shape and content as from the database
    one = await watched.get(f"/documents/{items[1]['id']}")
    assert one.headers["X-BobGen-Source"] == "files" and (await one.json())["name"] == "Bob"
    persona_resp = await watched.get("/personas/Zoe")
    assert persona_resp.headers["X-BobGen-Source"] == "files"
    assert await persona_resp.json() == {"name": "Zoe", "model": "gpt-4o"}
    page = await (await watched.get("/personas?limit=2")).json()
    assert [p["name"] for p in page["items"]] == ["Alice", "Bob"] and page["next"]
    rest = await (await watched.get(f"/personas?cursor={page['next']}")).json()
    assert [p["name"] for p in rest["items"]] == ["Zoe"]
    searched = await (await watched.get("/documents?q=summarize&type=prompt_template")).json()
    assert [d["name"] for d in searched["items"]] == ["Summarize"]
    filtered = await (await watched.get("/documents?field.model=gpt-4o")).json()
    assert [d["name"] for d in filtered["items"]] == ["Zoe"]
    assert (await watched.get("/personas/Nobody")).status == 404


async def test_without_documents_dirs_an_unavailable_database_is_503(client: TestClient) -> None:
    from service.keys import DB_KEY

    await client.app[DB_KEY].close()
    resp = await client.get("/documents")
    assert resp.status == 503
    assert resp.headers["Retry-After"]


async def test_a_change_during_the_initial_sync_is_not_lost(make_client: Any, root: Path) -> None:
    for i in range(200):  # enough files that the initial sync takes a while
        write(root, f"personas/extra-{i:03d}.json", persona(f"Extra {i:03d}"))
    client = await make_client(documents_dirs=str(root), documents_debounce_ms=DEBOUNCE_MS)
    write(root, "personas/alice.json", persona("Alice Early"))  # while it reconciles
    await eventually(lambda: _has(client, "Alice Early"))


async def _state_is(client: TestClient, state: str) -> bool:
    return (await sync_status(client))["state"] == state


async def test_a_relative_documents_dir_is_watched_live(
    make_client: Any, root: Path, tmp_path: Path
) -> None:
    # As `make run` passes it: relative to the working directory (the test's tmp_path).
    client = await make_client(
        documents_dirs=str(root.relative_to(tmp_path)), documents_debounce_ms=DEBOUNCE_MS
    )
    await eventually(lambda: _state_is(client, "watching"))
    assert (await sync_status(client))["roots"] == [str(root.resolve())]
    write(root, "personas/carol.json", persona("Carol"))
    await eventually(lambda: _has(client, "Carol"))
    (root / "personas" / "carol.json").unlink()

    async def gone() -> bool:
        return "Carol" not in await names(client)

    await eventually(gone)


async def test_a_deleted_root_is_waited_for_and_watched_again(
    watched: TestClient, root: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "moved-away"
    root.rename(moved)  # as good as deleted, for the watcher

    async def degraded() -> dict[str, Any]:
        health = await (await watched.get("/health")).json()
        return health if health["status"] == "degraded" else {}

    health = await eventually(degraded)
    assert health["documents"]["state"] == "retrying"
    assert str(root) in health["documents"]["reason"]
    assert (await watched.get("/health")).status == 200
    assert (await watched.get("/readyz")).status == 200  # readiness is unaffected
    metrics = await (await watched.get("/metrics")).text()
    assert "bobgen_documents_watcher_up 0.0" in metrics
    assert "Alice" in await names(watched)  # a missing root does not empty the table

    moved.rename(root)
    await eventually(lambda: _state_is(watched, "watching"))
    write(root, "personas/dave.json", persona("Dave"))
    await eventually(lambda: _has(watched, "Dave"))
    health = await (await watched.get("/health")).json()
    assert health["status"] == "ok" and health["documents"]["reason"] is None
    metrics = await (await watched.get("/metrics")).text()
    assert "bobgen_documents_watcher_up 1.0" in metrics
