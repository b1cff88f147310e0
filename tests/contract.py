"""Contract test: schemathesis against a live ``bobgen serve``, from its own /openapi.json.

    .venv/bin/python tests/contract.py [--backend sqlite|postgresql|both] [--examples 3]

Bounded (a fixed number of examples per operation, a fixed seed: the same requests every run),
on SQLite and, when PostgreSQL answers on 127.0.0.1:5432, on PostgreSQL too (in CI, CI=true,
its absence is a failure). Every check schemathesis has (``--checks all``); a finding fails the
run unless docs/api.md ("The contract run") lists it with its reason. Run by ``make contract``
and by .ci/run after ``make test``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.config import DEFAULT_MIGRATIONS_DIR  # noqa: E402
from service.db import DatabaseURL  # noqa: E402
from service.db.migrations import apply_migrations  # noqa: E402
from tests.backends import plant_tokens  # noqa: E402
from tests.support.server import free_port  # noqa: E402

TOKEN = "bgt_contract-admin"
CONFIG = ROOT / "tests" / "schemathesis.toml"
API_MD = ROOT / "docs" / "api.md"
PG_ADMIN = os.environ.get("BOBGEN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bobgen exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("bobgen did not become ready")


def run_against(url: DatabaseURL, workdir: Path, examples: int) -> int:
    apply_migrations(url, DEFAULT_MIGRATIONS_DIR)
    plant_tokens(url, {TOKEN: ("contract", "read,write,admin")})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = ["serve", "--db", url.dsn or str(url.path), "--port", str(port)]
    server = subprocess.Popen(
        [sys.executable, "-m", "service", *serve, "--seed-rows", "200", "--log-level", "ERROR"],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_ready(base, server)
        started = time.monotonic()
        log_path = workdir / f"schemathesis-{url.backend}.log"
        with log_path.open("w") as log:
            result = subprocess.run(
                [
                    str(Path(sys.executable).with_name("schemathesis")),
                    "--config-file",
                    str(CONFIG),
                    "run",
                    f"{base}/openapi.json",
                    "--header",
                    f"Authorization: Bearer {TOKEN}",
                    "--checks",
                    "all",
                    "--report",
                    "junit",
                    "--report-junit-path",
                    str(workdir / f"junit-{url.backend}.xml"),
                    "--max-examples",
                    str(examples),
                    "--seed",
                    "20261126",
                    "--phases",
                    "examples,fuzzing",
                    "--no-color",
                ],
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        took = time.monotonic() - started
        unexpected = unexpected_findings(workdir / f"junit-{url.backend}.xml")
        if unexpected or result.returncode not in (0, 1):
            print(log_path.read_text())  # schemathesis' own account, to reproduce each
        for finding in unexpected:
            print(f"NOT ACCEPTED: {finding}")
        verdict = "failed" if unexpected else "passed"
        summary = f"{len(unexpected)} unexpected finding(s), schemathesis exit {result.returncode}"
        print(f"contract ({url.backend}): {verdict}, {summary}, {took:.0f} s")
        return 1 if unexpected or result.returncode not in (0, 1) else 0
    finally:
        server.terminate()
        server.wait(timeout=60)


def accepted_findings() -> list[tuple[str, str]]:
    """(check code, text the answer contains) from docs/api.md's list of accepted findings."""
    text = API_MD.read_text()
    table = text.split("<!-- contract-exceptions:start -->")[1].split(
        "<!-- contract-exceptions:end"
    )[0]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| ST")]
    return [(check.strip(), contains.strip().strip("`")) for check, contains in rows]


def unexpected_findings(junit: Path) -> list[str]:
    """Each failure in schemathesis' JUnit report that docs/api.md does not accept. A failure
    is one operation's text; every finding in it (a check code with its answer) must match."""
    accepted = accepted_findings()
    found = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        for failure in [*case.iter("failure"), *case.iter("error")]:
            text = (failure.get("message") or "") + (failure.text or "")
            for block in re.split(r"\n(?=\d+\. Test Case ID)", text):
                codes = set(re.findall(r"- (ST\d+|[A-Z]{2}\d+) ", block)) or {"?"}
                for code in codes:
                    if not any(code == c and part in block for c, part in accepted):
                        title = block.strip().splitlines()[0] if block.strip() else ""
                        found.append(f"{case.get('name')}: {code} ({title[:160]})")
    return found


def postgres_target() -> tuple[DatabaseURL, str] | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
            name = f"bobgen_contract_{uuid.uuid4().hex[:8]}"
            admin.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # any failure means: no usable PostgreSQL here
        if os.environ.get("CI") == "true":
            raise SystemExit(f"PostgreSQL is required in CI: {exc}") from exc
        print(f"skipping PostgreSQL: {exc}")
        return None
    return DatabaseURL.parse(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"), name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--examples", type=int, default=10)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bobgen-contract-"))
    failed = 0
    try:
        if args.backend in ("sqlite", "both"):
            failed |= run_against(
                DatabaseURL.sqlite(workdir / "contract.db"), workdir, args.examples
            )
        if args.backend in ("postgresql", "both"):
            target = postgres_target()
            if target is not None:
                url, name = target
                try:
                    failed |= run_against(url, workdir, args.examples)
                finally:
                    import psycopg

                    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
