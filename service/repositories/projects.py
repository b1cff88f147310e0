"""SQL of the projects domain: table descriptions plus the queries that are not plain CRUD."""

from __future__ import annotations

from typing import Any

import orjson

from service.db import Database, Work, execute, execute_many, query
from service.domain.projects import (
    FINISHED_RUN,
    PRIORITY_BY_RANK,
    PRIORITY_RANK,
    NodeStatus,
    Priority,
    RunStatus,
    apply_node_change,
)
from service.repositories import versioned
from service.repositories.versioned import Table

PROJECTS = Table(
    "projects",
    ("id", "name", "description", "version", "created_at", "updated_at"),
    sortable=frozenset({"created_at", "updated_at", "name"}),
    scoped=False,
)
IDEAS = Table(
    "idea_tickets",
    (
        "id",
        "project_id",
        "title",
        "description",
        "status",
        "priority",
        "version",
        "created_at",
        "updated_at",
    ),
    to_db={"priority": lambda p: PRIORITY_RANK[Priority(p)]},
    from_db={"priority": lambda rank: str(PRIORITY_BY_RANK[rank])},
    sortable=frozenset({"created_at", "updated_at", "priority"}),
)
CONTEXT_ITEMS = Table(
    "context_items",
    (
        "id",
        "project_id",
        "name",
        "type",
        "tokens",
        "pinned",
        "canonical_document_id",
        "version",
        "created_at",
        "updated_at",
    ),
    bool_columns=frozenset({"pinned"}),
)
WORKFLOWS = Table(
    "workflow_graphs",
    ("id", "project_id", "name", "description", "graph", "version", "created_at", "updated_at"),
    json_columns=frozenset({"graph"}),
)
WORKFLOW_RUNS = Table(
    "workflow_runs",
    (
        "id",
        "project_id",
        "workflow_id",
        "status",
        "input",
        "output",
        "started_at",
        "finished_at",
        "last_message",
        "version",
        "created_at",
    ),
    json_columns=frozenset({"input", "output"}),
)
GAP_ANALYSES = Table(
    "gap_analyses",
    ("id", "project_id", "report", "version", "created_at", "updated_at"),
    json_columns=frozenset({"report"}),
)
NODE_COLUMNS = ("node_id", "status", "progress", "messages", "started_at", "completed_at", "error")
CHILD_TABLES = (GAP_ANALYSES, WORKFLOW_RUNS, WORKFLOWS, CONTEXT_ITEMS, IDEAS)


def project_exists(project_id: str) -> Work[bool]:
    return bool((yield from query("SELECT 1 FROM projects WHERE id = ?", (project_id,))))


def child_counts(project_id: str) -> Work[dict[str, int]]:
    """Rows per table that belong to the project (non-zero counts only)."""
    counts = {}
    for table in CHILD_TABLES:
        rows = yield from query(
            f"SELECT count(*) FROM {table.name} WHERE project_id = ?", (project_id,)
        )
        if rows[0][0]:
            counts[table.name] = int(rows[0][0])
    return counts


def delete_children(project_id: str) -> Work[None]:
    """Delete everything a project owns, children before parents (foreign keys are on)."""
    yield from execute(
        "DELETE FROM workflow_node_states WHERE run_id IN "
        "(SELECT id FROM workflow_runs WHERE project_id = ?)",
        (project_id,),
    )
    for table in CHILD_TABLES:
        yield from execute(f"DELETE FROM {table.name} WHERE project_id = ?", (project_id,))


async def context_totals(db: Database, project_id: str) -> dict[str, Any]:
    rows = await db.fetchall(
        "SELECT type, pinned, count(*), coalesce(sum(tokens), 0) FROM context_items "
        "WHERE project_id = ? GROUP BY type, pinned",
        (project_id,),
    )
    totals: dict[str, Any] = {
        "items": 0,
        "tokens": 0,
        "pinned_items": 0,
        "pinned_tokens": 0,
        "by_type": {},
    }
    for kind, pinned, count, tokens in rows:
        totals["items"] += count
        totals["tokens"] += tokens
        if pinned:
            totals["pinned_items"] += count
            totals["pinned_tokens"] += tokens
        by_type = totals["by_type"].setdefault(kind, {"items": 0, "tokens": 0})
        by_type["items"] += count
        by_type["tokens"] += tokens
    return totals


def _node(row: tuple[Any, ...]) -> dict[str, Any]:
    node = dict(zip(NODE_COLUMNS, row, strict=True))
    node["messages"] = orjson.loads(node["messages"])
    return node


def insert_nodes(run_id: str, node_ids: list[str]) -> Work[int]:
    return (
        yield from execute_many(
            "INSERT INTO workflow_node_states (run_id, node_id, status, progress, messages_json) "
            "VALUES (?, ?, ?, 0, '[]')",
            [(run_id, node_id, NodeStatus.PENDING.value) for node_id in node_ids],
        )
    )


def get_nodes(run_id: str) -> Work[list[dict[str, Any]]]:
    sql = (
        "SELECT node_id, status, progress, messages_json, started_at, completed_at, error "
        "FROM workflow_node_states WHERE run_id = ? ORDER BY node_id"
    )
    return [_node(r) for r in (yield from query(sql, (run_id,)))]


def update_node(run_id: str, node: dict[str, Any]) -> Work[int]:
    params = (
        node["status"],
        node["progress"],
        orjson.dumps(node["messages"]).decode(),
        node["started_at"],
        node["completed_at"],
        node["error"],
        run_id,
        node["node_id"],
    )
    return (
        yield from execute(
            "UPDATE workflow_node_states SET status = ?, progress = ?, messages_json = ?, "
            "started_at = ?, completed_at = ?, error = ? WHERE run_id = ? AND node_id = ?",
            params,
        )
    )


class RunNotFound(LookupError):
    pass


class NodeNotFound(LookupError):
    pass


class RunFinished(ValueError):
    """A completed or failed run accepts no more node updates."""


def change_node(
    project_id: str, run_id: str, node_id: str, changes: dict[str, Any], *, now: str
) -> Work[tuple[dict[str, Any], dict[str, Any]]]:
    """Load the run and its nodes, apply the domain rules, save both.

    Returns (node, run). Raises RunNotFound, NodeNotFound, RunFinished or
    InvalidTransition.
    """
    run = yield from versioned.get(WORKFLOW_RUNS, project_id, run_id)
    if run is None:
        raise RunNotFound(run_id)
    if RunStatus(run["status"]) in FINISHED_RUN:
        raise RunFinished(f"run {run_id} is {run['status']}")
    nodes = yield from get_nodes(run_id)
    index = next((i for i, n in enumerate(nodes) if n["node_id"] == node_id), None)
    if index is None:
        raise NodeNotFound(node_id)
    node, run_changes = apply_node_change(nodes, index, run, changes, now)
    yield from update_node(run_id, node)
    run = yield from versioned.update(
        WORKFLOW_RUNS, project_id, run_id, run_changes, expected_version=None, now=now
    )
    assert run is not None
    return node, run


def create_run(values: dict[str, Any], node_ids: list[str]) -> Work[dict[str, Any]]:
    """The run row and one pending state per node, in the caller's (single) transaction."""
    run = yield from versioned.insert(WORKFLOW_RUNS, values)
    assert run is not None
    yield from insert_nodes(run["id"], node_ids)
    return run
