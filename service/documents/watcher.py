"""Live document sync: a full reconcile at start, then a watcher applying file changes.

Lifecycle (started and stopped by the app's cleanup context): ``start`` runs the initial
reconcile in the background (``/health`` shows ``documents.state``: ``syncing``, then
``watching``), then watches the roots with watchfiles.

Bursts. Watchfiles alone cannot coalesce repeated saves of one file: its change set does not
grow when the same path changes again, so it yields every other ``step`` during a burst (a
burst of 20 saves was written 2-4 times, once read empty mid-save). So the watcher keeps its
own window: a change opens it, every further change within ``quiet_s`` keeps it open, and it
closes after ``quiet_s`` without changes or ``debounce_ms`` after it opened, whichever comes
first. Each path of a window is then read once and written at most once (not at all when its
bytes did not change). A file that reads empty or does not parse right after a change (an
editor truncates, then writes) gets a second look one quiet time later and is reported as an
error only if it is still bad then; its last good row stays either way.

Renames arrive as a delete plus an add, and an editor's temp file is ignored until it is
renamed onto a document path, so both end with exactly one correct row.

Never dead for good. Any failure (the database down, a root deleted, watchfiles failing) puts
the watcher in ``retrying`` or ``failed`` with the reason (``/health`` says ``degraded``), and
it starts over after a capped, jittered backoff, without limit: wait for every root to exist,
subscribe, reconcile everything, watch. A deleted root keeps its rows until it comes back (the
reconcile then makes the table match it); deleting a whole tree by accident must not empty the
table. ``stop`` ends the watcher and then runs one last reconcile (bounded by its timeout),
which flushes a window still open.

One per server. Of a server's ``--workers``, the one holding the ``documents`` role
(:class:`~service.workers.Leadership`) watches; the others stand by, show its status (it
publishes it to a file in the run directory every :data:`PUBLISH_S`) and pass a reload on to
it (by creating a file it looks for), and one of them takes over within a second if it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
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
from service.documents import resolve_roots
from service.documents.sync import Scan, SyncError, SyncReport, apply, plan, reconcile, scan
from service.domain.documents import DEFAULT_MAX_FILE_BYTES, document_type, relative_to_root
from service.repositories import documents as documents_repo
from service.timeutil import utc_now
from service.workers.shared import Leadership, read_json, write_json_atomically

log = logging.getLogger(__name__)

RETRY_BASE_S = 0.1
RETRY_MAX_S = 5.0
WATCH_STEP_MS = 10  # how often watchfiles' thread looks at its change set
ROOT_POLL_S = 0.2  # how often a missing root is looked for
PUBLISH_S = 0.25  # how often the watching worker publishes its status to the others


class SyncState(StrEnum):
    IDLE = "idle"
    SYNCING = "syncing"  # a full reconcile runs
    WATCHING = "watching"
    RETRYING = "retrying"  # a transient problem (database, a missing root): starting over
    FAILED = "failed"  # an unexpected error: starting over after a backoff all the same
    STOPPED = "stopped"
    STANDBY = "standby"  # another worker of this server watches (--workers)


TROUBLED = frozenset({SyncState.RETRYING, SyncState.FAILED})


class ReloadRunning(RuntimeError):
    """A full reconcile is already running."""


class RootMissing(RuntimeError):
    """A documents root is not a directory (deleted, or not mounted yet)."""


@dataclass(frozen=True, slots=True)
class SharedWatch:
    """How the workers of one server share one watcher (module docstring)."""

    leadership: Leadership
    status_file: Path  # the watching worker's status, for the others
    reload_file: Path  # created by a standing-by worker: "reload, please"


@dataclass(slots=True)
class ErrorEntry:
    file: str
    root: str
    reason: str
    since: str


@dataclass(slots=True)
class SyncStatus:
    state: SyncState = SyncState.IDLE
    reason: str | None = None  # why the state is retrying or failed
    last_full: dict[str, Any] | None = None
    events: dict[str, int] = field(default_factory=dict)  # "kind:outcome" -> count
    errors: dict[str, ErrorEntry] = field(default_factory=dict)  # by file path
    pending: int = 0
    by_type: dict[str, int] = field(default_factory=dict)  # documents, after the last sync

    @property
    def troubled(self) -> bool:
        """Retrying or failed: ``/health`` says degraded, ``bobgen_documents_watcher_up`` 0."""
        return self.state in TROUBLED


def quiet_seconds(debounce_ms: int) -> float:
    """The quiet time that closes a window early: a fifth of the window, at least three
    watchfiles steps (watchfiles yields every other step while one file keeps changing)."""
    return max(3 * WATCH_STEP_MS, debounce_ms // 5) / 1000


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
        shared: SharedWatch | None = None,
    ):
        self.db = db
        self.shared = shared
        self.roots = list(resolve_roots(roots))
        self.debounce_ms = debounce_ms
        self.quiet_s = quiet_seconds(debounce_ms)
        self.max_bytes = max_bytes
        self.actor = actor
        self.status = SyncStatus()
        self.on_lag: Callable[[float], None] = lambda seconds: None  # the metrics histogram
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._full_lock = asyncio.Lock()
        self._reload: asyncio.Task[SyncReport | None] | None = None
        self._second_look: set[str] = set()  # paths that were bad right after a change
        self._looks: set[asyncio.Task[None]] = set()  # second looks, referenced until done

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="document-watcher")

    @property
    def watching_here(self) -> bool:
        """Whether this process watches (always, but for a worker standing by)."""
        return self.shared is None or self.shared.leadership.held

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop watching, then flush with one last reconcile (bounded by ``timeout``)."""
        self._stop.set()
        if not self.watching_here:  # standing by: nothing to flush, nothing to wait for
            if self._task is not None:
                await asyncio.gather(self._task, return_exceptions=True)
            self.status.state = SyncState.STOPPED
            return
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        for task in [self._reload, *self._looks]:
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        try:
            await asyncio.wait_for(self.full_sync(), timeout)
        except (TimeoutError, DatabaseUnavailable, RootMissing) as exc:
            log.warning("documents: the last sync before stopping did not finish: %s", exc)
        self.status.state = SyncState.STOPPED
        if self.shared is not None:
            self._publish()
            self.shared.leadership.release()

    async def _run(self) -> None:
        """Watch until stopped; after any failure, back off and start over (never give up)."""
        if self.shared is not None:
            self.status.state = SyncState.STANDBY
            if not await self.shared.leadership.take(self._stop):
                return
            log.info("documents: this worker (pid %d) watches", os.getpid())
            publisher = asyncio.create_task(self._publish_loop(), name="document-publish")
            try:
                await self._watch_until_stopped()
            finally:
                publisher.cancel()
                await asyncio.gather(publisher, return_exceptions=True)
        else:
            await self._watch_until_stopped()

    async def _watch_until_stopped(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                await self._wait_for_roots()
                await self._watch_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except (DatabaseUnavailable, RootMissing) as exc:
                failures += 1
                self._trouble(SyncState.RETRYING, str(exc))
            except Exception as exc:  # the watcher must outlive any bug below it
                failures += 1
                self._trouble(SyncState.FAILED, f"{type(exc).__name__}: {exc}")
                log.debug("documents: watcher failure", exc_info=True)
            if failures and not self._stop.is_set():
                delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** min(failures - 1, 10))
                await self._sleep(random.uniform(delay / 2, delay))

    def _trouble(self, state: SyncState, reason: str) -> None:
        """Say what went wrong (logged once per reason, not once per attempt)."""
        self._count("watcher", "retried")
        if self.status.state not in TROUBLED or self.status.reason != reason:
            log.warning("documents: sync %s (%s); starting over", state, reason)
        self.status.state, self.status.reason = state, reason

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _wait_for_roots(self) -> None:
        """Return once every root is a directory (at once, usually)."""
        while missing := [root for root in self.roots if not root.is_dir()]:
            reason = f"documents root {missing[0]} is missing; waiting for it"
            if self.status.reason != reason:
                log.warning("documents: %s", reason)
            self.status.state, self.status.reason = SyncState.RETRYING, reason
            await self._sleep(ROOT_POLL_S)
            if self._stop.is_set():
                return

    async def _watch_once(self) -> None:
        """Subscribe, reconcile, then apply windows of changes until stopped or a root goes.

        Subscribing comes first, so a file changed while the reconcile runs is not lost: its
        event waits in the queue (it was: a change landing between the scan and the
        subscription stayed invisible until the next full sync).
        """
        if self._stop.is_set():
            return
        changes: asyncio.Queue[set[tuple[Change, str]] | None] = asyncio.Queue()
        subscribed = asyncio.Event()
        watching = asyncio.create_task(self._watch(changes, subscribed), name="document-watch")
        try:
            await subscribed.wait()
            await self.full_sync()
            self.status.state, self.status.reason = SyncState.WATCHING, None
            await self._apply_windows(changes, watching)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)

    async def _watch(
        self, changes: asyncio.Queue[set[tuple[Change, str]] | None], subscribed: asyncio.Event
    ) -> None:
        """Queue watchfiles' raw change sets as they come; None when it ends."""
        seen = awatch(
            *self.roots,
            debounce=self.debounce_ms,
            step=WATCH_STEP_MS,
            stop_event=self._stop,
            watch_filter=None,
            recursive=True,
        )
        try:
            # The generator's first step creates the OS watch synchronously, then waits in a
            # thread for changes: one turn of the loop runs that step, and the watch exists
            # before the reconcile reads the files.
            pending = asyncio.ensure_future(seen.__anext__())
            await asyncio.sleep(0)
            subscribed.set()
            while True:
                try:
                    changes.put_nowait(await pending)
                except StopAsyncIteration:
                    return
                pending = asyncio.ensure_future(seen.__anext__())
        finally:
            subscribed.set()
            changes.put_nowait(None)

    async def _apply_windows(
        self,
        changes: asyncio.Queue[set[tuple[Change, str]] | None],
        watching: asyncio.Task[None],
    ) -> None:
        """Group changes into windows (see the module docstring) and apply each."""
        window: set[str] = set()
        opened = last = 0.0
        while True:
            timeout = None
            if window:
                now = time.monotonic()
                timeout = max(0.0, min(last + self.quiet_s, opened + self.debounce_ms / 1000) - now)
            try:
                raw = await asyncio.wait_for(changes.get(), timeout)
            except TimeoutError:
                await self._apply_window(window, opened)
                window = set()
                continue
            if raw is None:  # stopped, or watchfiles ended
                if window:
                    await self._apply_window(window, opened)
                if self._stop.is_set():
                    return
                await watching  # raises what ended it, if anything did
                raise RootMissing("the file watch ended")
            self._check_roots(raw)
            paths = self._relevant(raw)
            if paths:
                last = time.monotonic()
                if not window:
                    opened = last
                window |= paths

    def _check_roots(self, changes: set[tuple[Change, str]]) -> None:
        """A deleted root ends the OS watch without a word from watchfiles: notice it here."""
        for change, raw in changes:
            if change is Change.deleted and Path(raw) in self.roots:
                raise RootMissing(f"documents root {raw} was deleted; waiting for it")

    # ---- full reconcile ----------------------------------------------------------------------

    async def full_sync(self) -> SyncReport:
        """Reconcile everything; RootMissing rather than empty the table of a missing root."""
        async with self._full_lock:
            for root in self.roots:
                if not root.is_dir():
                    raise RootMissing(f"documents root {root} is missing; waiting for it")
            before = self.status.state
            self.status.state = SyncState.SYNCING
            try:
                report = await reconcile(
                    self.db, self.roots, actor=self.actor, max_bytes=self.max_bytes
                )
            except BaseException:
                self.status.state = before
                raise
            if before is SyncState.WATCHING:  # a reload: back to watching
                self.status.state = SyncState.WATCHING
            self._second_look.clear()
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
        if not self.watching_here:  # pass it on to the worker that watches
            assert self.shared is not None
            if self._status()["state"] == SyncState.SYNCING:
                raise ReloadRunning("a full sync is running")
            self.shared.reload_file.touch()
            return
        if self._full_lock.locked() or (self._reload is not None and not self._reload.done()):
            raise ReloadRunning("a full sync is running")
        self._reload = asyncio.create_task(self._reload_now(), name="document-reload")

    async def _reload_now(self) -> SyncReport | None:
        try:
            return await self.full_sync()
        except (DatabaseUnavailable, RootMissing) as exc:
            log.warning("documents: the reload did not finish: %s", exc)
            return None

    # ---- applying changes --------------------------------------------------------------------

    async def _apply_window(self, paths: set[str], opened: float) -> None:
        self.status.pending = len(paths)
        try:
            again = await self._apply(paths)
            self.on_lag(time.monotonic() - opened)
        finally:
            self.status.pending = 0
        if again:
            # Read once more after another quiet time: an editor is probably mid-save.
            self._count("change", "second_look", len(again))
            self._schedule_second_look(again)

    def _schedule_second_look(self, paths: set[str]) -> None:
        async def look() -> None:
            await self._sleep(self.quiet_s)
            if not self._stop.is_set():
                try:
                    await self._apply(paths)
                except DatabaseUnavailable as exc:
                    log.warning("documents: %d change(s) not applied: %s", len(paths), exc)

        task = asyncio.create_task(look(), name="document-second-look")
        self._looks.add(task)
        task.add_done_callback(self._looks.discard)

    def _relevant(self, changes: set[tuple[Change, str]]) -> set[str]:
        """Relative paths of document files among the changes (temp files, other folders and
        suffixes are not documents). Both sides are absolute and resolved (package docstring)."""
        paths: set[str] = set()
        for _change, raw in changes:
            for root in self.roots:
                relative = relative_to_root(Path(raw), root)
                if relative is not None and document_type(relative) is not None:
                    paths.add(str(relative))
        return paths

    async def _apply(self, paths: set[str]) -> set[str]:
        """Make the rows of ``paths`` match their files; return the paths to look at again
        (bad right after a change, not yet looked at twice). Errors of the others are kept."""
        files: Scan = await asyncio.to_thread(
            scan, self.roots, only=paths, max_bytes=self.max_bytes
        )
        stored = await self.db.read(documents_repo.states(paths))
        todo = plan(files, stored)
        written = bool(todo.added or todo.updated or todo.deleted)
        if written:
            files.errors += await apply(self.db, todo, actor=self.actor)
        for kind, n in (
            ("added", len(todo.added)),
            ("updated", len(todo.updated)),
            ("deleted", len(todo.deleted)),
            ("unchanged", todo.unchanged),
        ):
            if n:
                self._count(kind, "ok", n)
        again = {e.file for e in files.errors if e.file not in self._second_look}
        self._second_look = (self._second_look - paths) | again
        final = [e for e in files.errors if e.file not in again]
        self._replace_errors(final, scope=paths - again)
        if final:
            self._count("change", "error", len(final))
            for error in final:
                log.warning("documents: %s (%s): %s", error.file, error.root, error.reason)
        if written:
            self.status.by_type = await documents_repo.count_by_type(self.db)
        return again

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

    def summary(self) -> dict[str, Any]:
        """What ``/health`` shows of the sync."""
        status = self._status()
        return {
            "state": status["state"],
            "reason": status["reason"],
            "errors": len(status["errors"]),
            "last_full_sync": status["last_full_sync"],
        }

    @property
    def troubled(self) -> bool:
        """Retrying or failed, here or in the worker that watches."""
        return self._status()["state"] in TROUBLED

    async def describe(self) -> dict[str, Any]:
        """What ``GET /admin/sync`` shows."""
        return {**self._status(), "documents": await documents_repo.count_by_type(self.db)}

    def _status(self) -> dict[str, Any]:
        """The sync's status: this process's, or the watching worker's as it last published
        it (while none has, this one's: standing by)."""
        if not self.watching_here:
            assert self.shared is not None
            published = read_json(self.shared.status_file)
            if isinstance(published, dict):
                return published
        return self._own_status()

    def _own_status(self) -> dict[str, Any]:
        return {
            "state": str(self.status.state),
            "reason": self.status.reason,
            "roots": [str(r) for r in self.roots],
            "debounce_ms": self.debounce_ms,
            "quiet_ms": round(self.quiet_s * 1000),
            "last_full_sync": self.status.last_full,
            "pending": self.status.pending,
            "events": dict(sorted(self.status.events.items())),
            "errors": [
                {"file": e.file, "root": e.root, "reason": e.reason, "since": e.since}
                for e in sorted(self.status.errors.values(), key=lambda e: e.file)
            ],
        }

    # ---- sharing with the other workers ------------------------------------------------------

    async def _publish_loop(self) -> None:
        """Publish the status for the other workers, and take the reloads they pass on."""
        assert self.shared is not None
        published = None
        while True:
            status = self._own_status()
            if status != published:  # a file written only when the status changed
                self._publish(status)
                published = status
            with contextlib.suppress(FileNotFoundError):
                self.shared.reload_file.unlink()
                with contextlib.suppress(ReloadRunning):
                    self.reload()
            await asyncio.sleep(PUBLISH_S)

    def _publish(self, status: dict[str, Any] | None = None) -> None:
        assert self.shared is not None
        try:
            write_json_atomically(self.shared.status_file, status or self._own_status())
        except OSError as exc:  # the run directory is the supervisor's: gone while stopping
            log.debug("documents: status not published: %s", exc)
