"""SQL for debug-server metadata: repositories, worktrees, sessions, commands, log chunks,
artifacts and debugger state (migration 0007).

The operations that several runners race for (reserving a worktree, ending a session,
appending log chunks) are single units of work that lock what they change first (in one
order: the session, then the worktree), so they are atomic on both backends: SQLite runs one
writer at a time, PostgreSQL locks the rows (``query_for_update``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from service.db import Work, execute, execute_many, query, query_for_update
from service.domain.debug import (
    COMMAND_TRANSITIONS,
    SESSION_TRANSITIONS,
    Chunk,
    CommandState,
    Missing,
    Refused,
    SessionState,
    WorktreeState,
    check_log_batch,
)
from service.domain.statemachine import check_transition
from service.repositories import versioned
from service.repositories.versioned import Table

REPOSITORIES = Table(
    "repositories",
    ("id", "name", "url", "default_branch", "created_at", "updated_at", "version"),
    scoped=False,
    sortable=frozenset({"created_at", "name"}),
)
WORKTREES = Table(
    "worktrees",
    (
        "id",
        "repository_id",
        "path",
        "branch",
        "state",
        "reserved_by",
        "lease_expires_at",
        "created_at",
        "updated_at",
        "version",
    ),
    scoped=False,
    sortable=frozenset({"created_at", "path"}),
)
SESSIONS = Table(
    "sessions",
    (
        "id",
        "repository_id",
        "worktree_id",
        "user",
        "state",
        "started_at",
        "ended_at",
        "metadata",
        "version",
    ),
    json_columns=frozenset({"metadata"}),
    scoped=False,
    sortable=frozenset({"started_at"}),
    sql_names={"user": '"user"'},  # a reserved word in PostgreSQL
)
COMMANDS = Table(
    "commands",
    (
        "id",
        "session_id",
        "argv",
        "cwd",
        "env",
        "state",
        "exit_code",
        "started_at",
        "ended_at",
        "log_seq",
        "version",
    ),
    json_columns=frozenset({"argv", "env"}),
    scoped=False,
    sortable=frozenset({"started_at"}),
)
ARTIFACTS = Table(
    "artifacts",
    (
        "id",
        "session_id",
        "command_id",
        "name",
        "kind",
        "uri",
        "size_bytes",
        "sha256",
        "content_type",
        "created_at",
    ),
    scoped=False,
    sortable=frozenset({"created_at", "name"}),
)
DEBUGGER = Table(
    "debugger_state",
    ("session_id", "state", "updated_at", "version"),
    json_columns=frozenset({"state"}),
    scoped=False,
    id_column="session_id",
)
LOG_COLUMNS = ("seq", "stream", "text", "at")


def require(table: Table, kind: str, row_id: str) -> Work[dict[str, Any]]:
    """The row, or :class:`Missing` (404)."""
    row = yield from versioned.get(table, None, row_id)
    if row is None:
        raise Missing(kind, row_id)
    return row


def _change_locked(
    table: Table, row_id: str, changes: dict[str, Any], now: str
) -> Work[dict[str, Any]]:
    """Change a row this transaction has locked and checked already (so it exists, and no
    version needs comparing); the new row."""
    row = yield from versioned.update(table, None, row_id, changes, expected_version=None, now=now)
    assert row is not None
    return row


# ---- repositories -------------------------------------------------------------------------


def delete_repository(
    repository_id: str, *, expected_version: Collection[int] | None
) -> Work[None]:
    """Delete a repository and everything under it, unless one of its sessions is active."""
    active = yield from query(
        "SELECT id FROM sessions WHERE repository_id = ? AND state = ? LIMIT 5",
        (repository_id, SessionState.ACTIVE.value),
    )
    if active:
        raise Refused(
            "active_sessions",
            f"repository {repository_id} has active sessions: end them first",
            {"sessions": [r[0] for r in active]},
        )
    if not (
        yield from versioned.delete(
            REPOSITORIES, None, repository_id, expected_version=expected_version
        )
    ):
        raise Missing("repository", repository_id)


# ---- worktrees ----------------------------------------------------------------------------


def worktree_in(repository_id: str, worktree_id: str) -> Work[dict[str, Any]]:
    row = yield from versioned.get(WORKTREES, None, worktree_id)
    if row is None or row["repository_id"] != repository_id:
        raise Missing("worktree", worktree_id)
    return row


@dataclass(frozen=True, slots=True)
class Reservation:
    worktree: dict[str, Any]
    reclaimed_from: str | None  # the session whose expired lease this reservation ended
    expired_at: str | None


def _lock_session(session_id: str) -> Work[tuple[str, SessionState, str | None]]:
    """Lock the session row (first, always: one lock order, no deadlocks) and return its
    repository, state and worktree."""
    rows = yield from query_for_update(
        "SELECT repository_id, state, worktree_id FROM sessions WHERE id = ?", (session_id,)
    )
    if not rows:
        raise Missing("session", session_id)
    repository_id, state, worktree_id = rows[0]
    return repository_id, SessionState(state), worktree_id


def reserve(
    repository_id: str,
    session_id: str,
    *,
    branch: str | None,
    clock_now: str,
    lease_until: str,
    now: str,
) -> Work[Reservation]:
    """Give ``session_id`` one free worktree of the repository, or one whose lease ran out
    (``lease_expires_at < clock_now``), free ones first. Concurrent reservers each get a
    different worktree (PostgreSQL: SKIP LOCKED) or :class:`Refused` ``no_free_worktree``."""
    owner, state, holding = yield from _lock_session(session_id)
    if owner != repository_id:
        yield from require(REPOSITORIES, "repository", repository_id)
        raise Refused(
            "wrong_repository",
            f"session {session_id} belongs to repository {owner}",
            {"session_id": session_id, "repository_id": owner},
        )
    if state is not SessionState.ACTIVE:
        raise Refused("session_not_active", f"session {session_id} is {state}", {"state": state})
    if holding is not None:
        raise Refused(
            "session_has_worktree",
            f"session {session_id} holds worktree {holding} already: release it first",
            {"worktree_id": holding},
        )
    params: list[Any] = [repository_id, WorktreeState.FREE.value, WorktreeState.RESERVED.value]
    sql = (
        "SELECT id, state, reserved_by, lease_expires_at FROM worktrees "
        "WHERE repository_id = ? AND (state = ? OR (state = ? AND lease_expires_at < ?))"
    )
    params.append(clock_now)
    if branch is not None:
        sql += " AND branch = ?"
        params.append(branch)
    picked = yield from query_for_update(
        f"{sql} ORDER BY state, id LIMIT 1", params, skip_locked=True
    )
    if not picked:
        raise Refused(
            "no_free_worktree",
            f"no free worktree in repository {repository_id}",
            {"repository_id": repository_id, "branch": branch},
        )
    worktree_id, old_state, old_holder, old_lease = picked[0]
    reserved = {
        "state": WorktreeState.RESERVED.value,
        "reserved_by": session_id,
        "lease_expires_at": lease_until,
    }
    worktree = yield from _change_locked(WORKTREES, worktree_id, reserved, now)
    reclaimed = old_state == WorktreeState.RESERVED.value
    if reclaimed:
        yield from execute(
            "UPDATE sessions SET worktree_id = NULL, version = version + 1 "
            "WHERE id = ? AND worktree_id = ?",
            (old_holder, worktree_id),
        )
    yield from execute(
        "UPDATE sessions SET worktree_id = ?, version = version + 1 WHERE id = ?",
        (worktree_id, session_id),
    )
    return Reservation(
        worktree, old_holder if reclaimed else None, old_lease if reclaimed else None
    )


def _not_holder(worktree: dict[str, Any], session_id: str) -> Refused:
    return Refused(
        "not_holder",
        f"worktree {worktree['id']} is not reserved by session {session_id}",
        {"state": worktree["state"], "reserved_by": worktree["reserved_by"]},
    )


def renew(
    repository_id: str, worktree_id: str, session_id: str, *, lease_until: str, now: str
) -> Work[dict[str, Any]]:
    """Move the lease on; only the holder may (even after expiry, until someone reclaims it)."""
    worktree = yield from worktree_in(repository_id, worktree_id)
    rows = yield from query(
        f"UPDATE worktrees SET lease_expires_at = ?, updated_at = ?, version = version + 1 "
        f"WHERE id = ? AND state = ? AND reserved_by = ? RETURNING {WORKTREES.select}",
        (lease_until, now, worktree_id, WorktreeState.RESERVED.value, session_id),
    )
    if not rows:
        raise _not_holder(worktree, session_id)
    return WORKTREES.decode_row(rows[0])


def _free(worktree_id: str, session_id: str, now: str) -> Work[dict[str, Any] | None]:
    """Free the worktree if ``session_id`` holds it: the freed row, else None."""
    rows = yield from query(
        "UPDATE worktrees SET state = ?, reserved_by = NULL, lease_expires_at = NULL, "
        "updated_at = ?, version = version + 1 WHERE id = ? AND state = ? AND reserved_by = ? "
        f"RETURNING {WORKTREES.select}",
        (WorktreeState.FREE.value, now, worktree_id, WorktreeState.RESERVED.value, session_id),
    )
    return WORKTREES.decode_row(rows[0]) if rows else None


def release(
    repository_id: str, worktree_id: str, session_id: str, *, now: str
) -> Work[dict[str, Any]]:
    yield from _lock_session(session_id)
    freed = yield from _free(worktree_id, session_id, now)
    if freed is None or freed["repository_id"] != repository_id:
        # Not freed, or freed in another repository than the URL says: undo by raising.
        raise _not_holder((yield from worktree_in(repository_id, worktree_id)), session_id)
    yield from execute(
        "UPDATE sessions SET worktree_id = NULL, version = version + 1 "
        "WHERE id = ? AND worktree_id = ?",
        (session_id, worktree_id),
    )
    return freed


def delete_worktree(repository_id: str, worktree_id: str) -> Work[None]:
    worktree = yield from worktree_in(repository_id, worktree_id)
    if worktree["state"] == WorktreeState.RESERVED.value:
        raise Refused(
            "worktree_reserved",
            f"worktree {worktree_id} is reserved by session {worktree['reserved_by']}",
            {"reserved_by": worktree["reserved_by"]},
        )
    yield from execute("DELETE FROM worktrees WHERE id = ?", (worktree_id,))


# ---- sessions -----------------------------------------------------------------------------


def end_session(session_id: str, state: SessionState, *, now: str) -> Work[dict[str, Any]]:
    """End a session: its worktree is released and its running commands are cancelled, in the
    same transaction."""
    _, current, worktree_id = yield from _lock_session(session_id)
    check_transition(SESSION_TRANSITIONS, current, state)
    if worktree_id is not None:
        yield from _free(worktree_id, session_id, now)
    yield from execute(
        "UPDATE commands SET state = ?, ended_at = ?, version = version + 1 "
        "WHERE session_id = ? AND state = ?",
        (CommandState.CANCELLED.value, now, session_id, CommandState.RUNNING.value),
    )
    ended = {"state": state.value, "ended_at": now, "worktree_id": None}
    return (yield from _change_locked(SESSIONS, session_id, ended, now))


def active_session(session_id: str) -> Work[dict[str, Any]]:
    """The session, which must be active (commands and artifacts are added to active ones)."""
    session = yield from require(SESSIONS, "session", session_id)
    if session["state"] != SessionState.ACTIVE.value:
        raise Refused(
            "session_not_active",
            f"session {session_id} is {session['state']}",
            {"state": session["state"]},
        )
    return session


# ---- commands and their logs --------------------------------------------------------------


def change_command(
    command_id: str, state: CommandState, exit_code: int | None, *, now: str
) -> Work[dict[str, Any]]:
    rows = yield from query_for_update("SELECT state FROM commands WHERE id = ?", (command_id,))
    if not rows:
        raise Missing("command", command_id)
    check_transition(COMMAND_TRANSITIONS, CommandState(rows[0][0]), state)
    changes = {"state": state.value, "exit_code": exit_code, "ended_at": now}
    return (yield from _change_locked(COMMANDS, command_id, changes, now))


@dataclass(frozen=True, slots=True)
class Appended:
    last_seq: int
    stored: list[int]  # seqs written by this call
    already_stored: list[int]  # seqs of a retried batch, found as they were


def append_logs(command_id: str, batch: list[Chunk], *, now: str) -> Work[Appended]:
    """Store a batch of log chunks; a retried batch is found, not stored twice.

    The command row is locked first, so two appends to one command take turns and the
    gap check sees every chunk committed before it.
    """
    rows = yield from query_for_update("SELECT log_seq FROM commands WHERE id = ?", (command_id,))
    if not rows:
        raise Missing("command", command_id)
    last_seq = int(rows[0][0])
    first = batch[0][0]
    stored: dict[int, tuple[str, str]] = {}
    if first <= last_seq:
        found = yield from query(
            "SELECT seq, stream, text FROM command_logs "
            "WHERE command_id = ? AND seq >= ? AND seq <= ?",
            (command_id, first, min(last_seq, batch[-1][0])),
        )
        stored = {int(seq): (stream, text) for seq, stream, text in found}
    new = check_log_batch(last_seq, stored, batch)
    if new:
        yield from execute_many(
            "INSERT INTO command_logs (command_id, seq, stream, text, at) VALUES (?, ?, ?, ?, ?)",
            [(command_id, seq, stream, text, now) for seq, stream, text in new],
        )
        last_seq = new[-1][0]
        yield from execute("UPDATE commands SET log_seq = ? WHERE id = ?", (last_seq, command_id))
    new_seqs = [seq for seq, _, _ in new]
    return Appended(last_seq, new_seqs, [seq for seq, _, _ in batch if seq not in set(new_seqs)])


def read_logs(command_id: str, *, after_seq: int, limit: int) -> Work[list[dict[str, Any]]]:
    yield from require(COMMANDS, "command", command_id)
    rows = yield from query(
        f"SELECT {', '.join(LOG_COLUMNS)} FROM command_logs "
        "WHERE command_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (command_id, after_seq, limit),
    )
    return [dict(zip(LOG_COLUMNS, r, strict=True)) for r in rows]


def command_in_session(command_id: str, session_id: str) -> Work[None]:
    rows = yield from query("SELECT session_id FROM commands WHERE id = ?", (command_id,))
    if not rows or rows[0][0] != session_id:
        raise Refused(
            "command_not_in_session",
            f"command {command_id} is not a command of session {session_id}",
            {"command_id": command_id, "session_id": session_id},
        )
