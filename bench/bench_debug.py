"""Debug metadata under load: worktree reserve/release cycles and log appends, both backends.

    .venv/bin/python bench/bench_debug.py [--seconds 5] [--sqlite-only]
        [--pg-admin postgresql://postgres@127.0.0.1:5432/postgres]

A real ``bobgen serve`` per backend. Each client owns one session and cycles: reserve a worktree
(50 worktrees, so a cycle never finds none), release it; at 1, 10 and 50 concurrent clients:
cycles per second and the reservation's latency. Then 10 clients append log batches of 100
lines to their own commands. The same aiohttp client drives the baseline (the minimal
insert-and-commit writer, ``bench/baseline_writer.py``) in the same run: a cycle is two audited
write transactions, so ``2 x cycles / baseline writes`` is the ratio reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import free_port, run_wrk, scratch_database, wait_up  # noqa: E402
from service.config import DEFAULT_MIGRATIONS_DIR  # noqa: E402
from service.db import DatabaseURL  # noqa: E402
from service.db.migrations import apply_migrations  # noqa: E402
from service.domain.auth import hash_token  # noqa: E402

TOKEN = "bgt_bench-debug"
WORKTREES = 50
LINES_PER_BATCH = 100


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def plant_token(url: DatabaseURL) -> None:
    sql = (
        'INSERT INTO auth_tokens ("user", name, token_hash, scopes, created_at) '
        "VALUES ('bench', 'bench', %s, 'read,write,admin', '2026-01-01T00:00:00.000Z')"
    )
    if url.path is not None:
        with sqlite3.connect(url.path) as conn:
            conn.execute(sql.replace("%s", "?"), (hash_token(TOKEN),))
        return
    import psycopg

    with psycopg.connect(url.dsn, autocommit=True) as conn:
        conn.execute(sql, (hash_token(TOKEN),))


async def run_clients(clients: int, seconds: float, one: Any) -> tuple[int, list[float]]:
    """``clients`` loops calling ``one(client_index)`` for ``seconds``; how many calls ran
    and the latencies (ms) that ``one`` returned."""
    latencies: list[float] = []
    count = 0
    deadline = time.monotonic() + seconds

    async def loop(i: int) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            latencies.append(await one(i))
            count += 1

    await asyncio.gather(*(loop(i) for i in range(clients)))
    return count, latencies


async def measure_bobgen(base: str, seconds: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as http:

        async def post(path: str, body: dict[str, Any], expect: int) -> dict[str, Any]:
            async with http.post(path, json=body) as resp:
                data = await resp.json()
                assert resp.status == expect, (resp.status, data)
                return data

        repo = await post("/repositories", {"name": "bench", "url": "u"}, 201)
        for i in range(WORKTREES):
            await post(f"/repositories/{repo['id']}/worktrees", {"path": f"/w/{i}"}, 201)
        sessions = [
            (await post("/sessions", {"repository_id": repo["id"]}, 201))["id"]
            for _ in range(WORKTREES)
        ]
        reserve_url = f"/repositories/{repo['id']}/worktrees/reserve"

        async def cycle(i: int) -> float:
            started = time.perf_counter()
            wt = await post(reserve_url, {"session_id": sessions[i], "lease_s": 60}, 201)
            reserved_ms = (time.perf_counter() - started) * 1000
            release = f"/repositories/{repo['id']}/worktrees/{wt['id']}/release"
            await post(release, {"session_id": sessions[i]}, 200)
            return reserved_ms

        results: dict[str, Any] = {}
        if shutil.which("wrk"):
            wrk_sessions = sessions[:10]
            results["cycles_10_wrk"] = await asyncio.to_thread(
                run_wrk_cycles, base, repo["id"], wrk_sessions, seconds
            )
            for s in wrk_sessions:  # wrk stops mid-cycle: release what is still held
                async with http.get(f"/sessions/{s}") as resp:
                    held = (await resp.json())["worktree_id"]
                if held:
                    release = f"/repositories/{repo['id']}/worktrees/{held}/release"
                    await post(release, {"session_id": s}, 200)
        for clients in (1, 10, 50):
            count, latencies = await run_clients(clients, seconds, cycle)
            results[f"cycles_{clients}"] = {
                "per_s": round(count / seconds, 1),
                "reserve_p50_ms": round(percentile(latencies, 50), 2),
                "reserve_p99_ms": round(percentile(latencies, 99), 2),
            }

        commands = [
            (await post(f"/sessions/{s}/commands", {"argv": ["make"]}, 201))["id"]
            for s in sessions[:10]
        ]
        next_seq = [1] * len(commands)
        line = "x" * 80

        async def append(i: int) -> float:
            first = next_seq[i]
            chunks = [
                {"seq": first + n, "stream": "stdout", "text": line} for n in range(LINES_PER_BATCH)
            ]
            started = time.perf_counter()
            await post(f"/commands/{commands[i]}/logs", {"chunks": chunks}, 200)
            next_seq[i] += LINES_PER_BATCH
            return (time.perf_counter() - started) * 1000

        count, latencies = await run_clients(10, seconds, append)
        results["log_appends_10"] = {
            "batches_per_s": round(count / seconds, 1),
            "lines_per_s": round(count * LINES_PER_BATCH / seconds),
            "p99_ms": round(percentile(latencies, 99), 2),
        }
    return results


WRK_CYCLES = """
-- One wrk thread per client, each with its own session: reserve, then release what it got.
local counter = 0
local sessions = {SESSIONS}
function setup(thread)
  counter = counter + 1
  thread:set("session", sessions[counter])
