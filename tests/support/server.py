"""One ``bobgen serve`` process, started the way a test needs it: on a database file or a
PostgreSQL URL with the test's flags, or with a command line taken verbatim (the Makefile's),
in a working directory, with an environment, as another user. Started, polled with a deadline
until it answers, killed or stopped; its output goes to a log file shown when it fails."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

BOBGEN = [sys.executable, "-m", "service"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """``bobgen serve --db <db or db_path> --port <port> [--seed-rows 0 --log-level WARNING]
    <args>``, or ``argv``
    verbatim; its log goes beside ``db_path`` (or into ``log_dir``). Start it again after a
    kill."""

    db_path: Path
    args: list[str] = field(default_factory=list)
    db: str = ""
    port: int = field(default_factory=free_port)
    argv: list[str] | None = None  # the whole command line, as given (port included)
    argv_prefix: list[str] = field(default_factory=lambda: list(BOBGEN))  # what runs `serve`
    cwd: Path | None = None
    env: dict[str, str] | None = None
    user: int | None = None  # run as this uid (and its group), not as the test's user
    quiet: bool = True  # --seed-rows 0 --log-level WARNING before args (which may override)
    log_dir: Path | None = None
    proc: asyncio.subprocess.Process | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.argv is not None:
            return list(self.argv)
        db = self.db or str(self.db_path)
        port = ["--port", str(self.port)]
        quiet = ["--seed-rows", "0", "--log-level", "WARNING"] if self.quiet else []
        return [*self.argv_prefix, "serve", "--db", db, *port, *quiet, *self.args]

    async def start(self, *, wait: bool = True) -> None:
        folder = self.log_dir or self.db_path.parent
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / f"server-{self.port}.log"
        log = self.log_path.open("ab")
        kwargs = {} if self.user is None else {"user": self.user, "group": self.user}
        self.proc = await asyncio.create_subprocess_exec(
            *self.command(),
            stdout=log,
            stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,  # a group of its own: kill9 takes its workers too
            **kwargs,  # type: ignore[arg-type]
        )
        log.close()
        if wait:
            await self.wait_healthy()

    async def wait_healthy(self, timeout: float = 30, path: str = "/readyz") -> None:
        """Until ``path`` answers 200: ``/readyz``, which with ``--workers`` waits for all."""
        assert self.proc is not None
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
            while True:
                assert self.proc.returncode is None, f"server exited: {self.log()}"
                try:
                    async with session.get(self.url + path) as resp:
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

    async def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit status (no kill: a server that does not stop fails)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout)

    def kill9(self) -> None:
        """SIGKILL to the server and its workers at once (``--workers``), as a power cut or
        the OOM killer of its cgroup would: nothing of it gets to say a word."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def workers(self) -> list[int]:
        """The pids of the server's workers (``--workers`` > 1), oldest first; [] otherwise."""
        assert self.proc is not None
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == self.proc.pid:  # field 4 of /proc/<pid>/stat: the parent
                children.append(int(stat.parent.name))
        return sorted(children)

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

    async def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
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
