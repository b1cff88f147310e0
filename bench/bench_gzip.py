"""Compression and the other HTTP conventions: what they cost clients that do not ask for gzip.

    .venv/bin/python bench/bench_gzip.py [--old-commit f4da26f] [--seconds 8] [--rounds 3]

Runs this checkout's server and one from ``--old-commit`` (before the conventions middleware:
request ids, ETags, compression, Link headers; a git worktree made for the run) on copies of
one seeded SQLite file, alternately, under wrk: first pages (``/bobgen/status?limit=N`` with
N varied from 451 to 500 so identical requests do not coalesce) with no ``Accept-Encoding``,
then the new server again with ``Accept-Encoding: gzip``. Reports the throughput ratio
new/old for clients that do not ask (target >= 0.97), the bytes a page takes both ways and
the throughput for clients that ask.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import free_port, run_wrk, seed, wait_up  # noqa: E402

VARIED_FIRST_PAGES = (
    "math.randomseed(7)\n"
    "request = function()\n"
    "  return wrk.format('GET', '/bobgen/status?limit=' .. math.random(451, 500), HEADERS)\n"
    "end\n"
)


def script(accept_gzip: bool) -> str:
    headers = '{["Accept-Encoding"] = "gzip"}' if accept_gzip else "{}"
    return f"HEADERS = {headers}\n" + VARIED_FIRST_PAGES


def serve(root: Path, db: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "service", "serve", "--db", str(db), "--port", str(port)]
    cmd += ["--seed-rows", "0", "--log-level", "WARNING"]
    return subprocess.Popen(cmd, cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin"})


def page_bytes(url: str) -> tuple[int, int]:
    plain = urllib.request.urlopen(urllib.request.Request(url)).read()
    asked = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(asked) as resp:
        body = resp.read()
        assert resp.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == plain
    return len(plain), len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-commit", default="f4da26f")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "gzip.json")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bobgen-bench-gzip-"))
    old_root = workdir / "old"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(old_root), args.old_commit],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        db = workdir / "new.db"
        asyncio.run(seed(db, 2000, 1000))
        old_db = workdir / "old.db"
        shutil.copy(db, old_db)
        runs: dict[str, list[float]] = {"old": [], "new": [], "new_gzip": []}
        for round_ in range(args.rounds):
            order = ("old", "new") if round_ % 2 == 0 else ("new", "old")
            for which in (*order, "new_gzip"):
                root, path = (old_root, old_db) if which == "old" else (ROOT, db)
                port = free_port()
                server = serve(root, path, port)
                try:
                    base = f"http://127.0.0.1:{port}"
                    wait_up(base + "/health", server)
                    url = base + "/bobgen/status?limit=500"
                    run_wrk(url, 2, args.connections, script(which == "new_gzip"))  # warm-up
                    rps, _, _, bad = run_wrk(
                        url, args.seconds, args.connections, script(which == "new_gzip")
                    )
                    assert bad == 0
                    runs[which].append(rps)
                    if which == "new_gzip" and round_ == 0:
                        plain, compressed = page_bytes(url)
                finally:
                    server.terminate()
                    server.wait(timeout=30)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old_root)], cwd=ROOT)
        shutil.rmtree(workdir, ignore_errors=True)
    median = {k: statistics.median(v) for k, v in runs.items()}
    results = {
        "rps_median": {k: round(v, 1) for k, v in median.items()},
        "rps_runs": runs,
        "ratio_new_to_old_without_gzip": round(median["new"] / median["old"], 3),
        "ratio_gzip_to_plain_throughput": round(median["new_gzip"] / median["new"], 3),
        "page_bytes": {"plain": plain, "gzip": compressed},
        "bytes_saved_ratio": round(1 - compressed / plain, 3),
    }
    print(json.dumps(results, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
