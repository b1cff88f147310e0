"""Every file in deploy/ is checked: Prometheus config and alert rules (promtool, with unit
tests of the alerts), the dashboard and alerts name only metrics /metrics really exposes, the
compose file (docker compose when it is installed, else its structure), the Dockerfile, and
the systemd unit's readiness notification against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient

from tests.support import REPO_ROOT, WORKERS_ONLY_METRICS, eventually
from tests.support.server import Server

DEPLOY = REPO_ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
# Metrics that come from Prometheus itself, not from BobGen.
PROMETHEUS_OWN = {"up"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is required in CI (Debian package prometheus)")
        pytest.skip("promtool (Debian: prometheus) missing")
    return path


def run(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd)


def test_prometheus_config_and_rules_are_valid() -> None:
    tool = promtool()
    config = run(tool, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = run(tool, "check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 12 rules found" in rules.stdout


def test_alerts_fire_when_they_should() -> None:
    result = run(promtool(), "test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {
        r["alert"]
        for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts_test.yml").read_text()))
    assert alerts == tested  # every alert has a unit test
    assert alerts == {
        "BobGenDown",
        "BobGenHigh5xxRatio",
        "BobGenHighP99Latency",
        "BobGenSeedStalled",
        "BobGenDocumentSyncErrors",
        "BobGenDocumentWatcherDown",
        "BobGenDatabaseUnavailable",
        "BobGenBackupTooOld",
        "BobGenWriteQueueSlow",
        "BobGenPoolExhausted",
        "BobGenWalOverLimit",
        "BobGenWorkerRestarting",
    }


def exposed_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def referenced_names(expr: str) -> set[str]:
    """Metric names an expression selects: every selector in ours carries labels."""
    return set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr))


@pytest.fixture
async def full_metrics(make_client: Any, tmp_path: Path) -> str:
    """/metrics of an app with every optional part on: documents watched, one request served."""
    docs = tmp_path / "documents"
    (docs / "personas").mkdir(parents=True)
    (docs / "personas" / "a.json").write_text('{"name": "A"}')
    client: TestClient = await make_client(
        documents_dirs=str(docs), backup_dir=str(tmp_path / "backups")
    )

    async def watching() -> bool:  # the initial sync counts the documents per type
        health = await (await client.get("/health")).json()
        return bool(health["documents"]["state"] == "watching")

    await eventually(watching, timeout=30, what="the first documents sync")
    await client.get("/livez")
    return await (await client.get("/metrics")).text()


async def test_dashboard_and_alerts_name_only_exposed_metrics(
    full_metrics: str, backend: str
) -> None:
    exposed = exposed_names(full_metrics) | PROMETHEUS_OWN
    exposed |= WORKERS_ONLY_METRICS  # the supervisor's: tests/reliability/test_workers.py
    if backend == "postgresql":  # no files of ours on a server database
        exposed |= {
            "bobgen_db_size_bytes",
            "bobgen_db_wal_size_bytes",
            "bobgen_db_wal_limit_bytes",
            "bobgen_db_write_queue_depth",
            "bobgen_db_checkpoints_total",
        }
    dashboard = json.loads((DEPLOY / "grafana" / "bobgen-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    exprs += [r["expr"] for r in rules]
    assert len(exprs) > 15
    for expr in exprs:
        names = referenced_names(expr)
        assert names, expr
        assert names <= exposed, (expr, names - exposed)


def test_compose_file() -> None:
    compose = DEPLOY / "compose.yaml"
    if shutil.which("docker") and run("docker", "compose", "version").returncode == 0:
        result = run("docker", "compose", "-f", str(compose), "config", "--quiet")
        assert result.returncode == 0, result.stderr
    spec = yaml.safe_load(compose.read_text())
    services = spec["services"]
    assert set(services) == {"bobgen", "postgres", "prometheus", "grafana"}
    bobgen = services["bobgen"]
    assert (compose.parent / bobgen["build"]["context"] / bobgen["build"]["dockerfile"]).is_file()
    assert bobgen["environment"]["BOBGEN_DB"].startswith("postgresql://")
    secrets = [k for s in services.values() for k in s.get("environment", {}) if "PASSWORD" in k]
    assert secrets == []  # PostgreSQL trusts its private network: no password in the repo
    for service in services.values():
        assert isinstance(service.get("image", service.get("build")), (str, dict))
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (compose.parent / source).exists(), volume
            else:
                assert source in spec["volumes"], volume
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port  # nothing listens beyond this machine
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")  # join continued lines
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert re.match(r"FROM python:3\.\d+-slim$", lines[0])
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    assert "/readyz" in next(line for line in lines if line.startswith("HEALTHCHECK"))
    assert any(line.startswith("VOLUME") and "/data" in line for line in lines)
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO_ROOT / source).exists(), line
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored
    assert "data" in ignored


@pytest.mark.slow
async def test_the_systemd_unit_is_told_when_bobgen_is_ready_and_stopping(
    tmp_path: Path,
) -> None:
    unit = (DEPLOY / "bobgen.service").read_text()
    assert "\nType=notify\n" in unit
    assert "useradd --system" in unit  # the user it runs as is created as documented
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
    server = Server(tmp_path / "bobgen.db", env=env)
    await server.start(wait=False)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(60):
            ready = await loop.sock_recv(listener, 64)
        assert ready == b"READY=1"
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.url + "/readyz") as resp,
        ):
            assert resp.status == 200  # ready means ready
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            stopping = await loop.sock_recv(listener, 64)
        assert stopping == b"STOPPING=1"
        assert await server.wait_exit(30) == 0
    finally:
        listener.close()
        await server.stop()
