-- Debug-server metadata: repositories, their worktrees, the sessions that reserve them, the
-- commands a session runs (with their log chunks), artifacts and the debugger's state.
-- Portable SQL (SQLite and PostgreSQL). Ids are text chosen by the service (uuid hex), so no
-- identity columns are needed. Timestamps are ISO-8601 UTC text, JSON is text.
-- Deleting a repository cascades to everything under it; the service refuses (409) while one
-- of its sessions is active. A worktree that a session holds cannot be deleted (409 too).
-- depends: 0006_documents_search

CREATE TABLE repositories (
    id VARCHAR(64) PRIMARY KEY,
    name VARCHAR(200) NOT NULL UNIQUE,
    url VARCHAR(2048) NOT NULL,
    default_branch VARCHAR(255) NOT NULL,
    created_at VARCHAR(32) NOT NULL,
    updated_at VARCHAR(32) NOT NULL,
    version INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE worktrees (
    id VARCHAR(64) PRIMARY KEY,
    repository_id VARCHAR(64) NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    path VARCHAR(4096) NOT NULL UNIQUE,
    branch VARCHAR(255),
    state VARCHAR(16) NOT NULL CHECK (state IN ('free', 'reserved', 'retired')),
    reserved_by VARCHAR(64),
    lease_expires_at VARCHAR(32),
    created_at VARCHAR(32) NOT NULL,
    updated_at VARCHAR(32) NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    CHECK ((state = 'reserved') = (reserved_by IS NOT NULL AND lease_expires_at IS NOT NULL))
);
-- The reservation picks among a repository's free (or expired) worktrees.
CREATE INDEX worktrees_pick_idx ON worktrees (repository_id, state, lease_expires_at, id);
CREATE INDEX worktrees_reserved_by_idx ON worktrees (reserved_by);

CREATE TABLE sessions (
    id VARCHAR(64) PRIMARY KEY,
    repository_id VARCHAR(64) NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    worktree_id VARCHAR(64) REFERENCES worktrees (id) ON DELETE SET NULL,
    "user" VARCHAR(200) NOT NULL,
    state VARCHAR(16) NOT NULL CHECK (state IN ('active', 'ended', 'failed')),
    started_at VARCHAR(32) NOT NULL,
    ended_at VARCHAR(32),
    metadata_json TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX sessions_started_idx ON sessions (started_at, id);
CREATE INDEX sessions_repository_idx ON sessions (repository_id, state, started_at, id);
CREATE INDEX sessions_user_idx ON sessions ("user", started_at, id);

CREATE TABLE commands (
    id VARCHAR(64) PRIMARY KEY,
    session_id VARCHAR(64) NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    argv_json TEXT NOT NULL,
    cwd VARCHAR(4096),
    env_json TEXT NOT NULL,
    state VARCHAR(16) NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled')),
    exit_code INTEGER,
    started_at VARCHAR(32) NOT NULL,
    ended_at VARCHAR(32),
    log_seq INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX commands_session_idx ON commands (session_id, started_at, id);

CREATE TABLE command_logs (
    command_id VARCHAR(64) NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    stream VARCHAR(8) NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    text TEXT NOT NULL,
    at VARCHAR(32) NOT NULL,
    PRIMARY KEY (command_id, seq)
);

CREATE TABLE artifacts (
    id VARCHAR(64) PRIMARY KEY,
    session_id VARCHAR(64) NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    command_id VARCHAR(64) REFERENCES commands (id) ON DELETE SET NULL,
    name VARCHAR(300) NOT NULL,
    kind VARCHAR(64) NOT NULL,
    uri VARCHAR(4096) NOT NULL,
    size_bytes BIGINT,
    sha256 VARCHAR(64),
    content_type VARCHAR(255),
    created_at VARCHAR(32) NOT NULL,
    UNIQUE (session_id, name)
);
CREATE INDEX artifacts_command_idx ON artifacts (command_id);

CREATE TABLE debugger_state (
    session_id VARCHAR(64) PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    state_json TEXT NOT NULL,
    updated_at VARCHAR(32) NOT NULL,
    version INTEGER NOT NULL DEFAULT 1
);

UPDATE meta SET schema_version = 7;
