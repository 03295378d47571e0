-- Initial schema of a tenant database. Every table is STRICT; CHECK and FOREIGN KEY
-- constraints are the last line of defence behind the validation in Rust.
-- Times are Unix milliseconds (UTC); ids are canonical UUID text.

CREATE TABLE projects (
    id          TEXT    NOT NULL PRIMARY KEY,
    key         TEXT    NOT NULL UNIQUE
                        CHECK (length(key) BETWEEN 2 AND 10 AND key GLOB '[A-Z]*'
                               AND key NOT GLOB '*[^A-Z0-9]*'),
    name        TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description TEXT    NOT NULL CHECK (length(description) <= 10000),
    status      TEXT    NOT NULL CHECK (status IN ('active', 'archived')),
    version     INTEGER NOT NULL CHECK (version >= 1),
    created_at  INTEGER NOT NULL,
    created_by  TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    updated_by  TEXT    NOT NULL,
    deleted_at  INTEGER
) STRICT;

CREATE TABLE project_members (
    project_id TEXT    NOT NULL REFERENCES projects (id),
    user_id    TEXT    NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    role       TEXT    NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    version    INTEGER NOT NULL CHECK (version >= 1),
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT    NOT NULL,
    deleted_at INTEGER CHECK (deleted_at IS NULL),
    PRIMARY KEY (project_id, user_id)
) STRICT, WITHOUT ROWID;

-- "Projects of user U" (membership checks, ListProjects, activity filters).
CREATE INDEX project_members_by_user ON project_members (user_id, project_id);

CREATE TABLE sprints (
    id         TEXT    NOT NULL PRIMARY KEY,
    project_id TEXT    NOT NULL REFERENCES projects (id),
    name       TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    goal       TEXT    NOT NULL CHECK (length(goal) <= 10000),
    status     TEXT    NOT NULL CHECK (status IN ('planned', 'active', 'completed', 'cancelled')),
    start_at   INTEGER,
    end_at     INTEGER CHECK (end_at IS NULL OR start_at IS NULL OR end_at >= start_at),
    version    INTEGER NOT NULL CHECK (version >= 1),
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT    NOT NULL,
    deleted_at INTEGER
) STRICT;

CREATE INDEX sprints_by_project ON sprints (project_id, created_at, id);
-- At most one active sprint per project.
CREATE UNIQUE INDEX sprints_one_active ON sprints (project_id)
    WHERE status = 'active' AND deleted_at IS NULL;

CREATE TABLE work_items (
    id           TEXT    NOT NULL PRIMARY KEY,
    project_id   TEXT    NOT NULL REFERENCES projects (id),
    number       INTEGER NOT NULL CHECK (number >= 1),
    item_type    TEXT    NOT NULL CHECK (item_type IN ('epic', 'story', 'task', 'bug')),
    parent_id    TEXT    REFERENCES work_items (id) CHECK (parent_id IS NULL OR parent_id <> id),
    title        TEXT    NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    description  TEXT    NOT NULL CHECK (length(description) <= 100000),
    status       TEXT    NOT NULL
                         CHECK (status IN ('backlog', 'todo', 'in_progress', 'review', 'done')),
    priority     TEXT    NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    story_points INTEGER CHECK (story_points BETWEEN 0 AND 1000),
    assignee_id  TEXT,
    sprint_id    TEXT    REFERENCES sprints (id),
    rank         TEXT    NOT NULL CHECK (length(rank) >= 1),
    version      INTEGER NOT NULL CHECK (version >= 1),
    created_at   INTEGER NOT NULL,
    created_by   TEXT    NOT NULL,
    updated_at   INTEGER NOT NULL,
    updated_by   TEXT    NOT NULL,
    deleted_at   INTEGER,
    UNIQUE (project_id, number)
) STRICT;

