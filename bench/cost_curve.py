"""CPU per request at several offered loads: what a request costs at a moderate load against
under a deep queue (docs/performance.md, "Why 70 % of the maximum is 80-90 % of the CPU").

    .venv/bin/python bench/cost_curve.py [--rates 500,1000,2000,max] [--seconds 15]
        [--against bobgen|bare] [--no-pin] [-- SERVER ARGS...]

Seeds 100,000 rows in a SQLite file, starts ``bobgen serve`` (or ``bench/baseline_app.py``
with ``--against bare``) on the last core and this load generator on the others (unless
``--no-pin``), then sends the soak's mix (bench/soak.py) open-loop at each rate, ``max``
being closed loop with 50 clients. For each it prints the server's CPU (by thread: the
event loop's, the other threads') in µs per request, its voluntary context switches, and with
BobGen its database reads and transactions per request, from /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from loadgen import HttpPool  # noqa: E402
from soak import max_rate, open_loop, scrape  # noqa: E402

from bench import free_port, seed, serve_command, wait_up  # noqa: E402

ROWS = 100_000
COUNTED = re.compile(r"^bobgen_db_(read|transaction)_seconds_count(\{[^}]*\})?$")


def threads(pid: int) -> dict[str, tuple[float, int]]:
    """CPU seconds and voluntary context switches so far: the event loop's thread (the main
    one) and the others together (readers, writer, checkpointer: Python 3.11 does not name
    threads where /proc shows them)."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[str, tuple[float, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            name = "event loop" if task.name == str(pid) else "other threads"
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
            switches = int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
            cpu, seen = (int(fields[11]) + int(fields[12])) / tick, found.get(name, (0.0, 0))
            found[name] = (seen[0] + cpu, seen[1] + switches)
    return found


def database_counts(samples: dict[str, float]) -> dict[str, float]:
    """Reads by operation and transactions so far, from BobGen's /metrics samples."""
    return {
        name.replace("bobgen_db_", "").replace("_seconds_count", ""): value
        for name, value in samples.items()
        if COUNTED.match(name)
    }


async def measure(
    base: str, token: str, pid: int, rates: list[str], seconds: float, bobgen: bool
) -> None:
    port = int(base.rsplit(":", 1)[1])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    pool = HttpPool("127.0.0.1", port, {**headers, "Connection": "keep-alive"})
    session = aiohttp.ClientSession()
    await open_loop(pool, ROWS, 500, 5)  # warm-up
    for rate in rates:
        counts = database_counts(await scrape(session, base)) if bobgen else {}
        before, started = threads(pid), time.perf_counter()
        if rate == "max":
            served = await max_rate(pool, ROWS, seconds) * seconds
        else:
            latencies, _ = await open_loop(pool, ROWS, float(rate), seconds)
            served = len(latencies)
        elapsed, after = time.perf_counter() - started, threads(pid)
        cpu = {n: after[n][0] - before[n][0] for n in after if n in before}
        switches = {n: after[n][1] - before[n][1] for n in after if n in before}
        line = f"{rate:>6}: {served / elapsed:7.0f} req/s, CPU {sum(cpu.values()) / elapsed:4.0%}"
        line += f", {sum(cpu.values()) / served * 1e6:4.0f} µs/request"
        busy = {n: c for n, c in cpu.items() if c > 0.02 * elapsed}
        line += "".join(
            f"; {n} {busy[n] / served * 1e6:.0f} µs, {switches[n] / served:.1f} sw" for n in busy
        )
        print(line, flush=True)
        if bobgen:
            now = database_counts(await scrape(session, base))
            per = {k: (now[k] - counts.get(k, 0.0)) / served for k in now}
            print("        per request: " + ", ".join(f"{k} {v:.3f}" for k, v in per.items() if v))
    pool.close()
    await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,1000,2000,max")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--against", choices=("bobgen", "bare"), default="bobgen")
    parser.add_argument("--no-pin", action="store_true", help="leave every process unpinned")
    parser.add_argument("server_args", nargs="*", help="more arguments for bobgen serve")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cores) > 1
    if pin:
        os.sched_setaffinity(0, set(cores[:-1]))
    workdir = Path(tempfile.mkdtemp(prefix="bobgen-cost-"))
    try:
        db = workdir / "cost.db"
        _, token = asyncio.run(seed(db, ROWS, 5000))
        port = free_port()
        command = serve_command(db, port, *args.server_args)
        if args.against == "bare":
            command = [str(ROOT / "bench" / "baseline_app.py"), str(port)]
        server = subprocess.Popen(
            [sys.executable, *command],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            preexec_fn=(lambda: os.sched_setaffinity(0, {cores[-1]})) if pin else None,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_up(base + ("/readyz" if args.against == "bobgen" else "/"), server)
            rates = args.rates.split(",")
            bobgen = args.against == "bobgen"
            asyncio.run(measure(base, token, server.pid, rates, args.seconds, bobgen))
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
