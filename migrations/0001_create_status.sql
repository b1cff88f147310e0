-- BobGen status records.
-- Portable SQL (SQLite and PostgreSQL): no AUTOINCREMENT, timestamps are ISO-8601 UTC text.
-- depends:

CREATE TABLE status (
    id INTEGER PRIMARY KEY,
    uptime DOUBLE PRECISION NOT NULL,
    version VARCHAR(64) NOT NULL,
    latency DOUBLE PRECISION NOT NULL,
    error_rate DOUBLE PRECISION NOT NULL,
    last_run VARCHAR(32),
    blocks INTEGER NOT NULL DEFAULT 0,
    runbook_link VARCHAR(2048),
    dashboard_link VARCHAR(2048),
    created_at VARCHAR(32) NOT NULL,
    updated_at VARCHAR(32) NOT NULL
);

-- Filtering by version pages by id inside one version.
CREATE INDEX status_version_idx ON status (version, id);
