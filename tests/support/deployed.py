"""BobGen installed the way deploy/Dockerfile installs it: a wheel built from the checkout and
``pip install``-ed into a fresh virtual environment outside the checkout, runnable by a
non-root user (the image runs as one). Its migrations come from the wheel's data files and its
``bobgen`` is the console script, neither of which a test importing ``service`` exercises.

The interpreter must be one the unprivileged user can execute: the test's own when it can (a
system Python), else Debian's ``/usr/bin/python3`` (a pyenv Python under a private home is
not reachable by other users).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import REPO_ROOT

PREFIX = "bobgen-deployed-"
NOBODY = 65534  # the unprivileged user tests run a server as
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"


@dataclass(frozen=True)
class Deployed:
    root: Path  # a folder everybody may enter; the venv lives in it
    venv: Path

    def to_json(self) -> str:
        return json.dumps({"root": str(self.root), "venv": str(self.venv)})

    @classmethod
    def from_json(cls, text: str) -> Deployed:
        data = json.loads(text)
        return cls(Path(data["root"]), Path(data["venv"]))

    @property
    def wheel(self) -> Path:
        """The wheel that was installed (kept for installs of its own: a consumer's venv)."""
        return next((self.root / "wheels").glob("bobgen-*.whl"))

    @property
    def bobgen(self) -> Path:
        return self.venv / "bin" / "bobgen"

    def env(self, **extra: str) -> dict[str, str]:
        """A minimal environment with the venv first on PATH (as the image's PATH has
        /usr/local/bin), plus ``extra``."""
        path = f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
        home = str(self.root)
        # No drain on SIGTERM (tests/conftest.py says why); a test may set its own.
        base = {"PATH": path, "LANG": "C.UTF-8", "HOME": home, "BOBGEN_SHUTDOWN_GRACE_S": "0"}
        return {**base, **extra}


def _runnable_by_nobody(python: str) -> bool:
    try:
        probe = subprocess.run(
            [python, "-c", "import venv"], user=NOBODY, group=NOBODY, capture_output=True
        )
    except PermissionError:  # the interpreter's folder is private to its owner
        return False
    return probe.returncode == 0


def install() -> Deployed:
    """Build the wheel and install it into a new venv (about 20 s; once per test session).
    The venv outlives the session (the workers share it): installs older than a day go."""
    for old in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        if time.time() - old.stat().st_mtime > 86_400:
            shutil.rmtree(old, ignore_errors=True)
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    root.chmod(0o755)
    wheels, source = root / "wheels", root / "source"
    # From a copy: building in the checkout writes build/ and *.egg-info into it.
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)])
    python = sys.executable if _runnable_by_nobody(sys.executable) else "/usr/bin/python3"
    venv = root / "venv"
    _run([python, "-m", "venv", str(venv)])
    wheel = next(wheels.glob("bobgen-*.whl"))
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)])
    shutil.rmtree(source)
    return Deployed(root, venv)


NOT_SOURCE = (".git", ".venv", "build", "*.egg-info", "data", "__pycache__", ".*_cache")


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}"


def dockerfile_env() -> dict[str, str]:
    """The ``ENV`` settings of deploy/Dockerfile (``ENV A=1 \\`` continuation lines too)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def dockerfile_json_instruction(name: str) -> list[str]:
    """The exec-form array of the instruction ``CMD`` or ``HEALTHCHECK`` (its ``CMD``)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.split(" ", 1)[0] == name:
            return list(json.loads(line[line.index("[") :]))
    raise AssertionError(f"no {name} in {DOCKERFILE}")


def dockerfile_user() -> str:
    match = re.search(r"^USER (\S+)", DOCKERFILE.read_text(), re.M)
    assert match, "the Dockerfile names no USER"
    return match.group(1)


def env_file(path: Path) -> dict[str, str]:
    """A systemd EnvironmentFile: KEY=VALUE lines, # comments."""
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs
