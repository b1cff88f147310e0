"""The ops page (/ui): its data over HTTP on both backends, and the page itself in a real
headless Chromium (Debian packages chromium and chromium-driver) against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from service.db import DatabaseURL
from service.keys import DB_KEY
from tests.helpers import ALL_MIGRATIONS, VALID, ManualClock, assert_error
from tests.support import eventually, eventually_sync
from tests.support.auth import ADMIN_TOKEN, READER_TOKEN, bearer, plant_test_tokens
from tests.support.server import Server
from tests.support.walk import first_sync_done, write_documents

ANY = {"If-Match": "*"}
NONE = "\u2013"  # what the page shows for a value it does not have

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


def synced(client: TestClient) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    """The documents as /ui/data shows them, once the first full sync is done (no token)."""

    async def check() -> dict[str, Any] | None:
        documents = (await (await client.get("/ui/data")).json())["documents"]
        return dict(documents) if documents["last_full_sync"] else None

    return check


async def test_the_page_without_a_token_sees_what_health_shows(
    make_client: Any, tmp_path: Path
) -> None:
    client = await make_client(token=None, documents_dirs=str(write_documents(tmp_path / "d")))
    documents = await eventually(synced(client), what="the first documents sync")
    assert "roots" not in documents and documents["errors"] == 0  # a count, not the files
    assert documents["documents"] == {"persona": 1, "prompt_template": 1}
    # A token sent is checked even where none is needed: a wrong one is refused, an admin's
    # shows the roots and the failing files.
    assert (await client.get("/ui/data", headers=bearer("bg_wrong"))).status == 401
    admin = await (await client.get("/ui/data", headers=bearer(ADMIN_TOKEN))).json()
    assert admin["documents"]["roots"] == [str((tmp_path / "d").resolve())]
    reader = await (await client.get("/ui/data", headers=bearer(READER_TOKEN))).json()
    assert "roots" not in reader["documents"]


async def test_with_the_database_gone_the_page_still_shows_what_the_process_knows(
    make_client: Any, tmp_path: Path
) -> None:
    # No token: one sent would need the database to be checked (a 503 while it is gone).
    client = await make_client(token=None, documents_dirs=str(write_documents(tmp_path / "d")))
    await eventually(synced(client), what="the first documents sync")
    await client.get("/livez")
    await client.app[DB_KEY].close()  # the database is gone for this app
    resp = await client.get("/ui/data")
    assert resp.status == 200
    data = await resp.json()
    assert data["ready"] is False and data["db"]["up"] is False and data["db"]["reason"]
    assert "runs" not in data and "debug" not in data
    assert any(row["route"] == "/livez" for row in data["traffic"])  # kept in the process
    assert data["documents"]["last_full_sync"] and "documents" not in data["documents"]


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


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path) -> AsyncIterator[Any]:
    """A headless Chromium at 1280 px, its console kept for the test to read."""
    chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

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
    driver = await asyncio.to_thread(
        webdriver.Chrome, options=options, service=Service(executable_path=CHROMEDRIVER)
    )
    try:
        yield driver
    finally:
        await asyncio.to_thread(driver.quit)


async def shown(
    driver: Any, element_id: str, check: Callable[[str], bool], what: str, timeout: float = 30
) -> str:
    """The element's text once ``check`` accepts it (the page polls every 2 s)."""
    from selenium.webdriver.common.by import By

    async def probe() -> str | None:
        text = await asyncio.to_thread(lambda: str(driver.find_element(By.ID, element_id).text))
        return text if check(text) else None

    return await eventually(probe, timeout=timeout, what=what)


async def attribute(driver: Any, selector: str, name: str) -> str:
    """Read in one script: the page replaces its charts every poll, so an element found in
    one call can be gone by the next."""
    script = (
        "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1])"
    )
    return str(await asyncio.to_thread(driver.execute_script, script, selector, name) or "")


def console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def served_on(db_url: DatabaseURL, tmp_path: Path, args: list[str]) -> Server:
    """A server on the test's backend, with the test tokens planted."""
    url = plant_test_tokens(db_url)
    db = str(url.path) if url.path is not None else url.dsn
    return Server(tmp_path / "logs" / "unused.db", args, db=db, log_dir=tmp_path / "logs")


async def screenshots_at_both_widths(driver: Any, tmp_path: Path) -> None:
    """A screenshot at 1280 px and at a phone's 390 px, with nothing wider than the screen
    on the phone (wide tables scroll inside their card)."""
    desk = tmp_path / "ops-page.png"
    assert await asyncio.to_thread(driver.save_screenshot, str(desk))
    assert desk.stat().st_size > 10_000
    await asyncio.to_thread(driver.set_window_size, 390, 844)
    overflow = "return document.documentElement.scrollWidth - window.innerWidth"
    assert await asyncio.to_thread(driver.execute_script, overflow) <= 0
    phone = tmp_path / "ops-page-phone.png"
    assert await asyncio.to_thread(driver.save_screenshot, str(phone))
    assert phone.stat().st_size > 10_000
    await asyncio.to_thread(driver.set_window_size, 1280, 1000)


