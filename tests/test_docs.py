"""The docs cannot promise what does not exist: every ``--flag`` and ``BOBGEN_*`` variable that
README.md and docs/*.md name exists, every ``bobgen ...`` command line in their shell blocks
parses, every metric they name is in ``/metrics``, and every ``METHOD /path`` is a route.
(docs/api.md's route index is generated and checked by tests/test_openapi.py.)"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.cli import build_parser
from service.client.transport import TOKEN_VARIABLE, URL_VARIABLE
from service.config import Config
from tests.support import REPO_ROOT, WORKERS_ONLY_METRICS

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# Flags of other tools that the docs show beside ours, recognised by the tool named on the line.
OTHER_TOOLS = ("docker", "yoyo", "pg_dump", "pg_restore", "schemathesis", "bench/")
BENCH_SOURCES = "".join(p.read_text() for p in (REPO_ROOT / "bench").glob("*.py"))


def _cli_flags() -> set[str]:
    found: set[str] = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            found.update(o for o in action.option_strings if o.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    return found


def _lines() -> list[tuple[str, str]]:
    return [(doc.name, line) for doc in DOCS for line in doc.read_text().splitlines()]


def _with_context() -> list[tuple[str, str, str]]:
    """Each line with the two before it (a sentence about another tool may wrap)."""
    found = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        for i, line in enumerate(lines):
            found.append((doc.name, line, " ".join(lines[max(0, i - 2) : i + 1])))
    return found


def test_every_flag_named_exists() -> None:
    flags = _cli_flags()
    unknown = []
    for doc, line, context in _with_context():
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", line):
            if flag in flags or f'"{flag}"' in BENCH_SOURCES:
                continue
            if not any(tool in context for tool in OTHER_TOOLS):
                unknown.append((doc, flag, line.strip()[:100]))
    assert unknown == []


def test_every_environment_variable_named_exists() -> None:
    known = {"BOBGEN_" + f.name.upper() for f in dataclasses.fields(Config)}
    known |= {URL_VARIABLE, TOKEN_VARIABLE}  # the Python client's (docs/client.md)
    named = {(doc, v) for doc, line in _lines() for v in re.findall(r"BOBGEN_[A-Z0-9_]+", line)}
    assert {(doc, v) for doc, v in named if v not in known} == set()


def _command_lines() -> list[tuple[str, str]]:
    """``bobgen ...`` invocations in the docs' shell blocks, synopsis brackets opened."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", doc.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\$\((?!\s*(?:\S*/)?bobgen)[^)]*\)", "X", line.split(" #")[0])
                match = re.search(r"(?:^|\$\(|\s)(?:\S*/)?bobgen ([^)]*)", line)
                if match:
                    args = match.group(1).replace("[", " ").replace("]", " ")
                    args = re.sub(r"\b(N|ID)\b", "1", args.replace("...", "x"))
                    found.append((doc.name, args))
    return found


def test_every_command_line_shown_parses() -> None:
    lines = _command_lines()
    assert len(lines) > 20
    parser = build_parser()
    failed = []
    for doc, args in lines:
        try:
            parser.parse_args(shlex.split(args))
        except SystemExit:
            failed.append((doc, args))
    assert failed == []


# Documented as SQLite-only (docs/scale-out.md): a PostgreSQL app does not expose them.
SQLITE_ONLY_METRICS = {
    "bobgen_db_size_bytes",
    "bobgen_db_wal_size_bytes",
    "bobgen_db_wal_limit_bytes",
    "bobgen_db_write_queue_depth",
    "bobgen_db_write_lock_wait_seconds",
    "bobgen_db_checkpoint_seconds",
    "bobgen_db_checkpoints_total",
}


async def test_every_metric_named_is_exposed(
    make_client: Any, tmp_path: Path, backend: str
) -> None:
    root = tmp_path / "documents"
    (root / "personas").mkdir(parents=True)
    # Every optional part on: documents watched, backups scheduled.
    backups = str(tmp_path / "backups")
    client: TestClient = await make_client(documents_dirs=str(root), backup_dir=backups)
    await client.get("/health")
    exposed = set()
    for line in (await (await client.get("/metrics")).text()).splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            exposed.add(name)
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
            exposed.update(name + s for s in suffixes.get(kind, []))
    fixtures = set(re.findall(r"def (bobgen_\w+)", (REPO_ROOT / "service/testing.py").read_text()))
    named = {
        (doc, m)
        for doc, line in _lines()
        for m in re.findall(r"\b(?:bobgen|http_request)[a-z0-9_]*[a-z0-9]\b", line)
        if "_" in m and m not in fixtures  # the pytest plugin's fixtures are not metrics
    }
    if backend == "postgresql":
        exposed |= SQLITE_ONLY_METRICS
    exposed |= WORKERS_ONLY_METRICS
    assert {(doc, m) for doc, m in named if m not in exposed} == set()


@pytest.fixture
def route_patterns(client: TestClient) -> list[tuple[str, re.Pattern[str]]]:
    patterns = []
    for route in client.app.router.routes():
        if route.resource is not None:
            parts = re.split(r"\{[^}]+\}", route.resource.canonical)
            template = "[^/]+".join(re.escape(part) for part in parts)
            patterns.append((route.method, re.compile(template + "$")))
    return patterns


def test_every_route_named_exists(route_patterns: list[tuple[str, re.Pattern[str]]]) -> None:
    missing = []
    for doc, line in _lines():
        for method, path in re.findall(r"\b(GET|POST|PUT|PATCH|DELETE) (/[^\s`|),]*)", line):
            path = path.split("?")[0].rstrip(".:")
            if not any(m == method and p.match(path) for m, p in route_patterns):
                missing.append((doc, method, path))
    assert missing == []


def test_the_readme_configuration_table_lists_every_setting() -> None:
    """Each Config field: its variable in the table, with its flag when the CLI has one."""
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {
        re.search(r"`(BOBGEN_[A-Z0-9_]+)`", row).group(1): row  # type: ignore[union-attr]
        for row in table.splitlines()
        if "`BOBGEN_" in row
    }
    flags = _cli_flags()
    for field in dataclasses.fields(Config):
        variable = "BOBGEN_" + field.name.upper()
        assert variable in rows, f"README's configuration table lacks {variable}"
        flag = "--" + field.name.replace("_", "-")
        singular = flag.removesuffix("s")  # repeatable flags: --documents-dir, --cors-origin
        for candidate in (flag, singular):
            if candidate in flags:
                assert f"`{candidate}`" in rows[variable], (variable, candidate)
