"""``bobgen import``: load a JSON dump of the old in-memory services into the database.

Validated first (every record, every reference), then written in ONE transaction together
with its run, steps and audit row: a bad record means nothing is imported. Records whose id is
already in the database are skipped, so importing the same dump twice changes nothing.
The format is documented in docs/import.md; seeds/memory_dump_example.json is an example.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from marshmallow import Schema, ValidationError, fields, validate

from service.audit import AuditedWrite, audited_write
from service.db import Database, Work, execute
from service.domain.projects import InvalidGraph, NodeStatus, RunStatus, validate_graph
from service.domain.runs import RunContext, StepStatus, new_run_id
from service.repositories import projects as projects_repo
from service.repositories import runs as runs_repo
from service.repositories import versioned
from service.repositories.versioned import Table
from service.schemas import projects as s
from service.timeutil import utc_iso

FORMAT = "bobgen.memory-dump.v1"


class _Imported(Schema):
    """Fields every imported record may carry on top of its API schema."""

    id = fields.String(required=True, validate=s.ID)
    created_at = fields.AwareDateTime(load_default=None)
    updated_at = fields.AwareDateTime(load_default=None)


class _Scoped(_Imported):
    project_id = fields.String(required=True, validate=s.ID)


class ProjectImport(s.ProjectCreate, _Imported):
    pass


class IdeaImport(s.IdeaCreate, _Scoped):
    pass


class ContextImport(s.ContextCreate, _Scoped):
    pass


class WorkflowImport(s.WorkflowCreate, _Scoped):
    pass


class GapImport(s.GapAnalysisCreate, _Scoped):
    pass


class NodeImport(Schema):
    node_id = fields.String(required=True, validate=validate.Length(1, 100))
    status = fields.Enum(NodeStatus, by_value=True, load_default=NodeStatus.PENDING)
    progress = fields.Float(load_default=0.0, validate=validate.Range(0, 100))
    messages = fields.List(fields.String(), load_default=list)
    started_at = fields.AwareDateTime(load_default=None)
    completed_at = fields.AwareDateTime(load_default=None)
    error = fields.String(load_default=None, allow_none=True)


class RunImport(_Scoped):
    workflow_id = fields.String(required=True, validate=s.ID)
    status = fields.Enum(RunStatus, by_value=True, load_default=RunStatus.PENDING)
    input = fields.Dict(keys=fields.String(), load_default=dict)
    output = fields.Dict(keys=fields.String(), load_default=None, allow_none=True)
    started_at = fields.AwareDateTime(load_default=None)
    finished_at = fields.AwareDateTime(load_default=None)
    last_message = fields.String(load_default=None, allow_none=True)
    nodes = fields.List(fields.Nested(NodeImport), load_default=list)


@dataclass(frozen=True)
class Kind:
    key: str  # in the dump
    table: Table
    schema: Schema


# Parents before children: the order of validation and of insertion.
KINDS = (
    Kind("projects", projects_repo.PROJECTS, ProjectImport()),
    Kind("ideas", projects_repo.IDEAS, IdeaImport()),
    Kind("context_items", projects_repo.CONTEXT_ITEMS, ContextImport()),
    Kind("workflows", projects_repo.WORKFLOWS, WorkflowImport()),
    Kind("workflow_runs", projects_repo.WORKFLOW_RUNS, RunImport()),
    Kind("gap_analyses", projects_repo.GAP_ANALYSES, GapImport()),
)


class DumpUnreadable(ValueError):
    """The file is not a JSON object in the dump format at all."""


@dataclass
class ImportReport:
    dry_run: bool
    problems: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "run_id": self.run_id,
            "counts": self.counts,
            "problems": self.problems,
        }


def _records(dump: dict[str, Any], key: str) -> list[Any]:
    """A list of records, or the old services' ``{id: record}`` dictionaries."""
    raw = dump.get(key, [])
    if isinstance(raw, dict):
        return [{"id": rid, **rec} if isinstance(rec, dict) else rec for rid, rec in raw.items()]
    if isinstance(raw, list):
        return raw
    raise DumpUnreadable(f"'{key}' must be a list or an object of records")


