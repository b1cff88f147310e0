"""Worktree reservations across two ``bobgen serve`` processes on one PostgreSQL database:
the atomic pick holds between processes, not only between coroutines of one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from service.db import DatabaseURL
from tests.backends import sql
from tests.support.auth import ADMIN_TOKEN, bearer, plant_test_tokens
from tests.support.server import Server

pytestmark = pytest.mark.slow


async def test_fifty_reservers_on_two_servers_share_ten_worktrees(
    pg_url: DatabaseURL, tmp_path: Path
) -> None:
    plant_test_tokens(pg_url)
    servers = [Server(tmp_path / f"instance-{i}.db", db=pg_url.dsn) for i in range(2)]
    await asyncio.gather(*(s.start() for s in servers))
    try:
        async with aiohttp.ClientSession(headers=bearer(ADMIN_TOKEN)) as session:

            async def post(server: Server, path: str, body: dict[str, object]) -> tuple[int, dict]:
                async with session.post(server.url + path, json=body) as resp:
                    return resp.status, await resp.json()

            first = servers[0]
            status, repo = await post(first, "/repositories", {"name": "r", "url": "u"})
            assert status == 201
            for i in range(10):
                body = {"path": f"/w/{i}"}
                assert (await post(first, f"/repositories/{repo['id']}/worktrees", body))[0] == 201
            sessions = []
            for _ in range(50):
                status, made = await post(first, "/sessions", {"repository_id": repo["id"]})
                assert status == 201
                sessions.append(made["id"])
            url = f"/repositories/{repo['id']}/worktrees/reserve"
            results = await asyncio.gather(
                *(
                    post(servers[i % 2], url, {"session_id": s, "lease_s": 60})
                    for i, s in enumerate(sessions)
                )
            )
    finally:
        for server in servers:
            await server.stop()
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] * 10 + [409] * 40
    assert {body["error"]["code"] for status, body in results if status == 409} == {
        "no_free_worktree"
    }
    holders = sql(pg_url, "SELECT reserved_by FROM worktrees WHERE state = 'reserved'")
    assert len({h for (h,) in holders}) == 10
    assert len({body["id"] for status, body in results if status == 201}) == 10
