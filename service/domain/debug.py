"""Debug-server metadata: the rules for worktrees, sessions, commands and their logs.

A debug server's runners share repositories and their worktrees. A session reserves one
worktree at a time for a lease (seconds); the holder renews or releases it, and a lease that
ran out may be reclaimed by another session's reservation. Commands run inside a session and
end in one of three final states. Pure rules here; the SQL is in
``service/repositories/debug.py``, the atomic operations and their guarantees in
docs/debug-metadata.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from service.domain.statemachine import final_states


class WorktreeState(StrEnum):
    FREE = "free"
    RESERVED = "reserved"
    RETIRED = "retired"


class SessionState(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"
    FAILED = "failed"


class CommandState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class LogStream(StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"


SESSION_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.ACTIVE: frozenset({SessionState.ENDED, SessionState.FAILED}),
    SessionState.ENDED: frozenset(),
    SessionState.FAILED: frozenset(),
}
COMMAND_TRANSITIONS: dict[CommandState, frozenset[CommandState]] = {
    CommandState.RUNNING: frozenset(
        {CommandState.SUCCEEDED, CommandState.FAILED, CommandState.CANCELLED}
    ),
    CommandState.SUCCEEDED: frozenset(),
    CommandState.FAILED: frozenset(),
    CommandState.CANCELLED: frozenset(),
}
FINAL_COMMAND_STATES = final_states(COMMAND_TRANSITIONS)
# A worktree is retired or put back by an operator; reserving and releasing are operations.
WORKTREE_TRANSITIONS: dict[WorktreeState, frozenset[WorktreeState]] = {
    WorktreeState.FREE: frozenset({WorktreeState.RETIRED}),
    WorktreeState.RESERVED: frozenset(),
    WorktreeState.RETIRED: frozenset({WorktreeState.FREE}),
}


class Refused(Exception):
    """An operation the rules forbid (the worktree is held, the session ended, ...): HTTP 409
    with a stable ``code`` and ``details``, translated in one place (service/errors.py)."""

    status = 409

    def __init__(self, code: str, message: str, details: dict[str, object] | None = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or {}


class NotOwner(Refused):
    """Only the user who started a session (any of their tokens) or an admin may end it or
    act in it: HTTP 403."""

    status = 403

    def __init__(self, session_id: str, owner: str):
        super().__init__(
            "not_session_owner",
            f"session {session_id} was started by {owner!r}: only that user or an admin may "
            "end it or act in it",
            {"session_id": session_id, "owner": owner},
        )


def check_owner(session: Mapping[str, object], user: str, *, admin: bool) -> None:
    """:class:`NotOwner` unless ``user`` started ``session`` or is an admin."""
    if not admin and session["user"] != user:
        raise NotOwner(str(session["id"]), str(session["user"]))


class Missing(Refused):
    """A row the operation needs does not exist: HTTP 404."""

    status = 404

    def __init__(self, kind: str, row_id: str):
        super().__init__("not_found", f"{kind} {row_id} not found", {f"{kind}_id": row_id})


class LogConflict(Refused):
    """A log batch does not fit what is stored: a gap before it, or a chunk that differs from
    the one already stored under its seq."""

    def __init__(self, message: str, details: dict[str, object]):
        super().__init__("log_conflict", message, details)


Chunk = tuple[int, str, str]  # seq, stream, text


def check_log_batch(
    last_seq: int, stored: Mapping[int, tuple[str, str]], batch: list[Chunk]
) -> list[Chunk]:
    """The chunks of ``batch`` (seq, stream, text) still to store, given the last stored seq
    and the stored chunks among the batch's seqs.

    A batch must be consecutive (1, 2, 3, ...). Chunks at or below ``last_seq`` are a retry:
    they must equal what is stored (then nothing is written for them). The first new chunk must
    follow ``last_seq`` directly: a gap means chunks were lost on the way.
    """
    seqs = [seq for seq, _, _ in batch]
    if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        raise LogConflict("a batch's seq numbers must be consecutive", {"seqs": seqs})
    new: list[Chunk] = []
    for seq, stream, text in batch:
        if seq <= last_seq:
            if stored.get(seq) != (stream, text):
                raise LogConflict(
                    f"chunk {seq} differs from the one stored", {"seq": seq, "last_seq": last_seq}
                )
        else:
            new.append((seq, stream, text))
    if new and new[0][0] != last_seq + 1:
        raise LogConflict(
            f"chunk {new[0][0]} would leave a gap after {last_seq}",
            {"seq": new[0][0], "expected_seq": last_seq + 1},
        )
    return new
