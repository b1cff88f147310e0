"""``/metrics`` for the whole server when it runs several workers.

Two kinds of metric, two ways across processes:

* The HTTP counters and histograms change on every request: prometheus-client's multiprocess
  mode keeps them in memory-mapped files in the run directory (``PROMETHEUS_MULTIPROC_DIR``),
  and :class:`~prometheus_client.multiprocess.MultiProcessCollector` sums every process's.
* Everything else (the database layer's distributions and gauges, seed, documents, backups,
  the process and the garbage collector) is computed when scraped, from one process's memory,
  which multiprocess mode cannot see. Each worker writes what its collectors say to
  ``snapshots/<pid>.json`` every :data:`SNAPSHOT_EVERY_S`, and the worker answering a scrape
  merges them with its own fresh collection: counters and histograms summed over every worker
  that ever ran in this start (a dead worker's file stays, renamed ``dead-<pid>.json`` by the
  supervisor, so no sum goes backwards), gauges over the live ones by :data:`GAUGE_MODES`
  (sum unless named). So a figure is at most a second old, except the answering worker's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from service.workers.shared import WorkerContext, read_json, write_json_atomically

SNAPSHOT_EVERY_S = 1.0

# Families prometheus-client's multiprocess files carry: service/metrics.py's value-backed
# metrics (everything else there is a collector's, computed per scrape).
MULTIPROCESS_FAMILIES = frozenset(
    {"http_requests", "http_request_duration_seconds", "bobgen_documents_sync_lag_seconds"}
)

# How a gauge of several live workers becomes one value; the rest are summed (pool
# connections, queue depths, memory: each worker has its own).
GAUGE_MODES: dict[str, str] = {
    # Facts about the one database or the one server: every worker sees the same.
    "bobgen_db_size_bytes": "max",
    "bobgen_db_wal_size_bytes": "max",
    "bobgen_db_wal_limit_bytes": "max",
    "bobgen_db_write_batch_largest": "max",
    "bobgen_seed_rows": "max",
    "bobgen_seed_target_rows": "max",
    "bobgen_seed_state": "max",
    "bobgen_build_info": "max",
    "python_info": "max",
    "bobgen_backup_last_success_timestamp_seconds": "max",
    "bobgen_backup_interval_seconds": "max",
    "bobgen_backup_duration_seconds": "max",
    "bobgen_documents": "max",
    "bobgen_documents_sync_errors": "max",
    "process_max_fds": "max",
    # Healthy only if every worker says so.
    "bobgen_db_up": "min",
    "bobgen_documents_watcher_up": "min",
    "process_start_time_seconds": "min",
}

_SUMMED_TYPES = frozenset({"counter", "histogram", "summary", "gaugehistogram"})


def snapshot(registry: CollectorRegistry) -> list[dict[str, Any]]:
    """This process's families, those of the multiprocess files left out, as JSON values."""
    return [
        {
            "name": family.name,
            "documentation": family.documentation,
            "type": family.type,
            "samples": [[s.name, s.labels, s.value] for s in family.samples],
        }
        for family in registry.collect()
        if family.name not in MULTIPROCESS_FAMILIES
    ]


def publish(context: WorkerContext, registry: CollectorRegistry) -> None:
    """Write this worker's snapshot for the others to merge."""
    path = context.snapshots_dir / f"{os.getpid()}.json"
    write_json_atomically(path, snapshot(registry))


class ServerCollector(Collector):
    """The server's metrics: the multiprocess files, plus every worker's snapshot merged."""

    def __init__(self, context: WorkerContext, local: CollectorRegistry) -> None:
        self._context = context
        self._local = local

    def collect(self) -> Iterator[Metric]:
        scratch = CollectorRegistry()
        files = str(self._context.metrics_dir)
        multiprocess = MultiProcessCollector(scratch, path=files)  # type: ignore[no-untyped-call]
        yield from multiprocess.collect()  # type: ignore[no-untyped-call]
        live: list[list[dict[str, Any]]] = [snapshot(self._local)]
        dead: list[list[dict[str, Any]]] = []
        own = f"{os.getpid()}.json"
        for path in sorted(self._context.snapshots_dir.glob("*.json")):
            if path.name == own:
                continue
            families = read_json(path)
            if isinstance(families, list):
                (dead if path.name.startswith("dead-") else live).append(families)
        yield from merge(live, dead)


def merge(
    live: Iterable[list[dict[str, Any]]], dead: Iterable[list[dict[str, Any]]]
) -> list[Metric]:
    """One family per name: counts summed over live and dead workers, gauges over the live."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for snapshots, alive in ((live, True), (dead, False)):
        for families_of_one in snapshots:
            for item in families_of_one:
                name, kind = item["name"], item["type"]
                if not alive and kind not in _SUMMED_TYPES:
                    continue
                if name not in families:
                    families[name] = Metric(name, item["documentation"], kind)
                    values[name] = {}
                mode = "sum" if kind in _SUMMED_TYPES else GAUGE_MODES.get(name, "sum")
                merged = values[name]
                for sample_name, labels, value in item["samples"]:
                    key = (sample_name, tuple(sorted(labels.items())))
                    if key not in merged:
                        merged[key] = value
                    elif mode == "sum":
                        merged[key] += value
                    elif mode == "max":
                        merged[key] = max(merged[key], value)
                    else:
                        merged[key] = min(merged[key], value)
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return list(families.values())
