-- Documents kept in step with files (personas/*.json, prompts/*.prompty): the files are the
-- source of truth, this table is their queryable copy. Portable SQL (SQLite and PostgreSQL).
-- The id is derived from type + path (stable across edits); document is the parsed file as
-- JSON text; content_hash (SHA-256 of the bytes) makes an unchanged file cost no write.
-- depends: 0004_assigned_ids

CREATE TABLE documents (
    id VARCHAR(64) PRIMARY KEY,
    type VARCHAR(32) NOT NULL CHECK (type IN ('persona', 'prompt_template')),
    name VARCHAR(300) NOT NULL,
    document TEXT NOT NULL,
    file_path VARCHAR(1024) NOT NULL UNIQUE,
    file_modified VARCHAR(32) NOT NULL,
    content_hash VARCHAR(64) NOT NULL,
    created_at VARCHAR(32) NOT NULL,
    updated_at VARCHAR(32) NOT NULL
);

CREATE INDEX documents_type_name_idx ON documents (type, name, id);
CREATE INDEX documents_name_idx ON documents (name, id);

UPDATE meta SET schema_version = 5;
