"""The pytest plugin that consumers use (service.testing), run as a consumer would: in a
separate pytest process that finds it through its ``pytest11`` entry point."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT
from tests.support.deployed import Deployed

GUIDE = REPO_ROOT / "docs" / "testing-with-bobgen.md"


def guide_files() -> dict[str, str]:
    """The files of the guide's complete example: a line naming the file in backticks, then
    its fenced code block."""
    text = GUIDE.read_text()
    found = re.findall(r"`([\w.]+\.(?:py|ini))`[^\n]*:\n\n```\w+\n(.*?)```", text, re.S)
    return dict(found)


CONSUMER_TESTS = """
async def test_a_runner_reserves_a_worktree(bobgen_client):
    repo = await (await bobgen_client.post("/repositories", json={"name": "r", "url": "u"})).json()
    await bobgen_client.post(f"/repositories/{repo['id']}/worktrees", json={"path": "/w/1"})
    body = {"repository_id": repo["id"]}
    session = await (await bobgen_client.post("/sessions", json=body)).json()
    resp = await bobgen_client.post(
        f"/repositories/{repo['id']}/worktrees/reserve",
        json={"session_id": session["id"], "lease_s": 60},
    )
    assert resp.status == 201
    assert (await resp.json())["reserved_by"] == session["id"]


async def test_each_test_gets_a_fresh_database(bobgen_client):
    assert (await (await bobgen_client.get("/repositories")).json())["items"] == []


async def test_tokens_with_fewer_rights(bobgen, bobgen_admin_token):
    assert bobgen.client.session.headers["Authorization"] == f"Bearer {bobgen_admin_token}"
    reader = await bobgen.make_token("read")
    headers = {"Authorization": f"Bearer {reader}"}
    body = {"name": "r", "url": "u"}
    resp = await bobgen.client.post("/repositories", json=body, headers=headers)
    assert resp.status == 403
"""


def test_consumers_get_a_real_bobgen_per_test(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(test_consumer=CONSUMER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_overriding_the_config_fixture_changes_the_app(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makeconftest(
        """
import dataclasses
import pytest

@pytest.fixture
def bobgen_config(bobgen_config):
    return dataclasses.replace(bobgen_config, auth_reads=True)
"""
    )
    pytester.makepyfile(
        test_reads="""
async def test_reads_need_a_token(bobgen_client):
    resp = await bobgen_client.get("/repositories", headers={"Authorization": ""})
    assert resp.status == 401
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_guide_example_passes_as_written(pytester: pytest.Pytester) -> None:
    files = guide_files()
    assert set(files) == {"pytest.ini", "runner.py", "test_runner.py"}
    for name, content in files.items():
        (pytester.path / name).write_text(content)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_without_pytest_asyncio_the_fixture_says_what_is_missing(
    pytester: pytest.Pytester,
) -> None:
    """pytest-asyncio not importable (a module of that name that fails to import shadows it,
    and its plugin is not loaded): one line naming it, not pytest's generic async error."""
    (pytester.path / "pytest_asyncio").mkdir()
    (pytester.path / "pytest_asyncio" / "__init__.py").write_text("raise ImportError('absent')")
    pytester.makepyfile(
        test_consumer="""
def test_uses_bobgen(bobgen):
    pass
"""
    )
    blocked = ["-p", "no:asyncio", "-p", "no:aiohttp"]  # pytest-aiohttp imports pytest-asyncio
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *blocked)
    result.assert_outcomes(errors=1)
    lines = [line for line in result.outlines if "pytest-asyncio" in line]
    assert any("need pytest-asyncio: pip install pytest-asyncio" in line for line in lines)
    assert "async def functions are not natively supported" not in result.stdout.str()


def test_a_consumer_project_installs_bobgen_and_the_guide_example_passes(
    deployed: Deployed, tmp_path: Path
) -> None:
    """As a consumer starts: a project folder of its own, BobGen installed from its wheel with
    the ``testing`` extra into the project's venv, the guide's files as written (the plugin
    and service.client together), and ``pytest`` run there passes them."""
    project = tmp_path / "consumer"
    project.mkdir()
    for name, content in guide_files().items():
        (project / name).write_text(content)
    venv = project / ".venv"
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}  # the index to use
    env |= {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    for command in (
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "-q", f"{deployed.wheel}[testing]"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    run = subprocess.run(
        [str(venv / "bin" / "pytest"), "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and "3 passed" in run.stdout, run.stdout + run.stderr