async def some_of_everything(http: aiohttp.ClientSession) -> None:
    """A run with a running step, two sessions holding worktrees, a running command."""

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with http.post(path, json=body) as resp:
            assert resp.status in (200, 201), (path, resp.status, await resp.text())
            return dict(await resp.json())

    run = await post("/runs", {})
    await post(f"/runs/{run['run_id']}/steps", {"name": "build", "status": "running"})
    await post(f"/runs/{run['run_id']}/steps", {"name": "test"})
    repo = await post("/repositories", {"name": "app", "url": "git@example:app"})
    for i in range(2):
        await post(f"/repositories/{repo['id']}/worktrees", {"path": f"/w/{i}", "branch": "main"})
    sessions = [await post("/sessions", {"repository_id": repo["id"]}) for _ in range(2)]
    for session in sessions:
        body = {"session_id": session["id"], "lease_s": 3600}
        await post(f"/repositories/{repo['id']}/worktrees/reserve", body)
    await post(f"/sessions/{sessions[0]['id']}/commands", {"argv": ["pytest", "-x"]})


async def load(http: aiohttp.ClientSession) -> None:
    """Reads with varied pages, and a few requests that fail, until cancelled."""
    rng = random.Random(7)
    while True:
        path = rng.choice([f"/bobgen/status?limit={rng.randint(1, 50)}", "/runs", "/no/such"])
        async with http.get(path) as resp:
            await resp.read()


@pytest.mark.slow
async def test_the_page_follows_a_load_and_shows_every_panel(
    tmp_path: Path, db_url: DatabaseURL
) -> None:
    docs = write_documents(tmp_path / "documents")
    server = served_on(db_url, tmp_path, ["--documents-dir", str(docs)])
    await server.start()
    async with aiohttp.ClientSession(server.url, headers=bearer(ADMIN_TOKEN)) as http:
        await some_of_everything(http)
        loading = asyncio.create_task(load(http))
        try:
            async with chromium(tmp_path) as driver:
                await asyncio.to_thread(driver.get, server.url + "/ui")
                await shown(driver, "state", lambda t: t == "ready", "the page's first data")
                # The charts move while the load runs: the newest interval grows poll by poll.
                first = await attribute(driver, "#chart-rate polyline", "points")

                async def moved() -> bool:
                    now = await attribute(driver, "#chart-rate polyline", "points")
                    return now != first

                await eventually(moved, timeout=30, what="the rate chart moving under load")
                rate = await shown(driver, "chart-rate-now", lambda t: t not in ("", NONE), "rate")
                assert float(rate) > 0
                routes = await shown(
                    driver, "route-charts", lambda t: "/bobgen/status" in t, "route charts"
                )
                assert "/ui/data" not in routes  # the page's own polling is not charted
                assert await attribute(driver, "#route-charts td.spark polyline", "points")
                await shown(driver, "traffic", lambda t: "/bobgen/status" in t, "traffic table")
                apart = await shown(driver, "traffic-apart", lambda t: "to no route" in t, "apart")
                assert "to no route: 0" not in apart  # the load's 404s are counted apart
                # The panels.
                runs = await shown(driver, "runs", lambda t: "running" in t, "runs panel")
                assert "1 pending, 1 running" in runs
                counts = await shown(driver, "debug-counts", lambda t: "2 active" in t, "debug")
                assert "2 reserved worktree(s)" in counts and "1 running command(s)" in counts
                await shown(driver, "debug-commands", lambda t: "pytest -x" in t, "commands")
                await shown(driver, "audit", lambda t: "worktree.reserved" in t, "audit panel")
                worktrees = await shown(driver, "debug-worktrees", lambda t: "/w/" in t, "wt")
                assert "held" in worktrees
                stored = await shown(driver, "documents-stored", lambda t: "persona" in t, "docs")
                assert stored == "1 persona, 1 prompt_template"
                # Without a token the roots are an admin's to see (as /admin/sync).
                roots = await shown(driver, "documents-roots", bool, "roots")
                assert roots == "shown to an admin token"
                engine = await shown(driver, "db-engine", lambda t: t != NONE, "database")
                assert f"({db_url.backend})" in engine
                migrations = await shown(driver, "db-migrations", lambda t: t != NONE, "migrations")
                assert migrations.startswith(f"{len(ALL_MIGRATIONS)} of {len(ALL_MIGRATIONS)}")
                wal = await shown(driver, "db-wal", lambda t: t != NONE, "WAL")
                assert ("truncated back to" in wal) == (db_url.path is not None)
                assert console_errors(driver) == []
                await screenshots_at_both_widths(driver, tmp_path)
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await server.stop()


