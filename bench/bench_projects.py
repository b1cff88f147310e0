"""Projects benchmark (not a test): ideas list/get/update latency with 100k ideas in one project.

    .venv/bin/python bench/bench_projects.py [--ideas 100000] [--projects 10] [--duration 5]

Builds the database directly (10 projects, ``--ideas`` ideas in the first one, 1,000 in each of
the others), starts a real ``bobgen serve`` and measures with an aiohttp client at a modest
concurrency, because the goal is latency (p99 < 10 ms), not peak throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import free_port, rss_mib, serve_command, wait_up  # noqa: E402
from service.config import DEFAULT_MIGRATIONS_DIR  # noqa: E402
from service.db.migrations import apply_migrations  # noqa: E402
from service.db.sqlite import SqliteDatabase  # noqa: E402
from service.domain.auth import ALL_SCOPES  # noqa: E402
from service.schemas.common import encode_cursor  # noqa: E402
from service.tokens import create_token  # noqa: E402

STATUSES = ("open", "in_progress", "done", "rejected", "archived")


def build(db_path: Path, projects: int, ideas: int) -> tuple[list[str], float]:
    apply_migrations(db_path, DEFAULT_MIGRATIONS_DIR)
    started = time.perf_counter()
    conn = sqlite3.connect(db_path)
    with conn:
        project_ids = [f"p{i:02d}" for i in range(projects)]
        conn.executemany(
            "INSERT INTO projects (id, name, description, version, created_at, updated_at) "
            "VALUES (?, ?, '', 1, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
            [(p, f"Project {p}") for p in project_ids],
        )
        for index, project_id in enumerate(project_ids):
            count = ideas if index == 0 else 1000
            rows = []
            for n in range(count):
                stamp = f"2026-01-01T00:{n // 60000 % 60:02d}:{n // 1000 % 60:02d}.{n % 1000:03d}Z"
                rows.append(
                    (
                        f"{project_id}-i{n:06d}",
                        project_id,
                        f"Idea {n}",
                        "",
                        STATUSES[n % 5],
                        n % 4 + 1,
                        stamp,
                        stamp,
                    )
                )
            conn.executemany(
                "INSERT INTO idea_tickets (id, project_id, title, description, status, priority,"
                " version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
                rows,
            )
    conn.close()
    return project_ids, time.perf_counter() - started


async def make_token(db_path: Path) -> str:
    db = SqliteDatabase(db_path)
    await db.open()
    try:
        token, _ = await create_token(
            db, user="bench", name="bench", scopes=ALL_SCOPES, actor="bench"
        )
    finally:
        await db.close()
    return token


# A request returns its status and, when only part of it should count, that part's seconds.
Request = Callable[[aiohttp.ClientSession], Awaitable[tuple[int, float | None]]]


async def load(base: str, request: Request, duration: float, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration
    async with aiohttp.ClientSession(base) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                status, timed = await request(session)
                latencies.append((timed or time.perf_counter() - started) * 1000)
                errors += status >= 400

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    q = statistics.quantiles(latencies, n=100)
    return {
        "requests_per_s": round(len(latencies) / duration, 1),
        "p50_ms": round(q[49], 3),
        "p99_ms": round(q[98], 3),
        "max_ms": round(max(latencies), 3),
        "errors": errors,
    }


def get(path_fn: Callable[[], str]) -> Request:
    async def request(session: aiohttp.ClientSession) -> tuple[int, float | None]:
        async with session.get(path_fn()) as resp:
            await resp.read()
            return resp.status, None

    return request


def update(big: str, ideas: int, token: str) -> Request:
    """GET for the ETag, then PATCH with If-Match; only the PATCH is timed."""

    async def request(session: aiohttp.ClientSession) -> tuple[int, float | None]:
        url = f"/projects/{big}/ideas/{big}-i{random.randrange(ideas):06d}"
        async with session.get(url) as resp:
            etag = resp.headers["ETag"]
            await resp.read()
        headers = {"If-Match": etag, "Authorization": f"Bearer {token}"}
        body = {"status": random.choice(STATUSES)}
        started = time.perf_counter()
        async with session.patch(url, json=body, headers=headers) as resp:
            await resp.read()
            return resp.status, time.perf_counter() - started

    return request


async def scenarios(base: str, big: str, ideas: int, token: str, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    deep = encode_cursor(["2026-01-01T00:01:39.000Z", f"{big}-i099000"])
    plan = {
        "list first page (50)": get(lambda: f"/projects/{big}/ideas"),
        "list deep page (cursor)": get(lambda: f"/projects/{big}/ideas?cursor={deep}"),
        "list status=open by -priority": get(
            lambda: f"/projects/{big}/ideas?status=open&sort=-priority"
        ),
        "get idea (random)": get(
            lambda: f"/projects/{big}/ideas/{big}-i{random.randrange(ideas):06d}"
        ),
        "update idea (PATCH + If-Match)": update(big, ideas, token),
        "list small project": get(lambda: "/projects/p05/ideas"),
    }
    results = {}
    for name, request in plan.items():
        results[name] = await load(base, request, args.duration, args.concurrency)
        r = results[name]
        print(
            f"{name:<32} {r['requests_per_s']:>8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
            f"p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}"
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ideas", type=int, default=100_000)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=4)
    default_output = ROOT / "bench" / "results" / "projects.json"
    parser.add_argument("--output", type=Path, default=default_output)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bobgen-bench-projects-"))
    db_path = workdir / "bench.db"
    project_ids, build_s = build(db_path, args.projects, args.ideas)
    token = asyncio.run(make_token(db_path))
    print(
        f"built {args.projects} projects, {args.ideas} ideas in {project_ids[0]}: {build_s:.2f} s"
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, *serve_command(db_path, port)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_up(base + "/health", server)
        results = asyncio.run(scenarios(base, project_ids[0], args.ideas, token, args))
        rss = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    worst = max(r["p99_ms"] for r in results.values())
    print(f"worst p99: {worst:.2f} ms (goal < 10 ms); server RSS {rss:.1f} MiB")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "ideas": args.ideas,
                "projects": args.projects,
                "concurrency": args.concurrency,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
