"""BobGen benchmark (not a test): seed time, then req/s and latency per endpoint, and RSS.

    .venv/bin/python bench/bench.py [--rows 100000] [--duration 5] [--connections 32]

Drives a real ``bobgen serve`` process over loopback with wrk when installed, else with an
aiohttp client. Every figure is also given as a ratio of a bare aiohttp app (bench/baseline_app.py)
measured in the same run, because absolute numbers vary from machine to machine and minute to
minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.auth import Scope  # noqa: E402
from service.config import DEFAULT_MIGRATIONS_DIR  # noqa: E402
from service.db import Database  # noqa: E402
from service.db.migrations import apply_migrations  # noqa: E402
from service.schemas.common import encode_cursor  # noqa: E402
from service.seeding import Seeder  # noqa: E402
from service.tokens import create_token  # noqa: E402

POST_BODY = '{"uptime": 99.9, "version": "9.9.9", "latency": 1.5, "error_rate": 0.001}'


@dataclass
class Result:
    name: str
    path: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    ratio_to_baseline: float | None = None


def cursor_lua(cursors: list[str]) -> str:
    """A wrk script asking for a random one of ``cursors`` with every request."""
    table = ",".join(f'"{c}"' for c in cursors)
    return (
        f"local c = {{{table}}}\n"
        "request = function() return wrk.format('GET', '/bobgen/status?cursor=' .."
        " c[math.random(#c)]) end"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def seed(db_path: Path, rows: int, batch_size: int) -> tuple[float, str]:
    """Seed (timed) and create a write token for the POST scenario."""
    apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR)
    db = Database(db_path)
    await db.open()
    try:
        started = time.perf_counter()
        progress = await Seeder(db, batch_size=batch_size).run(rows)
        elapsed = time.perf_counter() - started
        token, _ = await create_token(
            db, user="bench", name="bench", scopes=frozenset({Scope.WRITE}), actor="bench"
        )
    finally:
        await db.close()
    assert progress.rows == rows, progress
    return elapsed, token


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def run_wrk(
    url: str, duration: int, connections: int, script: str | None
) -> tuple[float, float, float, int]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        if script:
            lua.write(script)
            cmd[1:1] = ["-s", lua.name]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(lua.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p50, p99, int(bad.group(1)) if bad else 0


async def run_aiohttp(
    base: str,
    paths: list[str],
    method: str,
    duration: int,
    connections: int,
    headers: dict[str, str],
) -> tuple[float, float, float, int]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                path = random.choice(paths)
                started = time.perf_counter()
                kwargs = {"data": POST_BODY, "headers": headers}
                async with session.request(
                    method, base + path, **(kwargs if method == "POST" else {})
                ) as r:
                    await r.read()
                    errors += r.status >= 400
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(worker() for _ in range(connections)))
    q = statistics.quantiles(latencies, n=100)
    return len(latencies) / duration, q[49], q[98], errors


@dataclass
class Scenario:
    name: str
    base: str
    path: str
    script: str | None = None  # wrk Lua script
    paths: list[str] | None = None  # the same traffic for the aiohttp client
    method: str = "GET"
    headers: dict[str, str] | None = None  # for the aiohttp client; wrk gets them in its script


def run_once(sc: Scenario, args: argparse.Namespace) -> tuple[float, float, float, int]:
    if args.tool == "wrk":
        return run_wrk(sc.base + sc.path, args.duration, args.connections, sc.script)
    return asyncio.run(
        run_aiohttp(
            sc.base,
            sc.paths or [sc.path],
            sc.method,
            args.duration,
            args.connections,
            sc.headers or {},
        )
    )


def measure_all(scenarios: list[Scenario], args: argparse.Namespace) -> list[Result]:
    """Run every scenario once per round, rounds interleaved, and keep the median of each
    figure: on a 2-core machine shared with the load generator, single runs vary by 10-25%,
    and interleaving keeps slow minutes from landing on one scenario only."""
    runs: dict[str, list[tuple[float, float, float, int]]] = {sc.name: [] for sc in scenarios}
    for round_no in range(1, args.rounds + 1):
        print(f"round {round_no}/{args.rounds}", file=sys.stderr)
        for sc in scenarios:
            runs[sc.name].append(run_once(sc, args))
    results = []
    for sc in scenarios:
        rps, p50, p99 = (statistics.median(r[i] for r in runs[sc.name]) for i in range(3))
        errors = sum(r[3] for r in runs[sc.name])
        results.append(
            Result(sc.name, sc.path, round(rps, 1), round(p50, 3), round(p99, 3), errors)
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--duration", type=int, default=5, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=3, help="repeat all scenarios; report medians"
    )
    parser.add_argument("--tool", choices=("auto", "wrk", "aiohttp"), default="auto")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args()
    if args.tool == "auto":
        args.tool = "wrk" if shutil.which("wrk") else "aiohttp"

    workdir = Path(tempfile.mkdtemp(prefix="bobgen-bench-"))
    db_path = workdir / "bench.db"
    seed_s, token = asyncio.run(seed(db_path, args.rows, args.batch_size))
    print(f"seed {args.rows} rows: {seed_s:.3f} s ({args.rows / seed_s:,.0f} rows/s)")
    print(f"load tool: {args.tool}, {args.connections} connections, {args.duration} s per scenario")

    port, baseline_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "serve",
            "--db",
            str(db_path),
            "--port",
            str(port),
            "--seed-rows",
            "0",
            "--log-level",
            "WARNING",
        ],
        env=env,
    )
    baseline = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "baseline_app.py"), str(baseline_port)], env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(base + "/health", server)
        wait_up(f"http://127.0.0.1:{baseline_port}/row/1", baseline)
        rss_idle = rss_mib(server.pid)
        deep = max(args.rows - 1000, 0)
        random_ids = [f"/bobgen/status/{random.randint(1, args.rows)}" for _ in range(2000)]
        random_lua = (
            f"request = function() return wrk.format('GET', '/bobgen/status/' .."
            f" math.random(1, {args.rows})) end"
        )
        shallow_cursors = [encode_cursor(random.randint(0, 1000)) for _ in range(1000)]
        deep_cursors = [encode_cursor(random.randint(deep - 1000, deep)) for _ in range(1000)]
        post_lua = (
            "wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\n"
            f"wrk.headers['Authorization'] = 'Bearer {token}'\n"
            f"wrk.body = '{POST_BODY}'"
        )
        baseline_base = f"http://127.0.0.1:{baseline_port}"
        scenarios = [
            Scenario("baseline (bare aiohttp)", baseline_base, "/row/1"),
            Scenario("first page (limit 50)", base, "/bobgen/status"),
            Scenario("deep page, cursor", base, f"/bobgen/status?cursor={encode_cursor(deep)}"),
            # Distinct cursors defeat request coalescing: the raw cost of a page read.
            Scenario(
                "shallow pages, random cursors",
                base,
                "/bobgen/status",
                cursor_lua(shallow_cursors),
                [f"/bobgen/status?cursor={c}" for c in shallow_cursors],
            ),
            Scenario(
                "deep pages, random cursors",
                base,
                "/bobgen/status",
                cursor_lua(deep_cursors),
                [f"/bobgen/status?cursor={c}" for c in deep_cursors],
            ),
            Scenario("deep page, offset", base, f"/bobgen/status?offset={deep}"),
            Scenario("row by id (random)", base, "/bobgen/status/1", random_lua, random_ids),
            Scenario("health", base, "/health"),
            Scenario(
                "create (POST)",
                base,
                "/bobgen/status",
                post_lua,
                method="POST",
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            ),
        ]
        results = measure_all(scenarios, args)
        baseline_result = results[0]
        for r in results:
            print(
                f"{r.name:<30} {r.requests_per_s:>9.0f} req/s   p50 {r.p50_ms:7.2f} ms"
                f"   p99 {r.p99_ms:7.2f} ms   errors {r.errors}"
            )
        rss_after = rss_mib(server.pid)
    finally:
        for proc in (server, baseline):
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)

    for r in results:
        r.ratio_to_baseline = round(r.requests_per_s / baseline_result.requests_per_s, 3)
    by_name = {r.name: r for r in results}
    cursor_vs_first = (
        by_name["deep page, cursor"].requests_per_s
        / by_name["first page (limit 50)"].requests_per_s
    )
    deep_vs_shallow = (
        by_name["deep pages, random cursors"].requests_per_s
        / by_name["shallow pages, random cursors"].requests_per_s
    )
    summary = {
        "rows": args.rows,
        "tool": args.tool,
        "connections": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "seed_seconds": round(seed_s, 3),
        "rss_mib": {"idle": round(rss_idle, 1), "after_load": round(rss_after, 1)},
        "deep_cursor_vs_first_page": round(cursor_vs_first, 3),
        "deep_vs_shallow_random_cursor_pages": round(deep_vs_shallow, 3),
        "results": [asdict(r) for r in results],
    }
    print(f"\nRSS: {rss_idle:.1f} MiB idle, {rss_after:.1f} MiB after load")
    print(f"deep cursor page / first page: {cursor_vs_first:.2f}")
    print(f"deep / shallow random-cursor pages: {deep_vs_shallow:.2f}")
    print(
        "ratios to baseline: " + ", ".join(f"{r.name}={r.ratio_to_baseline}" for r in results[1:])
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
