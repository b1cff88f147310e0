"""Soak test (not a unit test): mixed reads and writes at ~70 % of the measured maximum.

    .venv/bin/python bench/soak.py [--minutes 10] [--rows 100000] [--load 0.7]
        [--rate N] [--readers N] [--backend sqlite|postgresql] [--pg-admin URL] [--pin]
        [--against bobgen|baseline|inline]
    make soak [MODE=postgresql] [SOAK_ARGS=...]

Seeds a fresh database (a SQLite file, or a new PostgreSQL database dropped afterwards),
starts a real ``bobgen serve``, measures the maximum rate of the mixed workload (closed loop,
50 clients, 10 s, the median of three), then drives it open-loop at ``--load`` times that
rate (or at ``--rate``) for 30 s of warm-up and then ``--minutes``, minute by minute. It
passes (exit 0) when, for every minute:

* p99 latency stays within 1.5x of the first minute's p99, p50 within 2x of its p50,
* the process's own memory (RssAnon) has grown by less than 10 % over the first minute's
  (VmRSS is reported too; it also counts the mmap'ed database file, which writes enlarge),
* the WAL stays under its size limit (64 MiB, ``journal_size_limit``) plus one checkpoint's
  worth of slack (SQLite),
* no request failed.

Each minute also records what the server's /metrics say of its database (waits, transaction
and read times, checkpoints, garbage collections) and the CPU the server, the machine and
the host took; on PostgreSQL also the statements its backends were busiest with
(``pg_busiest``, sampled from ``pg_stat_activity``).

``--pin`` puts the server (with its threads and workers) on the last core and the load
generator on the others, so that the load's CPU does not delay the server's, nor the
server's the load's (PostgreSQL's own processes are not pinned).

``--against baseline`` soaks ``bench/baseline_mixed.py`` (the hand-tuned reader and the
minimal writer in one process) instead of BobGen, on a SQLite file: the same load, the same
checks, no /metrics to trace. ``--against inline`` soaks the same handlers with every query
run on the event loop's thread, so that its maximum is bound by its CPU, as BobGen's is.

Mix: 45 % random-offset pages, 35 % rows by random id, 20 % authenticated writes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_backends import prepare  # noqa: E402
from loadgen import HttpPool, ProtocolError  # noqa: E402

from bench import (  # noqa: E402
    POST_BODY,
    free_port,
    rss_mib,
    scratch_database,
    seed,
    serve_command,
    wait_up,
)

BODY = POST_BODY.encode()
WAL_LIMIT = 64 * 1024 * 1024
WAL_SLACK = 16 * 1024 * 1024


def wal_bytes(db: Path | None) -> int:
    """The SQLite WAL's size (0 for PostgreSQL, whose WAL is the server's business)."""
    if db is None:
        return 0
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def server_tree(pid: int) -> list[int]:
    """The server and, with ``--workers``, its workers (the children of its supervisor)."""
    members = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                members.append(int(stat.parent.name))
    return members


def tree_rss_mib(pid: int, field: str = "VmRSS") -> float:
    return sum(rss_mib(member, field) for member in server_tree(pid))


def cpu_times(pid: int) -> tuple[float, float, float]:
    """(the server's CPU seconds, the machine's busy and stolen CPU seconds) so far: a bad
    minute with the machine busier, or CPU stolen by the host, is not the server's doing."""
    tick = os.sysconf("SC_CLK_TCK")
    server = 0.0
    for member in server_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            server += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = cpu[3] + cpu[4]  # idle + iowait
    steal = cpu[7] if len(cpu) > 7 else 0
    return server, (sum(cpu[:8]) - idle - steal) / tick, steal / tick


def pick(rows: int) -> tuple[str, str]:
    roll = random.random()
    if roll < 0.45:
        return "GET", f"/bobgen/status?offset={random.randint(0, 1000)}"
    if roll < 0.80:
        return "GET", f"/bobgen/status/{random.randint(1, rows)}"
    return "POST", "/bobgen/status"


async def one(pool: HttpPool, method: str, path: str) -> tuple[float, bool]:
    started = time.perf_counter()
    try:
        status = await pool.request(method, path, BODY if method == "POST" else b"")
        ok = status < 400
    except (OSError, ProtocolError):
        ok = False
    return (time.perf_counter() - started) * 1000, ok


