UPDATE meta SET schema_version = 7;
DROP INDEX commands_running_idx;
DROP INDEX worktrees_reserved_idx;
DROP INDEX sessions_active_idx;
