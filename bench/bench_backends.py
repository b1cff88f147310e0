"""SQLite vs PostgreSQL (1 and 2 instances), in one run: ``make bench MODE=postgresql``;
and 1 vs N workers on both: ``make bench WORKERS=1,2``.

    .venv/bin/python bench/bench_backends.py [--rows 100000] [--duration 5] [--rounds 3]
        [--pg-admin postgresql://postgres@127.0.0.1:5432/postgres] [--old-root DIR]
        [--workers 1,2]

Prepares the same data on both backends with the service's own code (migrations, 100,000
seed rows, a write token, a project with 1,000 ideas), starts ``bobgen serve`` on the SQLite
file, one on the PostgreSQL database, and a pair on that database (each its own process), and
drives each with wrk (the pair: one wrk per instance, half the connections each, throughputs
added). With ``--old-root`` (a checkout of an older commit) its SQLite server runs too, on a
copy of the same file, so that "no regression" is a ratio measured in the same run. With
``--workers 1,2`` every listed worker count above 1 adds ``bobgen serve --workers N`` on
SQLite and on PostgreSQL, and a bare aiohttp app with N processes on one port (the ceiling
for N processes; it answers every path with a canned row, without database or middleware).
Each round also measures a row by random id over one connection (the latency a lone client
sees: p50 must not grow with workers).

Scenarios, all with varied requests: pages at random offsets 0-1000, the first page
(identical requests: coalesced, labelled), a row by random id, POST status (token, validation,
audit row) and PATCH of a random idea (``If-Match: *``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import free_port, lua, run_wrk, scratch_database, wait_up  # noqa: E402
from service.config import DEFAULT_MIGRATIONS_DIR  # noqa: E402
from service.db import DatabaseURL, connect, execute_many  # noqa: E402
from service.db.migrations import apply_migrations  # noqa: E402
from service.domain.auth import Scope  # noqa: E402
from service.jobs.seeding import Seeder  # noqa: E402
from service.timeutil import utc_now  # noqa: E402
from service.tokens import create_token  # noqa: E402

IDEAS = 1000
PROJECT = "bench-project"


async def prepare(url: DatabaseURL, rows: int) -> tuple[float, str]:
    """Migrate, seed (timed), and create a write token and a project with ideas."""
    apply_migrations(url, DEFAULT_MIGRATIONS_DIR)
    db = connect(url)
    await db.open()
    try:
        started = time.perf_counter()
        progress = await Seeder(db, batch_size=5000).run(rows)
        elapsed = time.perf_counter() - started
        token, _ = await create_token(
            db, user="bench", name="bench", scopes=frozenset(Scope), actor="bench"
        )
        now = utc_now()
        await db.write(
            execute_many(
                "INSERT INTO projects (id, name, description, version, created_at, updated_at) "
                "VALUES (?, ?, ?, 1, ?, ?)",
                [(PROJECT, "bench", "", now, now)],
            )
        )
        await db.write(
            execute_many(
                "INSERT INTO idea_tickets (id, project_id, title, description, status, priority,"
                " version, created_at, updated_at) VALUES (?, ?, ?, '', 'open', 2, 1, ?, ?)",
                [(f"idea-{i}", PROJECT, f"idea {i}", now, now) for i in range(1, IDEAS + 1)],
            )
        )
    finally:
        await db.close()
    assert progress.rows == rows, progress
    return elapsed, token


def serve(db: str, port: int, root: Path, extra: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "service", "serve", "--db", db, "--port", str(port)]
    cmd += ["--seed-rows", "0", "--log-level", "WARNING", *extra]
    return subprocess.Popen(cmd, env=env, cwd=root, start_new_session=True)


def bare(port: int, processes: int) -> subprocess.Popen[bytes]:
    app = ROOT / "bench" / "baseline_app.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(app), str(port), str(processes)]
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group: a server's workers, the bare app's forks."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)


def scripts(rows: int, token: str) -> dict[str, str]:
    auth = f"wrk.headers['Authorization'] = 'Bearer {token}'\n"
    patch = (
        "wrk.method = 'PATCH'\nwrk.headers['Content-Type'] = 'application/json'\n"
        f"wrk.headers['If-Match'] = '*'\n{auth}"
        'wrk.body = \'{"title": "patched"}\'\n'
        "request = function() return wrk.format('PATCH', "
        f"'/projects/{PROJECT}/ideas/idea-' .. math.random(1, {IDEAS})) end"
    )
    return {
        "pages, random offsets": lua("'/bobgen/status?offset=' .. math.random(0, 1000)"),
        "first page, IDENTICAL (coalesced)": lua("'/bobgen/status'"),
        "row by id": lua(f"'/bobgen/status/' .. math.random(1, {rows})"),
        "POST status": lua("'/bobgen/status'", post=auth),
        "PATCH idea": patch,
        ONE_CONNECTION: lua(f"'/bobgen/status/' .. math.random(1, {rows})"),
    }


ONE_CONNECTION = "row by id, 1 connection"


def drive(ports: list[int], script: str, duration: int, connections: int) -> tuple[float, ...]:
    """One wrk per instance, the connections split between them; req/s added, latency of
    the slower instance reported."""
    share = max(connections // len(ports), 1)
    with ThreadPoolExecutor(len(ports)) as pool:
        runs = list(
            pool.map(lambda p: run_wrk(f"http://127.0.0.1:{p}/", duration, share, script), ports)
        )
    return (
        sum(r[0] for r in runs),
        max(r[1] for r in runs),
        max(r[2] for r in runs),
        sum(r[3] for r in runs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--old-root", type=Path, help="an older checkout: its SQLite server too")
    parser.add_argument("--only", help="run only scenarios whose name contains this text")
    parser.add_argument(
        "--sqlite-only", action="store_true", help="only SQLite (and --old-root): an A/B run"
    )
    parser.add_argument(
        "--workers", default="1", help="worker counts to compare, e.g. 1,2 (make bench WORKERS=)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "backends.json")
    args = parser.parse_args()
    worker_counts = sorted({int(w) for w in str(args.workers).split(",") if w.strip()} | {1})
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (Debian: apt install wrk)")

    workdir = Path(tempfile.mkdtemp(prefix="bobgen-bench-backends-"))
    with scratch_database(args.pg_admin, "bobgen_bench") as pg_url:
        sqlite_url = DatabaseURL.sqlite(workdir / "bench.db")
        procs: list[subprocess.Popen[bytes]] = []
        try:
            seed_sqlite, token = asyncio.run(prepare(sqlite_url, args.rows))
            seed_pg, pg_token = asyncio.run(prepare(pg_url, args.rows))
            print(f"seed {args.rows} rows: SQLite {seed_sqlite:.2f} s, PostgreSQL {seed_pg:.2f} s")
            setups: dict[str, tuple[list[int], str]] = {}
            if args.old_root:
                old_copy = workdir / "old.db"
                shutil.copy(sqlite_url.sqlite_path, old_copy)
                port = free_port()
                procs.append(serve(str(old_copy), port, args.old_root, []))
                setups["SQLite, before this change"] = ([port], token)
            port = free_port()
            procs.append(serve(str(sqlite_url.sqlite_path), port, ROOT, []))
            setups["SQLite"] = ([port], token)
            if not args.sqlite_only:
                port = free_port()
                procs.append(serve(pg_url.dsn, port, ROOT, []))
                setups["PostgreSQL, 1 instance"] = ([port], pg_token)
                pair = [free_port(), free_port()]
                for p in pair:
                    procs.append(serve(pg_url.dsn, p, ROOT, []))
                setups["PostgreSQL, 2 instances"] = (pair, pg_token)
            for n in worker_counts[1:]:
                port = free_port()
                procs.append(serve(str(sqlite_url.sqlite_path), port, ROOT, ["--workers", str(n)]))
                setups[f"SQLite, {n} workers"] = ([port], token)
                if not args.sqlite_only:
                    port = free_port()
                    procs.append(serve(pg_url.dsn, port, ROOT, ["--workers", str(n)]))
                    setups[f"PostgreSQL, {n} workers"] = ([port], pg_token)
                port = free_port()
                procs.append(bare(port, n))
                setups[f"bare aiohttp, {n} processes"] = ([port], token)
            for proc, port in zip(
                procs, [p for ports, _ in setups.values() for p in ports], strict=True
            ):
                # /readyz waits for every worker (an old checkout may not have it).
                probe = "/readyz" if "--workers" in proc.args else "/health"
                wait_up(f"http://127.0.0.1:{port}{probe}", proc, timeout=60)

            scenario_names = list(scripts(args.rows, token))
            if args.only:
                scenario_names = [s for s in scenario_names if args.only in s]
            runs: dict[tuple[str, str], list[tuple[float, ...]]] = {}
            for round_no in range(1, args.rounds + 1):
                print(f"round {round_no}/{args.rounds}", file=sys.stderr)
                # Rotate which setup goes first: a write-heavy run leaves checkpoints and flushes
                # that land on the next run, a bias that must not always hit the same setup.
                order = list(setups)
                order = order[round_no % len(order) :] + order[: round_no % len(order)]
                for scenario in scenario_names:
                    for setup in order:
                        ports, tok = setups[setup]
                        script = scripts(args.rows, tok)[scenario]
                        connections = 1 if scenario == ONE_CONNECTION else args.connections
                        result = drive(ports, script, args.duration, connections)
                        runs.setdefault((scenario, setup), []).append(result)
        finally:
            for proc in procs:
                stop(proc)
            for proc in procs:
                proc.wait(timeout=30)
            shutil.rmtree(workdir, ignore_errors=True)

    table: list[dict[str, Any]] = []
    print(f"\n{args.connections} connections, medians of {args.rounds} rounds:")
    for scenario in scenario_names:
        sqlite_rps = statistics.median(r[0] for r in runs[(scenario, "SQLite")])
        print(f"  {scenario}")
        for setup in setups:
            rs = runs[(scenario, setup)]
            rps, p50, p99 = (statistics.median(r[i] for r in rs) for i in range(3))
            errors = sum(r[3] for r in rs)
            ratio = rps / sqlite_rps
            ceiling = ""
            if setup.endswith(" workers"):  # beside the bare app on as many processes
                n = setup.rsplit(" ", 2)[1]
                bare_rps = statistics.median(
                    r[0] for r in runs[(scenario, f"bare aiohttp, {n} processes")]
                )
                ceiling = f"  {rps / bare_rps:5.2f}x bare {n}"
            print(
                f"    {setup:<28} {rps:>8.0f} req/s {ratio:5.2f}x SQLite"
                f"  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  errors {errors}{ceiling}"
            )
            table.append(
                {
                    "scenario": scenario,
                    "setup": setup,
                    "requests_per_s": round(rps, 1),
                    "ratio_to_sqlite": round(ratio, 3),
                    "p50_ms": round(p50, 3),
                    "p99_ms": round(p99, 3),
                    "errors": errors,
                }
            )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "rows": args.rows,
                "seed_s": {"sqlite": seed_sqlite, "postgresql": seed_pg},
                "results": table,
            },
            indent=2,
        )
    )
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
