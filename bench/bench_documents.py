"""Documents: initial sync, edit-to-visible lag and search latency over 10,000 files.

    .venv/bin/python bench/bench_documents.py [--files 10000] [--edits 50] [--queries 200]
        [--pg-admin postgresql://postgres@127.0.0.1:5432/postgres] [--sqlite-only]

For each backend: the time to reconcile 10,000 persona files into an empty table, as a ratio
to just reading and parsing them (``scan``, measured in the same run: the ceiling); then a
real ``bobgen serve`` watching the folder, where files are edited one at a time and the time
until ``GET /documents/{id}`` shows the edit is the lag; then one client's latency for
full-text searches and JSON-field filters with random words and values.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import free_port, scratch_database, wait_up  # noqa: E402
from service.config import DEFAULT_MIGRATIONS_DIR  # noqa: E402
from service.db import DatabaseURL, connect  # noqa: E402
from service.db.migrations import apply_migrations  # noqa: E402
from service.documents.sync import reconcile, scan  # noqa: E402
from service.domain.documents import DocumentType, document_id  # noqa: E402

VOCABULARY = [
    "postgres",
    "sqlite",
    "index",
    "vacuum",
    "latency",
    "cache",
    "queue",
    "retry",
    "backoff",
    "deploy",
    "rollback",
    "canary",
    "kernel",
    "network",
    "socket",
    "thread",
    "lock",
    "schema",
    "migration",
    "audit",
    "token",
    "scope",
    "metric",
    "alert",
    "pager",
    "incident",
    "review",
    "design",
    "api",
    "client",
    "server",
    "shard",
    "replica",
    "backup",
    "restore",
    "python",
    "rust",
    "go",
]
# Rarer words, as real text has them: each document gets 10 of 2,000 (each word is then in
# about 50 of the 10,000 documents), beside 40 draws from the common words above (each
# common word is in more than half of the documents: the worst case for ranking).
RARE = [f"topic{i:04d}" for i in range(2000)]
MODELS = ("gpt-4o", "gpt-4o-mini", "claude", "llama", "mistral")
DEBOUNCE_MS = 500


def make_files(root: Path, count: int) -> None:
    rng = random.Random(7)
    personas = root / "personas"
    personas.mkdir(parents=True)
    for i in range(count):
        doc = {
            "name": f"Persona {i:05d}",
            "model": rng.choice(MODELS),
            "role": rng.choice(("assistant", "reviewer", "planner")),
            "expertise": rng.sample(VOCABULARY, 3),
            "system_prompt": " ".join(rng.choices(VOCABULARY, k=40) + rng.sample(RARE, 10)),
        }
        (personas / f"p{i:05d}.json").write_text(json.dumps(doc))


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def initial_sync(url: DatabaseURL, root: Path) -> float:
    apply_migrations(url, DEFAULT_MIGRATIONS_DIR)
    db = connect(url)
    await db.open()
    try:
        started = time.perf_counter()
        report = await reconcile(db, [root], actor="bench")
        elapsed = time.perf_counter() - started
    finally:
        await db.close()
    assert len(report.added) >= 1 and not report.errors, report.counts()
    return elapsed


async def measure_server(base: str, root: Path, files: int, edits: int, queries: int) -> dict:
    rng = random.Random(11)
    async with aiohttp.ClientSession() as session:
        # "With 10,000 documents present": edits start once the start-up reconcile is done.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            async with session.get(f"{base}/health") as resp:
                if (await resp.json()).get("documents", {}).get("state") == "watching":
                    break
            await asyncio.sleep(0.05)
        lags = []
        for n in range(edits):
            i = rng.randrange(files)
            path = root / "personas" / f"p{i:05d}.json"
            doc = json.loads(path.read_text())
            doc["edit"] = marker = f"edit-{n}-{uuid.uuid4().hex[:6]}"
            doc_id = document_id(DocumentType.PERSONA, f"personas/p{i:05d}.json")
            started = time.perf_counter()
            path.write_text(json.dumps(doc))
            while True:
                async with session.get(f"{base}/documents/{doc_id}") as resp:
                    if (await resp.json())["document"].get("edit") == marker:
                        break
                await asyncio.sleep(0.005)
            lags.append((time.perf_counter() - started) * 1000)

        async def timed(path: str) -> float:
            started = time.perf_counter()
            async with session.get(base + path) as resp:
                await resp.read()
                assert resp.status == 200, await resp.text()
            return (time.perf_counter() - started) * 1000

        search = [
            await timed(f"/documents?q={rng.choice(RARE)}+{rng.choice(VOCABULARY)}&limit=20")
            for _ in range(queries)
        ]
        common = [
            await timed(f"/documents?q={rng.choice(VOCABULARY)}+{rng.choice(VOCABULARY)}&limit=20")
            for _ in range(queries)
        ]
        field = [
            await timed(f"/documents?field.model={rng.choice(MODELS)}&limit=20")
            for _ in range(queries)
        ]
    return {
        "lag_ms": {"p50": percentile(lags, 50), "p99": percentile(lags, 99), "max": max(lags)},
        "search_ms": {"p50": percentile(search, 50), "p99": percentile(search, 99)},
        "search_common_words_ms": {"p50": percentile(common, 50), "p99": percentile(common, 99)},
        "field_filter_ms": {"p50": percentile(field, 50), "p99": percentile(field, 99)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results" / "documents.json"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bobgen-bench-documents-"))
    docs = workdir / "documents"
    make_files(docs, args.files)
    scan([docs])  # warm the page cache, as the timed runs will find it
    started = time.perf_counter()
    ceiling = scan([docs])
    ceiling_s = time.perf_counter() - started
    assert len(ceiling.documents) == args.files
    print(f"read and parse {args.files} files: {ceiling_s:.2f} s (the ceiling)")

    targets: dict[str, DatabaseURL] = {"sqlite": DatabaseURL.sqlite(workdir / "bench.db")}
    cleanup = contextlib.ExitStack()
    if not args.sqlite_only:
        targets["postgresql"] = cleanup.enter_context(
            scratch_database(args.pg_admin, "bobgen_bench_docs")
        )
    results: dict[str, Any] = {"files": args.files, "read_and_parse_s": round(ceiling_s, 3)}
    try:
        for backend, url in targets.items():
            sync_s = asyncio.run(initial_sync(url, docs))
            port = free_port()
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            cmd = [sys.executable, "-m", "service", "serve", "--db", url.dsn or str(url.path)]
            cmd += ["--port", str(port), "--seed-rows", "0", "--log-level", "WARNING"]
            cmd += ["--data-dir", str(workdir)]  # its token file goes with the run, not into data/
            cmd += ["--documents-dir", str(docs), "--documents-debounce-ms", str(DEBOUNCE_MS)]
            server = subprocess.Popen(cmd, env=env, cwd=ROOT)
            try:
                wait_up(f"http://127.0.0.1:{port}/health", server, timeout=120)
                measured = asyncio.run(
                    measure_server(
                        f"http://127.0.0.1:{port}", docs, args.files, args.edits, args.queries
                    )
                )
            finally:
                server.terminate()
                server.wait(timeout=60)
            results[backend] = {
                "initial_sync_s": round(sync_s, 3),
                "initial_sync_ratio": round(sync_s / ceiling_s, 2),
                **{k: {q: round(v, 2) for q, v in m.items()} for k, m in measured.items()},
            }
            r = results[backend]
            print(
                f"{backend}: initial sync {sync_s:.2f} s = {r['initial_sync_ratio']}x the ceiling"
                f" (target <= 3x); lag p50 {r['lag_ms']['p50']} ms, p99 {r['lag_ms']['p99']} ms"
                f" (target <= {DEBOUNCE_MS + 250}); search p99 {r['search_ms']['p99']} ms"
                f" (two common words: {r['search_common_words_ms']['p99']} ms),"
                f" field filter p99 {r['field_filter_ms']['p99']} ms (target < 10)"
            )
    finally:
        cleanup.close()  # drops the PostgreSQL database
        shutil.rmtree(workdir, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