end
local worktree = nil
local auth = {["Authorization"] = "Bearer TOKEN", ["Content-Type"] = "application/json"}
function request()
  if worktree == nil then
    return wrk.format("POST", "/repositories/REPO/worktrees/reserve", auth,
      '{"session_id": "' .. session .. '", "lease_s": 60}')
  end
  return wrk.format("POST", "/repositories/REPO/worktrees/" .. worktree .. "/release", auth,
    '{"session_id": "' .. session .. '"}')
end
function response(status, headers, body)
  if worktree == nil and status == 201 then
    worktree = string.match(body, '"id":"(%x+)"')
  else
    worktree = nil
  end
end
"""


def run_wrk_cycles(base: str, repo: str, sessions: list[str], seconds: float) -> dict[str, float]:
    """The 10-client cycle with wrk as the client (one thread per client): far less client
    CPU on the same two cores than Python's aiohttp client. Latency covers both requests of a
    cycle (wrk cannot tell them apart); reserve and release cost about the same."""
    script = (
        WRK_CYCLES.replace("{SESSIONS}", "{" + ", ".join(f'"{s}"' for s in sessions) + "}")
        .replace("TOKEN", TOKEN)
        .replace("REPO", repo)
    )
    clients = len(sessions)
    rps, p50, p99, bad = run_wrk(base, int(seconds), clients, script, threads=clients)
    return {
        "cycles_per_s": round(rps / 2, 1),
        "request_p50_ms": p50,
        "request_p99_ms": p99,
        "non_2xx": bad,
    }


async def measure_baseline(base: str, seconds: float, clients: int) -> float:
    body = {"uptime": 99.0, "version": "1", "latency": 1.0, "error_rate": 0.0}
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=0)) as http:

        async def write(_: int) -> float:
            async with http.post("/status", json=body) as resp:
                await resp.read()
                assert resp.status == 201
            return 0.0

        count, _ = await run_clients(clients, seconds, write)
    return count / seconds


def wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def serve(url: DatabaseURL, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "service", "serve", "--db", url.dsn or str(url.path)]
    cmd += ["--port", str(port), "--seed-rows", "0", "--log-level", "WARNING"]
    return subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)


def main() -> None:
    try:  # the client's own overhead shares the two cores with the server: keep it small
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "debug.json")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bobgen-bench-debug-"))
    targets: dict[str, DatabaseURL] = {"sqlite": DatabaseURL.sqlite(workdir / "bench.db")}
    cleanup = contextlib.ExitStack()
    if not args.sqlite_only:
        targets["postgresql"] = cleanup.enter_context(
            scratch_database(args.pg_admin, "bobgen_bench_debug")
        )
    results: dict[str, Any] = {"seconds": args.seconds}
    try:
        baseline_db = workdir / "baseline.db"
        apply_migrations(DatabaseURL.sqlite(baseline_db), DEFAULT_MIGRATIONS_DIR)
        port = free_port()
        baseline = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "baseline_writer.py"),
                str(port),
                str(baseline_db),
            ]
        )
        try:
            wait_listening(port)
            for clients in (1, 10, 50):
                writes = asyncio.run(
                    measure_baseline(f"http://127.0.0.1:{port}", args.seconds, clients)
                )
                results[f"baseline_writes_per_s_{clients}"] = round(writes, 1)
        finally:
            baseline.terminate()
            baseline.wait(timeout=30)
        baseline_rates = {c: results[f"baseline_writes_per_s_{c}"] for c in (1, 10, 50)}
        print("baseline insert+commit writes/s by clients:", baseline_rates)
        for backend, url in targets.items():
            apply_migrations(url, DEFAULT_MIGRATIONS_DIR)
            plant_token(url)
            port = free_port()
            server = serve(url, port)
            try:
                wait_up(f"http://127.0.0.1:{port}/health", server, timeout=60)
                measured = asyncio.run(measure_bobgen(f"http://127.0.0.1:{port}", args.seconds))
            finally:
                server.terminate()
                server.wait(timeout=60)
            for clients in (1, 10, 50):
                m = measured[f"cycles_{clients}"]
                m["ratio_to_baseline"] = round(
                    2 * m["per_s"] / results[f"baseline_writes_per_s_{clients}"], 2
                )
            results[backend] = measured
            print(f"{backend}: {json.dumps(measured)}")
    finally:
        cleanup.close()  # drops the PostgreSQL database
        shutil.rmtree(workdir, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
