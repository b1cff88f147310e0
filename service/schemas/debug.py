"""Schemas of debug-server metadata: repositories, worktrees, sessions, commands, logs,
artifacts and debugger state. Unknown keys are refused, as everywhere."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from service.domain.debug import CommandState, LogStream, SessionState, WorktreeState
from service.schemas.common import (
    Cursor,
    JsonInteger,
    TextInteger,
    UtcDateTime,
    cursor_fits_sort,
    is_text,
    keyset,
    limit_field,
    not_reserved,
)
from service.schemas.projects import ID, SORT_VALUES, ListQuery
from service.schemas.records import (
    COUNT,
    JSON_OBJECT,
    ROW_VERSION,
    TEXT,
    TEXT_OR_NULL,
    WHEN,
    WHEN_OR_NULL,
    array,
    one_of,
    record,
)
from service.schemas.runs import SHA256

MAX_LEASE_S = 7 * 24 * 3600
MAX_JSON_BYTES = 32 * 1024
MAX_ARGV = 1000
MAX_ENV = 500
MAX_CHUNKS = 1000  # per request (413 beyond)
MAX_CHUNK_CHARS = 16 * 1024  # per chunk (413 beyond)
MAX_LOG_PAGE = 1000
NAME = validate.Length(min=1, max=200)
BRANCH = validate.Length(min=1, max=255)
PATH = validate.Length(min=1, max=4096)


def _id(**kwargs: Any) -> fields.String:
    return fields.String(validate=[ID, not_reserved], **kwargs)


def _json_object(value: dict[str, Any]) -> None:
    if len(orjson.dumps(value)) > MAX_JSON_BYTES:
        raise ValidationError(f"At most {MAX_JSON_BYTES} bytes of JSON.")


def _lease() -> fields.Integer:
    return JsonInteger(required=True, validate=validate.Range(1, MAX_LEASE_S))


# ---- paths -------------------------------------------------------------------------------


class RepositoryPath(Schema):
    repository_id = _id(required=True)


class WorktreePath(RepositoryPath):
    worktree_id = _id(required=True)


class SessionPath(Schema):
    session_id = _id(required=True)


class CommandPath(Schema):
    command_id = _id(required=True)


class ArtifactPath(Schema):
    artifact_id = _id(required=True)


# ---- repositories and worktrees ----------------------------------------------------------


class RepositoryCreate(Schema):
    id = _id(load_default=None)
    name = fields.String(required=True, validate=NAME)
    url = fields.String(required=True, validate=validate.Length(min=1, max=2048))
    default_branch = fields.String(load_default="main", validate=BRANCH)


class RepositoryUpdate(Schema):
    name = fields.String(validate=NAME)
    url = fields.String(validate=validate.Length(min=1, max=2048))
    default_branch = fields.String(validate=BRANCH)


class RepositoryListQuery(ListQuery):
    sort = fields.String(
        load_default="created_at",
        validate=validate.OneOf(["created_at", "-created_at", "name", "-name"]),
    )


class WorktreeCreate(Schema):
    id = _id(load_default=None)
    path = fields.String(required=True, validate=PATH)
    branch = fields.String(load_default=None, allow_none=True, validate=BRANCH)


class WorktreeUpdate(Schema):
    """What an operator changes: the branch, or retiring a free worktree (and back)."""

    branch = fields.String(allow_none=True, validate=BRANCH)
    state = fields.Enum(
        WorktreeState,
        by_value=True,
        validate=validate.OneOf(
            [WorktreeState.FREE, WorktreeState.RETIRED], error="Set free or retired."
        ),
    )


class WorktreeListQuery(ListQuery):
    state = fields.Enum(WorktreeState, by_value=True, load_default=None)


class Reserve(Schema):
    session_id = _id(required=True)
    lease_s = _lease()
    branch = fields.String(load_default=None, validate=BRANCH)


class Renew(Schema):
    session_id = _id(required=True)
    lease_s = _lease()


class Release(Schema):
    session_id = _id(required=True)


# ---- sessions ----------------------------------------------------------------------------


class SessionCreate(Schema):
    id = _id(load_default=None)
    repository_id = _id(required=True)
    metadata = fields.Dict(keys=fields.String(), load_default=dict, validate=_json_object)


class SessionEnd(Schema):
    state = fields.Enum(
        SessionState,
        by_value=True,
        load_default=SessionState.ENDED,
        validate=validate.OneOf(
            [SessionState.ENDED, SessionState.FAILED], error="A session ends as ended or failed."
        ),
    )


class SessionListQuery(ListQuery):
    sort = fields.String(
        load_default="started_at", validate=validate.OneOf(["started_at", "-started_at"])
    )
    repository_id = _id(load_default=None)
    state = fields.Enum(SessionState, by_value=True, load_default=None)
    user = fields.String(load_default=None, validate=NAME)
    since = UtcDateTime(load_default=None)


# ---- commands and logs -------------------------------------------------------------------


class CommandCreate(Schema):
    id = _id(load_default=None)
    argv = fields.List(
        fields.String(validate=validate.Length(max=8192)),
        required=True,
        validate=validate.Length(min=1, max=MAX_ARGV),
    )
    cwd = fields.String(load_default=None, allow_none=True, validate=PATH)
    env = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=256)),
        values=fields.String(validate=validate.Length(max=8192)),
        load_default=dict,
        validate=validate.Length(max=MAX_ENV),
    )


class CommandUpdate(Schema):
    # What exit_code_when_it_exited checks, said in the document (JSON Schema if/then).
    openapi_extra: ClassVar[dict[str, Any]] = {
        "if": {
            "properties": {
                "state": {"enum": [CommandState.SUCCEEDED.value, CommandState.FAILED.value]}
            },
            "required": ["state"],
        },
        "then": {"required": ["exit_code"], "properties": {"exit_code": {"type": "integer"}}},
    }
    state = fields.Enum(CommandState, by_value=True, required=True)
    exit_code = JsonInteger(
        load_default=None,
        allow_none=True,
        validate=validate.Range(-(2**31), 2**31 - 1),
    )

    @validates_schema
    def exit_code_when_it_exited(self, data: dict[str, Any], **_: Any) -> None:
        exited = data["state"] in (CommandState.SUCCEEDED, CommandState.FAILED)
        if exited and data.get("exit_code") is None:
            raise ValidationError("A command that exited has an exit_code.", "exit_code")


class CommandListQuery(ListQuery):
    sort = fields.String(
        load_default="started_at", validate=validate.OneOf(["started_at", "-started_at"])
    )
    state = fields.Enum(CommandState, by_value=True, load_default=None)


class LogChunk(Schema):
    seq = JsonInteger(required=True, validate=validate.Range(1, 2**31 - 1))
    stream = fields.Enum(LogStream, by_value=True, required=True)
    text = fields.String(required=True)  # size checked by the handler: 413, not 400


class LogAppend(Schema):
    chunks = fields.List(fields.Nested(LogChunk), required=True, validate=validate.Length(min=1))

    @validates_schema
    def in_order(self, data: dict[str, Any], **_: Any) -> None:
        seqs = [c["seq"] for c in data["chunks"]]
        if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            raise ValidationError("Chunks must have consecutive seq numbers, in order.", "chunks")


class LogQuery(Schema):
    after_seq = TextInteger(load_default=0, validate=validate.Range(0, 2**31 - 1))
    limit = TextInteger(load_default=100, validate=validate.Range(1, MAX_LOG_PAGE))


# ---- artifacts and debugger state --------------------------------------------------------


class ArtifactCreate(Schema):
    id = _id(load_default=None)
    command_id = _id(load_default=None, allow_none=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=300))
    kind = fields.String(required=True, validate=validate.Length(min=1, max=64))
    uri = fields.String(required=True, validate=PATH)
    size_bytes = JsonInteger(load_default=None, allow_none=True, validate=validate.Range(0, 2**62))
    sha256 = fields.String(load_default=None, allow_none=True, validate=SHA256)
    content_type = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=255)
    )


class ArtifactListQuery(Schema):
    limit = limit_field()
    cursor = Cursor(valid=keyset(is_text), load_default=None)
    sort = fields.String(load_default="created_at", validate=validate.OneOf(["created_at", "name"]))
    command_id = _id(load_default=None)

    @validates_schema
    def _cursor_fits_sort(self, data: dict[str, Any], **kwargs: Any) -> None:
        cursor_fits_sort(data, SORT_VALUES)


class DebuggerPut(Schema):
    state = fields.Dict(keys=fields.String(), required=True, validate=_json_object)


SESSION_RECORD = record(
    {
        "id": TEXT,
        "repository_id": TEXT,
        "worktree_id": {**TEXT_OR_NULL, "description": "the worktree it holds, if any"},
        "user": {**TEXT, "description": "the token's user that started it"},
        "state": one_of(SessionState),
        "started_at": WHEN,
        "ended_at": WHEN_OR_NULL,
        "metadata": JSON_OBJECT,
        "version": ROW_VERSION,
    }
)
COMMAND_RECORD = record(
    {
        "id": TEXT,
        "session_id": TEXT,
        "argv": array(TEXT),
        "cwd": TEXT_OR_NULL,
        "env": {
            "type": "object",
            "additionalProperties": TEXT,
            "description": "values of names that look secret are replaced by [redacted]",
        },
        "state": one_of(CommandState),
        "exit_code": {"type": ["integer", "null"]},
        "started_at": WHEN,
        "ended_at": WHEN_OR_NULL,
        "log_seq": {**COUNT, "description": "the highest log chunk seq stored"},
        "version": ROW_VERSION,
    }
)
LOGS_APPENDED = record(
    {
        "command_id": TEXT,
        "last_seq": COUNT,
        "stored": {**array(COUNT), "description": "the seqs this request stored"},
        "already_stored": {**array(COUNT), "description": "seqs sent again, left as they were"},
    }
)
LOG_TAIL = record(
    {
        "items": array(
            record({"seq": COUNT, "stream": one_of(LogStream), "text": TEXT, "at": WHEN})
        ),
        "limit": COUNT,
        "next_after_seq": {**COUNT, "description": "send as after_seq to read on"},
    }
)
ARTIFACT_RECORD = record(
    {
        "id": TEXT,
        "session_id": TEXT,
        "command_id": TEXT_OR_NULL,
        "name": TEXT,
        "kind": TEXT,
        "uri": TEXT,
        "size_bytes": {"type": ["integer", "null"], "minimum": 0},
        "sha256": TEXT_OR_NULL,
        "content_type": TEXT_OR_NULL,
        "created_at": WHEN,
    }
)
DEBUGGER_RECORD = record(
    {
        "session_id": TEXT,
        "state": JSON_OBJECT,
        "updated_at": WHEN,
        "version": ROW_VERSION,
    }
)
