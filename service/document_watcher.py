"""Live document sync: a full reconcile at start, then a watcher applying file changes.

Lifecycle (started and stopped by the app's cleanup context): ``start`` runs the initial
reconcile in the background (``/health`` shows ``documents.state``: ``syncing``, then
``watching``), then watches the roots with watchfiles. Changes arrive debounced: a burst of
saves becomes one batch, and each changed path is read once per batch; a path whose bytes did
not change costs no write. Renames arrive as a delete plus an add, and an editor's temp file
is ignored until it is renamed onto a document path, so both end with exactly one correct
row. Writes that fail because the database is busy or down are retried with exponential
backoff and jitter (bounded); what still fails is picked up by the next full reconcile.
``stop`` ends the watcher and then runs one last reconcile (bounded by its timeout), which
flushes what the debounce window still held.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

from service.audit import SYSTEM_ACTOR
from service.db import Database, DatabaseUnavailable
from service.document_sync import Scan, SyncError, SyncReport, apply, plan, reconcile, scan
from service.domain.documents import DEFAULT_MAX_FILE_BYTES, document_type, relative_to_root
from service.repositories import documents as documents_repo
from service.timeutil import utc_now

log = logging.getLogger(__name__)

RETRIES = 6
RETRY_BASE_S = 0.1
RETRY_MAX_S = 5.0


class SyncState(StrEnum):
    IDLE = "idle"
    SYNCING = "syncing"  # a full reconcile runs
    WATCHING = "watching"
    STOPPED = "stopped"
    FAILED = "failed"


class ReloadRunning(RuntimeError):
    """A full reconcile is already running."""


@dataclass(slots=True)
class ErrorEntry:
    file: str
    root: str
    reason: str
    since: str


@dataclass(slots=True)
class SyncStatus:
    state: SyncState = SyncState.IDLE
    last_full: dict[str, Any] | None = None
    events: dict[str, int] = field(default_factory=dict)  # "kind:outcome" -> count
    errors: dict[str, ErrorEntry] = field(default_factory=dict)  # by file path
    pending: int = 0
    by_type: dict[str, int] = field(default_factory=dict)  # documents, after the last sync


class DocumentWatcher:
    """Owns the initial reconcile, the watcher task and the sync status of some roots."""

    def __init__(
        self,
        db: Database,
        roots: Sequence[Path],
        *,
        debounce_ms: int = 500,
        max_bytes: int = DEFAULT_MAX_FILE_BYTES,
        actor: str = SYSTEM_ACTOR,
    ):
        self.db = db
        self.roots = [Path(r) for r in roots]
        self.debounce_ms = debounce_ms
        self.max_bytes = max_bytes
        self.actor = actor
        self.status = SyncStatus()
        self.on_lag: Callable[[float], None] = lambda seconds: None  # the metrics histogram
        self._stop = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._full_lock = asyncio.Lock()
        self._reload: asyncio.Task[SyncReport] | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="document-watcher")

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop watching, then flush with one last reconcile (bounded by ``timeout``)."""
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        if self._reload is not None and not self._reload.done():
            self._reload.cancel()
            await asyncio.gather(self._reload, return_exceptions=True)
        if self.status.state is not SyncState.FAILED:
            try:
                await asyncio.wait_for(self.full_sync(), timeout)
            except (TimeoutError, DatabaseUnavailable) as exc:
                log.warning("documents: the last sync before stopping did not finish: %s", exc)
        self.status.state = SyncState.STOPPED

    async def _run(self) -> None:
        """Subscribe to changes first, then reconcile, then apply the changes as they come.

        In that order, a file changed while the initial reconcile runs is not lost: its event
        waits in the queue (it was: a change landing between the scan and the subscription
        stayed invisible until the next full sync).
        """
        batches: asyncio.Queue[set[str] | None] = asyncio.Queue()
        watching = asyncio.create_task(self._watch(batches), name="document-watch")
        try:
            await self._subscribed.wait()
            await self._with_retries("full", self.full_sync)
            self.status.state = SyncState.WATCHING
            while (paths := await batches.get()) is not None:
                await self._apply_batch(paths)
            await watching
        except asyncio.CancelledError:
            raise
        except Exception:
            self.status.state = SyncState.FAILED
            log.exception("documents: the watcher failed")
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)

    # ---- full reconcile ----------------------------------------------------------------------

    async def full_sync(self) -> SyncReport:
        async with self._full_lock:
            before = self.status.state
            self.status.state = SyncState.SYNCING
            try:
                report = await reconcile(
                    self.db, self.roots, actor=self.actor, max_bytes=self.max_bytes
                )
            finally:
                if before is SyncState.WATCHING:  # a reload: back to watching either way
                    self.status.state = SyncState.WATCHING
            self._replace_errors(report.errors, scope=None)
            self.status.last_full = {
                "finished_at": utc_now(),
                "seconds": report.seconds,
                **report.counts(),
            }
            self._count("full", "ok")
            self.status.by_type = await documents_repo.count_by_type(self.db)
            return report

    def reload(self) -> None:
        """A full rescan in the background; ReloadRunning while one runs."""
        if self._full_lock.locked() or (self._reload is not None and not self._reload.done()):
            raise ReloadRunning("a full sync is running")
        self._reload = asyncio.create_task(self.full_sync(), name="document-reload")

    # ---- watching ----------------------------------------------------------------------------

    async def _watch(self, batches: asyncio.Queue[set[str] | None]) -> None:
        """Queue the document paths of each debounced batch of changes; None at the end."""
        step = min(50, self.debounce_ms)
        changes_seen = awatch(
            *self.roots,
            debounce=self.debounce_ms,
            step=step,
            stop_event=self._stop,
            watch_filter=None,
            recursive=True,
        )
        try:
            # The generator's first step creates the OS watch synchronously, then waits in a
            # thread for changes: one turn of the loop runs that step, and the watch exists
            # before the reconcile reads the files.
            pending = asyncio.ensure_future(changes_seen.__anext__())
            await asyncio.sleep(0)
            self._subscribed.set()
            while True:
                try:
                    changes = await pending
                except StopAsyncIteration:
                    return
                paths = self._relevant(changes)
                if paths:
                    batches.put_nowait(paths)
                pending = asyncio.ensure_future(changes_seen.__anext__())
        finally:
            self._subscribed.set()
            batches.put_nowait(None)

    async def _apply_batch(self, paths: set[str]) -> None:
        seen = time.monotonic()
        self.status.pending = len(paths)
        try:
            await self._with_retries("change", lambda: self._apply(paths))
            self.on_lag(time.monotonic() - seen)
        except DatabaseUnavailable as exc:
            # Not lost: the next full sync (reload, restart, or the one at stop) has it.
            log.warning("documents: %d change(s) not applied: %s", len(paths), exc)
        finally:
            self.status.pending = 0

    def _relevant(self, changes: set[tuple[Change, str]]) -> set[str]:
        """Relative paths of document files among the changes (temp files, other folders and
        suffixes are not documents)."""
        paths: set[str] = set()
        for _change, raw in changes:
            for root in self.roots:
                relative = relative_to_root(Path(raw), root)
                if relative is not None and document_type(relative) is not None:
                    paths.add(str(relative))
        return paths

    async def _apply(self, paths: set[str]) -> None:
        files: Scan = await asyncio.to_thread(
            scan, self.roots, only=paths, max_bytes=self.max_bytes
        )
        stored = await self.db.read(documents_repo.states(paths))
        todo = plan(files, stored)
        if todo.added or todo.updated or todo.deleted:
            await apply(self.db, todo, actor=self.actor)
            self.status.by_type = await documents_repo.count_by_type(self.db)
        for kind, n in (
            ("added", len(todo.added)),
            ("updated", len(todo.updated)),
            ("deleted", len(todo.deleted)),
            ("unchanged", todo.unchanged),
        ):
            if n:
                self._count(kind, "ok", n)
        self._replace_errors(files.errors, scope=paths)
        if files.errors:
            self._count("change", "error", len(files.errors))
            for error in files.errors:
                log.warning("documents: %s (%s): %s", error.file, error.root, error.reason)

    async def _with_retries(self, kind: str, action: Any) -> Any:
        for attempt in range(RETRIES + 1):
            try:
                return await action()
            except DatabaseUnavailable:
                self._count(kind, "retried")
                if attempt == RETRIES:
                    self._count(kind, "failed")
                    raise
                delay = min(RETRY_MAX_S, RETRY_BASE_S * 2**attempt)
                await asyncio.sleep(random.uniform(delay / 2, delay))
        return None

    # ---- status ------------------------------------------------------------------------------

    def _replace_errors(self, errors: list[SyncError], *, scope: set[str] | None) -> None:
        """Errors of a full sync replace all; a partial one's replace those of its paths."""
        now = utc_now()
        current = self.status.errors
        keep = {} if scope is None else {k: v for k, v in current.items() if k not in scope}
        for e in errors:
            old = current.get(e.file)
            since = old.since if old is not None and old.reason == e.reason else now
            keep[e.file] = ErrorEntry(e.file, e.root, e.reason, since)
        self.status.errors = keep

    def _count(self, kind: str, outcome: str, n: int = 1) -> None:
        key = f"{kind}:{outcome}"
        self.status.events[key] = self.status.events.get(key, 0) + n

    async def describe(self) -> dict[str, Any]:
        """What ``GET /admin/sync`` shows."""
        return {
            "state": str(self.status.state),
            "roots": [str(r) for r in self.roots],
            "debounce_ms": self.debounce_ms,
            "last_full_sync": self.status.last_full,
            "pending": self.status.pending,
            "events": dict(sorted(self.status.events.items())),
            "errors": [
                {"file": e.file, "root": e.root, "reason": e.reason, "since": e.since}
                for e in sorted(self.status.errors.values(), key=lambda e: e.file)
            ],
            "documents": await documents_repo.count_by_type(self.db),
        }
