"""``bobgen serve --workers 2``, as deployed: real processes, real signals, real files.

One port, two workers answering as one server (/health, /metrics summed, on both backends); a
worker killed is restarted and the sums do not go backwards; SIGTERM drains every worker and
systemd hears READY=1 once; a killed supervisor takes its workers down; a server whose workers
cannot start ends with one line; the documents watcher runs in one worker and another takes
it over; and the crash ledger: kill -9 of a worker, or of the whole server, under 50 writers
loses no acknowledged write.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.config import PROJECT_ROOT
from service.db import DatabaseURL
from service.workers import Leadership
from service.workers.metrics import merge
from tests.backends import PgCluster, sql
from tests.reliability.test_crash import write_until_killed
from tests.support import eventually
from tests.support.auth import ADMIN_TOKEN, WRITER_TOKEN, bearer, plant_test_tokens
from tests.support.ledger import audit_ids, integrity, rows_by_version, status_body
from tests.support.server import Server

WORKERS = ["--workers", "2"]


async def _health(session: aiohttp.ClientSession, server: Server) -> dict[str, Any]:
    # A connection per request: the kernel hashes each new connection to a worker's socket.
    async with session.get(server.url + "/health", headers={"Connection": "close"}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _answering(server: Server, tries: int = 200) -> dict[int, int]:
    """Which worker (index -> pid) answered each of ``tries`` new connections."""
    seen: dict[int, int] = {}
    async with aiohttp.ClientSession() as session:
        for _ in range(tries):
            worker = (await _health(session, server))["worker"]
            assert worker["workers"] == 2
            seen[worker["index"]] = worker["pid"]
            if len(seen) == 2:
                break
    return seen


async def _both(server: Server) -> bool:
    return len(await _answering(server)) == 2


async def _metrics(server: Server) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(server.url + "/metrics") as resp:
        text = await resp.text()
    if shutil.which("promtool"):  # the merged exposition is valid, each family once
        check = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert "error" not in check.stderr.lower() + check.stdout.lower(), check.stderr
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


async def _metric_at_least(server: Server, name: str, least: float) -> bool:
    return (await _metrics(server)).get(name, 0) >= least


POSTS = 'http_requests_total{method="POST",route="/bobgen/status",status="201"}'


async def _post(session: aiohttp.ClientSession, server: Server, marker: str) -> None:
    async with session.post(
        server.url + "/bobgen/status",
        json=status_body(marker),
        headers={**bearer(WRITER_TOKEN), "Connection": "close"},
    ) as resp:
        assert resp.status == 201, await resp.text()


@pytest.fixture
async def start_workers(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """``bobgen serve --workers 2 <args>`` on a token-planted database of ``backend``."""
    servers: list[Server] = []

    async def start(backend: str = "sqlite", *args: str, wait: bool = True) -> Server:
        db_path = tmp_path / "data" / "bobgen.db"
        db = ""
        if backend == "sqlite":
            db_path.parent.mkdir(parents=True, exist_ok=True)
            plant_test_tokens(db_path)
        else:
            cluster: PgCluster = request.getfixturevalue("pg_cluster")
            url = cluster.create(migrated=False)
            request.addfinalizer(lambda: cluster.drop(url))
            plant_test_tokens(url)
            db = url.dsn
        server = Server(db_path, [*WORKERS, *args], db=db, log_dir=tmp_path / "logs")
        servers.append(server)
        await server.start(wait=wait)
        if wait:  # worker 0 answers first; the server is up once both do
            await eventually(lambda: _both(server), timeout=30, what="both workers serving")
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_two_workers_serve_one_port_and_answer_as_one_server(
    start_workers: Any, backend: str
) -> None:
    server = await start_workers(backend)
    seen = await _answering(server)
    assert set(seen) == {0, 1}, "every worker takes connections"
    assert sorted(seen.values()) == server.workers()
    async with aiohttp.ClientSession() as session:
        for n in range(30):  # spread over both workers by the kernel
            await _post(session, server, f"spread-{n}")
        async with session.get(server.url + "/bobgen/status?limit=1") as resp:
            assert (await resp.json())["total"] >= 30
    metrics = await _metrics(server)
    assert metrics[POSTS] == 30, "the requests of both workers, summed"
    assert metrics["bobgen_workers"] == 2
    assert metrics["bobgen_db_up"] == 1
    assert metrics["bobgen_worker_restarts_total"] == 0
    builds = [v for name, v in metrics.items() if name.startswith("bobgen_build_info")]
    assert builds == [1], "one build, not one per worker"
    # Database-layer metrics are each worker's, merged (each snapshot at most a second old).
    await eventually(
        lambda: _metric_at_least(server, "bobgen_db_write_units_total", 30),
        what="the write units of both workers",
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_token_revoked_through_one_worker_is_refused_by_every_worker_in_time(
    start_workers: Any, backend: str
) -> None:
    server = await start_workers(backend)
    close = {"Connection": "close"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            server.url + "/tokens",
            json={"user": "robot", "scopes": ["read", "write"]},
            headers=bearer(ADMIN_TOKEN),
        ) as resp:
            assert resp.status == 201, await resp.text()
            created = await resp.json()
        robot = {**bearer(created["token"]), **close}
        cached_by: set[int] = set()
        for _ in range(100):  # both workers check the token once and cache the answer
            async with session.get(server.url + "/health", headers=robot) as resp:
                cached_by.add((await resp.json())["worker"]["index"])
            async with session.get(server.url + "/bobgen/status?limit=1", headers=robot) as resp:
                assert resp.status == 200
            if cached_by == {0, 1}:
                break
        async with session.delete(
            server.url + f"/tokens/{created['id']}", headers={**bearer(ADMIN_TOKEN), **close}
        ) as resp:
            assert resp.status == 204
        revoked_at = asyncio.get_running_loop().time()

        async def refused_by_both() -> bool:
            refused: set[int] = set()
            for _ in range(40):
                async with session.post(
                    server.url + "/bobgen/status", json=status_body("revoked"), headers=robot
                ) as resp:
                    if resp.status != 401:
                        return False
                async with session.get(server.url + "/health", headers=close) as resp:
                    refused.add((await resp.json())["worker"]["index"])
            return refused == {0, 1}

        await eventually(refused_by_both, timeout=10, what="the revoked token refused by both")
    # docs/security.md: a revocation reaches every process within a second
    assert asyncio.get_running_loop().time() - revoked_at < 1.0 + 2.0  # + the polling itself


async def test_a_killed_worker_is_restarted_and_the_sums_stay(start_workers: Any) -> None:
    server = await start_workers()
    async with aiohttp.ClientSession() as session:
        for n in range(20):
            await _post(session, server, f"before-{n}")
        await asyncio.sleep(1.2)  # a snapshot of each worker's own metrics is written
        before = await _metrics(server)
        victim = server.workers()[-1]
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool:
            pids = server.workers()
            return len(pids) == 2 and victim not in pids

        await eventually(replaced, timeout=15, what="a new worker in place of the killed one")
        await eventually(
            lambda: _answering(server), timeout=15, what="both workers answering again"
        )
        for n in range(5):
            await _post(session, server, f"after-{n}")
    after = await _metrics(server)
    assert after["bobgen_worker_restarts_total"] == 1
    assert after[POSTS] == before[POSTS] + 5, "the dead worker's requests still count"
    await eventually(
        lambda: _metric_at_least(
            server, "bobgen_db_write_units_total", before["bobgen_db_write_units_total"] + 5
        ),
        what="the dead worker's write units still summed",
    )
    assert "restarting it in" in server.log()


async def test_sigterm_drains_every_worker_and_systemd_hears_ready_once(
    tmp_path: Path, start_workers: Any
) -> None:
    notify = tmp_path / "notify.sock"
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(notify))
    systemd.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify)}
    db_path = tmp_path / "data" / "bobgen.db"
    db_path.parent.mkdir(parents=True)
    plant_test_tokens(db_path)
    server = Server(db_path, [*WORKERS, "--shutdown-grace-s", "1", "--log-level", "INFO"], env=env)
    await server.start()
    await eventually(lambda: _answering(server), what="both workers answering")
    workers = server.workers()
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    async with aiohttp.ClientSession() as session:

        async def draining() -> bool:
            async with session.get(server.url + "/readyz") as resp:
                return resp.status == 503

        await eventually(draining, what="/readyz 503 while draining")
    assert await server.wait_exit(30) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    messages = []
    while True:
        try:
            messages.append(systemd.recv(1024).decode())
        except BlockingIOError:
            break
    systemd.close()
    assert messages == ["READY=1", "STOPPING=1"], "the supervisor speaks for all its workers"
    assert server.log().count("draining for 1.0 s") == 2


async def test_a_killed_supervisor_takes_its_workers_down(start_workers: Any) -> None:
    server = await start_workers("sqlite", "--shutdown-grace-s", "0.2")
    workers = server.workers()
    assert len(workers) == 2
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGKILL)  # the parent alone
    await server.wait_exit()
    await eventually(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
        timeout=15,
        what="the orphaned workers to stop",
    )
    assert "the supervisor" in server.log() and "is gone: stopping" in server.log()


async def test_a_worker_that_cannot_start_ends_the_server_with_one_line(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    missing = pg_cluster.url("bobgen_no_such_database")
    server = Server(tmp_path / "unused.db", WORKERS, db=missing.dsn)
    await server.start(wait=False)
    assert await server.wait_exit(30) == 1
    log = server.log()
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bobgen: error: "), log


async def test_workers_that_keep_dying_at_start_end_the_server(
    start_workers: Any, pg_cluster: PgCluster
) -> None:
    server = await start_workers("postgresql")
    name = DatabaseURL.parse(server.db).redacted.rsplit("/", 1)[-1]
    admin = pg_cluster.url("postgres")
    # No new sessions: a restarted worker cannot even connect (those serving keep theirs).
    sql(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        os.kill(server.workers()[-1], signal.SIGKILL)
        assert await server.wait_exit(60) == 1
    finally:
        sql(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    log = server.log()
    assert re.search(r"died before serving 3 times in a row", log), log
    # The killed worker's restart, then two more tries, and no fourth.
    assert log.count("restarting it in") == 3


async def test_one_worker_watches_the_documents_and_another_takes_over(
    tmp_path: Path, start_workers: Any
) -> None:
    root = tmp_path / "documents"
    (root / "personas").mkdir(parents=True)
    persona = json.loads((PROJECT_ROOT / "seeds/documents/personas/architect.json").read_text())
    (root / "personas" / "first.json").write_text(json.dumps({**persona, "name": "First"}))
    server = await start_workers("sqlite", "--documents-dir", str(root), "--log-level", "INFO")
    admin = bearer(ADMIN_TOKEN)

    async with aiohttp.ClientSession(headers=admin) as session:

        async def documents() -> set[str]:
            async with session.get(server.url + "/documents", params={"limit": 100}) as resp:
                assert resp.status == 200, await resp.text()
                return {item["name"] for item in (await resp.json())["items"]}

        async def sync_states() -> Counter[str]:
            states: Counter[str] = Counter()
            for _ in range(20):
                async with session.get(
                    server.url + "/admin/sync", headers={"Connection": "close"}
                ) as resp:
                    states[(await resp.json())["state"]] += 1
            return states

        await eventually(lambda: _has(documents(), "First"), what="the first document")
        # Whichever worker answers shows the watching worker's status.
        assert set(await sync_states()) == {"watching"}
        watching = re.findall(r"this worker \(pid (\d+)\) watches", server.log())
        assert len(watching) == 1, server.log()
        os.kill(int(watching[0]), signal.SIGKILL)
        await eventually(
            lambda: len(re.findall(r"this worker \(pid (\d+)\) watches", server.log())) == 2,
            timeout=15,
            what="another worker to take the watcher over",
        )
        (root / "personas" / "second.json").write_text(json.dumps({**persona, "name": "Second"}))
        await eventually(
            lambda: _has(documents(), "Second"), timeout=15, what="the second document"
        )
        # A reload asked of any worker is passed to the watching one.
        async with session.post(server.url + "/admin/sync/reload") as resp:
            assert resp.status in (202, 409), await resp.text()

        async def reloaded() -> bool:
            async with session.get(server.url + "/admin/sync") as resp:
                return (await resp.json())["events"].get("full:ok", 0) >= 2

        await eventually(reloaded, what="a second full sync in the watching worker")


async def test_one_worker_checkpoints_and_another_takes_over(tmp_path: Path) -> None:
    """The maintenance role (SQLite's WAL checkpoints) is held by one worker, named in its
    lock file in the run directory, and passes to the other within seconds of its death."""
    db_path = tmp_path / "data" / "bobgen.db"
    db_path.parent.mkdir(parents=True)
    plant_test_tokens(db_path)
    runs = tmp_path / "runs"  # the supervisor makes its run directory under $TMPDIR
    runs.mkdir()
    server = Server(db_path, WORKERS, env={**os.environ, "TMPDIR": str(runs)})
    await server.start()
    try:
        [run_dir] = list(runs.glob("bobgen-workers-*"))
        lock = Leadership(run_dir / "maintenance.lock")
        workers = server.workers()
        holder = await eventually(lock.holder, what="a worker taking the maintenance role")
        assert holder in workers
        assert not lock.try_take(), "held, so nobody else may take it"
        os.kill(holder, signal.SIGKILL)

        def taken_over() -> bool:
            now = lock.holder()
            return now is not None and now != holder and now in server.workers()

        await eventually(taken_over, timeout=15, what="another worker taking the role over")
        assert not lock.try_take()
    finally:
        assert await server.terminate() == 0
    assert not run_dir.exists(), "a normal stop removes the run directory"


async def _has(names: Any, name: str) -> bool:
    return name in await names


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["one-worker", "whole-server"])
async def test_acknowledged_writes_survive_kill_9_with_workers(
    start_workers: Any, victim: str
) -> None:
    server = await start_workers()
    ledger: dict[str, int] = {}
    stop, enough = asyncio.Event(), asyncio.Event()
    load = asyncio.ensure_future(
        write_until_killed(server.url + "/bobgen/status", ledger, stop, enough)
    )
    await asyncio.wait_for(enough.wait(), 30)
    if victim == "one-worker":
        os.kill(server.workers()[0], signal.SIGKILL)
        acknowledged = len(ledger)
        # The other worker, then the restarted one, keep acknowledging writes.
        await eventually(lambda: len(ledger) > acknowledged + 500, timeout=30, what="more acks")
        stop.set()
        outcomes = await load
        assert await server.terminate() == 0
    else:
        server.kill9()
        await server.wait_exit()
        stop.set()
        outcomes = await load
    assert outcomes["500"] == 0
    await server.start()  # recovery
    await server.stop()
    stored = rows_by_version(server.db_path, "crash-")
    lost = {marker: row_id for marker, row_id in ledger.items() if stored.get(marker) != row_id}
    assert lost == {}, f"{len(lost)} acknowledged writes lost"
    audited = Counter(audit_ids(server.db_path))
    assert set(audited) == set(stored.values())
    assert max(audited.values()) == 1
    assert integrity(server.db_path) == ["ok"]


def test_a_role_is_held_by_one_holder_and_freed_by_its_death(tmp_path: Path) -> None:
    """flock on one file conflicts between two open files even within one process, which
    stands in here for two workers; the kernel frees it when its holder goes."""
    first, second = Leadership(tmp_path / "r.lock"), Leadership(tmp_path / "r.lock")
    assert first.try_take()
    assert not second.try_take()
    assert second.holder() == os.getpid()
    first.release()
    assert second.try_take()
    second.release()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child holds the role, then dies
        Leadership(tmp_path / "r.lock").try_take()
        os._exit(0)
    os.waitpid(child, 0)
    assert first.try_take(), "the dead child's lock went with it"
    first.release()


def test_merged_metrics_sum_counts_of_every_worker_and_gauges_of_the_live() -> None:
    def family(name: str, kind: str, value: float) -> dict[str, Any]:
        sample = name + ("_total" if kind == "counter" else "")
        return {"name": name, "documentation": name, "type": kind, "samples": [[sample, {}, value]]}

    live = [
        [
            family("units", "counter", 3),
            family("pool", "gauge", 2),
            family("bobgen_db_up", "gauge", 1),
        ],
        [
            family("units", "counter", 4),
            family("pool", "gauge", 2),
            family("bobgen_db_up", "gauge", 0),
        ],
    ]
    dead = [[family("units", "counter", 5), family("pool", "gauge", 9)]]
    merged = {f.name: f.samples[0].value for f in merge(live, dead)}
    assert merged == {"units": 12, "pool": 4, "bobgen_db_up": 0}