-- One index per list filter, each ending in the list order (rank, id).
CREATE INDEX work_items_by_rank     ON work_items (project_id, rank, id);
CREATE INDEX work_items_by_status   ON work_items (project_id, status, rank, id);
CREATE INDEX work_items_by_sprint   ON work_items (project_id, sprint_id, rank, id);
CREATE INDEX work_items_by_assignee ON work_items (project_id, assignee_id, rank, id);
CREATE INDEX work_items_by_type     ON work_items (project_id, item_type, rank, id);
CREATE INDEX work_items_by_parent   ON work_items (parent_id, rank, id);

CREATE TABLE comments (
    id           TEXT    NOT NULL PRIMARY KEY,
    project_id   TEXT    NOT NULL REFERENCES projects (id),
    work_item_id TEXT    NOT NULL REFERENCES work_items (id),
    content      TEXT    NOT NULL CHECK (length(content) BETWEEN 1 AND 100000),
    version      INTEGER NOT NULL CHECK (version >= 1),
    created_at   INTEGER NOT NULL,
    created_by   TEXT    NOT NULL,
    updated_at   INTEGER NOT NULL,
    updated_by   TEXT    NOT NULL,
    deleted_at   INTEGER
) STRICT;

CREATE INDEX comments_by_work_item ON comments (work_item_id, created_at, id);

CREATE TABLE time_entries (
    id           TEXT    NOT NULL PRIMARY KEY,
    project_id   TEXT    NOT NULL REFERENCES projects (id),
    work_item_id TEXT    NOT NULL REFERENCES work_items (id),
    user_id      TEXT    NOT NULL,
    started_at   INTEGER NOT NULL CHECK (started_at >= 0),
    ended_at     INTEGER CHECK (ended_at IS NULL OR ended_at > started_at),
    description  TEXT    NOT NULL CHECK (length(description) <= 1000),
    version      INTEGER NOT NULL CHECK (version >= 1),
    created_at   INTEGER NOT NULL,
    created_by   TEXT    NOT NULL,
    updated_at   INTEGER NOT NULL,
    updated_by   TEXT    NOT NULL,
    deleted_at   INTEGER
) STRICT;

CREATE INDEX time_entries_by_work_item ON time_entries (work_item_id, started_at, id);
CREATE INDEX time_entries_by_user      ON time_entries (project_id, user_id, started_at, id);
CREATE INDEX time_entries_by_project   ON time_entries (project_id, started_at, id);
-- At most one running timer per user.
CREATE UNIQUE INDEX time_entries_one_running ON time_entries (user_id)
    WHERE ended_at IS NULL AND deleted_at IS NULL;

CREATE TABLE dependencies (
    id               TEXT    NOT NULL PRIMARY KEY,
    project_id       TEXT    NOT NULL REFERENCES projects (id),
    blocking_item_id TEXT    NOT NULL REFERENCES work_items (id),
    blocked_item_id  TEXT    NOT NULL REFERENCES work_items (id),
    dependency_type  TEXT    NOT NULL CHECK (dependency_type IN ('blocks', 'relates_to')),
    version          INTEGER NOT NULL CHECK (version >= 1),
    created_at       INTEGER NOT NULL,
    created_by       TEXT    NOT NULL,
    updated_at       INTEGER NOT NULL,
    updated_by       TEXT    NOT NULL,
    deleted_at       INTEGER,
    CHECK (blocking_item_id <> blocked_item_id)
) STRICT;

CREATE INDEX dependencies_by_project  ON dependencies (project_id, created_at, id);
CREATE INDEX dependencies_by_blocking ON dependencies (blocking_item_id, dependency_type);
CREATE INDEX dependencies_by_blocked  ON dependencies (blocked_item_id, dependency_type);
-- One live link of each type between two items.
CREATE UNIQUE INDEX dependencies_unique ON dependencies (blocking_item_id, blocked_item_id, dependency_type)
    WHERE deleted_at IS NULL;

CREATE TABLE swim_lanes (
    id         TEXT    NOT NULL PRIMARY KEY,
    project_id TEXT    NOT NULL REFERENCES projects (id),
    name       TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    status     TEXT    NOT NULL
                       CHECK (status IN ('backlog', 'todo', 'in_progress', 'review', 'done')),
    position   INTEGER NOT NULL CHECK (position >= 0),
    wip_limit  INTEGER CHECK (wip_limit BETWEEN 1 AND 10000),
    version    INTEGER NOT NULL CHECK (version >= 1),
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT    NOT NULL,
    deleted_at INTEGER
) STRICT;

