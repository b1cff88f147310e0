"""Search over documents: full text, and JSON fields people filter by.

Full text differs per backend, so this step chooses its SQL by the connection (one history):
SQLite gets an FTS5 table over (name, document) kept in step by triggers (external content:
the text lives once, in ``documents``); PostgreSQL gets a generated ``tsvector`` column with a
GIN index. JSON fields are read with ``json_extract(document, '$.field')`` on both: SQLite has
it built in, PostgreSQL gets an IMMUTABLE function of that name here, so repositories write
the filter once and the expression indexes below are the same statement on both.
"""

from yoyo import step

__depends__ = {"0005_documents"}

# The JSON fields with an expression index (docs/documents.md lists them).
INDEXED_FIELDS = ("model", "role")

SQLITE_APPLY = [
    "CREATE VIRTUAL TABLE documents_fts USING fts5("
    "name, document, content='documents', content_rowid='rowid', tokenize='unicode61')",
    "CREATE TRIGGER documents_fts_insert AFTER INSERT ON documents BEGIN "
    "INSERT INTO documents_fts (rowid, name, document) "
    "VALUES (new.rowid, new.name, new.document); END",
    "CREATE TRIGGER documents_fts_delete AFTER DELETE ON documents BEGIN "
    "INSERT INTO documents_fts (documents_fts, rowid, name, document) "
    "VALUES ('delete', old.rowid, old.name, old.document); END",
    "CREATE TRIGGER documents_fts_update AFTER UPDATE ON documents BEGIN "
    "INSERT INTO documents_fts (documents_fts, rowid, name, document) "
    "VALUES ('delete', old.rowid, old.name, old.document); "
    "INSERT INTO documents_fts (rowid, name, document) "
    "VALUES (new.rowid, new.name, new.document); END",
    "INSERT INTO documents_fts (documents_fts) VALUES ('rebuild')",
]
SQLITE_ROLLBACK = [
    "DROP TRIGGER documents_fts_update",
    "DROP TRIGGER documents_fts_delete",
    "DROP TRIGGER documents_fts_insert",
    "DROP TABLE documents_fts",
]

POSTGRESQL_APPLY = [
    "ALTER TABLE documents ADD COLUMN search tsvector GENERATED ALWAYS AS "
    "(to_tsvector('simple', name || ' ' || document)) STORED",
    "CREATE INDEX documents_search_idx ON documents USING GIN (search)",
    # SQLite's json_extract(json, '$.a.b') for text JSON; text out (as #>> gives).
    "CREATE FUNCTION json_extract(doc text, path text) RETURNS text AS $$ "
    "SELECT (doc::jsonb) #>> string_to_array(substr(path, 3), '.') $$ "
    "LANGUAGE SQL IMMUTABLE STRICT PARALLEL SAFE",
]
POSTGRESQL_ROLLBACK = [
    "DROP FUNCTION json_extract(text, text)",
    "DROP INDEX documents_search_idx",
    "ALTER TABLE documents DROP COLUMN search",
]


def _is_postgresql(conn) -> bool:
    return type(conn).__module__.startswith("psycopg")


def apply(conn) -> None:
    cursor = conn.cursor()
    for sql in POSTGRESQL_APPLY if _is_postgresql(conn) else SQLITE_APPLY:
        cursor.execute(sql)
    for field in INDEXED_FIELDS:
        cursor.execute(
            f"CREATE INDEX documents_{field}_idx ON documents (json_extract(document, '$.{field}'))"
        )
    cursor.execute("UPDATE meta SET schema_version = 6")


def rollback(conn) -> None:
    cursor = conn.cursor()
    for field in INDEXED_FIELDS:
        cursor.execute(f"DROP INDEX documents_{field}_idx")
    for sql in POSTGRESQL_ROLLBACK if _is_postgresql(conn) else SQLITE_ROLLBACK:
        cursor.execute(sql)
    cursor.execute("UPDATE meta SET schema_version = 5")


steps = [step(apply, rollback)]
