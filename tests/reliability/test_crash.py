"""kill -9 under concurrent writers: what was acknowledged is what survived.

The client keeps a ledger of every write the server answered 201, then the server is killed
mid-load without warning. After a restart, every acknowledged write must be in the database,
and the audit log must hold exactly one row per write that exists (acknowledged or not: a
write in flight at the kill may have committed without its answer getting out).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

import aiohttp
import pytest

from tests.support.ledger import (
    WRITE_HEADERS,
    audit_ids,
    integrity,
    rows_by_version,
    status_body,
)

WRITERS = 50
ACKS_BEFORE_KILL = 1500


async def write_until_killed(
    url: str, ledger: dict[str, int], stop: asyncio.Event, enough: asyncio.Event
) -> Counter[str]:
    """50 concurrent writers, each posting unique markers, recording every 201."""
    outcomes: Counter[str] = Counter()
    sequence = itertools.count()
    connector = aiohttp.TCPConnector(limit=WRITERS)
    async with aiohttp.ClientSession(connector=connector, headers=WRITE_HEADERS) as session:

        async def writer() -> None:
            while not stop.is_set():
                marker = f"crash-{next(sequence)}"
                try:
                    async with session.post(url, json=status_body(marker)) as resp:
                        if resp.status == 201:
                            ledger[marker] = (await resp.json())["id"]
                            if len(ledger) >= ACKS_BEFORE_KILL:
                                enough.set()
                        outcomes[str(resp.status)] += 1
                except (TimeoutError, aiohttp.ClientError):
                    outcomes["connection lost"] += 1
                    if stop.is_set():
                        return
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(writer() for _ in range(WRITERS)))
    return outcomes


@pytest.mark.slow
@pytest.mark.parametrize(
    "batching",
    [
        pytest.param([], id="default-group-commit"),
        # The largest batches: up to 64 units and up to 5 ms of waiting for more.
        pytest.param(["--write-batch-max", "64", "--write-batch-wait-ms", "5"], id="largest"),
    ],
)
async def test_acknowledged_writes_survive_kill_9(make_server: Any, batching: list[str]) -> None:
    server = await make_server(*batching)
    ledger: dict[str, int] = {}
    stop, enough = asyncio.Event(), asyncio.Event()
    load = asyncio.ensure_future(
        write_until_killed(server.url + "/bobgen/status", ledger, stop, enough)
    )
    await asyncio.wait_for(enough.wait(), 30)  # well into the load before pulling the plug
    largest_batch = await server.metric("bobgen_db_write_batch_largest")
    server.kill9()
    await server.wait_exit()
    stop.set()
    outcomes = await load
    assert outcomes["500"] == 0

    await server.start()  # recovery: the WAL is replayed by SQLite on open
    stored = rows_by_version(server.db_path, "crash-")
    lost = {marker: row_id for marker, row_id in ledger.items() if stored.get(marker) != row_id}
    assert lost == {}, f"{len(lost)} acknowledged writes lost"
    audited = Counter(audit_ids(server.db_path))
    assert set(audited) == set(stored.values())  # every stored write has its audit row...
    assert max(audited.values()) == 1  # ...exactly one
    assert integrity(server.db_path) == ["ok"]
    assert largest_batch > 1  # the load really was group-committed
    if batching:
        assert largest_batch >= 8
