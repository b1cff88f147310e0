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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.config import DEFAULT_MIGRATIONS_DIR  # noqa: E402
from service.db import DatabaseURL  # noqa: E402
from service.db.migrations import apply_migrations  # noqa: E402
from service.db.sqlite import SqliteDatabase  # noqa: E402
from service.domain.auth import Scope  # noqa: E402
from service.jobs.seeding import Seeder  # noqa: E402
from service.schemas.common import encode_cursor  # noqa: E402
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


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[DatabaseURL]:
    """A new PostgreSQL database on ``admin_url``'s server, dropped afterwards (also when what
    runs inside fails)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield DatabaseURL.parse(admin_url.rsplit("/", 1)[0] + f"/{name}")
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def seed(db_path: Path, rows: int, batch_size: int) -> tuple[float, str]:
    """Seed (timed) and create a write token for the POST scenario."""
    apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR)
    db = SqliteDatabase(db_path)
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


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of ``pid``. ``RssAnon`` is the process's own memory; ``VmRSS`` also
    counts pages of the database file mapped by SQLite's mmap, which grow with the file."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def run_wrk(
    url: str, duration: int, connections: int, script: str | None, threads: int = 1
) -> tuple[float, float, float, int]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url]
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
    baseline: str | None = None  # the scenario this one is a ratio of


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


def lua(request: str, *, post: str | None = None) -> str:
    """A wrk script whose every request is built by the Lua expression ``request`` (a path)."""
    head = ""
    if post is not None:
        head = (
            "wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\n"
            f"{post}wrk.body = '{POST_BODY}'\n"
        )
    method = "'POST'" if post is not None else "'GET'"
    return head + f"request = function() return wrk.format({method}, {request}) end"


def serve_command(db: Path | str, port: int, *extra: str) -> list[str]:
    """``python -m service serve`` on ``db`` and ``port``, no seeding, warnings only: how
    every bench starts the server under test (arguments for :func:`start`)."""
    quiet = ["--seed-rows", "0", "--log-level", "WARNING"]
    return ["-m", "service", "serve", "--db", str(db), "--port", str(port), *quiet, *extra]


def start(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *cmd], env=env, cwd=cwd)


def scenarios_for(
    base: str, reader: str, writer: str, bare: str, rows: int, token: str
) -> list[Scenario]:
    """Varied requests by default (random offsets, cursors, ids): identical concurrent
    requests coalesce in BobGen, which would overstate what clients see. The one identical
    scenario is labelled as such."""
    deep = max(rows - 1000, 0)
    auth = f"wrk.headers['Authorization'] = 'Bearer {token}'\n"
    rand_offset = "'/bobgen/status?offset=' .. math.random(0, 1000)"
    rand_id = f"'/bobgen/status/' .. math.random(1, {rows})"
    shallow = [encode_cursor(random.randint(0, 1000)) for _ in range(1000)]
    deep_cursors = [encode_cursor(random.randint(deep - 1000, deep)) for _ in range(1000)]
    rand_after = "'/status?after=' .. math.random(0, 1000)"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return [
        Scenario("bare aiohttp (ceiling)", bare, "/row/1"),
        Scenario(
            "hand-tuned: pages, random offsets",
            reader,
            "/status",
            lua("'/status?offset=' .. math.random(0, 1000)"),
        ),
        Scenario(
            "BobGen: pages, random offsets",
            base,
            "/bobgen/status",
            lua(rand_offset),
            baseline="hand-tuned: pages, random offsets",
        ),
        Scenario("hand-tuned: pages, random cursors", reader, "/status", lua(rand_after)),
        Scenario(
            "BobGen: pages, random cursors",
            base,
            "/bobgen/status",
            cursor_lua(shallow),
            [f"/bobgen/status?cursor={c}" for c in shallow],
            baseline="hand-tuned: pages, random cursors",
        ),
        Scenario(
            "BobGen: deep pages, random cursors",
            base,
            "/bobgen/status",
            cursor_lua(deep_cursors),
            [f"/bobgen/status?cursor={c}" for c in deep_cursors],
            baseline="hand-tuned: pages, random cursors",
        ),
        Scenario(
            "hand-tuned: row by id",
            reader,
            "/status/1",
            lua(f"'/status/' .. math.random(1, {rows})"),
        ),
        Scenario(
            "BobGen: row by id",
            base,
            "/bobgen/status/1",
            lua(rand_id),
            baseline="hand-tuned: row by id",
        ),
        Scenario(
            "BobGen: first page, IDENTICAL requests (coalesced)",
            base,
            "/bobgen/status",
            baseline="hand-tuned: pages, random offsets",
        ),
        Scenario("BobGen: deep page by offset, identical", base, f"/bobgen/status?offset={deep}"),
        Scenario("BobGen: /health", base, "/health"),
        Scenario("minimal writer: INSERT+COMMIT", writer, "/status", lua("'/status'", post="")),
        Scenario(
            "BobGen: POST (token+validation+audit)",
            base,
            "/bobgen/status",
            lua("'/bobgen/status'", post=auth),
            method="POST",
            headers=headers,
            baseline="minimal writer: INSERT+COMMIT",
        ),
    ]


SINGLE_CONNECTION = {
    "hand-tuned: pages, random offsets",
    "BobGen: pages, random offsets",
    "hand-tuned: row by id",
    "BobGen: row by id",
    "minimal writer: INSERT+COMMIT",
    "BobGen: POST (token+validation+audit)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--duration", type=int, default=5, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--rounds", type=int, default=3, help="repeat all scenarios; report medians"
    )
    parser.add_argument("--only", help="run only scenarios whose name contains this text")
    parser.add_argument("--tool", choices=("auto", "wrk", "aiohttp"), default="auto")
    parser.add_argument("--serve-args", default="", help="extra arguments for bobgen serve")
    parser.add_argument(
        "--server-root",
        type=Path,
        default=ROOT,
        help="serve from another checkout (e.g. a git worktree of an older commit) to compare",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args()
    if args.tool == "auto":
        args.tool = "wrk" if shutil.which("wrk") else "aiohttp"

    workdir = Path(tempfile.mkdtemp(prefix="bobgen-bench-"))
    db_path, writer_db = workdir / "bench.db", workdir / "writer.db"
    seed_s, token = asyncio.run(seed(db_path, args.rows, args.batch_size))
    apply_migrations(writer_db, DEFAULT_MIGRATIONS_DIR)
    print(f"seed {args.rows} rows: {seed_s:.3f} s ({args.rows / seed_s:,.0f} rows/s)")
    print(f"load tool: {args.tool}, {args.connections} connections, {args.duration} s per scenario")

    port, bare_port, reader_port, writer_port = (free_port() for _ in range(4))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server_env = {**os.environ, "PYTHONPATH": str(args.server_root)}
    server = start(
        serve_command(db_path, port, *args.serve_args.split()),
        server_env,
        cwd=args.server_root,  # `python -m` puts the working directory first on sys.path
    )
    bare = start([str(ROOT / "bench" / "baseline_app.py"), str(bare_port)], env)
    reader = start(
        [str(ROOT / "bench" / "baseline_reader.py"), str(reader_port), str(db_path)], env
    )
    writer = start(
        [str(ROOT / "bench" / "baseline_writer.py"), str(writer_port), str(writer_db)], env
    )
    base = f"http://127.0.0.1:{port}"
    procs = (server, bare, reader, writer)
    try:
        wait_up(base + "/health", server)
        wait_up(f"http://127.0.0.1:{bare_port}/row/1", bare)
        wait_up(f"http://127.0.0.1:{reader_port}/status/1", reader)
        rss_idle = rss_mib(server.pid)
        scenarios = scenarios_for(
            base,
            f"http://127.0.0.1:{reader_port}",
            f"http://127.0.0.1:{writer_port}",
            f"http://127.0.0.1:{bare_port}",
            args.rows,
            token,
        )
        if args.only:
            scenarios = [sc for sc in scenarios if args.only in sc.name]
        results = measure_all(scenarios, args)
        single = [sc for sc in scenarios if sc.name in SINGLE_CONNECTION]
        one_conn = measure_all(single, argparse.Namespace(**{**vars(args), "connections": 1}))
        rss_after = rss_mib(server.pid)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)

    by_name = {r.name: r for r in results}
    one_by_name = {r.name: r for r in one_conn}
    baselines = {sc.name: sc.baseline for sc in scenarios}
    print(f"\n{args.connections} connections (ratio: req/s over the named baseline's):")
    for r in results:
        base_r = by_name.get(baselines.get(r.name) or "")
        r.ratio_to_baseline = round(r.requests_per_s / base_r.requests_per_s, 3) if base_r else None
        ratio = f"{r.ratio_to_baseline:5.2f}x" if r.ratio_to_baseline else "      "
        print(
            f"  {r.name:<52} {r.requests_per_s:>9.0f} req/s {ratio}  p50 {r.p50_ms:7.2f} ms"
            f"  p99 {r.p99_ms:7.2f} ms  errors {r.errors}"
        )
    print("\n1 connection (ratio: p50 over the named baseline's p50; lower is better):")
    for r in one_conn:
        base_r = one_by_name.get(baselines.get(r.name) or "")
        r.ratio_to_baseline = round(r.p50_ms / base_r.p50_ms, 3) if base_r else None
        ratio = f"{r.ratio_to_baseline:5.2f}x" if r.ratio_to_baseline else "      "
        print(
            f"  {r.name:<52} p50 {r.p50_ms:7.3f} ms {ratio}  p99 {r.p99_ms:7.3f} ms"
            f"  {r.requests_per_s:>8.0f} req/s"
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
        "results": [asdict(r) for r in results],
        "one_connection": [asdict(r) for r in one_conn],
    }
    print(f"\nseed {seed_s:.2f} s; RSS: {rss_idle:.1f} MiB idle, {rss_after:.1f} MiB after load")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
