"""The ops page's traffic figures (service.traffic) from known counters: rates per interval,
error ratios, interpolated quantiles, the page's own requests apart."""

from __future__ import annotations

import pytest

from service.traffic import Sample, TrafficHistory, quantile

INF = float("inf")


def sample(at: float, ok: float, errors: float, fast: float, slow: float) -> Sample:
    """``ok`` 200s and ``errors`` 500s of GET /things; ``fast`` of them in 10 ms, ``slow`` in
    100 ms; and as many polls of the page as seconds."""
    return Sample(
        at,
        {
            ("/things", "GET", "2xx"): ok,
            ("/things", "GET", "5xx"): errors,
            ("/ui/data", "GET", "2xx"): at,
        },
        {
            ("/things", "GET"): {0.01: fast, 0.1: fast + slow, INF: fast + slow},
            ("/ui/data", "GET"): {0.01: at, 0.1: at, INF: at},
        },
    )


def test_rates_and_error_ratios_per_interval_leave_the_page_out() -> None:
    history = TrafficHistory(interval_s=10, window_s=60)
    history.record(sample(0, 0, 0, 0, 0))
    history.record(sample(10, 90, 10, 100, 0))
    chart = history.chart(sample(20, 190, 10, 150, 50))
    first, second = chart["overall"]
    assert (first["rate_per_s"], first["error_ratio"]) == (10.0, 0.1)
    assert (second["rate_per_s"], second["error_ratio"]) == (10.0, 0.0)
    assert second["p99_ms"] > 90  # half of the second interval took 100 ms
    assert first["p99_ms"] <= 10
    assert list(chart["routes"]) == ["/things"]


def test_the_window_keeps_only_its_length() -> None:
    history = TrafficHistory(interval_s=10, window_s=60)
    for at in range(0, 200, 10):
        history.record(sample(at, at, 0, at, 0))
    assert len(history.samples) == 7 and history.samples[0].at == 130


def test_the_table_counts_by_status_class_and_rates_over_the_last_minute() -> None:
    history = TrafficHistory(interval_s=10, window_s=600)
    for at in range(0, 130, 10):
        history.record(sample(at, at * 2, 0, at * 2, 0))
    rows = history.table(sample(130, 260, 5, 265, 0))
    things, page = rows
    assert things["kind"] == "api" and page["kind"] == "page"  # the API's rows first
    assert (things["requests"], things["2xx"], things["5xx"]) == (265, 260, 5)
    assert things["rate_per_s"] == pytest.approx((265 - 140) / 60, abs=0.01)


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, {0.01: 50, 0.1: 100, INF: 100}, 0.01),
        (0.75, {0.01: 50, 0.1: 100, INF: 100}, 0.055),  # halfway into the second bucket
        (0.99, {0.01: 0, 0.1: 0, INF: 10}, 0.1),  # beyond the last bound: that bound
        (0.5, {0.01: 0, INF: 0}, None),  # no observations
    ],
)
def test_quantiles_are_interpolated_in_their_bucket(
    q: float, buckets: dict[float, float], expected: float | None
) -> None:
    assert quantile(q, buckets) == (pytest.approx(expected) if expected is not None else None)


def test_every_active_route_has_a_point_in_every_interval() -> None:
    history = TrafficHistory(interval_s=10, window_s=60)
    history.record(sample(0, 0, 0, 0, 0))
    history.record(sample(10, 0, 0, 0, 0))  # /things idle in the first interval
    chart = history.chart(sample(20, 50, 0, 50, 0))
    assert [p["rate_per_s"] for p in chart["routes"]["/things"]] == [0.0, 5.0]
    assert len(chart["routes"]["/things"]) == len(chart["overall"]) == 2


def test_the_partial_interval_since_the_newest_sample_waits_for_half_an_interval() -> None:
    """A poll just after a sample would chart milliseconds as an interval: under a steady
    load its rate read 0. It is left out until it spans half an interval, unless it is the
    only one (just after a start)."""
    history = TrafficHistory(interval_s=10, window_s=60)
    history.record(sample(0, 0, 0, 0, 0))
    assert len(history.chart(sample(0.01, 0, 0, 0, 0))["overall"]) == 1  # all there is
    history.record(sample(10, 100, 0, 100, 0))
    just_after = history.chart(sample(10.01, 100, 0, 100, 0))["overall"]
    assert [p["rate_per_s"] for p in just_after] == [10.0]
    later = history.chart(sample(15, 150, 0, 150, 0))["overall"]
    assert [p["rate_per_s"] for p in later] == [10.0, 10.0]
