UPDATE meta SET schema_version = 6;
DROP TABLE debugger_state;
DROP TABLE artifacts;
DROP TABLE command_logs;
DROP TABLE commands;
DROP TABLE sessions;
DROP TABLE worktrees;
DROP TABLE repositories;
