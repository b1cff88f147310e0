"""SQL of the projects domain: table descriptions plus the queries that are not plain CRUD."""

from __future__ import annotations

from typing import Any

import aiosqlite
import orjson

from service.db import Database
from service.projects import (
    FINISHED_RUN,
    NODE_TRANSITIONS,
    PRIORITY_BY_RANK,
    PRIORITY_RANK,
    NodeStatus,
    Priority,
    RunStatus,
    derive_run_status,
)
from service.repositories import versioned
from service.repositories.sql import fetchall
from service.repositories.versioned import Table
from service.statemachine import check_transition

PROJECTS = Table(
    "projects",
    ("id", "name", "description", "version", "created_at", "updated_at"),
    sortable=frozenset({"created_at", "updated_at", "name"}),
    scoped=False,
)
IDEAS = Table(
    "idea_tickets",
    ("id", "project_id", "title", "description", "status", "priority", "version",
     "created_at", "updated_at"),
    to_db={"priority": lambda p: PRIORITY_RANK[Priority(p)]},
    from_db={"priority": lambda rank: str(PRIORITY_BY_RANK[rank])},
    sortable=frozenset({"created_at", "updated_at", "priority"}),
)  # fmt: skip
CONTEXT_ITEMS = Table(
    "context_items",
    ("id", "project_id", "name", "type", "tokens", "pinned", "canonical_document_id",
     "version", "created_at", "updated_at"),
    bool_columns=frozenset({"pinned"}),
)  # fmt: skip
WORKFLOWS = Table(
    "workflow_graphs",
    ("id", "project_id", "name", "description", "graph", "version", "created_at", "updated_at"),
    json_columns=frozenset({"graph"}),
)
WORKFLOW_RUNS = Table(
    "workflow_runs",
    ("id", "project_id", "workflow_id", "status", "input", "output", "started_at",
     "finished_at", "last_message", "version", "created_at"),
    json_columns=frozenset({"input", "output"}),
)  # fmt: skip
GAP_ANALYSES = Table(
    "gap_analyses",
    ("id", "project_id", "report", "version", "created_at", "updated_at"),
    json_columns=frozenset({"report"}),
)
MAX_NODE_MESSAGES = 100  # a node keeps its newest messages only
NODE_COLUMNS = ("node_id", "status", "progress", "messages", "started_at", "completed_at", "error")
CHILD_TABLES = (GAP_ANALYSES, WORKFLOW_RUNS, WORKFLOWS, CONTEXT_ITEMS, IDEAS)


async def project_exists(db_or_conn: Database | aiosqlite.Connection, project_id: str) -> bool:
    return bool(await fetchall(db_or_conn, "SELECT 1 FROM projects WHERE id = ?", (project_id,)))


async def child_counts(conn: aiosqlite.Connection, project_id: str) -> dict[str, int]:
    """Rows per table that belong to the project (non-zero counts only)."""
    counts = {}
    for table in CHILD_TABLES:
        rows = list(
            await conn.execute_fetchall(
                f"SELECT count(*) FROM {table.name} WHERE project_id = ?", (project_id,)
            )
        )
        if rows[0][0]:
            counts[table.name] = int(rows[0][0])
    return counts


async def delete_children(conn: aiosqlite.Connection, project_id: str) -> None:
    """Delete everything a project owns, children before parents (foreign keys are on)."""
    await conn.execute(
        "DELETE FROM workflow_node_states WHERE run_id IN "
        "(SELECT id FROM workflow_runs WHERE project_id = ?)",
        (project_id,),
    )
    for table in CHILD_TABLES:
        await conn.execute(f"DELETE FROM {table.name} WHERE project_id = ?", (project_id,))


async def context_totals(db: Database, project_id: str) -> dict[str, Any]:
    rows = await db.fetchall(
        "SELECT type, pinned, count(*), coalesce(sum(tokens), 0) FROM context_items "
        "WHERE project_id = ? GROUP BY type, pinned",
        (project_id,),
    )
    totals: dict[str, Any] = {"items": 0, "tokens": 0, "pinned_items": 0, "pinned_tokens": 0,
                              "by_type": {}}  # fmt: skip
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


