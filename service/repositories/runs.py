"""SQL for ``runs`` and ``run_steps``."""

from __future__ import annotations

from typing import Any

import orjson

from service.db import Database, Work, query, query_one
from service.domain.runs import TERMINAL_STATUSES, TRANSITIONS, StepStatus, run_status
from service.domain.statemachine import check_transition
from service.repositories.sql import Where

RUN_COLUMNS = ("run_id", "created_at", "args_json", "git_sha", "config_hash")
STEP_COLUMNS = ("step_id", "run_id", "name", "started_at", "finished_at", "status", "stats_json")


def _run(row: tuple[Any, ...]) -> dict[str, Any]:
    run = dict(zip(RUN_COLUMNS, row, strict=True))
    run["args"] = orjson.loads(run.pop("args_json"))
    return run


def _step(row: tuple[Any, ...]) -> dict[str, Any]:
    step = dict(zip(STEP_COLUMNS, row, strict=True))
    step["stats"] = orjson.loads(step.pop("stats_json"))
    return step


def insert_run(
    *,
    run_id: str,
    now: str,
    args: dict[str, Any],
    git_sha: str | None,
    config_hash: str | None,
) -> Work[dict[str, Any]]:
    rows = yield from query(
        f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES (?, ?, ?, ?, ?) "
        f"RETURNING {', '.join(RUN_COLUMNS)}",
        (run_id, now, orjson.dumps(args).decode(), git_sha, config_hash),
    )
    return _run(rows[0])


async def get_run(db: Database, run_id: str) -> dict[str, Any] | None:
    """The run with its steps (oldest first) and its derived status, or None."""
    rows = await db.fetchall(
        f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id = ?", (run_id,)
    )
    if not rows:
        return None
    run = _run(rows[0])
    steps = await db.fetchall(
        f"SELECT {', '.join(STEP_COLUMNS)} FROM run_steps WHERE run_id = ? ORDER BY step_id",
        (run_id,),
    )
    run["steps"] = [_step(s) for s in steps]
    run["status"] = run_status([StepStatus(s["status"]) for s in run["steps"]])
    return run


def run_exists(run_id: str) -> Work[bool]:
    return bool((yield from query("SELECT 1 FROM runs WHERE run_id = ?", (run_id,))))


async def list_runs(
    db: Database,
    *,
    limit: int,
    before: tuple[str, str] | None = None,
    since: str | None = None,
    git_sha: str | None = None,
    config_hash: str | None = None,
) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    """Newest first, keyset-paged on (created_at, run_id)."""
    where = Where().equal("git_sha", git_sha).equal("config_hash", config_hash)
    if since is not None:
        where.add("created_at >= ?", since)
    if before is not None:
        where.add("(created_at, run_id) < (?, ?)", *before)
    sql = (
        f"SELECT {', '.join(RUN_COLUMNS)} FROM runs{where.sql()} "
        "ORDER BY created_at DESC, run_id DESC LIMIT ?"
    )
    rows = await db.fetchall(sql, [*where.params, limit + 1])
    items = [_run(r) for r in rows[:limit]]
    last = items[-1] if len(rows) > limit else None
    return items, ((last["created_at"], last["run_id"]) if last else None)


def insert_step(
    *,
    run_id: str,
    name: str,
    status: StepStatus,
    stats: dict[str, Any],
    now: str,
    finished: bool = False,
) -> Work[dict[str, Any]]:
    started = now if status is not StepStatus.PENDING else None
    rows = yield from query(
        "INSERT INTO run_steps (run_id, name, started_at, finished_at, status, stats_json) "
        f"VALUES (?, ?, ?, ?, ?, ?) RETURNING {', '.join(STEP_COLUMNS)}",
        (
            run_id,
            name,
            started,
            now if finished else None,
            status.value,
            orjson.dumps(stats).decode(),
        ),
    )
    return _step(rows[0])


def get_step(run_id: str, step_id: int) -> Work[dict[str, Any] | None]:
    row = yield from query_one(
        f"SELECT {', '.join(STEP_COLUMNS)} FROM run_steps WHERE run_id = ? AND step_id = ?",
        (run_id, step_id),
    )
    return _step(row) if row else None


def update_step(
    step: dict[str, Any],
    *,
    status: StepStatus,
    stats: dict[str, Any],
    now: str,
    terminal: bool,
) -> Work[dict[str, Any]]:
    started_at = step["started_at"] or (now if status is not StepStatus.PENDING else None)
    finished_at = step["finished_at"] or (now if terminal else None)
    rows = yield from query(
        "UPDATE run_steps SET status = ?, stats_json = ?, started_at = ?, finished_at = ? "
        f"WHERE step_id = ? RETURNING {', '.join(STEP_COLUMNS)}",
        (status.value, orjson.dumps(stats).decode(), started_at, finished_at, step["step_id"]),
    )
    return _step(rows[0])


class StepNotFound(LookupError):
    """No step with that id in that run."""


def change_step(
    run_id: str,
    step_id: int,
    *,
    status: StepStatus | None,
    stats: dict[str, Any] | None,
    now: str,
) -> Work[tuple[dict[str, Any], StepStatus]]:
    """Apply a status change (checked against the step machine) and/or new stats.

    Returns the updated step and its previous status.
    """
    step = yield from get_step(run_id, step_id)
    if step is None:
        raise StepNotFound(f"no step {step_id} in run {run_id}")
    current = StepStatus(step["status"])
    target = status or current
    check_transition(TRANSITIONS, current, target)
    updated = yield from update_step(
        step,
        status=target,
        stats=step["stats"] if stats is None else stats,
        now=now,
        terminal=target in TERMINAL_STATUSES,
    )
    return updated, current
