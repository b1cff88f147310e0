"""Fault injection needs real processes: a ``bobgen serve`` we can SIGKILL, starve of disk,
point at a corrupted file, or flood with slow and idle clients."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import WRITER_TOKEN, bearer, free_port, plant_test_tokens

BOBGEN = [sys.executable, "-m", "service"]


@dataclass
class Server:
    """One ``bobgen serve`` process on ``db_path`` (or on ``db``, a PostgreSQL URL; its log
    then goes beside ``db_path``); start it again after a kill."""

    db_path: Path
    args: list[str] = field(default_factory=list)
    db: str = ""
    port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *, wait: bool = True) -> None:
        self.log_path = self.db_path.with_name(f"server-{self.port}.log")
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *BOBGEN,
            "serve",
            "--db",
            self.db or str(self.db_path),
            "--port",
            str(self.port),
            "--seed-rows",
            "0",
            "--log-level",
            "WARNING",
            *self.args,
            stdout=log,
            stderr=log,
        )
        log.close()
        if wait:
            await self.wait_healthy()

    async def wait_healthy(self, timeout: float = 30) -> None:
        assert self.proc is not None
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
            while True:
                assert self.proc.returncode is None, f"server exited: {self.log()}"
                try:
                    async with session.get(self.url + "/health") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)

    async def wait_seeded(self, timeout: float = 30) -> None:
        """Until the background seed (``--seed-rows``) is complete."""
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
            while True:
                async with session.get(self.url + "/health") as resp:
                    if (await resp.json())["seed"]["state"] == "complete":
                        return
                await asyncio.sleep(0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> int:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            async with asyncio.timeout(30):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()

    async def wait_exit(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    async def metric(self, name: str) -> float:
        async with aiohttp.ClientSession() as session, session.get(self.url + "/metrics") as r:
            for line in (await r.text()).splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise AssertionError(f"metric {name} not found")


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[Any]:
    """Servers on fresh, token-planted database files; all stopped at the end."""
    servers: list[Server] = []

    async def factory(*args: str, db_path: Path | None = None, start: bool = True) -> Server:
        path = db_path or tmp_path / "data" / "bobgen.db"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            plant_test_tokens(path)
        server = Server(path, list(args))
        servers.append(server)
        if start:
            await server.start()
        return server

    yield factory
    for server in servers:
        await server.stop()


WRITE_HEADERS = bearer(WRITER_TOKEN)


def status_body(marker: str) -> dict[str, Any]:
    return {"uptime": 99.5, "version": marker, "latency": 1.0, "error_rate": 0.0}


def rows_by_version(db_path: Path, prefix: str) -> dict[str, int]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT version, id FROM status WHERE version LIKE ?", (prefix + "%",)
        ).fetchall()
    return dict(rows)


def audit_ids(db_path: Path) -> list[int]:
    """The status ids named by ``status.created`` audit rows (with repeats, if any)."""
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT json_extract(data_json, '$.id') FROM audit_log WHERE event = 'status.created'"
        ).fetchall()
    return [r[0] for r in rows]


def integrity(db_path: Path) -> list[str]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        return [r[0] for r in conn.execute("PRAGMA integrity_check")]
