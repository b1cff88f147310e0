"""The console script end to end: real processes, real signals, real sockets."""

import json
import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service import __version__
from service.db import DatabaseURL
from service.jobs.seeding import SeedState
from service.keys import SEEDER_KEY
from tests.backends import sql
from tests.helpers import BOBGEN, run_cli
from tests.support.server import Server, free_port


def test_version_and_help() -> None:
    assert run_cli("--version").stdout.strip() == f"bobgen {__version__}"
    helped = run_cli("serve", "--help")
    assert helped.returncode == 0 and "--seed-rows" in helped.stdout


def test_bad_configuration_is_a_clean_error(tmp_path: Path) -> None:
    result = run_cli("migrate", "--db", str(tmp_path / "x.db"), "--log-level", "LOUD")
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "Traceback" not in result.stderr
    bad_env = run_cli("migrate", env={"BOBGEN_DB": str(tmp_path / "x.db"), "BOBGEN_PORT": "x"})
    assert bad_env.returncode == 2 and "BOBGEN_PORT" in bad_env.stderr


def test_migrate_command(db_path: Path) -> None:
    first = run_cli("migrate", "--db", str(db_path))
    assert first.returncode == 0 and "0001_create_status" in first.stdout
    assert run_cli("migrate", "--db", str(db_path)).stdout.strip() == "applied 0 migration(s)"


def test_seed_command(db_path: Path) -> None:
    result = run_cli("seed", "--db", str(db_path), "--rows", "2500", "--batch-size", "1000")
    assert result.returncode == 0, result.stderr
    assert "seed complete: 2500/2500 rows, 2500 inserted" in result.stdout
    # Not a terminal: plain progress lines, no bar drawing.
    assert "seed: 2,500/2,500 rows (100%)" in result.stderr
    assert "\r" not in result.stderr
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM status").fetchone() == (2500,)


def test_seed_on_a_terminal_draws_a_bar_that_log_lines_do_not_garble(db_path: Path) -> None:
    import pty

    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [*BOBGEN, "seed", "--db", str(db_path), "--rows", "20000", "--batch-size", "500"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert proc.wait(timeout=60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))
    assert "rows/s" in text
    assert "20000/20000" in text
    log_lines = [line for line in text.splitlines() if "migration" in line]
    assert log_lines  # the start-up log line went through rich's handler...
    assert not any("rows/s" in line for line in log_lines)  # ...on a line of its own


@pytest.mark.slow
async def test_serve_seeds_in_background_and_stops_gracefully_on_sigterm(db_path: Path) -> None:
    env = {**os.environ, "BOBGEN_SEED_ROWS": "2000000", "BOBGEN_LOG_LEVEL": "INFO"}
    server = Server(db_path, ["--seed-batch-size", "500"], env=env, quiet=False)
    try:
        await server.start()
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/health") as resp:
                health = await resp.json()
            assert health["seed"]["target"] == 2_000_000  # taken from BOBGEN_SEED_ROWS
            async with session.get(server.url + "/bobgen/status?limit=1") as resp:
                assert resp.status == 200
        returncode = await server.terminate()
    finally:
        await server.stop()
    stderr = server.log()
    assert returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "database closed" in stderr
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT count(*) FROM status").fetchone()[0]
    assert 0 < rows < 2_000_000, "SIGTERM should have arrived mid-seed"
    assert rows % 500 == 0  # stopped at a batch boundary
    assert f"seed stopped: {rows}/2000000 rows" in stderr


async def test_app_shutdown_stops_the_seeder_at_a_batch_boundary(
    make_client, db_url: DatabaseURL
) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(seed_rows=1_000_000, seed_batch_size=100)
    seeder = client.app[SEEDER_KEY]
    await client.get("/health")
    await client.close()  # runs the cleanup contexts, as a SIGTERM would
    assert seeder.progress.state is SeedState.STOPPED
    rows = sql(db_url, "SELECT count(*) FROM status")[0][0]
    assert rows == seeder.progress.rows and rows % 100 == 0


def test_unusable_database_path_is_a_clean_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    result = run_cli("migrate", "--db", str(blocker / "bobgen.db"))
    assert result.returncode == 1
    assert result.stderr.startswith("bobgen: error:") and "Traceback" not in result.stderr


def test_port_in_use_is_a_clean_error(db_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--db", str(db_path), "--port", str(port), "--seed-rows", "0")
    assert result.returncode == 1
    assert f"bobgen: error: [Errno 98] cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "serving on" not in result.stderr
    assert not db_path.exists()  # refused before migrating or making a token


@pytest.mark.slow
async def test_json_logs_and_the_serving_line_after_the_bind(db_path: Path) -> None:
    args = ["--seed-rows", "0", "--log-format", "json", "--access-log"]
    server = Server(db_path, args, quiet=False)
    try:
        await server.start()
        headers = {"X-Request-ID": "json-log-1"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.url + "/bobgen/status/12345", headers=headers) as resp,
        ):
            assert resp.status == 404
        assert await server.terminate() == 0
    finally:
        await server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    serving = [i for i, line in enumerate(lines) if "serving on" in line["message"]]
    migrated = [i for i, line in enumerate(lines) if "migration" in line["message"]]
    assert serving
    assert migrated
    assert serving[0] > migrated[0]  # logged once listening, after start-up
    [access] = [line for line in lines if line.get("request_id") == "json-log-1"]
    assert access["method"] == "GET"
    assert access["route"] == "/bobgen/status/{id}"
    assert access["status"] == 404
    assert access["duration_ms"] >= 0


@pytest.fixture
def read_only_db(tmp_path: Path) -> Any:
    """A migrated database file this process cannot write: mode 0444 for a normal user; for
    root (whom file modes do not stop) the same folder bind-mounted read-only."""
    source = tmp_path / "src"
    source.mkdir()
    db = source / "bobgen.db"
    assert run_cli("migrate", "--db", str(db)).returncode == 0
    if os.geteuid() != 0:
        db.chmod(0o444)
        yield db
        db.chmod(0o644)
        return
    mounted = tmp_path / "ro"
    mounted.mkdir()
    bind = subprocess.run(["mount", "--bind", str(source), str(mounted)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount as root here: {bind.stderr.decode().strip()}")
    try:
        remount = ["mount", "-o", "remount,bind,ro", str(mounted)]
        assert subprocess.run(remount, capture_output=True).returncode == 0
        yield mounted / "bobgen.db"
    finally:
        subprocess.run(["umount", str(mounted)], capture_output=True)


def test_a_read_only_database_fails_at_once_in_one_line(read_only_db: Path) -> None:
    started = time.monotonic()
    result = run_cli("serve", "--db", str(read_only_db), "--port", str(free_port()))
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed < 5  # the 2 s, plus the interpreter's start on a busy machine
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"bobgen: error: {read_only_db}: permission denied")


@pytest.mark.slow
async def test_serve_freezes_what_start_up_built_and_times_collections(db_path: Path) -> None:
    """What start-up built is frozen out of the collector's walks (a full walk of it stopped
    every request for 20-40 ms about once a minute), and /metrics times each collection."""
    server = Server(db_path)
    try:
        await server.start()
        assert await server.metric("bobgen_gc_frozen_objects") > 10_000
        # start-up's own full collection, before the freeze, is the first one timed
        assert await server.metric('bobgen_gc_pause_seconds_count{generation="2"}') >= 1
    finally:
        await server.stop()
