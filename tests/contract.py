"""Contract test: schemathesis against a live ``bobgen serve``, from its own /openapi.json.

    .venv/bin/python tests/contract.py [--backend sqlite|postgresql|both] [--examples 3]

Bounded (a fixed number of examples per operation, a fixed seed: the same requests every run),
on SQLite and, when PostgreSQL answers on 127.0.0.1:5432, on PostgreSQL too (in CI, CI=true,
its absence is a failure). Checks: no 5xx, and every response conforms to the document (status
code, content type, body schema). Run by ``make contract`` and by .ci/run after ``make test``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.config import DEFAULT_MIGRATIONS_DIR  # noqa: E402
from service.db import DatabaseURL  # noqa: E402
from service.db.migrations import apply_migrations  # noqa: E402
from tests.backends import plant_tokens  # noqa: E402

TOKEN = "bgt_contract-admin"
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)
PG_ADMIN = os.environ.get("BOBGEN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{base}/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                CHECKS,
                "--max-examples",
                str(examples),
                "--seed",
                "20261126",
                "--phases",
                "examples,fuzzing",
                "--no-color",
            ],
            cwd=workdir,
        )
        took = time.monotonic() - started
        print(f"contract ({url.backend}): exit {result.returncode} in {took:.0f} s")
        return result.returncode
    finally:
        server.terminate()
        server.wait(timeout=60)


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
