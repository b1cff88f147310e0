"""The projects domain: enums, workflow graph validation and the node/run state machines."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from service.domain.statemachine import check_transition


class IdeaStatus(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    REJECTED = "rejected"
    ARCHIVED = "archived"


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


PRIORITY_RANK = {p: rank for rank, p in enumerate(Priority, start=1)}
PRIORITY_BY_RANK = {rank: p for p, rank in PRIORITY_RANK.items()}


class ContextType(StrEnum):
    FILE = "file"
    DOCUMENT = "document"
    SNIPPET = "snippet"
    URL = "url"
    NOTE = "note"


class NodeStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


NODE_TRANSITIONS: dict[NodeStatus, frozenset[NodeStatus]] = {
    NodeStatus.PENDING: frozenset({NodeStatus.RUNNING, NodeStatus.FAILED}),
    NodeStatus.RUNNING: frozenset({NodeStatus.COMPLETED, NodeStatus.FAILED}),
    NodeStatus.COMPLETED: frozenset(),
    NodeStatus.FAILED: frozenset(),
}
FINISHED_RUN = frozenset({RunStatus.COMPLETED, RunStatus.FAILED})


def derive_run_status(nodes: list[NodeStatus]) -> RunStatus:
    """The run follows its nodes: failed as soon as one fails, completed when all completed."""
    if NodeStatus.FAILED in nodes:
        return RunStatus.FAILED
    if nodes and all(n is NodeStatus.COMPLETED for n in nodes):
        return RunStatus.COMPLETED
    if any(n is not NodeStatus.PENDING for n in nodes):
        return RunStatus.RUNNING
    return RunStatus.PENDING


class InvalidGraph(ValueError):
    """The workflow graph is not a DAG of uniquely named nodes; ``problems`` says why."""

    def __init__(self, problems: dict[str, Any]):
        super().__init__("invalid workflow graph")
        self.problems = problems


def validate_graph(graph: Mapping[str, Any]) -> None:
    """Unique node ids, edges between existing nodes, no self-loops or cycles.

    ``graph`` has already passed its schema: ``nodes`` is a list of objects with ``id``,
    ``edges`` a list of objects with ``from`` and ``to``.
    """
    ids = [n["id"] for n in graph["nodes"]]
    problems: dict[str, Any] = {}
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        problems["duplicate_node_ids"] = duplicates
    known = set(ids)
    dangling = [
        {"edge": index, "from": e["from"], "to": e["to"]}
        for index, e in enumerate(graph["edges"])
        if e["from"] not in known or e["to"] not in known
    ]
    if dangling:
        problems["unknown_nodes_in_edges"] = dangling
    if not problems:
        cycle = find_cycle(ids, [(e["from"], e["to"]) for e in graph["edges"]])
        if cycle:
            problems["cycle"] = cycle
    if problems:
        raise InvalidGraph(problems)


def find_cycle(nodes: list[str], edges: list[tuple[str, str]]) -> list[str] | None:
    """A cycle as a closed path (``[a, b, a]``), or None. Iterative DFS: deep graphs are fine."""
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for src, dst in edges:
        children[src].append(dst)
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(nodes, white)
    for root in nodes:
        if color[root] != white:
            continue
        path, stack = [root], [iter(children[root])]
        color[root] = grey
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                color[path.pop()] = black
                stack.pop()
            elif color[nxt] == grey:
                return [*path[path.index(nxt) :], nxt]
            elif color[nxt] == white:
                color[nxt] = grey
                path.append(nxt)
                stack.append(iter(children[nxt]))
    return None


MAX_NODE_MESSAGES = 100  # a node keeps its newest messages only


def apply_node_change(
    nodes: list[dict[str, Any]],
    index: int,
    run: Mapping[str, Any],
    changes: Mapping[str, Any],
    now: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The node after ``changes`` and the changes its run must take, as pure data.

    Updates ``nodes[index]`` in place (so the run status is derived from the new states).
    Raises :class:`~service.domain.statemachine.InvalidTransition` for a move the machine forbids.
    """
    node = nodes[index]
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
    status = derive_run_status([NodeStatus(n["status"]) for n in nodes])
    run_changes: dict[str, Any] = {"status": status.value}
    if status is not RunStatus.PENDING and run["started_at"] is None:
        run_changes["started_at"] = now
    if status in FINISHED_RUN:
        run_changes["finished_at"] = now
    message = changes["error"] or (changes["messages"] or [None])[-1]
    if message:
        run_changes["last_message"] = f"{node['node_id']}: {message}"
    return node, run_changes
