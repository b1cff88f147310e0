"""Background seeding of the status table with deterministic rows.

Row ``k`` always has the same content, and each batch is one transaction that also re-reads
how many rows exist. So a seed killed at any moment (even ``kill -9``) resumes where the last
committed batch ended and finishes with exactly the target count and no duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from service.audit import SYSTEM_ACTOR, AuditedWrite, audited_write
from service.db import (
    Database,
    DatabaseError,
    DatabaseUnavailable,
    Work,
    lock_for_inserts,
    returning,
    sync_identity,
)
from service.domain.runs import RunContext, StepStatus, new_run_id
from service.repositories import runs as runs_repo
from service.repositories import status as status_repo
from service.timeutil import utc_iso

log = logging.getLogger(__name__)

SEED_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
SEED_LOCK = "bobgen.seed"
ELSEWHERE_POLL_S = 0.5


class SeedAlreadyRunning(RuntimeError):
    """A seed job is running; only one may run at a time."""


class _NothingToSeed(Exception):
    """The table already holds the target: leave the batch loop."""


class SeedState(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    ELSEWHERE = "elsewhere"  # another instance on this database seeds (reported as running)
    COMPLETE = "complete"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(slots=True)
class SeedProgress:
    state: SeedState = SeedState.IDLE
    rows: int = 0
    target: int = 0
    batches: int = 0
    inserted: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    run_id: str | None = None

    def public(self) -> dict[str, Any]:
        """As the API shows it: times as ISO-8601 text, like every timestamp it answers."""
        data = asdict(self)
        data["state"] = str(self.state)
        for key in ("started_at", "finished_at"):
            if data[key] is not None:
                data[key] = utc_iso(datetime.fromtimestamp(data[key], UTC))
        return data


def seed_row(row_id: int) -> tuple[Any, ...]:
    """The seed content of row ``row_id``: a pure function of the id, in STATUS_FIELDS order."""
    stamp = (SEED_EPOCH + timedelta(minutes=row_id)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return (
        row_id,
        99.0 + (row_id * 7919 % 1000) / 1000,  # uptime %
        f"1.{row_id % 20}.{row_id % 7}",  # version
        (row_id * 31 % 5000) / 10,  # latency ms
        (row_id * 13 % 1000) / 100_000,  # error_rate
        stamp,  # last_run
        row_id % 100,  # blocks
        f"https://runbooks.example.com/bobgen/{row_id % 50}",
        f"https://dashboards.example.com/d/bobgen?shard={row_id % 16}",
        stamp,  # created_at
        stamp,  # updated_at
    )


ProgressCallback = Callable[[SeedProgress], None]


class Seeder:
    """Runs at most one seed job at a time, as a background task, stoppable at batch boundaries.

    A job that has rows to insert is recorded as a run: the run and a ``seed.started`` audit
    row go into the first batch's transaction, and each batch adds a step carrying its stats in
    its own transaction, so the run's steps always match the committed rows.
    """

    def __init__(self, db: Database, *, batch_size: int = 5000, context: RunContext | None = None):
        self.db = db
        self.batch_size = batch_size
        self.context = context or RunContext()
        self.progress = SeedProgress()
        self._task: asyncio.Task[SeedProgress] | None = None
        self._stop = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(
        self, target: int, *, batch_size: int | None = None, actor: str = SYSTEM_ACTOR
    ) -> asyncio.Task[SeedProgress]:
        """Start seeding up to ``target`` rows in the background."""
        if self.running:
            raise SeedAlreadyRunning("a seed job is already running")
        progress = self._begin(target)
        self._task = asyncio.create_task(
            self._run(progress, batch_size or self.batch_size, None, actor), name="seeder"
        )
        return self._task

    async def run(
        self,
        target: int,
        *,
        batch_size: int | None = None,
        on_progress: ProgressCallback | None = None,
        actor: str = SYSTEM_ACTOR,
    ) -> SeedProgress:
        """Seed in the foreground (the CLI) until the table holds ``target`` rows."""
        if self.running:
            raise SeedAlreadyRunning("a seed job is already running")
        progress = self._begin(target)
        return await self._run(progress, batch_size or self.batch_size, on_progress, actor)

    async def _seed_batch(self, p: SeedProgress, size: int, actor: str) -> int:
        """Insert the next batch with its run step and audit row; return its size (0: done)."""
        try:
            todo, p.run_id = await audited_write(self.db, actor, lambda w: self._batch(w, p, size))
        except _NothingToSeed:
            return 0
        return todo

    def _batch(self, w: AuditedWrite, p: SeedProgress, size: int) -> Work[tuple[int, str]]:
        """One batch; returns its size and the run id. Changes nothing in ``p`` but ``rows``
        (the unit may be run again after a serialization failure, and must not depend on a
        rolled-back first attempt)."""
        started = time.perf_counter()
        # Several instances on one PostgreSQL database: the next ids come from max(id), so
        # concurrent inserts must wait for this batch (SQLite: one writer anyway).
        yield from lock_for_inserts("status")
        # Re-read inside the write transaction: concurrent POSTs and crashed earlier runs are
        # both accounted for.
        p.rows, max_id = yield from status_repo.row_count_and_max_id()
        todo = min(size, p.target - p.rows)
        if todo <= 0:
            raise _NothingToSeed  # rolls back a transaction that wrote nothing
        run_id = p.run_id or (yield from self._create_run(w, p.target, size))
        first, last = max_id + 1, max_id + todo
        # A lazy generator: rows are made as the driver consumes them, never held as a list.
        yield from status_repo.insert_many_with_ids(seed_row(i) for i in range(first, last + 1))
        yield from sync_identity("status")  # ids the server assigns continue after ours
        stats = {
            "first_id": first,
            "last_id": last,
            "inserted": todo,
            "rows": p.rows + todo,
            "target": p.target,
            "seconds": round(time.perf_counter() - started, 4),
        }
        yield from runs_repo.insert_step(
            run_id=run_id,
            name=f"batch {p.batches + 1}",
            status=StepStatus.SUCCEEDED,
            stats=stats,
            now=w.now,
            finished=True,
        )
        w.audit(
            "seed.batch",
            scope="seed",
            run_id=run_id,
            level="debug",
            message=f"seeded ids {first}..{last}",
            data=stats,
        )
        return todo, run_id

    def _create_run(self, w: AuditedWrite, target: int, batch_size: int) -> Work[str]:
        run = yield from runs_repo.insert_run(
            run_id=new_run_id(),
            now=w.now,
            args={"command": "seed", "target": target, "batch_size": batch_size},
            git_sha=self.context.git_sha,
            config_hash=self.context.config_hash,
        )
        w.audit(
            "seed.started",
            scope="seed",
            run_id=run["run_id"],
            message=f"seeding up to {target} rows",
            data={"target": target},
        )
        return str(run["run_id"])

    async def _finish_run(self, p: SeedProgress, actor: str) -> None:
        def work(w: AuditedWrite) -> Work[None]:
            w.audit(
                f"seed.{p.state}",
                scope="seed",
                run_id=p.run_id,
                message=f"seed {p.state} at {p.rows}/{p.target} rows",
                data={
                    "rows": p.rows,
                    "target": p.target,
                    "inserted": p.inserted,
                    "batches": p.batches,
                },
            )
            return returning(None)

        await audited_write(self.db, actor, work)

    def _begin(self, target: int) -> SeedProgress:
        self._stop = asyncio.Event()
        self.progress = SeedProgress(state=SeedState.RUNNING, target=target, started_at=time.time())
        return self.progress

    async def wait(self) -> SeedProgress:
        """Wait for the background job (if any) to finish."""
        if self._task is not None:
            await asyncio.shield(self._task)
        return self.progress

    def request_stop(self) -> None:
        """Make the running job stop after its current batch (callable from anywhere)."""
        self._stop.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask the job to stop after its current batch and wait; cancel as a last resort."""
        task = self._task
        if task is None or task.done():
            return
        self.request_stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(
        self, p: SeedProgress, size: int, on_progress: ProgressCallback | None, actor: str
    ) -> SeedProgress:
        """Seed while holding the database's ``seed`` lock. Several instances on one
        PostgreSQL database: one seeds, the others wait, checking the table, and one of them
        takes over (resuming from the committed rows) if the seeding instance dies."""
        while True:
            async with self.db.exclusive(SEED_LOCK) as mine:
                if mine:
                    p.state = SeedState.RUNNING
                    return await self._seed(p, size, on_progress, actor)
            p.state = SeedState.ELSEWHERE
            try:
                p.rows = await status_repo.count(self.db)
            except DatabaseUnavailable as exc:
                log.warning("waiting for the seed of another instance: %s", exc)
            if p.rows >= p.target:
                p.state, p.finished_at = SeedState.COMPLETE, time.time()
                return p
            try:
                await asyncio.wait_for(self._stop.wait(), ELSEWHERE_POLL_S)
            except TimeoutError:
                continue
            p.state, p.finished_at = SeedState.STOPPED, time.time()
            return p

    async def _seed(
        self, p: SeedProgress, size: int, on_progress: ProgressCallback | None, actor: str
    ) -> SeedProgress:
        target = p.target
        reported_decile = -1
        try:
            while not self._stop.is_set():
                todo = await self._seed_batch(p, size, actor)
                if todo == 0:
                    break
                p.rows += todo
                p.inserted += todo
                p.batches += 1
                if on_progress:
                    on_progress(p)
                if (decile := p.rows * 10 // max(target, 1)) > reported_decile:
                    reported_decile = decile
                    log.info("seed progress: %d/%d rows", p.rows, target)
                await asyncio.sleep(0)  # let requests run between batches
        except asyncio.CancelledError:
            p.state = SeedState.STOPPED
            raise
        except Exception as exc:
            p.state, p.error = SeedState.FAILED, f"{type(exc).__name__}: {exc}"
            log.exception("seed failed at %d/%d rows", p.rows, target)
            return p
        finally:
            p.finished_at = time.time()
        p.state = SeedState.STOPPED if p.rows < target else SeedState.COMPLETE
        if p.run_id is not None:
            await self._finish_run(p, actor)
        if p.inserted:
            try:
                await self.db.refresh_statistics(("status",))
            except DatabaseError as exc:  # the rows are in; plans are only slower without it
                log.warning("could not refresh the planner's statistics after seeding: %s", exc)
        elapsed = p.finished_at - (p.started_at or p.finished_at)
        log.info(
            "seed %s: %d/%d rows (%d new) in %.2fs", p.state, p.rows, target, p.inserted, elapsed
        )
        return p
