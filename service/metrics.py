"""Prometheus metrics, one registry per app so tests can build many apps in one process.

Requests are labelled by route *template* (``/bobgen/status/{id}``), never by raw path: raw
paths would create one time series per id and per scanner probe. Unmatched paths share one
label value.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from service.db import Database
from service.db.database import SECONDS, Distribution
from service.db.sqlite import JOURNAL_SIZE_LIMIT_BYTES
from service.errors import Handler
from service.jobs.seeding import Seeder, SeedState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from service.documents.watcher import DocumentWatcher
    from service.jobs.backups import BackupSchedule
    from service.keys import Lifecycle
    from service.workers import WorkerContext

# The *_created series double the output and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client

UNMATCHED_ROUTE = "__unmatched__"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by method, route template and status code.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.worker: WorkerContext | None = None
        self._server: CollectorRegistry | None = None
        self.loop_lag = LoopLag()

    def share(self, worker: WorkerContext) -> None:
        """Answer for the whole server, as one of its ``--workers`` (service/workers/metrics.py)."""
        from service.workers.metrics import ServerCollector

        self.worker = worker
        self._server = CollectorRegistry(auto_describe=False)
        self._server.register(ServerCollector(worker, self.registry))

    def publish(self) -> None:
        """Write this worker's snapshot for the others (a no-op for a single process)."""
        if self.worker is not None:
            from service.workers.metrics import publish

            publish(self.worker, self.registry)

    def collect(self) -> Iterable[Metric]:
        """Every family: this process's, or with workers the whole server's."""
        return (self._server or self.registry).collect()

    def register_process(self, version: str, git_sha: str | None, lifecycle: Lifecycle) -> None:
        """The process, platform and GC collectors, the build and whether the database answers."""
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(_GcPauseCollector(GC_PAUSES.install()))
        self.registry.register(_LoopLagCollector(self.loop_lag))
        self.registry.register(_BuildCollector(version, git_sha, lifecycle))

    def register_documents(self, watcher: DocumentWatcher) -> None:
        """Document sync: events, errors, documents per type, and the change-to-row lag."""
        lag = Histogram(
            "bobgen_documents_sync_lag_seconds",
            "From a batch of file changes reaching the watcher to its rows committed.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        watcher.on_lag = lag.observe
        self.registry.register(_DocumentsCollector(watcher))

    def register_backups(self, schedule: BackupSchedule) -> None:
        """The backup schedule: when the newest backup was taken, how long it took, failures."""
        self.registry.register(_BackupCollector(schedule))

    def register_state(self, db: Database, seeder: Seeder) -> None:
        """Expose seed progress and database facts, computed at scrape time."""
        self.registry.register(_StateCollector(db, seeder))

    def render(self) -> bytes:
        return generate_latest(self._server or self.registry)

    def middleware(self) -> Middleware:
        requests, latency = self.requests, self.latency
        # labels() takes a lock and re-validates its arguments on every call: keep the children.
        counters: dict[tuple[str, str, int], Any] = {}
        histograms: dict[tuple[str, str], Any] = {}

        @web.middleware
        async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                route = _route_template(request)
                key = (request.method, route, status)
                counter = counters.get(key)
                if counter is None:
                    counter = counters[key] = requests.labels(request.method, route, str(status))
                counter.inc()
                histogram = histograms.get(key[:2])
                if histogram is None:
                    histogram = histograms[key[:2]] = latency.labels(request.method, route)
                histogram.observe(time.perf_counter() - started)

        return metrics_middleware


def _route_template(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return UNMATCHED_ROUTE
    return info.route.resource.canonical


class _StateCollector(Collector):
    def __init__(self, db: Database, seeder: Seeder):
        self._db, self._seeder = db, seeder

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        progress = self._seeder.progress
        yield GaugeMetricFamily(
            "bobgen_seed_rows",
            "Rows in the status table as last seen by the seeder.",
            progress.rows,
        )
        yield GaugeMetricFamily(
            "bobgen_seed_target_rows", "Target row count of the seed.", progress.target
        )
        state = GaugeMetricFamily(
            "bobgen_seed_state", "Seed job state (1 for the current state).", labels=("state",)
        )
        for s in SeedState:
            state.add_metric((str(s),), 1.0 if progress.state is s else 0.0)
        yield state
        db = self._db
        sizes = db.file_sizes()
        if sizes is not None:  # SQLite only: a server database has no files of ours
            yield GaugeMetricFamily(
                "bobgen_db_size_bytes", "Size of the SQLite database file.", sizes["db"]
            )
            yield GaugeMetricFamily(
                "bobgen_db_wal_size_bytes", "Size of the SQLite WAL file.", sizes["wal"]
            )
            yield GaugeMetricFamily(
                "bobgen_db_wal_limit_bytes",
                "The size SQLite truncates the WAL back to after a checkpoint "
                "(journal_size_limit); a WAL staying above it means checkpoints cannot finish.",
                JOURNAL_SIZE_LIMIT_BYTES,
            )
        stats = db.writer_stats
        yield CounterMetricFamily(
            "bobgen_db_write_units",
            "Units of work run by the writer (one per write request), committed or not.",
            stats.units,
        )
        yield GaugeMetricFamily(
            "bobgen_db_write_batch_largest",
            "Most units of work group-committed in one transaction since start.",
            stats.largest_batch,
        )
        tx = CounterMetricFamily(
            "bobgen_db_transactions",
            "Write transactions finished, by outcome.",
            labels=("outcome",),
        )
        tx.add_metric(("committed",), db.transactions_committed)
        tx.add_metric(("rolled_back",), db.transactions_rolled_back)
        yield tx
        yield _histogram(
            "bobgen_db_write_queue_wait_seconds",
            "From a write submitted to its transaction beginning (SQLite: waiting for the "
            "writer thread; PostgreSQL: for a write slot, then a pooled connection).",
            stats.queue_wait,
        )
        yield _histogram(
            "bobgen_db_write_batch_size",
            "Units of work per group-committed transaction (always 1 on PostgreSQL).",
            stats.batch_size,
        )
        yield _histogram(
            "bobgen_db_transaction_seconds",
            "Write transactions, BEGIN to COMMIT done (the fsync included).",
            stats.transaction,
        )
        units = HistogramMetricFamily(
            "bobgen_db_unit_seconds",
            "Units of work by operation (the function that wrote it: create_run, reserve, "
            "_write_batch, ...), from their first statement to their last.",
            labels=("operation",),
        )
        for operation, dist in sorted(stats.units_by_operation.items()):
            units.add_metric((operation,), _buckets(dist), dist.total)
        yield units
        reads = HistogramMetricFamily(
            "bobgen_db_read_seconds",
            "Reads by operation (the reading function: page, fetch_by_ids, get, ...); SQLite: "
            "on a reader thread, taken off the queue to the result handed back; PostgreSQL: "
            "the query (or BEGIN to COMMIT of a read unit), without the wait for a connection.",
            labels=("operation",),
        )
        for operation, dist in sorted(db.reads_by_operation().items()):
            reads.add_metric((operation,), _buckets(dist), dist.total)
        yield reads
        pool = db.pool_state()
        if pool is not None:
            yield GaugeMetricFamily(
                "bobgen_db_pool_connections",
                "Connections of the pool (SQLite: the readers; PostgreSQL: every query's).",
                pool.size,
            )
            yield GaugeMetricFamily(
                "bobgen_db_pool_in_use", "Pool connections borrowed now.", pool.in_use
            )
            yield GaugeMetricFamily(
                "bobgen_db_pool_waiting",
                "Callers waiting for a pool connection now (none was free when they asked).",
                pool.waiting,
            )
            yield _histogram(
                "bobgen_db_pool_wait_seconds",
                "Time to get a pool connection (SQLite: every read, from submitted to taken "
                "by a reader thread; PostgreSQL: every acquisition).",
                pool.waits,
            )
            yield CounterMetricFamily(
                "bobgen_db_connection_errors",
                "Connections that could not be made or broke in use (PostgreSQL).",
                pool.errors,
            )
            yield CounterMetricFamily(
                "bobgen_db_retries",
                "Units of work run again after a serialization failure or deadlock (PostgreSQL).",
                pool.retries,
            )
        checkpoints = db.checkpoint_stats()
        if checkpoints is not None:  # SQLite
            yield _histogram(
                "bobgen_db_checkpoint_seconds",
                "Background WAL checkpoints (PASSIVE: they never wait for readers or writers).",
                checkpoints.seconds,
            )
            outcomes = CounterMetricFamily(
                "bobgen_db_checkpoints",
                "Background WAL checkpoints by result: complete (the whole WAL copied), "
                "partial (readers or new writes held part of it back), failed.",
                labels=("result",),
            )
            outcomes.add_metric(("complete",), checkpoints.complete)
            outcomes.add_metric(("partial",), checkpoints.partial)
            outcomes.add_metric(("failed",), checkpoints.failed)
            yield outcomes
        queued = getattr(db, "queued_writes", None)
        if queued is not None:  # SQLite's writer thread
            yield GaugeMetricFamily(
                "bobgen_db_write_queue_depth",
                "Writes waiting for the SQLite writer thread now.",
                queued,
            )
        lock_waits = getattr(db, "write_lock_waits", None)
        if lock_waits is not None:  # SQLite: the lock its processes' writers take in turn
            yield _histogram(
                "bobgen_db_write_lock_wait_seconds",
                "Transactions that found another process writing to the SQLite file: the "
                "wait for its write lock (uncontended transactions are not counted).",
                lock_waits,
            )


class _BuildCollector(Collector):
    """The build, and whether the database answered. Computed per scrape, not a value-backed
    gauge: with ``--workers`` those go to prometheus-client's multiprocess files, one series
    per process, while these are facts of the server (service/workers/metrics.py)."""

    def __init__(self, version: str, git_sha: str | None, lifecycle: Lifecycle):
        self._labels = (version, git_sha or "unknown")
        self._lifecycle = lifecycle

    def collect(self) -> Iterator[GaugeMetricFamily]:
        build = GaugeMetricFamily(
            "bobgen_build_info",
            "The running build (always 1): version and git sha as labels.",
            labels=("version", "git_sha"),
        )
        build.add_metric(self._labels, 1.0)
        yield build
        yield GaugeMetricFamily(
            "bobgen_db_up",
            "1 when the database answered the last check (each scrape and /readyz), else 0.",
            1.0 if self._lifecycle.db_up else 0.0,
        )


class _DocumentsCollector(Collector):
    def __init__(self, watcher: DocumentWatcher):
        self._watcher = watcher

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = self._watcher.status
        events = CounterMetricFamily(
            "bobgen_documents_sync_events",
            "Document sync events by kind (full, change, added, updated, deleted, unchanged) "
            "and outcome (ok, error, retried, failed).",
            labels=("kind", "outcome"),
        )
        for key, count in sorted(status.events.items()):
            kind, outcome = key.split(":", 1)
            events.add_metric((kind, outcome), count)
        yield events
        yield GaugeMetricFamily(
            "bobgen_documents_sync_errors", "Files that currently fail to sync.", len(status.errors)
        )
        per_type = GaugeMetricFamily(
            "bobgen_documents",
            "Documents in the table by type (after the last sync).",
            labels=("type",),
        )
        for kind, count in sorted(status.by_type.items()):
            per_type.add_metric((kind,), count)
        yield per_type
        yield GaugeMetricFamily(
            "bobgen_documents_watcher_up",
            "1 while the document sync syncs or watches; 0 while it retries after a failure "
            "(reason in /health and /admin/sync).",
            0.0 if status.troubled else 1.0,
        )


class _BackupCollector(Collector):
    def __init__(self, schedule: BackupSchedule):
        self._schedule = schedule

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = self._schedule.status
        yield GaugeMetricFamily(
            "bobgen_backup_last_success_timestamp_seconds",
            "When the newest scheduled backup was taken (by any instance on this database), "
            "Unix time; 0 before the first.",
            status.last_success or 0.0,
        )
        yield GaugeMetricFamily(
            "bobgen_backup_interval_seconds",
            "How often a scheduled backup is due (--backup-every).",
            status.every_s,
        )
        yield GaugeMetricFamily(
            "bobgen_backup_duration_seconds",
            "How long this process's last scheduled backup took (0 before one).",
            status.last_duration_s or 0.0,
        )
        yield CounterMetricFamily(
            "bobgen_backup_failures",
            "Scheduled backups this process tried and could not write or verify.",
            status.failures,
        )


class GcPauses:
    """How long the cyclic garbage collector stopped this process, by generation.

    A full (generation 2) collection walks every tracked object with the GIL held: tens of
    milliseconds in a serving process, during which no request moves. prometheus-client counts
    collections but not their time, which is what explains a slow minute. Collections run
    one at a time under the GIL, so one start time suffices.
    """

    def __init__(self) -> None:
        self.by_generation = [Distribution(SECONDS) for _ in range(3)]
        self._started = 0.0
        self._installed = False

    def install(self) -> GcPauses:
        """Start timing collections (once per process; every app's registry reads the same)."""
        if not self._installed:
            gc.callbacks.append(self._on_collection)
            self._installed = True
        return self

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.by_generation[info["generation"]].observe(time.perf_counter() - self._started)


GC_PAUSES = GcPauses()


class LoopLag:
    """How late this process's event loop ran a timer due every 50 ms.

    Anything that holds the loop (a blocking call in a handler, a long computation, a
    collection, the process not being scheduled) delays every request of the process by as
    much, whatever the database does; the database's own waits do not show it, this does.
    """

    INTERVAL_S = 0.05

    def __init__(self) -> None:
        self.lateness = Distribution(SECONDS)

    async def watch(self) -> None:
        """Measure until cancelled (one task per app, started by the app factory)."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.INTERVAL_S
            await asyncio.sleep(self.INTERVAL_S)
            self.lateness.observe(max(loop.time() - due, 0.0))


class _LoopLagCollector(Collector):
    def __init__(self, lag: LoopLag):
        self._lag = lag

    def collect(self) -> Iterator[HistogramMetricFamily]:
        yield _histogram(
            "bobgen_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 50 ms: every request of the "
            "process waited as long.",
            self._lag.lateness,
        )


class _GcPauseCollector(Collector):
    def __init__(self, pauses: GcPauses):
        self._pauses = pauses

    def collect(self) -> Iterator[HistogramMetricFamily | GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "bobgen_gc_frozen_objects",
            "Objects frozen after start-up, which garbage collections no longer walk.",
            value=gc.get_freeze_count(),
        )
        family = HistogramMetricFamily(
            "bobgen_gc_pause_seconds",
            "Time the garbage collector stopped the process, by generation (2: a full walk).",
            labels=("generation",),
        )
        for generation, dist in enumerate(self._pauses.by_generation):
            family.add_metric((str(generation),), _buckets(dist), dist.total)
        yield family


def _buckets(dist: Distribution) -> list[tuple[str, float]]:
    """Prometheus' cumulative buckets of a database-layer distribution."""
    out, running = [], 0
    for bound, count in zip([*dist.bounds, float("inf")], dist.counts, strict=True):
        running += count
        out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
    return out


def _histogram(name: str, documentation: str, dist: Distribution) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric((), _buckets(dist), dist.total)
    return family
