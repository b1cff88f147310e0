"""Persona and prompt-template files: what they are, how they parse, and their stable ids.

A documents root holds ``personas/*.json`` and ``prompts/*.prompty``. The files are the source
of truth; the database keeps a parsed copy (docs/documents.md). Everything here is pure: it
reads bytes it is given and never touches the database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

import orjson
import yaml

DEFAULT_MAX_FILE_BYTES = 1024 * 1024
# Deeper than this is refused: it is no persona, and a JSON encoder gives up near 255 levels
# (a document that parsed but cannot be stored would stop the whole batch it is in).
MAX_DEPTH = 64


class DocumentType(StrEnum):
    PERSONA = "persona"
    PROMPT_TEMPLATE = "prompt_template"


# Where each type lives under a root, and the suffix that marks its files.
LAYOUT: dict[DocumentType, tuple[str, str]] = {
    DocumentType.PERSONA: ("personas", ".json"),
    DocumentType.PROMPT_TEMPLATE: ("prompts", ".prompty"),
}


class DocumentError(ValueError):
    """The file cannot become a document (bad JSON or YAML, not an object, not UTF-8, too
    large). The sync reports it and keeps the last good version."""


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    id: str
    type: DocumentType
    name: str
    document: dict[str, Any]
    file_path: str  # relative to its root, with forward slashes
    file_modified: str  # ISO-8601 UTC
    content_hash: str  # SHA-256 of the bytes


def document_type(relative: PurePosixPath) -> DocumentType | None:
    """The type of the file at ``relative`` (to its root), or None when it is not one of ours
    (another folder, another suffix, an editor's temp or hidden file)."""
    if len(relative.parts) != 2 or relative.name.startswith("."):
        return None
    for kind, (folder, suffix) in LAYOUT.items():
        if relative.parts[0] == folder and relative.suffix == suffix:
            return kind
    return None


def document_id(kind: DocumentType, relative: str) -> str:
    """Stable across edits (a function of type and path only): 32 hex characters."""
    return hashlib.sha256(f"{kind}:{relative}".encode()).hexdigest()[:32]


def iso_utc(mtime_ns: int) -> str:
    stamp = datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse(
    relative: PurePosixPath,
    data: bytes,
    mtime_ns: int,
    *,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> ParsedDocument:
    """The document in ``data`` (the bytes of the file at ``relative``), or DocumentError."""
    kind = document_type(relative)
    if kind is None:
        raise DocumentError("not a persona (personas/*.json) or prompt (prompts/*.prompty)")
    if len(data) > max_bytes:
        raise DocumentError(f"larger than the {max_bytes}-byte limit ({len(data)} bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if kind is DocumentType.PERSONA:
        document = _parse_json(text)
        name = document.get("name")
    else:
        document = _parse_prompty(text)
        name = document["metadata"].get("name")
    _check_storable(document)
    if not isinstance(name, str) or not name.strip():
        name = relative.stem
    return ParsedDocument(
        id=document_id(kind, str(relative)),
        type=kind,
        name=name.strip()[:300],
        document=document,
        file_path=str(relative),
        file_modified=iso_utc(mtime_ns),
        content_hash=hashlib.sha256(data).hexdigest(),
    )


def _check_storable(document: dict[str, Any]) -> None:
    """Refuse what parses but cannot be stored everywhere: nesting beyond MAX_DEPTH, and NUL
    characters (PostgreSQL's text and jsonb refuse them). Iterative: depth is the input's."""
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH and isinstance(value, dict | list):
            raise DocumentError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            if any("\x00" in key for key in value):
                raise DocumentError("a key holds a NUL character")
            pending.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            pending.extend((v, depth + 1) for v in value)
        elif isinstance(value, str) and "\x00" in value:
            raise DocumentError("a value holds a NUL character")


def _parse_json(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        # orjson names the position (line, column), never the text around it.
        raise DocumentError(f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DocumentError(f"a persona must be a JSON object, not {type(value).__name__}")
    return value


def _parse_prompty(text: str) -> dict[str, Any]:
    """``---`` YAML front matter ``---`` then the template body."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise DocumentError("a .prompty file starts with '---' and YAML front matter")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise DocumentError("the YAML front matter is not closed by a '---' line") from None
    try:
        metadata = yaml.load("".join(lines[1:end]), Loader=_NoAliasLoader) or {}
    except yaml.YAMLError as exc:
        raise DocumentError(f"invalid YAML front matter: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise DocumentError(f"nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(metadata, dict):
        raise DocumentError("the front matter must be a YAML mapping")
    # JSON-able: YAML dates and the like become strings, so the copy is what the API returns.
    _check_storable(metadata)
    metadata = orjson.loads(orjson.dumps(metadata, default=str))
    return {"metadata": metadata, "template": "".join(lines[end + 1 :])}


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: six anchors of ten aliases each (346 bytes) made
    a 6.9 MB document, nine levels would exhaust memory. Front matter never needs them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.YAMLError(f"aliases (*name) are not allowed, line {mark.line + 2}")
        return super().compose_node(parent, index)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where (the file's line, counting the opening ``---``, and column),
    without PyYAML's quote of the line: the line may hold a secret, and the reason is shown
    on /admin/sync."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is not None:
            return f"{problem}, line {mark.line + 2}, column {mark.column + 1}"
        return str(problem)
    return " ".join(str(exc).split())


def relative_to_root(path: Path, root: Path) -> PurePosixPath | None:
    try:
        return PurePosixPath(path.relative_to(root).as_posix())
    except ValueError:
        return None
