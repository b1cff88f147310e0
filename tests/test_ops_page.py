"""The ops page (/ui): its data over HTTP on both backends, and the page itself in a real
headless Chromium (Debian packages chromium and chromium-driver) against a real server."""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.db import DatabaseURL
from tests.helpers import ALL_MIGRATIONS, ManualClock, assert_error
from tests.support import eventually, eventually_sync
from tests.support.auth import ADMIN_TOKEN, READER_TOKEN, bearer, plant_test_tokens
from tests.support.server import Server
from tests.support.walk import first_sync_done, write_documents

ANY = {"If-Match": "*"}

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


async def test_the_data_behind_the_page(client: TestClient) -> None:
    await client.post("/runs", json={})
    for _ in range(3):
        await client.get("/livez")
    data = await (await client.get("/ui/data")).json()
    assert data["ready"] is True
    assert data["build"]["version"]
    assert data["db"]["up"] is True and data["db"]["status_rows"] == 0
    assert data["seed"]["state"] in ("idle", "complete", "disabled", "stopped")
    assert [r["event"] for r in data["audit"]][:1] == ["run.created"]
    assert len(data["runs"]) == 1 and data["runs"][0]["status"] == "empty"
    livez = next(row for row in data["traffic"] if row["route"] == "/livez")
    assert livez["requests"] == livez["2xx"] == 3 and livez["5xx"] == 0
    assert (livez["method"], livez["kind"]) == ("GET", "api")
    assert 0 < livez["p50_ms"] <= livez["p99_ms"]  # interpolated, not a bucket's bound
    assert livez["rate_per_s"] > 0
    assert data["documents"] is None  # no --documents-dir
    # The page's own requests and paths that are no route are told apart from the API's.
    await client.get("/no/such/route")
    data = await (await client.get("/ui/data")).json()
    kinds = {(r["route"], r["method"]): r["kind"] for r in data["traffic"]}
    assert kinds[("/ui/data", "GET")] == "page" and kinds[("__unmatched__", "GET")] == "unmatched"
    unmatched = next(r for r in data["traffic"] if r["kind"] == "unmatched")
    assert unmatched["4xx"] == 1
    # The history: one point per interval since start, the same for every tab that asks.
    history = data["history"]
    assert history["interval_s"] == 10 and len(history["overall"]) >= 1
    assert history["overall"][-1]["rate_per_s"] > 0 and "/livez" in history["routes"]
    assert "/ui/data" not in history["routes"]  # the page's polling is not the API's traffic


