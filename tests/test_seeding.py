import os
import signal
import sqlite3
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from service.db import Database, DatabaseURL
from service.jobs.seeding import SeedAlreadyRunning, Seeder, SeedProgress, SeedState, seed_row
from service.repositories import status as status_repo
from service.repositories.status import WRITABLE_FIELDS
from tests.backends import cli_db, sql
from tests.support import eventually, eventually_sync, wait_for_seed


def all_rows(url: DatabaseURL) -> list[tuple[Any, ...]]:
    return sql(url, "SELECT * FROM status ORDER BY id")


def test_seed_rows_are_a_pure_function_of_the_id() -> None:
    assert seed_row(17) == seed_row(17)
    assert seed_row(17) != seed_row(18)
    assert seed_row(1)[0] == 1 and len(seed_row(1)) == 11


async def test_seed_reaches_exact_target_and_is_idempotent(
    db: Database, db_url: DatabaseURL
) -> None:
    seeder = Seeder(db, batch_size=300)
    progress = await seeder.run(1000)
    assert (progress.state, progress.rows, progress.inserted, progress.batches) == (
        SeedState.COMPLETE,
        1000,
        1000,
        4,
    )
    assert all_rows(db_url) == [seed_row(i) for i in range(1, 1001)]
    again = await seeder.run(1000)
    assert (again.state, again.inserted) == (SeedState.COMPLETE, 0)
    more = await seeder.run(1500)
    assert more.inserted == 500
    assert all_rows(db_url) == [seed_row(i) for i in range(1, 1501)]
    # Ids the database assigns continue after the seeded ones (PostgreSQL: the identity).
    created = await db.write(
        status_repo.insert(dict(zip(WRITABLE_FIELDS, seed_row(9)[1:], strict=True)), "t")
    )
    assert created["id"] == 1501


async def test_stop_lands_on_a_batch_boundary_and_a_rerun_resumes(
    db: Database, db_url: DatabaseURL
) -> None:
    seeder = Seeder(db, batch_size=100)

    def stop_after_three_batches(progress: SeedProgress) -> None:
        if progress.batches == 3:
            seeder.request_stop()

    stopped = await seeder.run(5000, on_progress=stop_after_three_batches)
    assert (stopped.state, stopped.rows) == (SeedState.STOPPED, 300)
    assert len(all_rows(db_url)) == 300

    resumed = await Seeder(db, batch_size=100).run(5000)
    assert resumed.state is SeedState.COMPLETE
    assert resumed.inserted == 5000 - stopped.rows
    assert all_rows(db_url) == [seed_row(i) for i in range(1, 5001)]


async def test_only_one_seed_job_at_a_time(db: Database) -> None:
    seeder = Seeder(db, batch_size=50)
    seeder.start(2000)
    with pytest.raises(SeedAlreadyRunning):
        seeder.start(2000)
    with pytest.raises(SeedAlreadyRunning):
        await seeder.run(2000)
    assert (await seeder.wait()).state is SeedState.COMPLETE


async def test_a_failing_seed_reports_failed(db: Database, db_url: DatabaseURL) -> None:
    sql(db_url, "DROP TABLE status")
    progress = await Seeder(db).run(100)
    assert progress.state is SeedState.FAILED
    assert "no such table" in (progress.error or "") or "does not exist" in (progress.error or "")


def test_kill_9_mid_seed_then_resume_ends_with_exact_count(db_url: DatabaseURL) -> None:
    """A real crash: SIGKILL the CLI seeder between (or inside) batches, then run it again."""
    cmd = [
        sys.executable,
        "-m",
        "service",
        "seed",
        "--db",
        cli_db(db_url),
        "--log-level",
        "WARNING",
    ]
    # Enough batches that the kill lands mid-way; small enough to resume in a second.
    target, batch = 20_000, 100
    proc = subprocess.Popen([*cmd, "--rows", str(target), "--batch-size", str(batch)])

    def four_batches_in() -> bool:
        assert proc.poll() is None, "the seed finished before it could be killed"
        try:
            return bool(sql(db_url, "SELECT count(*) FROM status")[0][0] >= 4 * batch)
        except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
            return False  # table not created yet

    eventually_sync(four_batches_in, timeout=60, what="four seed batches committed")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    interrupted = sql(db_url, "SELECT count(*) FROM status")[0][0]
    assert 0 < interrupted < target, "the seed should have been interrupted mid-way"
    assert interrupted % batch == 0  # only whole batches were committed

    done = subprocess.run(
        [*cmd, "--rows", str(target)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"{target}/{target} rows, {target - interrupted} inserted" in done.stdout
    [(count, distinct, low, high)] = sql(
        db_url, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM status"
    )
    sample = sql(db_url, "SELECT * FROM status WHERE id IN (1, 7777, 20000) ORDER BY id")
    if db_url.path is not None:
        assert sql(db_url, "PRAGMA integrity_check") == [("ok",)]
    assert (count, distinct, low, high) == (target, target, 1, target)
    assert sample == [seed_row(1), seed_row(7777), seed_row(20000)]


async def test_server_answers_while_seeding(make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = await make_client(seed_rows=20_000, seed_batch_size=250)

    async def answered_mid_seed() -> dict[str, Any]:
        """A /health and a page answered while the seed was between its first and last
        batch (polled: how far the seed gets between two polls is the machine's business)."""
        health = await (await client.get("/health")).json()
        page = await client.get("/bobgen/status?limit=5")
        after = await (await client.get("/health")).json()
        seed = after["seed"]
        mid = health["seed"]["state"] == "running" and 0 < seed["rows"] < seed["target"]
        return health if mid and page.status == 200 and after["status"] == "ok" else {}

    health = await eventually(answered_mid_seed, what="an answer while the seed runs")
    assert health["seed"]["target"] == 20_000
    await wait_for_seed(client.app)
    health = await (await client.get("/health")).json()
    assert health["seed"] == {"state": "complete", "rows": 20_000, "target": 20_000}


async def test_admin_seed_endpoint(client: TestClient) -> None:
    resp = await client.post("/admin/seed", json={"rows": 3000, "batch_size": 100})
    assert resp.status == 202
    assert resp.headers["Location"] == "/admin/seed"
    body = await resp.json()
    assert body["seed"]["state"] == "running" and body["seed"]["target"] == 3000

    busy = await client.post("/admin/seed", json={"rows": 10})
    assert busy.status == 409
    assert (await busy.json())["error"]["code"] == "conflict"

    await wait_for_seed(client.app)
    progress = await (await client.get("/admin/seed")).json()
    assert progress["seed"]["state"] == "complete" and progress["seed"]["rows"] == 3000
    total = (await (await client.get("/bobgen/status")).json())["total"]
    assert total == 3000


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"rows": -1},
        {"rows": "many"},
        {"rows": 1.5},
        {"rows": 10**9},
        {"rows": 5, "x": 1},
        {"rows": 5, "batch_size": 0},
    ],
)
async def test_admin_seed_rejects_bad_bodies(client: TestClient, body: dict[str, Any]) -> None:
    resp = await client.post("/admin/seed", json=body)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "validation_failed"


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_postgresql_seed_leaves_the_planner_statistics(db: Database) -> None:
    """Autovacuum analyzes a loaded table some time later, or never where it is off (as on
    the machines BobGen is tested on): the planner then guesses, and once guessed a table
    scan per commit. The seed analyzes what it loaded."""
    await Seeder(db, batch_size=500).run(2000)
    row = await db.fetchone("SELECT reltuples FROM pg_class WHERE relname = 'status'")
    assert row is not None and row[0] == 2000  # -1 while never analyzed
