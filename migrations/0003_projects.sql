-- Projects and what belongs to them: ideas, context items, workflow graphs, workflow runs with
-- per-node state, gap analyses. Replaces the in-memory Idea/Context/Workflow services.
-- Portable SQL (SQLite and PostgreSQL). Ids are text (uuid hex, or the ids of imported data).
-- Every mutable row has a version for optimistic locking (HTTP ETag / If-Match).
-- depends: 0002_security_audit

CREATE TABLE projects (
    id VARCHAR(64) PRIMARY KEY,
    name VARCHAR(200) NOT NULL,
    description TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at VARCHAR(32) NOT NULL,
    updated_at VARCHAR(32) NOT NULL
);

CREATE INDEX projects_created_idx ON projects (created_at, id);

CREATE TABLE idea_tickets (
    id VARCHAR(64) PRIMARY KEY,
    project_id VARCHAR(64) NOT NULL REFERENCES projects (id),
    title VARCHAR(300) NOT NULL,
    description TEXT NOT NULL,
    status VARCHAR(16) NOT NULL,
    -- 1 low, 2 medium, 3 high, 4 critical: a number so that sorting by priority is an index scan
    priority SMALLINT NOT NULL,
    version INTEGER NOT NULL,
    created_at VARCHAR(32) NOT NULL,
    updated_at VARCHAR(32) NOT NULL
);

CREATE INDEX idea_tickets_project_created_idx ON idea_tickets (project_id, created_at, id);
CREATE INDEX idea_tickets_project_updated_idx ON idea_tickets (project_id, updated_at, id);
CREATE INDEX idea_tickets_project_priority_idx ON idea_tickets (project_id, priority, id);
CREATE INDEX idea_tickets_project_status_idx ON idea_tickets (project_id, status, created_at, id);
CREATE INDEX idea_tickets_status_idx ON idea_tickets (status);

CREATE TABLE context_items (
    id VARCHAR(64) PRIMARY KEY,
    project_id VARCHAR(64) NOT NULL REFERENCES projects (id),
    name VARCHAR(300) NOT NULL,
    type VARCHAR(32) NOT NULL,
    tokens INTEGER NOT NULL,
    pinned BOOLEAN NOT NULL,
    canonical_document_id VARCHAR(200),
    version INTEGER NOT NULL,
    created_at VARCHAR(32) NOT NULL,
    updated_at VARCHAR(32) NOT NULL
);

CREATE INDEX context_items_project_created_idx ON context_items (project_id, created_at, id);
CREATE INDEX context_items_project_pinned_idx ON context_items (project_id, pinned);

CREATE TABLE workflow_graphs (
    id VARCHAR(64) PRIMARY KEY,
    project_id VARCHAR(64) NOT NULL REFERENCES projects (id),
    name VARCHAR(200) NOT NULL,
    description TEXT NOT NULL,
    graph_json TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at VARCHAR(32) NOT NULL,
    updated_at VARCHAR(32) NOT NULL
);

CREATE INDEX workflow_graphs_project_created_idx ON workflow_graphs (project_id, created_at, id);

CREATE TABLE workflow_runs (
    id VARCHAR(64) PRIMARY KEY,
    project_id VARCHAR(64) NOT NULL REFERENCES projects (id),
    workflow_id VARCHAR(64) NOT NULL REFERENCES workflow_graphs (id),
    status VARCHAR(16) NOT NULL,
    input_json TEXT NOT NULL,
    output_json TEXT,
    started_at VARCHAR(32),
    finished_at VARCHAR(32),
    last_message TEXT,
    version INTEGER NOT NULL,
    created_at VARCHAR(32) NOT NULL
);

CREATE INDEX workflow_runs_project_status_idx ON workflow_runs (project_id, status, created_at, id);
CREATE INDEX workflow_runs_project_created_idx ON workflow_runs (project_id, created_at, id);
CREATE INDEX workflow_runs_workflow_idx ON workflow_runs (workflow_id);

CREATE TABLE workflow_node_states (
    run_id VARCHAR(64) NOT NULL REFERENCES workflow_runs (id),
    node_id VARCHAR(100) NOT NULL,
    status VARCHAR(16) NOT NULL,
    progress DOUBLE PRECISION NOT NULL,
    messages_json TEXT NOT NULL,
    started_at VARCHAR(32),
    completed_at VARCHAR(32),
    error TEXT,
    PRIMARY KEY (run_id, node_id)
);

CREATE TABLE gap_analyses (
    id VARCHAR(64) PRIMARY KEY,
    project_id VARCHAR(64) NOT NULL REFERENCES projects (id),
    report_json TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at VARCHAR(32) NOT NULL,
    updated_at VARCHAR(32) NOT NULL
);

CREATE INDEX gap_analyses_project_created_idx ON gap_analyses (project_id, created_at, id);

UPDATE meta SET schema_version = 3;