async def test_the_panels_runs_debug_metadata_documents_and_database(
    make_client: Any, tmp_path: Path, db_url: DatabaseURL
) -> None:
    clock = ManualClock(datetime.now(UTC))
    client = await make_client(clock=clock, documents_dirs=str(write_documents(tmp_path / "d")))
    await eventually(first_sync_done(client), what="the first documents sync")
    # A run with two steps, one of them running.
    run = await (await client.post("/runs", json={})).json()
    steps = f"/runs/{run['run_id']}/steps"
    await client.post(steps, json={"name": "build", "status": "running"})
    await client.post(steps, json={"name": "test"})
    # Two sessions holding worktrees (one lease about to end), a running command, an ended one.
    repo = await (await client.post("/repositories", json={"name": "app", "url": "git@x"})).json()
    for i in range(3):
        body = {"path": f"/w/{i}", "branch": "main"}
        await client.post(f"/repositories/{repo['id']}/worktrees", json=body)
    sessions = []
    for lease_s in (60, 3600):
        session = await (await client.post("/sessions", json={"repository_id": repo["id"]})).json()
        reserve = {"session_id": session["id"], "lease_s": lease_s}
        answer = await client.post(f"/repositories/{repo['id']}/worktrees/reserve", json=reserve)
        assert answer.status == 201
        sessions.append(session["id"])
    argv = ["pytest", "-k", "x" * 300]
    command = await client.post(f"/sessions/{sessions[0]}/commands", json={"argv": argv})
    assert command.status == 201
    ended = await (
        await client.post(f"/sessions/{sessions[1]}/commands", json={"argv": ["ls"]})
    ).json()
    finish = await client.patch(
        f"/commands/{ended['id']}", json={"state": "succeeded", "exit_code": 0}, headers=ANY
    )
    assert finish.status == 200, await finish.json()

    data = await (await client.get("/ui/data")).json()
    shown = data["runs"][0]
    assert (shown["run_id"], shown["status"]) == (run["run_id"], "running")
    assert shown["steps"] == {"pending": 1, "running": 1}
    debug = data["debug"]
    assert (debug["active_sessions"], debug["reserved_worktrees"]) == (2, 2)
    assert (debug["expiring_worktrees"], debug["expired_worktrees"]) == (1, 0)
    assert debug["running_commands"] == 1
    assert [s["id"] for s in debug["sessions"]] == sessions[::-1]  # newest first
    assert debug["sessions"][0]["repository"] == "app"
    assert [w["lease"] for w in debug["worktrees"]] == ["expiring", "held"]  # soonest first
    [running] = debug["commands"]
    assert running["command"].startswith("pytest -k xxx") and len(running["command"]) == 200
    # Time moves on: the short lease has ended, the long one is now the one expiring.
    clock.advance(3600 - 120)
    debug = (await (await client.get("/ui/data")).json())["debug"]
    assert (debug["expiring_worktrees"], debug["expired_worktrees"]) == (1, 1)
    assert [w["lease"] for w in debug["worktrees"]] == ["expired", "expiring"]

    db = data["db"]
    assert db["backend"] == db_url.backend and db["size_bytes"] > 0
    assert db["engine"].startswith("SQLite" if db_url.path else "PostgreSQL")
    if db_url.path:  # SQLite: a WAL, and the size a checkpoint truncates it back to
        assert db["wal_bytes"] >= 0 and db["wal_limit_bytes"] > 0
    else:
        assert db["wal_bytes"] is None and db["wal_limit_bytes"] is None
    assert db["migrations"] == {
        "applied": len(ALL_MIGRATIONS),
        "known": len(ALL_MIGRATIONS),
        "head": ALL_MIGRATIONS[-1],
        "pending": [],
    }
    assert db["schema_version"] == int(ALL_MIGRATIONS[-1][:4])
    assert db["backups"] is None  # no --backup-dir
    documents = data["documents"]  # the admin token sees the roots and the failing files
    assert documents["roots"] == [str((tmp_path / "d").resolve())]
    assert documents["documents"] == {"persona": 1, "prompt_template": 1}
    assert documents["last_full_sync"]["finished_at"]


async def test_the_page_without_a_token_sees_what_health_shows(
    make_client: Any, tmp_path: Path
) -> None:
    client = await make_client(token=None, documents_dirs=str(write_documents(tmp_path / "d")))

    async def synced() -> dict[str, Any] | None:
        documents = (await (await client.get("/ui/data")).json())["documents"]
        return documents if documents["last_full_sync"] else None

    documents = await eventually(synced, what="the first documents sync")
    assert "roots" not in documents and documents["errors"] == 0  # a count, not the files
    assert documents["documents"] == {"persona": 1, "prompt_template": 1}
    # A token sent is checked even where none is needed: a wrong one is refused, an admin's
    # shows the roots and the failing files.
    assert (await client.get("/ui/data", headers=bearer("bg_wrong"))).status == 401
    admin = await (await client.get("/ui/data", headers=bearer(ADMIN_TOKEN))).json()
    assert admin["documents"]["roots"] == [str((tmp_path / "d").resolve())]
    reader = await (await client.get("/ui/data", headers=bearer(READER_TOKEN))).json()
    assert "roots" not in reader["documents"]


