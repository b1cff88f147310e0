"""What the workers of one server share: the run directory, and the roles only one may hold."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.db.sqlite_locks import open_lock_file, try_lock_exclusive

LEADER_POLL_S = 1.0  # how soon a worker notices that a role's holder died


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """One worker's place in a server started with ``--workers``.

    ``run_dir`` is made fresh by the supervisor for each start (so no file of an earlier run,
    a dead process's metrics least of all, is ever read) and removed when it stops.
    """

    run_dir: Path
    index: int  # 0..count-1; a restarted worker keeps the index of the one it replaces
    count: int
    parent_pid: int

    @property
    def metrics_dir(self) -> Path:
        """prometheus-client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``)."""
        return self.run_dir / "metrics"

    @property
    def snapshots_dir(self) -> Path:
        """Each worker's latest snapshot of the metrics computed at scrape time."""
        return self.run_dir / "snapshots"

    @property
    def serving_file(self) -> Path:
        """Created by the supervisor once every worker serves (``READY=1``)."""
        return self.run_dir / "serving"

    def server_serving(self) -> bool:
        """Whether the whole server has started: until then ``/readyz`` says 503, as a load
        balancer would otherwise send traffic to a server still starting its workers."""
        return self.serving_file.exists()

    def leadership(self, role: str) -> Leadership:
        return Leadership(self.run_dir / f"{role}.lock")

    def shared_file(self, name: str) -> Path:
        return self.run_dir / name

    @classmethod
    def prepare(cls, run_dir: Path) -> None:
        """Make the run directory's folders (the supervisor, before any worker starts)."""
        for sub in ("metrics", "snapshots"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)


class Leadership:
    """A role (``documents``, ``checkpoints``) that one worker of a server holds at a time.

    An exclusive ``flock`` on ``<run dir>/<role>.lock``, tried without waiting: the kernel drops
    it when its holder exits or dies, and the next worker to try, within
    :data:`LEADER_POLL_S`, takes the role over. The holder writes its pid into the file so
    that the others can name it. Machine-local on purpose: the workers of one server share one
    file system, while instances on several hosts (PostgreSQL) each keep their own jobs.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_take(self) -> bool:
        """Take the role if nobody holds it; True while this process holds it."""
        if self._fd is not None:
            return True
        fd = open_lock_file(self.path)
        if not try_lock_exclusive(fd):
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return True

    async def take(self, stop: asyncio.Event | None = None, poll_s: float = LEADER_POLL_S) -> bool:
        """Wait for the role; False if ``stop`` was set first."""
        while not self.try_take():
            if stop is None:
                await asyncio.sleep(poll_s)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)
            if stop.is_set():
                return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the lock
            self._fd = None

    def holder(self) -> int | None:
        """The pid that holds (or last held) the role, if any wrote one."""
        try:
            return int(self.path.read_text() or 0) or None
        except (OSError, ValueError):
            return None


def write_json_atomically(path: Path, value: Any) -> None:
    """Replace ``path`` with ``value`` as JSON: a reader sees the old file or the new one,
    never half of one (written beside it, then renamed over it)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(value, separators=(",", ":")))
    os.replace(temp, path)


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``; None when it does not exist (yet) or cannot be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