def parse(dump: Any) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Validate every record on its own; return the loaded records and the problems found."""
    if not isinstance(dump, dict):
        raise DumpUnreadable("the dump must be a JSON object")
    if dump.get("format", FORMAT) != FORMAT:
        raise DumpUnreadable(f"unknown format {dump.get('format')!r}; expected {FORMAT!r}")
    unknown = sorted(set(dump) - {k.key for k in KINDS} - {"format"})
    if unknown:
        raise DumpUnreadable(f"unknown sections: {', '.join(unknown)}")
    loaded: dict[str, list[dict[str, Any]]] = {}
    problems: list[dict[str, Any]] = []
    for kind in KINDS:
        loaded[kind.key] = []
        seen: set[str] = set()
        for index, record in enumerate(_records(dump, kind.key)):
            where = {
                "kind": kind.key,
                "index": index,
                "id": record.get("id") if isinstance(record, dict) else None,
            }
            try:
                item = kind.schema.load(record)
            except ValidationError as exc:
                problems.append({**where, "errors": exc.messages})
                continue
            if item["id"] in seen:
                problems.append({**where, "errors": {"id": ["Duplicate id in the dump."]}})
                continue
            seen.add(item["id"])
            loaded[kind.key].append(item)
    return loaded, problems


async def _existing(db: Database, table: Table, ids: Iterable[str]) -> dict[str, str | None]:
    """id -> project_id (None for projects) of the given ids that are in the database."""
    ids = list(ids)
    found: dict[str, str | None] = {}
    column = "project_id" if table.scoped else "NULL"
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = await db.fetchall(
            f"SELECT id, {column} FROM {table.name} WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        found.update({r[0]: r[1] for r in rows})
    return found


Graphs = dict[str, tuple[str, dict[str, Any]]]  # workflow id -> (project id, graph)


async def check_references(
    db: Database, loaded: dict[str, list[dict[str, Any]]]
) -> tuple[dict[str, dict[str, str | None]], Graphs, list[dict[str, Any]]]:
    """Cross-record checks against the dump and the database.

    Also returns what the insert needs: the ids already in the database, and the graph of
    every workflow a run refers to.
    """
    existing = {
        k.key: await _existing(db, k.table, (r["id"] for r in loaded[k.key])) for k in KINDS
    }
    problems: list[dict[str, Any]] = []
    projects = {r["id"] for r in loaded["projects"]} | set(
        await _existing(
            db, projects_repo.PROJECTS, {r["project_id"] for k in KINDS[1:] for r in loaded[k.key]}
        )
    )
    graphs: Graphs = {w["id"]: (w["project_id"], w["graph"]) for w in loaded["workflows"]}
    graphs |= await _graphs_in_db(
        db, {r["workflow_id"] for r in loaded["workflow_runs"]} - set(graphs)
    )
    for kind in KINDS:
        for record in loaded[kind.key]:
            errors: dict[str, list[str]] = {}
            owner = existing[kind.key].get(record["id"], record.get("project_id"))
            if kind.table.scoped and owner != record["project_id"]:
                errors["id"] = [f"Exists already in project {owner}."]
            if kind.table.scoped and record["project_id"] not in projects:
                errors["project_id"] = ["No such project in the dump or the database."]
            if kind.key == "workflows":
                try:
                    validate_graph(record["graph"])
                except InvalidGraph as exc:
                    errors["graph"] = [str(exc.problems)]
            if kind.key == "workflow_runs":
                errors.update(_run_problems(record, graphs))
            if errors:
                problems.append({"kind": kind.key, "id": record["id"], "errors": errors})
    return existing, graphs, problems


async def _graphs_in_db(db: Database, workflow_ids: set[str]) -> Graphs:
    ids = sorted(workflow_ids)
    graphs: Graphs = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = await db.fetchall(
            "SELECT id, project_id, graph_json FROM workflow_graphs "
            f"WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        graphs.update({r[0]: (r[1], orjson.loads(r[2])) for r in rows})
    return graphs


def _run_problems(run: dict[str, Any], graphs: Graphs) -> dict[str, list[str]]:
    found = graphs.get(run["workflow_id"])
    if found is None:
        return {"workflow_id": ["No such workflow in the dump or the database."]}
    project_id, graph = found
    if project_id != run["project_id"]:
        return {"workflow_id": ["The workflow belongs to another project."]}
    known = {n["id"] for n in graph["nodes"]}
    stray = sorted({n["node_id"] for n in run["nodes"]} - known)
    return {"nodes": [f"Not in the workflow graph: {', '.join(stray)}."]} if stray else {}


def _row(record: dict[str, Any], now: str) -> dict[str, Any]:
    row = {k: v for k, v in record.items() if k != "nodes"}
    for key, value in row.items():
        if hasattr(value, "isoformat"):
            row[key] = utc_iso(value)
    row["created_at"] = row.get("created_at") or now
    row["updated_at"] = row.get("updated_at") or row["created_at"]
    row["version"] = 1
    return row


async def import_dump(
    db: Database, dump: Any, *, dry_run: bool, actor: str, context: RunContext, source: str
) -> ImportReport:
    report = ImportReport(dry_run=dry_run)
    loaded, report.problems = parse(dump)
    existing, graphs, reference_problems = await check_references(db, loaded)
    report.problems += reference_problems
    for kind in KINDS:
        skipped = sum(1 for r in loaded[kind.key] if r["id"] in existing[kind.key])
        report.counts[kind.key] = {"inserted": len(loaded[kind.key]) - skipped, "skipped": skipped}
    if not report.ok or dry_run:
        return report

    def work(w: AuditedWrite) -> Work[str]:
        run = yield from runs_repo.insert_run(
            run_id=new_run_id(),
            now=w.now,
            git_sha=context.git_sha,
            config_hash=context.config_hash,
            args={"command": "import", "source": source},
        )
        for kind in KINDS:
            for record in loaded[kind.key]:
                if record["id"] in existing[kind.key]:
                    continue
                yield from versioned.insert(kind.table, _row(record, w.now))
                if kind.key == "workflow_runs":
                    graph = graphs[record["workflow_id"]][1]
                    yield from _insert_nodes(record, [n["id"] for n in graph["nodes"]])
            yield from runs_repo.insert_step(
                run_id=run["run_id"],
                name=kind.key,
                status=StepStatus.SUCCEEDED,
                stats=report.counts[kind.key],
                now=w.now,
                finished=True,
            )
        w.audit(
            "import.completed",
            scope="import",
            run_id=run["run_id"],
            message=f"imported {source}",
            data={"counts": report.counts},
        )
        return str(run["run_id"])

    report.run_id = await audited_write(db, actor, work)
    return report


def _insert_nodes(run: dict[str, Any], node_ids: list[str]) -> Work[None]:
    """The run's node states as dumped, plus a pending state for graph nodes it did not list."""
    given = {n["node_id"]: n for n in run["nodes"]}
    yield from projects_repo.insert_nodes(run["id"], [i for i in node_ids if i not in given])
    for node in given.values():
        yield from execute(
            "INSERT INTO workflow_node_states (run_id, node_id, status, progress, messages_json,"
            " started_at, completed_at, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run["id"],
                node["node_id"],
                node["status"].value,
                node["progress"],
                orjson.dumps(node["messages"]).decode(),
                utc_iso(node["started_at"]) if node["started_at"] else None,
                utc_iso(node["completed_at"]) if node["completed_at"] else None,
                node["error"],
            ),
        )


def summary(report: ImportReport) -> str:
    lines = [
        f"{'dry run: ' if report.dry_run else ''}"
        f"{'OK' if report.ok else 'REFUSED: nothing was imported'}"
    ]
    for key, c in report.counts.items():
        verb = "would insert" if report.dry_run else "inserted"
        lines.append(f"  {key:<15} {verb} {c['inserted']}, skipped {c['skipped']} (already there)")
    for p in report.problems:
        where = f"{p['kind']} id={p.get('id')!r}" + (f" (#{p['index']})" if "index" in p else "")
        lines.append(f"  problem: {where}: {p['errors']}")
    if report.run_id:
        lines.append(f"  recorded as run {report.run_id}")
    return "\n".join(lines)