async def test_the_page_needs_an_admin_token_under_auth_reads(make_client: Any) -> None:
    client = await make_client(token=None, auth_reads=True)
    assert (await client.get("/ui")).status == 200  # the page itself carries no data
    assert (await client.get("/ui/static/ops.js")).status == 200
    refused = await client.get("/ui/data")
    assert refused.status == 401
    assert_error(await refused.json(), "unauthorized")
    reader = await client.get("/ui/data", headers=bearer(READER_TOKEN))
    assert reader.status == 403
    admin = await client.get("/ui/data", headers=bearer(ADMIN_TOKEN))
    assert admin.status == 200
    assert (await client.get("/ui/static/secret.txt")).status in (400, 404)


def chromium_or_skip() -> None:
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI must install chromium and chromium-driver (Debian packages)")
    pytest.skip("no headless Chromium here (Debian packages chromium and chromium-driver)")


@pytest.mark.slow
async def test_the_page_in_a_real_browser_shows_the_live_seed_count(tmp_path: Path) -> None:
    chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    db_path = tmp_path / "bobgen.db"
    plant_test_tokens(db_path)
    args = ["--seed-rows", "200000", "--seed-batch-size", "500"]
    server = Server(db_path, args)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = None
    try:
        await server.start(wait=False)
        await server.wait_healthy(timeout=60, path="/readyz")
        driver = await asyncio.to_thread(
            webdriver.Chrome, options=options, service=Service(executable_path=CHROMEDRIVER)
        )
        await asyncio.to_thread(driver.get, server.url + "/ui")
        counts = await asyncio.to_thread(_seed_counts, driver, By)
        assert counts[0] > 0
        assert counts[-1] > counts[0]  # live: the page follows the seed as it runs
        assert driver.find_element(By.ID, "state").text == "ready"
        routes = driver.find_element(By.ID, "traffic").text
        assert "/readyz" in routes and "/ui/data" not in routes  # the page's polling apart
        assert "own requests" in driver.find_element(By.ID, "traffic-apart").text
        # The history's charts: a line each, drawn from the server's samples.
        for chart in ("chart-rate", "chart-errors", "chart-p50", "chart-p99"):
            line = driver.find_element(By.CSS_SELECTOR, f"#{chart} polyline")
            assert line.get_attribute("points"), chart
        assert driver.find_element(By.ID, "build").text.startswith("v")
        assert driver.find_element(By.ID, "updated").text.startswith("updated")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        screenshot = tmp_path / "ops-page.png"
        assert driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
        # On a phone: one column, nothing wider than the screen (wide tables scroll inside).
        await asyncio.to_thread(driver.set_window_size, 390, 844)
        overflow = "return document.documentElement.scrollWidth - window.innerWidth"
        assert await asyncio.to_thread(driver.execute_script, overflow) <= 0
        phone = tmp_path / "ops-page-phone.png"
        assert driver.save_screenshot(str(phone))
        assert phone.stat().st_size > 10_000
        # Both pages work under their Content-Security-Policy: a violation is a SEVERE entry.
        await asyncio.to_thread(driver.get, server.url + "/docs")
        title = await asyncio.to_thread(_rendered_title, driver, By)
        assert "BobGen" in title
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        if driver is not None:
            await asyncio.to_thread(driver.quit)
        await server.stop()


def _rendered_title(driver: Any, by: Any) -> str:
    """The API's title once Swagger UI has rendered the document."""

    def title() -> str:
        found = driver.find_elements(by.CSS_SELECTOR, ".swagger-ui .info .title")
        return str(found[0].text) if found else ""

    return eventually_sync(title, timeout=30, what="Swagger UI rendering /openapi.json")


def _seed_counts(driver: Any, by: Any) -> list[int]:
    """The status-row count the page shows, read until it has changed twice (the page polls
    every 2 s)."""
    seen: list[int] = []

    def changed_twice() -> list[int] | None:
        text = driver.find_element(by.ID, "seed-rows").text.replace(",", "")
        if text.isdigit() and (not seen or int(text) != seen[-1]):
            seen.append(int(text))
        return seen if len(seen) >= 3 else None

    return eventually_sync(changed_twice, timeout=60, what="the seed count moving on the page")


def test_chromium_is_where_the_tests_expect_it() -> None:
    chromium_or_skip()
    assert shutil.which("chromium") == CHROMIUM