MAX_RUNS = 3  # closed-loop measurements of the maximum; the soak takes their median


async def max_rate(pool: HttpPool, rows: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await one(pool, *pick(rows))
            done += 1

    await asyncio.gather(*(client() for _ in range(50)))
    return done / seconds


async def open_loop(
    pool: HttpPool, rows: int, rate: float, seconds: float
) -> tuple[list[float], int]:
    """Send at ``rate`` per second regardless of answers (no coordinated omission)."""
    latencies: list[float] = []
    errors = 0
    tasks: set[asyncio.Task[tuple[float, bool]]] = set()

    def collect(task: asyncio.Task[tuple[float, bool]]) -> None:
        nonlocal errors
        tasks.discard(task)
        latency, ok = task.result()
        latencies.append(latency)
        errors += not ok

    start = time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) - start < seconds:
        due = int((now - start) * rate)
        for _ in range(due - sent):
            task = asyncio.ensure_future(one(pool, *pick(rows)))
            task.add_done_callback(collect)
            tasks.add(task)
        sent = max(sent, due)
        await asyncio.sleep(0.002)
    if tasks:
        await asyncio.wait(tasks)
    return latencies, errors


# What the server says of its database each minute (issue 17: name the cause of a stall).
TRACED = (
    "bobgen_db_write_queue_wait_seconds",
    "bobgen_db_transaction_seconds",
    "bobgen_db_checkpoint_seconds",
    "bobgen_db_pool_wait_seconds",
    "bobgen_db_read_seconds",
)
COUNTED_READS = (
    "status.count",
    "status.count_up_to",
    "status.count_settled",
    "status.count_since",
)


class ActivitySampler:
    """What PostgreSQL's backends of the soak's database are busy with: ``pg_stat_activity``
    every 50 ms on a thread, active backends counted by wait event and statement; each minute
    reports the statements that took the most samples (as a share of samples: 1.0 is one
    backend busy all the time). This is how the table scan on every commit was found."""

    def __init__(self, admin_dsn: str, database: str) -> None:
        import threading

        self._dsn, self._database = admin_dsn, database
        self._counts: collections.Counter[str] = collections.Counter()
        self._samples = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ActivitySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self._dsn, autocommit=True) as conn:
            while not self._stop.wait(0.05):
                rows = conn.execute(
                    "SELECT coalesce(wait_event, ''), left(regexp_replace(query, '\\s+', ' ', 'g'),"
                    " 70) FROM pg_stat_activity WHERE datname = %s AND state = 'active'"
                    " AND pid <> pg_backend_pid()",
                    (self._database,),
                ).fetchall()
                with self._lock:
                    self._samples += 1
                    self._counts.update(f"{wait or 'CPU'}: {query}" for wait, query in rows)

    def minute(self) -> list[tuple[str, float]]:
        """The top statements since the last call, as shares of the samples."""
        with self._lock:
            counts, samples = self._counts, max(self._samples, 1)
            self._counts, self._samples = collections.Counter(), 0
        return [(what, round(n / samples, 3)) for what, n in counts.most_common(3)]


