"""Request traffic over the last 15 minutes, for the ops page.

Sampled from the app's own metrics every ``INTERVAL_S`` by one background task, so every open
tab sees the same history and no tab's polling changes another's figures (the page used to
compute rates between its own polls: two tabs halved each other's). With ``--workers`` the
metrics are the whole server's, so is this.

Latency quantiles are interpolated inside the histogram bucket that holds them, as
Prometheus's ``histogram_quantile`` does, instead of reporting the bucket's upper bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client.metrics_core import Metric

from service.metrics import UNMATCHED_ROUTE
from service.timeutil import utc_iso

INTERVAL_S = 10.0
WINDOW_S = 15 * 60.0
#: The ops page's own requests: shown apart from the API's, never in its charts.
PAGE_ROUTES = frozenset({"/ui", "/ui/data", "/ui/static/{name}"})
RECENT_S = 60.0  # the table's rates and quantiles cover the last minute

Key = tuple[str, str, str]  # route, method, status class ("2xx", "4xx", ...)


@dataclass(frozen=True, slots=True)
class Sample:
    """Cumulative counters at one moment."""

    at: float  # Unix time
    requests: dict[Key, float] = field(default_factory=dict)
    buckets: dict[tuple[str, str], dict[float, float]] = field(default_factory=dict)


def read(families: Iterable[Metric], at: float | None = None) -> Sample:
    """The HTTP counters and latency buckets out of ``families`` (``Metrics.collect()``)."""
    sample = Sample(time.time() if at is None else at)
    for family in families:
        for s in family.samples:
            route, method = s.labels.get("route"), s.labels.get("method")
            if route is None or method is None:
                continue
            if s.name == "http_requests_total":
                key = (route, method, f"{s.labels.get('status', '0')[:1]}xx")
                sample.requests[key] = sample.requests.get(key, 0.0) + s.value
            elif s.name == "http_request_duration_seconds_bucket":
                sample.buckets.setdefault((route, method), {})[float(s.labels["le"])] = s.value
    return sample


def kind(route: str) -> str:
    """``api``, ``page`` (the ops page's own requests) or ``unmatched`` (no such route)."""
    if route == UNMATCHED_ROUTE:
        return "unmatched"
    return "page" if route in PAGE_ROUTES else "api"


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated within its bucket; the
    largest finite bound when it falls in ``+Inf``; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            inside = count - lower_count
            share = (rank - lower_count) / inside if inside > 0 else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound  # pragma: no cover - the last bucket holds every observation


def _minus(new: dict[Any, float], old: dict[Any, float]) -> dict[Any, float]:
    """Counter increases (a restarted worker's counters may go down: never negative)."""
    return {k: max(v - old.get(k, 0.0), 0.0) for k, v in new.items()}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


class TrafficHistory:
    """The last ``window_s`` of samples, one every ``interval_s``."""

    def __init__(self, interval_s: float = INTERVAL_S, window_s: float = WINDOW_S) -> None:
        self.interval_s = interval_s
        self.samples: deque[Sample] = deque(maxlen=int(window_s / interval_s) + 1)

    def record(self, sample: Sample) -> None:
        self.samples.append(sample)

    async def run(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Sample ``collect()`` every ``interval_s`` until cancelled."""
        while True:
            self.record(read(collect()))
            await asyncio.sleep(self.interval_s)

    def chart(self, now: Sample) -> dict[str, Any]:
        """Per interval, the API's requests per second, error ratio (5xx), p50 and p99: the
        whole API, and each route that had requests in the window."""
        points = [*self.samples, now]
        # The interval since the newest sample is partial: a poll just after a sample made it
        # milliseconds long, and its rate read 0 under a steady load (a CI run of the page's
        # test saw "0.0 requests/s"). It is shown once it spans half an interval, or when it
        # is all there is (the first seconds after a start).
        if len(points) > 2 and now.at - points[-2].at < self.interval_s / 2:
            points.pop()
        intervals = []
        for before, after in itertools.pairwise(points):
            requests = _minus(after.requests, before.requests)
            api = {k: v for k, v in requests.items() if kind(k[0]) == "api"}
            buckets = {k: _minus(v, before.buckets.get(k, {})) for k, v in after.buckets.items()}
            intervals.append((after.at, max(after.at - before.at, 1e-3), api, buckets))
        overall = [_point(at, sec, api, _merge(b, lambda r: True)) for at, sec, api, b in intervals]
        # Every route with requests anywhere in the window gets a point in every interval, so
        # that its chart lines up with the others.
        active = sorted({k[0] for _, _, api, _ in intervals for k, v in api.items() if v > 0})
        routes = {
            route: [
                _point(
                    at,
                    sec,
                    {k: v for k, v in api.items() if k[0] == route},
                    _merge(b, route.__eq__),
                )
                for at, sec, api, b in intervals
            ]
            for route in active
        }
        return {"interval_s": self.interval_s, "overall": overall, "routes": routes}

    def table(self, now: Sample) -> list[dict[str, Any]]:
        """Per route and method: requests since start by status class, and the last minute's
        rate, p50 and p99 (since start until a minute of history exists)."""
        base = next((s for s in self.samples if now.at - s.at <= RECENT_S), None)
        base = base or Sample(now.at - max(RECENT_S, 1.0))
        seconds = max(now.at - base.at, 1e-3)
        recent = _minus(now.requests, base.requests)
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for (route, method, status), total in sorted(now.requests.items()):
            row = rows.setdefault(
                (route, method),
                {
                    "route": route,
                    "method": method,
                    "kind": kind(route),
                    "requests": 0,
                    "2xx": 0,
                    "3xx": 0,
                    "4xx": 0,
                    "5xx": 0,
                    "rate_per_s": 0.0,
                },
            )
            row["requests"] += int(total)
            if status in row:
                row[status] += int(total)
            row["rate_per_s"] = round(
                row["rate_per_s"] + recent.get((route, method, status), 0.0) / seconds, 2
            )
        for (route, method), row in rows.items():
            latest = _minus(
                now.buckets.get((route, method), {}), base.buckets.get((route, method), {})
            )
            row["p50_ms"] = _ms(quantile(0.5, latest))
            row["p99_ms"] = _ms(quantile(0.99, latest))
        return sorted(rows.values(), key=lambda r: (r["kind"] != "api", -r["requests"]))


def _merge(buckets: dict[tuple[str, str], dict[float, float]], keep: Any) -> dict[float, float]:
    merged: dict[float, float] = {}
    for (route, _method), counts in buckets.items():
        if kind(route) == "api" and keep(route):
            for bound, count in counts.items():
                merged[bound] = merged.get(bound, 0.0) + count
    return merged


def _point(
    at: float, seconds: float, requests: dict[Key, float], buckets: dict[float, float]
) -> dict[str, Any]:
    total = sum(requests.values())
    errors = sum(v for k, v in requests.items() if k[2] == "5xx")
    return {
        "at": utc_iso(datetime.fromtimestamp(at, UTC)),
        "rate_per_s": round(total / seconds, 2),
        "error_ratio": round(errors / total, 4) if total else 0.0,
        "p50_ms": _ms(quantile(0.5, buckets)),
        "p99_ms": _ms(quantile(0.99, buckets)),
    }


@contextlib.asynccontextmanager
async def sampling(
    history: TrafficHistory, collect: Callable[[], Iterable[Metric]]
) -> AsyncIterator[TrafficHistory]:
    """Run :meth:`TrafficHistory.run` while the block runs."""
    task = asyncio.create_task(history.run(collect), name="traffic-history")
    try:
        yield history
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