async def insert_nodes(conn: aiosqlite.Connection, run_id: str, node_ids: list[str]) -> None:
    await conn.executemany(
        "INSERT INTO workflow_node_states (run_id, node_id, status, progress, messages_json) "
        "VALUES (?, ?, ?, 0, '[]')",
        [(run_id, node_id, NodeStatus.PENDING.value) for node_id in node_ids],
    )


async def get_nodes(
    db_or_conn: Database | aiosqlite.Connection, run_id: str
) -> list[dict[str, Any]]:
    sql = (
        "SELECT node_id, status, progress, messages_json, started_at, completed_at, error "
        "FROM workflow_node_states WHERE run_id = ? ORDER BY node_id"
    )
    return [_node(r) for r in await fetchall(db_or_conn, sql, (run_id,))]


async def update_node(conn: aiosqlite.Connection, run_id: str, node: dict[str, Any]) -> None:
    await conn.execute(
        "UPDATE workflow_node_states SET status = ?, progress = ?, messages_json = ?, "
        "started_at = ?, completed_at = ?, error = ? WHERE run_id = ? AND node_id = ?",
        (node["status"], node["progress"], orjson.dumps(node["messages"]).decode(),
         node["started_at"], node["completed_at"], node["error"], run_id, node["node_id"]),
    )  # fmt: skip


class RunNotFound(LookupError):
    pass


class NodeNotFound(LookupError):
    pass


class RunFinished(ValueError):
    """A completed or failed run accepts no more node updates."""


async def change_node(
    conn: aiosqlite.Connection,
    project_id: str,
    run_id: str,
    node_id: str,
    changes: dict[str, Any],
    *,
    now: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Update one node and make the run follow, in the caller's transaction.

    Returns (node, run). Raises RunNotFound, NodeNotFound, RunFinished or
    InvalidTransition.
    """
    run = await versioned.get(conn, WORKFLOW_RUNS, project_id, run_id)
    if run is None:
        raise RunNotFound(run_id)
    if RunStatus(run["status"]) in FINISHED_RUN:
        raise RunFinished(f"run {run_id} is {run['status']}")
    nodes = await get_nodes(conn, run_id)
    node = next((n for n in nodes if n["node_id"] == node_id), None)
    if node is None:
        raise NodeNotFound(node_id)
    current = NodeStatus(node["status"])
    target = changes["status"] or current
    check_transition(NODE_TRANSITIONS, current, target)
    node["status"] = target.value
    if changes["progress"] is not None:
        node["progress"] = changes["progress"]
    if changes["messages"]:
        node["messages"] = (node["messages"] + changes["messages"])[-MAX_NODE_MESSAGES:]
    if changes["error"] is not None:
        node["error"] = changes["error"]
    if target is not NodeStatus.PENDING and node["started_at"] is None:
        node["started_at"] = now
    if target in (NodeStatus.COMPLETED, NodeStatus.FAILED):
        node["completed_at"] = now
        if target is NodeStatus.COMPLETED:
            node["progress"] = 100.0
    await update_node(conn, run_id, node)

    status = derive_run_status([NodeStatus(n["status"]) for n in nodes])
    run_changes: dict[str, Any] = {"status": status.value}
    if status is not RunStatus.PENDING and run["started_at"] is None:
        run_changes["started_at"] = now
    if status in FINISHED_RUN:
        run_changes["finished_at"] = now
    message = changes["error"] or (changes["messages"] or [None])[-1]
    if message:
        run_changes["last_message"] = f"{node_id}: {message}"
    run = await versioned.update(
        conn, WORKFLOW_RUNS, project_id, run_id, run_changes, expected_version=None, now=now
    )
    assert run is not None
    return node, run


async def create_run(
    conn: aiosqlite.Connection, values: dict[str, Any], node_ids: list[str]
) -> dict[str, Any]:
    """The run row and one pending state per node, in the caller's (single) transaction."""
    run = await versioned.insert(conn, WORKFLOW_RUNS, values)
    assert run is not None
    await insert_nodes(conn, run["id"], node_ids)
    return run