@pytest.mark.slow
async def test_the_token_flow_and_the_reload_button(tmp_path: Path, db_url: DatabaseURL) -> None:
    from selenium.webdriver.common.by import By

    docs = write_documents(tmp_path / "documents")
    server = served_on(db_url, tmp_path, ["--documents-dir", str(docs), "--auth-reads"])
    await server.start()

    async def enter(driver: Any, token: str) -> None:
        field = await asyncio.to_thread(driver.find_element, By.ID, "token")
        await asyncio.to_thread(field.send_keys, token)
        button = await asyncio.to_thread(
            driver.find_element, By.CSS_SELECTOR, "#token-form button[type=submit]"
        )
        await asyncio.to_thread(button.click)

    try:
        async with chromium(tmp_path) as driver:
            await asyncio.to_thread(driver.get, server.url + "/ui")
            # Not a stuck "loading...": it says what it needs and asks for it.
            await shown(driver, "problem", lambda t: "needs an admin token" in t, "the ask")
            assert await asyncio.to_thread(driver.find_element(By.ID, "token").is_displayed)
            await enter(driver, "bg_not-a-real-token")
            await shown(driver, "problem", lambda t: "refused this token" in t, "a refusal")
            await enter(driver, READER_TOKEN)
            await shown(driver, "problem", lambda t: "not an admin token" in t, "a reader")
            await enter(driver, ADMIN_TOKEN)
            await shown(driver, "state", lambda t: t == "ready", "the data with the token")
            roots = await shown(driver, "documents-roots", lambda t: "/" in t, "the roots")
            assert roots == str(docs.resolve())
            assert not await asyncio.to_thread(driver.find_element(By.ID, "problem").is_displayed)
            # The reload button starts a rescan, and the page shows the new full sync.
            before = await shown(driver, "documents-last-sync", lambda t: "added" in t, "sync")
            assert before.split(" (")[1].startswith("2 added")
            await asyncio.to_thread(driver.find_element(By.ID, "sync-reload").click)
            await shown(driver, "sync-reload-result", lambda t: "rescan started" in t, "202")
            after = await shown(
                driver, "documents-last-sync", lambda t: "(0 added" in t, "the rescan's sync"
            )
            assert "0 updated, 0 deleted, 0 failed" in after
            # The token lives in this tab's session storage: a reload keeps it.
            await asyncio.to_thread(driver.refresh)
            await shown(driver, "state", lambda t: t == "ready", "the data after a reload")
            stored = "return sessionStorage.getItem('bobgen-admin-token')"
            assert await asyncio.to_thread(driver.execute_script, stored) == ADMIN_TOKEN
            # Forgetting it asks again.
            await asyncio.to_thread(driver.find_element(By.ID, "token-forget").click)
            await shown(driver, "problem", lambda t: "needs an admin token" in t, "asked again")
            # The only console errors are the refusals the test asked for.
            refusals = [m for m in console_errors(driver) if "/ui/data" not in m]
            assert refusals == []
            await screenshots_at_both_widths(driver, tmp_path)
    finally:
        await server.stop()


@pytest.mark.slow
async def test_the_page_in_a_real_browser_follows_the_row_count(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    db_path = tmp_path / "bobgen.db"
    plant_test_tokens(db_path)
    server = Server(db_path, ["--seed-rows", "200000", "--seed-batch-size", "500"])
    try:
        await server.start(wait=False)
        await server.wait_healthy(timeout=60, path="/readyz")
        async with chromium(tmp_path) as driver:
            await asyncio.to_thread(driver.get, server.url + "/ui")
            rows = "seed-rows"
            first = await shown(driver, rows, lambda t: t.replace(",", "").isdigit(), "a count")
            # Live: the page follows the count, which this test's own write moves on for
            # certain (the seed may or may not still be running by now on a busy machine).
            async with (
                aiohttp.ClientSession(server.url, headers=bearer(ADMIN_TOKEN)) as http,
                http.post("/bobgen/status", json=VALID) as resp,
            ):
                assert resp.status == 201
            grown = await shown(
                driver, rows, lambda t: int(t.replace(",", "")) > int(first.replace(",", "")), "+1"
            )
            assert int(first.replace(",", "")) > 0 and grown
            await shown(driver, "seed-state", lambda t: "of 200,000" in t, "the seed's target")
            assert driver.find_element(By.ID, "state").text == "ready"
            for chart in ("chart-rate", "chart-errors", "chart-p50", "chart-p99"):
                assert await attribute(driver, f"#{chart} polyline", "points"), chart
            assert driver.find_element(By.ID, "build").text.startswith("v")
            assert driver.find_element(By.ID, "updated").text.startswith("updated")
            assert console_errors(driver) == []
            # Both pages work under their Content-Security-Policy: a violation is SEVERE.
            await asyncio.to_thread(driver.get, server.url + "/docs")
            title = await asyncio.to_thread(_rendered_title, driver, By)
            assert "BobGen" in title
            assert console_errors(driver) == []
    finally:
        await server.stop()


def _rendered_title(driver: Any, by: Any) -> str:
    """The API's title once Swagger UI has rendered the document."""

    def title() -> str:
        found = driver.find_elements(by.CSS_SELECTOR, ".swagger-ui .info .title")
        return str(found[0].text) if found else ""

    return eventually_sync(title, timeout=30, what="Swagger UI rendering /openapi.json")


def test_chromium_is_where_the_tests_expect_it() -> None:
    chromium_or_skip()
    assert shutil.which("chromium") == CHROMIUM
