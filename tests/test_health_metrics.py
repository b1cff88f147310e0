import asyncio
import gc
import shutil
import subprocess
import time

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service import __version__
from service.db import DatabaseURL
from service.keys import DB_KEY
from service.metrics import UNMATCHED_ROUTE
from tests.backends import sql
from tests.support import eventually


async def test_health_ok(seeded_client: TestClient) -> None:
    resp = await seeded_client.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok" and body["db"] == "ok" and body["version"] == __version__
    assert isinstance(body["uptime_s"], float) and body["uptime_s"] >= 0
    assert body["seed"] == {"state": "complete", "rows": 1000, "target": 1000}


async def test_health_is_503_when_the_database_cannot_be_queried(
    client: TestClient, db_url: DatabaseURL
) -> None:
    sql(db_url, "DROP TABLE status")  # an operator (or a bad restore) breaks the schema
    resp = await client.get("/health")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unavailable" and body["db"] == "error"
    assert "no such table: status" in body["reason"] or 'relation "status"' in body["reason"]
    assert resp.headers["Retry-After"] == "5"


async def test_health_is_503_when_the_database_is_closed(client: TestClient) -> None:
    from service.keys import DB_KEY

    await client.app[DB_KEY].close()
    resp = await client.get("/health")
    assert resp.status == 503
    assert "closed" in (await resp.json())["reason"]


async def scrape(client: TestClient) -> str:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return await resp.text()


async def test_metrics_label_by_route_template(seeded_client: TestClient) -> None:
    for path in (
        "/bobgen/status/1",
        "/bobgen/status/2",
        "/bobgen/status/999999",
        "/nope/1",
        "/also/nope",
        "/bobgen/status?limit=2",
    ):
        await seeded_client.get(path)
    text = await scrape(seeded_client)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }

    def requests(route: str, status: str) -> float:
        key = (("method", "GET"), ("route", route), ("status", status))
        return samples.get(("http_requests_total", key), 0.0)

    assert requests("/bobgen/status/{id}", "200") == 2
    assert requests("/bobgen/status/{id}", "404") == 1
    assert requests("/bobgen/status", "200") == 1
    assert requests(UNMATCHED_ROUTE, "404") == 2
    assert not any("/bobgen/status/1" in str(k) or "/nope" in str(k) for k in samples)
    count_key = (("method", "GET"), ("route", "/bobgen/status/{id}"))
    assert samples[("http_request_duration_seconds_count", count_key)] == 3
    assert samples[("bobgen_seed_rows", ())] == 1000
    assert samples[("bobgen_seed_state", (("state", "complete"),))] == 1
    if seeded_client.app[DB_KEY].backend == "sqlite":
        assert samples[("bobgen_db_size_bytes", ())] > 0
    assert samples[("bobgen_db_transactions_total", (("outcome", "committed"),))] >= 4


async def test_two_apps_in_one_process_keep_separate_metrics(make_client) -> None:  # type: ignore[no-untyped-def]
    first, second = await make_client(), await make_client()
    await first.get("/health")
    assert 'route="/health"' in await scrape(first)
    assert 'route="/health"' not in await scrape(second)


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian: prometheus) missing"
)
async def test_metrics_pass_promtool(seeded_client: TestClient) -> None:
    await seeded_client.get("/bobgen/status/1")
    await seeded_client.get("/nope")
    text = await scrape(seeded_client)
    result = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


async def test_metrics_time_garbage_collections(client: TestClient) -> None:
    def full_collections(text: str) -> float:
        for family in text_string_to_metric_families(text):
            if family.name == "bobgen_gc_pause_seconds":
                for sample in family.samples:
                    if sample.name.endswith("_count") and sample.labels["generation"] == "2":
                        return sample.value
        raise AssertionError("no bobgen_gc_pause_seconds")

    before = full_collections(await scrape(client))
    gc.collect()
    assert full_collections(await scrape(client)) >= before + 1


async def test_metrics_time_how_late_the_event_loop_runs(client: TestClient) -> None:
    async def lateness() -> tuple[float, float]:
        """(timers measured, of them later than 100 ms)."""
        samples = {
            (s.name, s.labels.get("le")): s.value
            for family in text_string_to_metric_families(await scrape(client))
            if family.name == "bobgen_event_loop_lag_seconds"
            for s in family.samples
        }
        count = samples[("bobgen_event_loop_lag_seconds_count", None)]
        return count, count - samples[("bobgen_event_loop_lag_seconds_bucket", "0.1")]

    async def measured_after(late: float) -> tuple[float, float] | None:
        seen = await lateness()
        return seen if seen[0] >= 2 and seen[1] > late else None

    await eventually(lambda: measured_after(-1), what="the loop's timer measured")
    _, late = await lateness()
    time.sleep(0.3)  # noqa: ASYNC251  # blocking the loop, as a buggy handler would
    _, late_now = await eventually(lambda: measured_after(late), what="the blocked loop")
    assert late_now >= late + 1