async def scrape(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """Every sample of /metrics, by its full name with labels."""
    async with session.get(base + "/metrics") as resp:
        text = await resp.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def quantile_ms(before: dict[str, float], after: dict[str, float], name: str, q: float) -> float:
    """The ``q`` quantile over the minute, from the histogram's bucket counts summed over its
    labels (the bucket's upper bound, as Prometheus' histogram_quantile would bracket it), ms."""
    counts: dict[float, float] = {}
    for key in after:
        if key.startswith(name + "_bucket{"):
            bound = float(re.search(r'le="([^"]+)"', key).group(1))  # type: ignore[union-attr]
            counts[bound] = counts.get(bound, 0.0) + after[key] - before.get(key, 0.0)
    buckets = sorted(counts.items())
    total = buckets[-1][1] if buckets else 0.0
    for bound, count in buckets:
        if total and count >= q * total:
            return round(bound * 1000, 2)
    return float("nan")


def trace(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    row = {
        f"{name.removeprefix('bobgen_db_')}_p99_ms": quantile_ms(before, after, name, 0.99)
        for name in TRACED
    }
    for result in ("complete", "partial", "failed"):
        key = f'bobgen_db_checkpoints_total{{result="{result}"}}'
        row[f"checkpoints_{result}"] = after.get(key, 0.0) - before.get(key, 0.0)
    row["batch_largest"] = after.get("bobgen_db_write_batch_largest", 0.0)
    # The status total's statements (full count, settled range, tail): how many ran this minute
    # and their time, so overlapping recounts show up as a count far above one per refresh.
    for operation in COUNTED_READS:
        series = f'bobgen_db_read_seconds_{{}}{{{{operation="{operation}"}}}}'
        name = operation.removeprefix("status.")
        row[f"{name}_n"] = after.get(series.format("count"), 0.0) - before.get(
            series.format("count"), 0.0
        )
        row[f"{name}_s"] = round(
            after.get(series.format("sum"), 0.0) - before.get(series.format("sum"), 0.0), 2
        )
    # The garbage collector's stops: how many full walks this minute, their time, the longest.
    full = 'bobgen_gc_pause_seconds_{}{{generation="2"}}'
    row["gc_full_collections"] = after.get(full.format("count"), 0.0) - before.get(
        full.format("count"), 0.0
    )
    row["gc_full_ms"] = round(
        (after.get(full.format("sum"), 0.0) - before.get(full.format("sum"), 0.0)) * 1000, 1
    )
    row["gc_pause_max_ms"] = quantile_ms(before, after, "bobgen_gc_pause_seconds", 1.0)
    # The server's event loop held up (anything, not only the database): its worst this minute.
    row["loop_lag_max_ms"] = quantile_ms(before, after, "bobgen_event_loop_lag_seconds", 1.0)
    return row


class ClientLag:
    """How late the soak's own event loop ran a 10 ms timer: a late client delays sending and
    reading, which would otherwise count as the server's latency. Reported per minute."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - due)

    def minute(self) -> float:
        worst, self.worst = self.worst, 0.0
        return round(worst * 1000, 1)


async def soak(
    args: argparse.Namespace,
    base: str,
    token: str,
    server_pid: int,
    db: Path | None,
    activity: ActivitySampler | None = None,
) -> dict:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    port = int(base.rsplit(":", 1)[1])
    # The load goes through the lean client (bench/loadgen.py); /metrics through aiohttp.
    pool = HttpPool("127.0.0.1", port, {**headers, "Connection": "keep-alive"})
    async with aiohttp.ClientSession(headers=headers) as session:
        # The median of three: one 10 s measurement on this 2-core host came out anywhere from
        # 868 to 1,526 req/s for the same server, and 70 % of an outlier is no longer 70 %.
        maxima = [await max_rate(pool, args.rows, 10) for _ in range(MAX_RUNS)]
        maximum = statistics.median(maxima)
        # A fixed --rate compares two servers (or settings) at the same offered load; the
        # default, a fraction of this run's own maximum, is what the targets are stated in.
        rate = args.rate or maximum * args.load
        print(
            f"measured maximum {maximum:.0f} req/s (median of {[round(m) for m in maxima]}); "
            f"soaking at {rate:.0f} req/s",
            flush=True,
        )
        await open_loop(pool, args.rows, rate, 30)  # warm-up: not counted
        client_lag = ClientLag()
        watching = asyncio.create_task(client_lag.watch())
        minutes = []
        metrics = args.against == "bobgen"  # the baseline has no /metrics
        seen = await scrape(session, base) if metrics else {}
        cpu_seen = cpu_times(server_pid)
        for minute in range(1, args.minutes + 1):
            latencies, errors = await open_loop(pool, args.rows, rate, 60)
            wal = wal_bytes(db)
            now = await scrape(session, base) if metrics else {}
            database, seen = (trace(seen, now) if metrics else {}), now
            cpu_now = cpu_times(server_pid)
            used = [b - a for a, b in zip(cpu_seen, cpu_now, strict=True)]
            server_cpu, machine_cpu, stolen = used
            cpu_seen = cpu_now
            q = statistics.quantiles(latencies, n=100)
            row = {
                "minute": minute,
                "requests": len(latencies),
                "errors": errors,
                "p50_ms": round(q[49], 2),
                "p99_ms": round(q[98], 2),
                "rss_mib": round(tree_rss_mib(server_pid), 1),
                "rss_anon_mib": round(tree_rss_mib(server_pid, "RssAnon"), 1),
                "wal_mib": round(wal / 2**20, 1),
                "server_cpu_pct": round(100 * server_cpu / 60),
                "machine_cpu_pct": round(100 * machine_cpu / 60 / (os.cpu_count() or 1)),
                "stolen_cpu_pct": round(100 * stolen / 60 / (os.cpu_count() or 1), 1),
                **database,
            }
            row["client_lag_max_ms"] = client_lag.minute()
            if activity is not None:
                row["pg_busiest"] = activity.minute()
            minutes.append(row)
            print(json.dumps(row), flush=True)
    first = minutes[0]
    checks = {
        "p99_within_1.5x_of_first_minute": all(
            m["p99_ms"] <= 1.5 * first["p99_ms"] for m in minutes
        ),
        "p50_within_2x_of_first_minute": all(m["p50_ms"] <= 2 * first["p50_ms"] for m in minutes),
        # The process's own memory: VmRSS also grows with the mmap'ed database file, which the
        # soak's writes enlarge by design (reported, not judged).
        "rss_growth_below_10pct": all(
            m["rss_anon_mib"] < 1.10 * first["rss_anon_mib"] for m in minutes
        ),
        "wal_under_limit": all(m["wal_mib"] * 2**20 <= WAL_LIMIT + WAL_SLACK for m in minutes),
        "no_errors": all(m["errors"] == 0 for m in minutes),
    }
    watching.cancel()
    pool.close()
    return {
        "backend": args.backend,
        "against": args.against,
        "max_rate": round(maximum, 1),
        "max_rates": [round(m, 1) for m in maxima],
        "rate": round(rate, 1),
        "load": args.load,
        "minutes": minutes,
        "checks": checks,
        "ok": all(checks.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--load", type=float, default=0.7, help="fraction of the maximum rate")
    parser.add_argument("--rate", type=float, help="offered requests/s (instead of --load)")
    parser.add_argument("--readers", type=int, help="the server's --read-connections")
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the server (and its workers) on the last core, this load generator on the others",
    )
    parser.add_argument(
        "--against",
        choices=("bobgen", "baseline", "inline"),
        default="bobgen",
        help="the server soaked: BobGen, or bench/baseline_mixed.py (SQLite only; inline: "
        "its queries on the event loop's thread)",
    )
    args = parser.parse_args()
    if args.against != "bobgen" and args.backend != "sqlite":
        parser.error(f"--against {args.against} soaks a SQLite file")
    server_cores: set[int] | None = None
    if args.pin:
        # On a small host the load generator otherwise competes with the server for the same
        # cores, and its own delays count as the server's latency (docs/performance.md).
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            parser.error("--pin needs at least two cores")
        server_cores = {cores[-1]}
        os.sched_setaffinity(0, set(cores[:-1]))
    workdir = Path(tempfile.mkdtemp(prefix="bobgen-soak-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        db: Path | None = workdir / "soak.db"
        if args.backend == "postgresql":
            url = cleanup.enter_context(scratch_database(args.pg_admin, "bobgen_soak"))
            target, db = url.dsn, None
            _, token = asyncio.run(prepare(url, args.rows))
        else:
            assert db is not None
            target = str(db)
            _, token = asyncio.run(seed(db, args.rows, 5000))
        port = free_port()
        extra = ["--read-connections", str(args.readers)] if args.readers else []
        extra += ["--workers", str(args.workers)]
        command = serve_command(target, port, *extra)
        if args.against != "bobgen":
            command = [str(ROOT / "bench" / "baseline_mixed.py"), str(port), target]
            command += ["--inline"] if args.against == "inline" else []
        server = subprocess.Popen(
            [sys.executable, *command],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            # Before the server starts any thread, so that every thread and worker inherits it.
            preexec_fn=(lambda: os.sched_setaffinity(0, server_cores)) if server_cores else None,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_up(base + "/readyz", server)
            with contextlib.ExitStack() as sampling:
                activity = None
                if db is None:
                    name = target.rsplit("/", 1)[1]  # the scratch database
                    activity = sampling.enter_context(ActivitySampler(args.pg_admin, name))
                report = asyncio.run(soak(args, base, token, server.pid, db, activity))
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(json.dumps(report["checks"], indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"{'PASS' if report['ok'] else 'FAIL'}; written to {args.output}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
