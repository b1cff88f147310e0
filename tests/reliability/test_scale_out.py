"""Several ``bobgen serve`` processes on one PostgreSQL database (docs/scale-out.md).

Two real servers start at once on an empty database: migrations run exactly once, the seed
runs in one of them and survives that one being killed with SIGKILL (the other takes over and
ends with exactly the target count), writers on both lose nothing that was acknowledged, and
optimistic locking holds across instances.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.db import DatabaseURL
from tests.backends import sql
from tests.helpers import ALL_MIGRATIONS
from tests.support import eventually
from tests.support.auth import ADMIN_TOKEN, bearer, plant_test_tokens
from tests.support.server import Server

pytestmark = pytest.mark.slow

SEED_ROWS = 40_000
HEADERS = bearer(ADMIN_TOKEN)
RUNNING, ELSEWHERE, COMPLETE = (
    f'bobgen_seed_state{{state="{s}"}}' for s in ("running", "elsewhere", "complete")
)


async def start_pair(url: DatabaseURL, tmp_path: Path, *args: str) -> list[Server]:
    servers = [Server(tmp_path / f"instance-{i}.db", list(args), db=url.dsn) for i in range(2)]
    await asyncio.gather(*(s.start(wait=False) for s in servers))  # both migrate at once
    await asyncio.gather(*(s.wait_healthy(timeout=60) for s in servers))
    return servers


async def _metric_is(server: Server, name: str, value: float) -> bool:
    return await server.metric(name) == value


async def health(session: aiohttp.ClientSession, server: Server) -> dict[str, Any]:
    async with session.get(server.url + "/health") as resp:
        return await resp.json()


async def test_two_instances_one_database_seed_once_lose_nothing_and_lock_optimistically(
    pg_url: DatabaseURL, tmp_path: Path
) -> None:
    servers = await start_pair(
        pg_url, tmp_path, "--seed-rows", str(SEED_ROWS), "--seed-batch-size", "200"
    )
    try:
        await _scenario(pg_url, servers)
    finally:
        for server in servers:
            await server.stop()


async def _scenario(url: DatabaseURL, servers: list[Server]) -> None:
    # The first start planted no tokens (the database was empty): plant the test ones now.
    plant_test_tokens(url)
    applied = sql(url, "SELECT migration_id FROM _yoyo_migration ORDER BY migration_id")
    migrate_runs = sql(url, "SELECT count(*) FROM runs WHERE args_json LIKE '%migrate.apply%'")
    assert [r[0] for r in applied] == ALL_MIGRATIONS  # each once
    assert migrate_runs == [(1,)]  # migrations ran exactly once, in one of the two
    admin_tokens = sql(url, "SELECT count(*) FROM auth_tokens WHERE name = 'initial admin token'")
    assert admin_tokens == [(1,)]  # and one initial admin token, not two

    acknowledged: list[str] = []
    ids = itertools.count()
    stop_writing = asyncio.Event()
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        # The instance that seeds is the one to kill; the other reports the table's progress.
        # Exactly one: with --workers a worker's gauges may be a second old, and a seeder says
        # "running" from its start until it finds the lock held elsewhere.
        async with asyncio.timeout(30):
            while True:
                seeding = [s for s in servers if await s.metric(RUNNING) == 1]
                if len(seeding) == 1:
                    break
                await asyncio.sleep(0.05)
        victim = seeding[0]
        survivor = servers[1 - servers.index(victim)]
        await eventually(  # with --workers, each worker's gauges are at most a second old
            lambda: _metric_is(survivor, ELSEWHERE, 1), what="the survivor waiting elsewhere"
        )
        async with session.post(victim.url + "/projects", json={"name": "scale-out"}) as resp:
            assert resp.status == 201, await resp.text()
            project = (await resp.json())["id"]

        async def writer(targets: list[Server]) -> None:
            for n in itertools.count():
                if stop_writing.is_set():
                    return
                target = targets[n % len(targets)]
                if target.proc is None or target.proc.returncode is not None:
                    target = survivor
                idea_id = f"w{next(ids)}"
                try:
                    async with session.post(
                        f"{target.url}/projects/{project}/ideas",
                        json={"id": idea_id, "title": idea_id},
                    ) as resp:
                        if resp.status == 201:
                            acknowledged.append(idea_id)
                        else:
                            assert resp.status in (503,), await resp.text()
                except aiohttp.ClientError:
                    pass  # the killed instance: not acknowledged, may or may not be stored

        async def acknowledged_count(n: int) -> None:
            async with asyncio.timeout(60):
                while True:  # polled with a deadline
                    if len(acknowledged) >= n:
                        return
                    await asyncio.sleep(0.01)

        writers = [asyncio.create_task(writer(servers)) for _ in range(20)]
        # Kill the seeding instance mid-seed and mid-load.
        await acknowledged_count(200)
        rows_at_kill = (await health(session, survivor))["seed"]["rows"]
        victim.kill9()
        await victim.wait_exit()
        assert 0 < rows_at_kill < SEED_ROWS, "the kill should land mid-seed"
        await acknowledged_count(len(acknowledged) + 200)  # writes go on via the survivor
        # The survivor takes over the seed and finishes it.
        async with asyncio.timeout(90):
            while True:
                if (await health(session, survivor))["seed"]["state"] == "complete":
                    break
                await asyncio.sleep(0.1)

        # Polled: with --workers, a worker's seed gauges reach /metrics within a second.
        async def seed_metrics_done() -> bool:
            return await survivor.metric(RUNNING) == 0 and await survivor.metric(COMPLETE) == 1

        await eventually(seed_metrics_done, what="the survivor's seed gauges: complete")
        seed_runs = sql(url, "SELECT count(*) FROM runs WHERE args_json LIKE '%\"seed\"%'")
        assert seed_runs == [(2,)]  # the killed one's, and the survivor's that resumed it
        stop_writing.set()
        await asyncio.gather(*writers)

        # Every acknowledged write is there, once; the seed count is exact.
        stored = {r[0] for r in sql(url, "SELECT id FROM idea_tickets")}
        assert set(acknowledged) <= stored
        audited = Counter(
            r[0] for r in sql(url, "SELECT data_json FROM audit_log WHERE event = 'idea.created'")
        )
        assert len(audited) == len(stored) and set(audited.values()) == {1}
        assert sql(url, "SELECT count(*), count(DISTINCT id), max(id) FROM status") == [
            (SEED_ROWS, SEED_ROWS, SEED_ROWS)
        ]

        # Optimistic locking across instances: 50 PATCHes with the same If-Match, half
        # through each instance (the killed one restarted): exactly one wins.
        await victim.start()
        idea = acknowledged[0]
        urls = [f"{s.url}/projects/{project}/ideas/{idea}" for s in servers]
        async with session.get(urls[0]) as resp:
            etag = resp.headers["ETag"]

        async def patch(n: int) -> int:
            async with session.patch(
                urls[n % 2], json={"title": f"t{n}"}, headers={"If-Match": etag}
            ) as resp:
                return resp.status

        statuses = await asyncio.gather(*(patch(n) for n in range(50)))
        assert sorted(Counter(statuses).items()) == [(200, 1), (412, 49)]
