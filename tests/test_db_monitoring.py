"""Database monitoring (issue 17, item 3, the write path): what a slow write waited for is in
/metrics on both backends: the wait for the writer (or a pooled connection), group-commit
batch sizes, transaction time and each operation's time. Label values are operation names
(functions of the code), never SQL or data."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.keys import DB_KEY
from tests.helpers import VALID
from tests.support import eventually


def samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of every sample of ``name`` (its _bucket, _sum, _count series)."""
    found = {}
    for line in text.splitlines():
        match = re.match(rf"^{name}(_bucket|_sum|_count)?(\{{[^}}]*\}})? (\S+)$", line)
        if match:
            found[(match.group(1) or "") + (match.group(2) or "")] = float(match.group(3))
    return found


async def test_the_write_path_is_measured(client: TestClient, backend: str) -> None:
    writes = [client.post("/bobgen/status", json=VALID) for _ in range(30)]
    assert [r.status for r in await asyncio.gather(*writes)] == [201] * 30
    run = await client.post("/runs", json={})
    assert run.status == 201
    text = await (await client.get("/metrics")).text()

    waits = samples(text, "bobgen_db_write_queue_wait_seconds")
    assert waits["_count"] >= 31 and waits['_bucket{le="+Inf"}'] == waits["_count"]
    batches = samples(text, "bobgen_db_write_batch_size")
    transactions = samples(text, "bobgen_db_transaction_seconds")
    assert transactions["_count"] == batches["_count"] >= 1
    if backend == "postgresql":  # a transaction per unit
        assert batches['_bucket{le="1.0"}'] == batches["_count"]
    units = samples(text, "bobgen_db_unit_seconds")
    operations = set(re.findall(r'operation="([^"]+)"', " ".join(units)))
    assert {"create_status", "create_run"} <= operations, operations
    assert units['_count{operation="create_status"}'] == 30
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", op) for op in operations)
    if backend == "sqlite":
        assert "bobgen_db_write_queue_depth 0.0" in text


async def test_pools_and_checkpoints_are_measured(make_client: Any, backend: str) -> None:
    client: TestClient = await make_client(checkpoint_interval_s=0.05)
    reads = [client.get("/bobgen/status?limit=5") for _ in range(20)]
    assert all(r.status == 200 for r in await asyncio.gather(*reads))
    assert (await client.post("/bobgen/status", json=VALID)).status == 201

    async def text() -> str:
        return await (await client.get("/metrics")).text()

    first = await text()
    assert samples(first, "bobgen_db_pool_connections")[""] >= 1

    async def nobody_waiting() -> bool:  # the tokens' last-use write may be borrowing now
        return samples(await text(), "bobgen_db_pool_waiting")[""] == 0

    await eventually(nobody_waiting, what="no caller waiting for a pooled connection")
    assert "_count" in samples(first, "bobgen_db_pool_wait_seconds")
    assert samples(first, "bobgen_db_connection_errors_total")[""] == 0
    reads = samples(first, "bobgen_db_read_seconds")
    assert reads['_count{operation="status.fetch_page"}'] >= 1  # (identical pages share one)
    operations = set(re.findall(r'operation="([^"]+)"', " ".join(reads)))
    assert all(re.fullmatch(r"[a-z_]+\.[A-Za-z_][\w.]*", op) for op in operations), operations
    if backend == "sqlite":  # every read waits in the readers' queue, however briefly
        read_count = sum(v for k, v in reads.items() if k.startswith("_count"))
        assert samples(first, "bobgen_db_pool_wait_seconds")["_count"] >= read_count

        async def checkpointed() -> bool:
            done = samples(await text(), "bobgen_db_checkpoints_total")
            return done['{result="complete"}'] + done['{result="partial"}'] >= 1

        await eventually(checkpointed, what="a background checkpoint counted")
        assert samples(await text(), "bobgen_db_checkpoint_seconds")["_count"] >= 1
    else:
        assert "bobgen_db_checkpoints_total" not in first


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite's readers: test_database.py
async def test_pool_waiting_counts_callers_that_found_no_connection_free(
    make_client: Any, backend: str
) -> None:
    """The pool-exhausted alert reads ``bobgen_db_pool_waiting``: a caller that takes an idle
    connection is not waiting (counting it made the gauge 1 whenever a background task was
    borrowing at scrape time), one that finds none free is, until it gets one."""
    client: TestClient = await make_client(pg_pool_size=1)
    db = client.app[DB_KEY]
    assert await db.fetchall("SELECT 1") == [(1,)]
    assert db.pool_state().waiting == 0  # it found the idle connection
    holding = asyncio.ensure_future(db.fetchall("SELECT pg_sleep(0.5)"))
    await eventually(lambda: db.pool_state().in_use == 1, what="the only connection taken")
    second = asyncio.ensure_future(db.fetchall("SELECT 2"))
    await eventually(lambda: db.pool_state().waiting == 1, what="the second caller waiting")
    assert await second == [(2,)]
    await holding
    assert db.pool_state().waiting == 0
