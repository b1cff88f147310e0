"""The README's quick start, as a new user runs it: from a copy of the repository root, the
exact serve command line of ``make run`` (read from ``make -n run``, so this follows the
Makefile), then the README's curl examples in order, then a live edit of a document file.

Every other test passes absolute tmp paths; ``make run`` passes relative ones
(``data/bobgen.db``, ``seeds/documents``), which is how the relative-root defect got through.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support import REPO_ROOT, eventually
from tests.support.deployed import NOT_SOURCE
from tests.support.server import Server, free_port

README = REPO_ROOT / "README.md"


def _serve_command(checkout: Path, port: int) -> list[str]:
    """The command ``make run`` would run in ``checkout`` (``make -n`` prints, runs nothing)."""
    printed = subprocess.run(
        ["make", "-n", "run", f"PORT={port}"], cwd=checkout, capture_output=True, text=True
    )
    assert printed.returncode == 0, printed.stderr
    [line] = [line for line in printed.stdout.splitlines() if " serve " in line]
    return shlex.split(line)


def _curl_examples(port: int) -> str:
    """The README's first shell block that calls curl, aimed at ``port``."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    block = next(b for b in blocks if "curl " in b)
    return block.replace("127.0.0.1:8080", f"127.0.0.1:{port}")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the repository root as a user has it, sharing this checkout's .venv (its
    install is what `make run` would otherwise create first)."""
    copy = tmp_path / "bobgen"
    shutil.copytree(REPO_ROOT, copy, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    (copy / ".venv").symlink_to(REPO_ROOT / ".venv")
    return copy


async def test_the_quick_start_works_as_the_readme_says(checkout: Path) -> None:
    port = free_port()
    command = _serve_command(checkout, port)
    assert command[0] == ".venv/bin/bobgen"
    assert "seeds/documents" in command and "data/bobgen.db" in command  # relative, as given
    (checkout / "data").mkdir(exist_ok=True)  # the recipe's `mkdir -p data/`
    server = Server(checkout / "data" / "bobgen.db", argv=command, port=port, cwd=checkout)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:

            async def seeded_past_42() -> bool:
                async with session.get(server.url + "/health") as resp:
                    return (await resp.json())["seed"]["rows"] >= 42

            await eventually(seeded_past_42, timeout=30)
            examples = subprocess.run(
                ["bash", "-e", "-c", _curl_examples(port)],
                cwd=checkout,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert examples.returncode == 0, examples.stderr
            out = examples.stdout
            assert '"error"' not in out, out[:2000]
            assert '"items"' in out and '"version":"1.4.2"' in out.replace(" ", "")
            assert '"status":"ok"' in out.replace(" ", "") and "bobgen_build_info" in out

            # A live edit of a shipped persona, seen through the API within a second.
            persona = next((checkout / "seeds" / "documents" / "personas").glob("*.json"))
            document = json.loads(persona.read_text())
            document["quickstart_marker"] = "edited"
            persona.write_text(json.dumps(document))
            edited = time.monotonic()

            async def visible() -> bool:
                url = f"{server.url}/documents?field.quickstart_marker=edited"
                async with session.get(url) as resp:
                    return bool((await resp.json())["items"])

            await eventually(visible, timeout=10, what="the edit through the API")
            assert time.monotonic() - edited < 1.0
    finally:
        assert await server.stop() == 0
    assert (checkout / "data" / "bobgen.db.admin-token").exists()  # where the README says
