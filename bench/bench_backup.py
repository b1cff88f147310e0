"""Backups under load: p99 of concurrent requests with and without online backups running.

    .venv/bin/python bench/bench_backup.py [--rows 100000] [--duration 20]

Serves a seeded SQLite database and measures, with wrk, rows by random id (reads) and POSTs
(writes) side by side for ``--duration`` seconds twice: once quiet, once while ``bobgen db
backup`` runs back to back (each a verified copy of the whole database). Reports each p99 and
the ratio (issue 17's target: at most 2x), and how long the backups took.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (
    ROOT,
    free_port,
    lua,
    run_wrk,
    seed,
    serve_command,
    start,
    wait_up,
)


def measure(base: str, rows: int, token: str, duration: int) -> dict[str, tuple[float, float]]:
    """(req/s, p99 ms) of reads and writes, run at the same time."""
    results: dict[str, tuple[float, float]] = {}

    def load(name: str, script: str, connections: int) -> None:
        rps, _, p99, errors = run_wrk(base + "/bobgen/status", duration, connections, script)
        assert errors == 0, (name, errors)
        results[name] = (rps, p99)

    auth = f"wrk.headers['Authorization'] = 'Bearer {token}'\n"
    threads = [
        threading.Thread(
            target=load, args=("reads", lua(f"'/bobgen/status/' .. math.random(1, {rows})"), 20)
        ),
        threading.Thread(target=load, args=("writes", lua("'/bobgen/status'", post=auth), 10)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=20)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (Debian package wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="bobgen-bench-backup-"))
    db = workdir / "bench.db"
    _, token = asyncio.run(seed(db, args.rows, 5_000))
    port = free_port()
    env = {**os.environ, "BOBGEN_SHUTDOWN_GRACE_S": "0"}
    server = start(
        serve_command(db, port),
        env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(base + "/livez", server)
        quiet = measure(base, args.rows, token, args.duration)
        stop, durations = threading.Event(), []

        def back_up() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                target = workdir / f"backup-{n}.db"
                started = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "service", "db", "backup", str(target), "--db", str(db)],
                    check=True,
                    capture_output=True,
                    cwd=ROOT,
                )
                durations.append(time.perf_counter() - started)
                target.unlink()

        backups = threading.Thread(target=back_up)
        backups.start()
        busy = measure(base, args.rows, token, args.duration)
        stop.set()
        backups.join()
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{args.rows} rows, {args.duration} s per run, reads 20 + writes 10 connections")
    for name in ("reads", "writes"):
        (q_rps, q_p99), (b_rps, b_p99) = quiet[name], busy[name]
        print(
            f"  {name:<6} quiet {q_rps:8.0f} req/s p99 {q_p99:7.2f} ms | during backups "
            f"{b_rps:8.0f} req/s p99 {b_p99:7.2f} ms | p99 ratio {b_p99 / q_p99:.2f}x"
        )
    if durations:
        print(
            f"  backups: {len(durations)} taken back to back, "
            f"{min(durations):.2f}-{max(durations):.2f} s each (CLI process start included)"
        )


if __name__ == "__main__":
    main()
