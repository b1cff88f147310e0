"""Schemas of projects, ideas, context items, workflows, workflow runs and gap analyses."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from service.domain.projects import ContextType, IdeaStatus, NodeStatus, Priority, RunStatus
from service.schemas.common import (
    Cursor,
    JsonInteger,
    PositionPart,
    StrictBoolean,
    cursor_fits_sort,
    is_text,
    is_timestamp,
    keyset,
    limit_field,
    not_reserved,
    query_boolean,
)
from service.schemas.records import (
    COUNT,
    JSON_OBJECT,
    NUMBER,
    ROW_VERSION,
    TEXT,
    TEXT_OR_NULL,
    WHEN,
    WHEN_OR_NULL,
    array,
    extend,
    one_of,
    record,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
ID = validate.Regexp(ID_PATTERN, error="1-64 letters, digits, '_', '.', ':' or '-'.")
MAX_NODES = 500
MAX_MESSAGES = 100


def _id_field(**kwargs: Any) -> fields.String:
    return fields.String(validate=[ID, not_reserved], **kwargs)


# What each sort column's cursor value must look like (other columns: text).
SORT_VALUES: dict[str, PositionPart] = {
    "created_at": is_timestamp,
    "updated_at": is_timestamp,
    "started_at": is_timestamp,
    "priority": lambda v: v in {str(p) for p in Priority},
}


def _sort_field(*columns: str) -> fields.String:
    choices = [c for col in columns for c in (col, f"-{col}")]
    return fields.String(load_default="created_at", validate=validate.OneOf(choices))


# ---- path parameters -------------------------------------------------------------------


class ProjectPath(Schema):
    project_id = _id_field(required=True)


class ItemPath(ProjectPath):
    item_id = _id_field(required=True)


class NodePath(ItemPath):
    node_id = fields.String(required=True, validate=validate.Length(min=1, max=100))


# ---- projects --------------------------------------------------------------------------


class ProjectCreate(Schema):
    id = _id_field(load_default=None)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=10_000))


class ProjectUpdate(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    description = fields.String(validate=validate.Length(max=10_000))


class ListQuery(Schema):
    limit = limit_field()
    cursor = Cursor(valid=keyset(is_text), load_default=None)
    sort = _sort_field("created_at")

    @validates_schema
    def _cursor_fits_sort(self, data: dict[str, Any], **kwargs: Any) -> None:
        cursor_fits_sort(data, SORT_VALUES)


class ProjectListQuery(ListQuery):
    sort = _sort_field("created_at", "updated_at", "name")


class DeleteQuery(Schema):
    cascade = query_boolean(load_default=False)


# ---- ideas -----------------------------------------------------------------------------


class IdeaCreate(Schema):
    id = _id_field(load_default=None)
    title = fields.String(required=True, validate=validate.Length(min=1, max=300))
    description = fields.String(load_default="", validate=validate.Length(max=20_000))
    status = fields.Enum(IdeaStatus, by_value=True, load_default=IdeaStatus.OPEN)
    priority = fields.Enum(Priority, by_value=True, load_default=Priority.MEDIUM)


class IdeaUpdate(Schema):
    title = fields.String(validate=validate.Length(min=1, max=300))
    description = fields.String(validate=validate.Length(max=20_000))
    status = fields.Enum(IdeaStatus, by_value=True)
    priority = fields.Enum(Priority, by_value=True)


class IdeaListQuery(ListQuery):
    sort = _sort_field("created_at", "updated_at", "priority")
    status = fields.Enum(IdeaStatus, by_value=True, load_default=None)
    priority = fields.Enum(Priority, by_value=True, load_default=None)


# ---- context items ---------------------------------------------------------------------


class ContextCreate(Schema):
    id = _id_field(load_default=None)
    name = fields.String(required=True, validate=validate.Length(min=1, max=300))
    type = fields.Enum(ContextType, by_value=True, required=True)
    tokens = JsonInteger(load_default=0, validate=validate.Range(0, 2**31 - 1))
    pinned = StrictBoolean(load_default=False)
    canonical_document_id = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=200)
    )


class ContextUpdate(Schema):
    name = fields.String(validate=validate.Length(min=1, max=300))
    type = fields.Enum(ContextType, by_value=True)
    tokens = JsonInteger(validate=validate.Range(0, 2**31 - 1))
    pinned = StrictBoolean()
    canonical_document_id = fields.String(allow_none=True, validate=validate.Length(1, 200))


class ContextListQuery(ListQuery):
    pinned = query_boolean(load_default=None)
    type = fields.Enum(ContextType, by_value=True, load_default=None)


# ---- workflows -------------------------------------------------------------------------


class GraphNode(Schema):
    id = fields.String(required=True, validate=validate.Length(min=1, max=100))
    label = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=300))
    kind = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))
    config = fields.Dict(keys=fields.String(), load_default=dict)


# "from" is a Python keyword, hence from_dict.
GraphEdge = Schema.from_dict(
    {
        "from": fields.String(required=True, validate=validate.Length(1, 100)),
        "to": fields.String(required=True, validate=validate.Length(1, 100)),
    },
    name="GraphEdge",
)


class Graph(Schema):
    nodes = fields.List(
        fields.Nested(GraphNode), required=True, validate=validate.Length(1, MAX_NODES)
    )
    edges = fields.List(fields.Nested(GraphEdge), load_default=list)


class WorkflowCreate(Schema):
    id = _id_field(load_default=None)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=10_000))
    graph = fields.Nested(Graph, required=True)


class WorkflowUpdate(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    description = fields.String(validate=validate.Length(max=10_000))
    graph = fields.Nested(Graph)


class RunCreate(Schema):
    id = _id_field(load_default=None)
    input = fields.Dict(keys=fields.String(), load_default=dict)


class RunListQuery(ListQuery):
    status = fields.String(
        load_default=None, validate=validate.OneOf(["pending", "running", "completed", "failed"])
    )


class NodeUpdate(Schema):
    # Absent is None, null is refused: the document can then say "at least one field".
    status = fields.Enum(NodeStatus, by_value=True, load_default=None, allow_none=False)
    progress = fields.Float(load_default=None, allow_none=False, validate=validate.Range(0, 100))
    messages = fields.List(
        fields.String(validate=validate.Length(max=2000)),
        load_default=None,
        allow_none=False,
        validate=validate.Length(max=MAX_MESSAGES),
    )
    error = fields.String(load_default=None, allow_none=False, validate=validate.Length(max=10_000))

    @validates_schema
    def _something(self, data: dict[str, Any], **kwargs: Any) -> None:
        if all(v is None for v in data.values()):
            raise ValidationError("Give at least one of status, progress, messages, error.")


# ---- gap analyses ----------------------------------------------------------------------


class GapAnalysisCreate(Schema):
    id = _id_field(load_default=None)
    report = fields.Dict(keys=fields.String(), required=True)


class GapAnalysisUpdate(Schema):
    report = fields.Dict(keys=fields.String(), required=True)


_COUNTS = record({"items": COUNT, "tokens": COUNT})
CONTEXT_TOTALS = record(
    {
        "project_id": TEXT,
        **_COUNTS["properties"],
        "pinned_items": COUNT,
        "pinned_tokens": COUNT,
        "by_type": {
            "type": "object",
            "propertyNames": one_of(ContextType),
            "additionalProperties": _COUNTS,
        },
    }
)
NODE_RECORD = record(
    {
        "node_id": TEXT,
        "status": one_of(NodeStatus),
        "progress": {**NUMBER, "minimum": 0, "maximum": 100},
        "messages": {**array(TEXT), "description": f"the last {MAX_MESSAGES}"},
        "started_at": WHEN_OR_NULL,
        "completed_at": WHEN_OR_NULL,
        "error": TEXT_OR_NULL,
    }
)
WORKFLOW_RUN_RECORD = record(
    {
        "id": TEXT,
        "project_id": TEXT,
        "workflow_id": TEXT,
        "status": {**one_of(RunStatus), "description": "follows the nodes"},
        "input": JSON_OBJECT,
        "output": {"type": ["object", "null"]},
        "started_at": WHEN_OR_NULL,
        "finished_at": WHEN_OR_NULL,
        "last_message": TEXT_OR_NULL,
        "version": ROW_VERSION,
        "created_at": WHEN,
    }
)
WORKFLOW_RUN_WITH_NODES = extend(WORKFLOW_RUN_RECORD, nodes=array(NODE_RECORD))
NODE_CHANGED = record({"node": NODE_RECORD, "run": WORKFLOW_RUN_RECORD})
