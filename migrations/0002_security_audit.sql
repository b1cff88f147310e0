-- Tokens, runs and their steps, the audit log, and the meta row.
-- Portable SQL (SQLite and PostgreSQL). "user" is quoted: it is a reserved word in PostgreSQL.
-- depends: 0001_create_status

CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    app_version VARCHAR(64),
    created_at VARCHAR(32)
);

-- schema_version follows the migration head: every later migration updates it, and its
-- rollback puts the previous number back. app_version and created_at are set by the app.
INSERT INTO meta (id, schema_version) VALUES (1, 2);

CREATE TABLE auth_tokens (
    id INTEGER PRIMARY KEY,
    "user" VARCHAR(64) NOT NULL,
    name VARCHAR(128) NOT NULL,
    token_hash CHAR(64) NOT NULL UNIQUE,
    scopes VARCHAR(256) NOT NULL,
    created_at VARCHAR(32) NOT NULL,
    last_used_at VARCHAR(32),
    revoked_at VARCHAR(32)
);

CREATE TABLE runs (
    run_id VARCHAR(64) PRIMARY KEY,
    created_at VARCHAR(32) NOT NULL,
    args_json TEXT NOT NULL,
    git_sha VARCHAR(64),
    config_hash CHAR(64)
);

CREATE INDEX runs_created_at_idx ON runs (created_at, run_id);

CREATE TABLE run_steps (
    step_id INTEGER PRIMARY KEY,
    run_id VARCHAR(64) NOT NULL REFERENCES runs (run_id),
    name VARCHAR(128) NOT NULL,
    started_at VARCHAR(32),
    finished_at VARCHAR(32),
    status VARCHAR(16) NOT NULL,
    stats_json TEXT NOT NULL
);

CREATE INDEX run_steps_run_id_idx ON run_steps (run_id, step_id);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    ts VARCHAR(32) NOT NULL,
    level VARCHAR(16) NOT NULL,
    actor VARCHAR(64) NOT NULL,
    run_id VARCHAR(64) REFERENCES runs (run_id),
    scope VARCHAR(64) NOT NULL,
    event VARCHAR(64) NOT NULL,
    message TEXT NOT NULL,
    data_json TEXT NOT NULL
);

CREATE INDEX audit_log_run_id_idx ON audit_log (run_id, id);
CREATE INDEX audit_log_scope_idx ON audit_log (scope, id);
CREATE INDEX audit_log_event_idx ON audit_log (event, id);
CREATE INDEX audit_log_ts_idx ON audit_log (ts);
