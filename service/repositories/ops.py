"""What the ops page (``/ui``) shows of runs and debug metadata: small summaries, bounded in
rows, each read from an index, because the page asks for them every two seconds from every
open tab. Active sessions, reserved worktrees and running commands are read through the
partial indexes of migration 0008, which hold only the rows in that state: the page costs the
same beside a million finished commands as beside ten.
"""

from __future__ import annotations

from typing import Any

import orjson

from service.db import Database
from service.domain.runs import StepStatus, run_status
from service.repositories.runs import list_runs

ARGV_SHOWN = 200  # characters of a command line the page shows


async def recent_runs(db: Database, *, limit: int) -> list[dict[str, Any]]:
    """The newest runs, each with its derived status and its steps counted by status."""
    runs, _ = await list_runs(db, limit=limit)
    if not runs:
        return []
    marks = ", ".join("?" * len(runs))
    rows = await db.fetchall(
        f"SELECT run_id, status, count(*) FROM run_steps WHERE run_id IN ({marks}) "
        "GROUP BY run_id, status",
        [run["run_id"] for run in runs],
    )
    steps: dict[str, dict[str, int]] = {}
    for run_id, status, count in rows:
        steps.setdefault(run_id, {})[status] = int(count)
    for run in runs:
        counts = steps.get(run["run_id"], {})
        # run_status asks only which statuses occur, so one of each stands for all of them.
        run["status"] = run_status([StepStatus(s) for s in counts])
        run["steps"] = dict(sorted(counts.items()))
    return runs


async def debug_summary(db: Database, *, now: str, soon: str, limit: int) -> dict[str, Any]:
    """Active sessions, reserved worktrees (those whose lease ends before ``soon`` marked
    expiring, before ``now`` expired) and running commands: how many, and the first
    ``limit`` of each (sessions and commands newest first, worktrees soonest to expire)."""
    sessions = await db.fetchall(
        'SELECT s.id, r.name, s."user", s.worktree_id, s.started_at FROM sessions s '
        "JOIN repositories r ON r.id = s.repository_id WHERE s.state = 'active' "
        "ORDER BY s.started_at DESC, s.id DESC LIMIT ?",
        (limit,),
    )
    worktrees = await db.fetchall(
        "SELECT w.id, r.name, w.path, w.branch, w.reserved_by, w.lease_expires_at "
        "FROM worktrees w JOIN repositories r ON r.id = w.repository_id "
        "WHERE w.state = 'reserved' ORDER BY w.lease_expires_at, w.id LIMIT ?",
        (limit,),
    )
    commands = await db.fetchall(
        "SELECT id, session_id, argv_json, started_at FROM commands WHERE state = 'running' "
        "ORDER BY started_at DESC, id DESC LIMIT ?",
        (limit,),
    )
    counts = await db.fetchone(
        "SELECT (SELECT count(*) FROM sessions WHERE state = 'active'), "
        "(SELECT count(*) FROM worktrees WHERE state = 'reserved'), "
        "(SELECT count(*) FROM worktrees WHERE state = 'reserved' AND lease_expires_at < ?), "
        "(SELECT count(*) FROM worktrees WHERE state = 'reserved' AND lease_expires_at < ?), "
        "(SELECT count(*) FROM commands WHERE state = 'running')",
        (soon, now),
    )
    active, reserved, expiring, expired, running = (int(c) for c in counts or (0,) * 5)
    return {
        "active_sessions": active,
        "reserved_worktrees": reserved,
        "expiring_worktrees": expiring - expired,
        "expired_worktrees": expired,
        "running_commands": running,
        "sessions": [
            dict(zip(("id", "repository", "user", "worktree_id", "started_at"), r, strict=True))
            for r in sessions
        ],
        "worktrees": [
            {
                **dict(
                    zip(
                        ("id", "repository", "path", "branch", "reserved_by", "lease_expires_at"),
                        r,
                        strict=True,
                    )
                ),
                "lease": _lease(r[5], now=now, soon=soon),
            }
            for r in worktrees
        ],
        "commands": [
            {
                "id": r[0],
                "session_id": r[1],
                "command": _command_line(r[2]),
                "started_at": r[3],
            }
            for r in commands
        ],
    }


def _lease(expires_at: str, *, now: str, soon: str) -> str:
    if expires_at < now:
        return "expired"
    return "expiring" if expires_at < soon else "held"


def _command_line(argv_json: str) -> str:
    """The argv as one line, shortened: the page shows what runs, not every argument."""
    argv = orjson.loads(argv_json)
    line = " ".join(str(a) for a in argv) if isinstance(argv, list) else str(argv)
    return line if len(line) <= ARGV_SHOWN else line[: ARGV_SHOWN - 1] + "…"
