"""BobGen as it is deployed: real server processes started by the console script as a non-root
user, in folders that user may or may not write, with the files the deploy/ folder names.

Everything else in the suite runs as root in a private temp folder with absolute paths; these
tests are where a wrong path, a missing permission or an unwritable default shows.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import aiohttp
import pytest

from service.db import DatabaseURL
from tests.backends import sql
from tests.support import REPO_ROOT
from tests.support.deployed import (
    DOCKERFILE,
    NOBODY,
    Deployed,
    dockerfile_env,
    dockerfile_json_instruction,
    dockerfile_user,
    env_file,
)
from tests.support.server import Server, free_port

ENV_FILE = REPO_ROOT / "deploy" / "bobgen.env"


def _tokens(url: DatabaseURL) -> int:
    return int(sql(url, "SELECT count(*) FROM auth_tokens")[0][0])


def test_an_unwritable_data_dir_fails_the_first_start_in_one_line_and_leaves_no_token(
    deployed: Deployed, pg_url: DatabaseURL, shared_tmp: Path
) -> None:
    data_dir = shared_tmp / "data"  # root's folder: the server's user cannot create it
    port = str(free_port())
    command = [
        str(deployed.bobgen),
        "serve",
        "--db",
        pg_url.dsn,
        "--port",
        port,
        "--seed-rows",
        "0",
    ]
    result = subprocess.run(
        [*command, "--data-dir", str(data_dir)],
        cwd=shared_tmp,
        env=deployed.env(),
        user=NOBODY,
        group=NOBODY,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("bobgen: error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert f"cannot write the initial admin token into {data_dir}" in errors[0]
    assert "--data-dir" in errors[0]
    assert _tokens(pg_url) == 0  # nothing valid that nobody can read


async def test_the_first_start_on_postgresql_writes_the_token_into_the_data_dir(
    deployed: Deployed, pg_url: DatabaseURL, shared_tmp: Path
) -> None:
    data_dir = shared_tmp / "data"
    data_dir.mkdir()
    os.chown(data_dir, NOBODY, NOBODY)
    workdir = shared_tmp / "readonly"  # the working folder is not the server's to write
    workdir.mkdir()
    server = Server(
        shared_tmp,
        db=pg_url.dsn,
        args=["--data-dir", str(data_dir)],
        argv_prefix=[str(deployed.bobgen)],
        env=deployed.env(),
        cwd=workdir,
        user=NOBODY,
        log_dir=data_dir,
    )
    await server.start()
    try:
        dbname = pg_url.redacted.rsplit("/", 1)[-1]
        token_file = data_dir / f"{dbname}.admin-token"
        info = token_file.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == NOBODY
        assert token_file.read_text().startswith("bgt_")
        assert _tokens(pg_url) == 1
        assert list(workdir.iterdir()) == []
    finally:
        assert await server.stop() == 0


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    assert os.geteuid() == 0, "these tests start servers as another user: run them as root"


def _image_uid() -> int:
    """The uid deploy/Dockerfile creates its USER with (``useradd ... --uid N``)."""
    text = DOCKERFILE.read_text()
    match = re.search(r"useradd [^\n]*--uid (\d+)[^\n]* (\w+)\s", text)
    assert match and match.group(2) == dockerfile_user(), "the USER is the one useradd made"
    return int(match.group(1))


def _in_image(value: str, image_paths: dict[str, Path]) -> str:
    """``value`` with the image's absolute folders mapped onto the test's."""
    for inside, outside in image_paths.items():
        value = value.replace(inside, str(outside))
    return value


async def test_the_image_as_built_serves_as_its_user_from_a_read_only_workdir(
    deployed: Deployed, shared_tmp: Path
) -> None:
    """What the image does, minus Docker (no engine here): its USER's uid, its WORKDIR owned by
    root with the seeds copied in, its VOLUME /data owned by that user, its ENV, its CMD; then
    its HEALTHCHECK command verbatim."""
    uid = _image_uid()
    workdir = shared_tmp / "opt-bobgen"
    shutil.copytree(REPO_ROOT / "seeds", workdir / "seeds")  # COPY seeds ./seeds (root's)
    data = shared_tmp / "data"
    data.mkdir()
    os.chown(data, uid, uid)  # RUN ... mkdir /data && chown bobgen:bobgen /data
    image_paths = {"/opt/bobgen": workdir, "/data": data}
    env = {k: _in_image(v, image_paths) for k, v in dockerfile_env().items()}
    assert env["BOBGEN_PORT"] == "8080"  # the port the HEALTHCHECK asks
    cmd = [_in_image(arg, image_paths) for arg in dockerfile_json_instruction("CMD")]
    assert cmd[0] == "bobgen"
    server = Server(
        data,
        argv=[str(deployed.bobgen), *cmd[1:]],
        port=8080,
        env=deployed.env(**env, BOBGEN_SEED_ROWS="100"),
        cwd=workdir,
        user=uid,
        log_dir=shared_tmp,
    )
    await server.start()
    try:
        healthcheck = dockerfile_json_instruction("HEALTHCHECK")
        probe = subprocess.run(healthcheck, env=deployed.env(), user=uid, group=uid, timeout=30)
        assert probe.returncode == 0  # the image's own HEALTHCHECK, run as it is written
        token_file = data / "bobgen.db.admin-token"
        assert token_file.stat().st_uid == uid and (data / "bobgen.db").stat().st_uid == uid
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/personas") as resp:
                assert resp.status == 200 and (await resp.json())["items"]
            headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
            async with session.get(server.url + "/admin/sync", headers=headers) as resp:
                sync = await resp.json()
        assert sync["state"] == "watching" and sync["errors"] == []
        assert sync["roots"] == [str((workdir / "seeds" / "documents").resolve())]
    finally:
        assert await server.stop() == 0
    assert sorted(p.name for p in workdir.iterdir()) == ["seeds"]  # nothing written there


async def test_the_systemd_environment_file_is_what_the_server_runs_with(
    deployed: Deployed, shared_tmp: Path
) -> None:
    """deploy/bobgen.env as systemd hands it over (EnvironmentFile=), in the unit's
    WorkingDirectory= (its StateDirectory=, the service user's own)."""
    unit = (REPO_ROOT / "deploy" / "bobgen.service").read_text()
    state = re.search(r"^WorkingDirectory=(\S+)", unit, re.M)
    assert state and f"StateDirectory={Path(state.group(1)).name}" in unit
    home = shared_tmp / "var-lib-bobgen"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    env = {k: v.replace(state.group(1), str(home)) for k, v in env_file(ENV_FILE).items()}
    assert env["BOBGEN_DB"].startswith(str(home))  # the database lives in the state directory
    port = free_port()
    server = Server(
        home,
        argv=[str(deployed.bobgen), "serve"],  # ExecStart=: flags come from the file
        port=port,
        env=deployed.env(**{**env, "BOBGEN_PORT": str(port)}),
        cwd=home,
        user=NOBODY,
        log_dir=shared_tmp,
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as session, session.get(server.url + "/health") as r:
            health = await r.json()
        assert health["seed"]["target"] == int(env["BOBGEN_SEED_ROWS"])
        assert Path(env["BOBGEN_DB"]).stat().st_uid == NOBODY
    finally:
        assert await server.stop() == 0
