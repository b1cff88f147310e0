import copy
import json
from pathlib import Path
from typing import Any

import pytest

from service.db import Database, DatabaseURL
from service.domain.runs import RunContext
from service.jobs.importer import DumpUnreadable, import_dump
from tests.backends import cli_db, sql
from tests.helpers import run_cli
from tests.support import REPO_ROOT

EXAMPLE = json.loads((REPO_ROOT / "seeds" / "memory_dump_example.json").read_text())
TABLES = (
    "projects",
    "idea_tickets",
    "context_items",
    "workflow_graphs",
    "workflow_runs",
    "workflow_node_states",
    "gap_analyses",
)


def counts(url: DatabaseURL) -> dict[str, int]:
    return {t: sql(url, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}


async def run_import(db: Database, dump: Any, dry_run: bool = False) -> Any:
    context = RunContext("a" * 40, "b" * 64)
    return await import_dump(
        db, dump, dry_run=dry_run, actor="cli:test", context=context, source="dump.json"
    )


async def test_happy_path_then_idempotent_reimport(db: Database, db_url: DatabaseURL) -> None:
    report = await run_import(db, EXAMPLE)
    assert report.ok and report.run_id
    assert report.counts["ideas"] == {"inserted": 3, "skipped": 0}
    after_first = counts(db_url)
    assert after_first == {
        "projects": 2,
        "idea_tickets": 3,
        "context_items": 2,
        "workflow_graphs": 1,
        "workflow_runs": 1,
        "workflow_node_states": 3,
        "gap_analyses": 1,
    }
    [idea] = sql(
        db_url, "SELECT status, priority, created_at FROM idea_tickets WHERE id = 'idea-1'"
    )
    nodes = sql(
        db_url, "SELECT node_id, status, progress FROM workflow_node_states ORDER BY node_id"
    )
    steps = sql(
        db_url,
        "SELECT name, status, stats_json FROM run_steps WHERE run_id = ? ORDER BY step_id",
        (report.run_id,),
    )
    audit = sql(db_url, "SELECT actor, event, run_id FROM audit_log ORDER BY id")
    assert idea == ("in_progress", 3, "2026-03-02T09:00:00.000Z")  # high = 3, stored in UTC
    assert nodes == [
        ("lint", "completed", 100.0),
        ("report", "pending", 0.0),
        ("test", "running", 33.0),
    ]
    assert [s[0] for s in steps] == [
        "projects",
        "ideas",
        "context_items",
        "workflows",
        "workflow_runs",
        "gap_analyses",
    ]
    assert json.loads(steps[1][2]) == {"inserted": 3, "skipped": 0}
    assert audit == [("cli:test", "import.completed", report.run_id)]

    again = await run_import(db, EXAMPLE)
    assert again.ok and all(c["inserted"] == 0 for c in again.counts.values())
    assert again.counts["ideas"] == {"inserted": 0, "skipped": 3}
    assert counts(db_url) == after_first  # nothing duplicated


async def test_dry_run_writes_nothing(db: Database, db_url: DatabaseURL) -> None:
    report = await run_import(db, EXAMPLE, dry_run=True)
    assert report.ok and report.run_id is None
    assert report.counts["projects"] == {"inserted": 2, "skipped": 0}
    assert set(counts(db_url).values()) == {0}
    assert sql(db_url, "SELECT count(*) FROM runs") == [(0,)]


def broken(path: list[Any], value: Any) -> dict[str, Any]:
    dump = copy.deepcopy(EXAMPLE)
    target = dump
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return dump


@pytest.mark.parametrize(
    ("dump", "kind", "field"),
    [
        (broken(["ideas", "idea-2", "priority"], "urgent"), "ideas", "priority"),
        (broken(["ideas", "idea-2", "project_id"], "proj-ghost"), "ideas", "project_id"),
        (broken(["context_items", 1, "tokens"], -5), "context_items", "tokens"),
        (
            broken(
                ["workflows", 0, "graph", "edges"],
                [{"from": "report", "to": "lint"}, {"from": "lint", "to": "report"}],
            ),
            "workflows",
            "graph",
        ),
        (broken(["workflow_runs", 0, "workflow_id"], "wf-ghost"), "workflow_runs", "workflow_id"),
        (broken(["workflow_runs", 0, "nodes", 0, "node_id"], "deploy"), "workflow_runs", "nodes"),
        (broken(["gap_analyses", 0, "report"], "not an object"), "gap_analyses", "report"),
        (broken(["context_items", 1, "id"], "ctx-1"), "context_items", "id"),
        (broken(["projects", "proj-beta", "name"], ""), "projects", "name"),
    ],
)
async def test_one_bad_record_means_nothing_is_imported(
    db: Database, db_url: DatabaseURL, dump: dict[str, Any], kind: str, field: str
) -> None:
    report = await run_import(db, dump)
    assert not report.ok and report.run_id is None
    # The bad record is named first (a broken project also orphans its ideas, reported after).
    assert (report.problems[0]["kind"], list(report.problems[0]["errors"])) == (kind, [field])
    assert set(counts(db_url).values()) == {0}


async def test_an_id_owned_by_another_project_is_refused(db: Database, db_url: DatabaseURL) -> None:
    assert (await run_import(db, EXAMPLE)).ok
    moved = broken(["ideas", "idea-3", "project_id"], "proj-alpha")
    report = await run_import(db, moved)
    assert [(p["kind"], p["id"]) for p in report.problems] == [("ideas", "idea-3")]
    assert "Exists already in project proj-beta" in str(report.problems[0]["errors"])


@pytest.mark.parametrize("dump", [[], {"format": "v0"}, {"ideas": "all of them"}, {"users": []}])
async def test_unreadable_dumps(db: Database, dump: Any) -> None:
    with pytest.raises(DumpUnreadable):
        await run_import(db, dump)


def test_import_cli(db_url: DatabaseURL, tmp_path: Path) -> None:
    example = str(REPO_ROOT / "seeds" / "memory_dump_example.json")
    dry = run_cli("import", example, "--dry-run", "--db", cli_db(db_url))
    assert dry.returncode == 0 and "would insert 3" in dry.stdout
    done = run_cli("import", example, "--json", "--db", cli_db(db_url))
    assert done.returncode == 0
    report = json.loads(done.stdout)
    assert report["ok"] and report["counts"]["workflow_runs"] == {"inserted": 1, "skipped": 0}

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken(["ideas", "idea-2", "status"], "closed")))
    refused = run_cli("import", str(bad), "--db", cli_db(db_url))
    assert refused.returncode == 1
    assert "REFUSED: nothing was imported" in refused.stdout and "idea-2" in refused.stdout
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    unreadable = run_cli("import", str(garbage), "--db", cli_db(db_url))
    assert unreadable.returncode == 2 and "Traceback" not in unreadable.stderr
    missing = run_cli("import", str(tmp_path / "nope.json"), "--db", cli_db(db_url))
    assert missing.returncode == 2


async def test_an_import_that_fails_while_writing_rolls_back_whole(
    db: Database, db_url: DatabaseURL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: after its projects, ideas and first workflow run are written, the
    import's transaction meets a real database error (a statement on a missing table). Not a
    row of it stays: no project, no run, no audit entry."""
    from service.db import execute
    from service.jobs import importer

    real = importer._insert_nodes

    def then_fail(run: dict[str, Any], node_ids: list[str]) -> Any:
        yield from real(run, node_ids)
        yield from execute("INSERT INTO no_such_table (x) VALUES (1)")

    monkeypatch.setattr(importer, "_insert_nodes", then_fail)
    audit_before = sql(db_url, "SELECT count(*) FROM audit_log")
    with pytest.raises(Exception) as failed:
        await run_import(db, EXAMPLE)
    assert "no_such_table" in str(failed.value) or failed.value.__cause__ is not None
    assert set(counts(db_url).values()) == {0}
    assert sql(db_url, "SELECT count(*) FROM runs") == [(0,)]
    assert sql(db_url, "SELECT count(*) FROM audit_log") == audit_before
    monkeypatch.undo()
    assert (await run_import(db, EXAMPLE)).ok  # and the same dump imports cleanly afterwards
