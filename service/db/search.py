"""Full-text search, the one read whose SQL really differs between backends.

Tables made searchable by a migration follow one convention: on SQLite an FTS5 table named
``<table>_fts`` with external content (its rowid is the table's rowid); on PostgreSQL a
generated ``search`` tsvector column with a GIN index (see migrations/0006). Both match every
word of the query (AND), and rank the best first (bm25 / ts_rank), ties by id.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.db.url import POSTGRESQL, SQLITE

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class PerBackend:
    """One query written for each backend: SQL text and parameters (``?`` placeholders)."""

    sqlite: tuple[str, Sequence[Any]]
    postgresql: tuple[str, Sequence[Any]]

    def for_backend(self, backend: str) -> tuple[str, Sequence[Any]]:
        if backend == SQLITE:
            return self.sqlite
        if backend == POSTGRESQL:
            return self.postgresql
        raise ValueError(f"no query for backend {backend!r}")


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def ranked_matches(
    table: str,
    columns: Sequence[str],
    text: str,
    *,
    conditions: Sequence[str] = (),
    params: Sequence[Any] = (),
    limit: int,
) -> PerBackend:
    """Rows of ``table`` (aliased ``t``: qualify ``conditions`` with it) matching every word
    of ``text``, best first."""
    select = ", ".join(f"t.{c}" for c in columns)
    extra = "".join(f" AND {c}" for c in conditions)
    # FTS5 syntax is rich (NEAR, column filters, *): quote each word so user text is words.
    fts_query = " ".join('"' + w.replace('"', '""') + '"' for w in words(text))
    sqlite = (
        f"SELECT {select} FROM {table}_fts JOIN {table} t ON t.rowid = {table}_fts.rowid "
        f"WHERE {table}_fts MATCH ?{extra} ORDER BY bm25({table}_fts), t.id LIMIT ?",
        [fts_query, *params, limit],
    )
    postgresql = (
        f"SELECT {select} FROM {table} t, plainto_tsquery('simple', ?) AS query "
        f"WHERE t.search @@ query{extra} ORDER BY ts_rank(t.search, query) DESC, t.id LIMIT ?",
        [text, *params, limit],
    )
    return PerBackend(sqlite, postgresql)
