-- Partial indexes for what the ops page (/ui) counts and lists every two seconds per open
-- tab: active sessions, reserved worktrees by lease expiry, running commands. Each holds only
-- the rows in that state, so the page's queries stay as cheap with a million finished
-- commands as with ten. Portable SQL (SQLite 3.8+ and PostgreSQL both have partial indexes).
-- depends: 0007_debug_metadata

CREATE INDEX sessions_active_idx ON sessions (started_at, id) WHERE state = 'active';
CREATE INDEX worktrees_reserved_idx ON worktrees (lease_expires_at, id) WHERE state = 'reserved';
CREATE INDEX commands_running_idx ON commands (started_at, id) WHERE state = 'running';

UPDATE meta SET schema_version = 8;