CREATE INDEX swim_lanes_by_project ON swim_lanes (project_id, position, id);

CREATE TABLE llm_context (
    id         TEXT    NOT NULL PRIMARY KEY,
    project_id TEXT    NOT NULL REFERENCES projects (id),
    category   TEXT    NOT NULL CHECK (category IN ('schema_doc', 'query_pattern',
                                                    'business_rule', 'example', 'instruction')),
    title      TEXT    NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    content    TEXT    NOT NULL CHECK (length(content) BETWEEN 1 AND 100000),
    priority   INTEGER NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1),
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT    NOT NULL,
    deleted_at INTEGER
) STRICT;

CREATE INDEX llm_context_by_project ON llm_context (project_id, priority DESC, id);

-- The change log: audit trail and event stream. `seq` is assigned by the tenant's writer,
-- gapless from 1, in the same transaction as the change. `event` is the encoded
-- `pm.v1.Event` (changed fields with old and new values, and the entity after the change).
CREATE TABLE change_log (
    seq         INTEGER NOT NULL PRIMARY KEY CHECK (seq >= 1),
    at          INTEGER NOT NULL,
    actor_id    TEXT    NOT NULL,
    project_id  TEXT    NOT NULL,
    entity_type TEXT    NOT NULL CHECK (entity_type IN ('project', 'project_member', 'work_item',
                        'sprint', 'comment', 'time_entry', 'dependency', 'swim_lane', 'llm_context')),
    entity_id   TEXT    NOT NULL,
    action      TEXT    NOT NULL
                        CHECK (action IN ('created', 'updated', 'deleted', 'restored', 'moved')),
    event       BLOB    NOT NULL
) STRICT;

CREATE INDEX change_log_by_project ON change_log (project_id, seq);
CREATE INDEX change_log_by_entity  ON change_log (entity_id, seq);
CREATE INDEX change_log_by_actor   ON change_log (actor_id, seq);

-- Answers to commands sent with an idempotency key, kept 24 hours.
CREATE TABLE idempotency (
    user_id      TEXT    NOT NULL,
    key          TEXT    NOT NULL CHECK (length(key) BETWEEN 1 AND 128),
    created_at   INTEGER NOT NULL,
    command_hash INTEGER NOT NULL,
    result       BLOB    NOT NULL,
    PRIMARY KEY (user_id, key)
) STRICT, WITHOUT ROWID;

CREATE INDEX idempotency_by_age ON idempotency (created_at);

-- Full-text search over work item titles and descriptions, and over comments.
CREATE VIRTUAL TABLE work_item_fts USING fts5 (
    title, description, content = 'work_items', content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER work_items_fts_insert AFTER INSERT ON work_items BEGIN
    INSERT INTO work_item_fts (rowid, title, description)
    VALUES (new.rowid, new.title, new.description);
END;

CREATE TRIGGER work_items_fts_update AFTER UPDATE OF title, description ON work_items
WHEN old.title IS NOT new.title OR old.description IS NOT new.description BEGIN
    INSERT INTO work_item_fts (work_item_fts, rowid, title, description)
    VALUES ('delete', old.rowid, old.title, old.description);
    INSERT INTO work_item_fts (rowid, title, description)
    VALUES (new.rowid, new.title, new.description);
END;

CREATE VIRTUAL TABLE comment_fts USING fts5 (
    content, content = 'comments', content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER comments_fts_insert AFTER INSERT ON comments BEGIN
    INSERT INTO comment_fts (rowid, content) VALUES (new.rowid, new.content);
END;

CREATE TRIGGER comments_fts_update AFTER UPDATE OF content ON comments
WHEN old.content IS NOT new.content BEGIN
    INSERT INTO comment_fts (comment_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
    INSERT INTO comment_fts (rowid, content) VALUES (new.rowid, new.content);
END;
