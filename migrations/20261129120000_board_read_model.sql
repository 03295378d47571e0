-- The board read model (issue 13): the `cancelled` work-item status (won't do, counted as
-- closed) and a WIP policy per swim lane (`none`, `warn`, `refuse`; existing lanes `none`).
--
-- SQLite cannot change a CHECK constraint in place, so `work_items` and `swim_lanes` are
-- rebuilt. Migrations run inside a transaction, where `PRAGMA foreign_keys = OFF` does
-- nothing, and other tables reference `work_items`; so foreign keys are deferred to the
-- commit instead: the rows are copied aside, deleted (which counts the references to them
-- as pending violations), the table is dropped and created again, and the same rows, with
-- the same rowids (the full-text index refers to them), are inserted back (which settles
-- every pending violation). A row that went missing would fail the commit, and with it the
-- whole migration.

PRAGMA defer_foreign_keys = ON;

CREATE TEMP TABLE work_items_copy AS SELECT rowid AS copied_rowid, * FROM work_items;

-- No trigger fires on DELETE, so the full-text index keeps its entries for these rowids.
DELETE FROM work_items;
-- Drops its indexes and its full-text triggers too; both are created again below.
DROP TABLE work_items;

CREATE TABLE work_items (
    id           TEXT    NOT NULL PRIMARY KEY,
    project_id   TEXT    NOT NULL REFERENCES projects (id),
    number       INTEGER NOT NULL CHECK (number >= 1),
    item_type    TEXT    NOT NULL CHECK (item_type IN ('epic', 'story', 'task', 'bug')),
    parent_id    TEXT    REFERENCES work_items (id) CHECK (parent_id IS NULL OR parent_id <> id),
    title        TEXT    NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    description  TEXT    NOT NULL CHECK (length(description) <= 100000),
    status       TEXT    NOT NULL
                         CHECK (status IN ('backlog', 'todo', 'in_progress', 'review', 'done',
                                           'cancelled')),
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

-- The indexes first: re-inserting a row looks up the rows referring to it (parent_id too).
CREATE INDEX work_items_by_rank     ON work_items (project_id, rank, id);
CREATE INDEX work_items_by_status   ON work_items (project_id, status, rank, id);
CREATE INDEX work_items_by_sprint   ON work_items (project_id, sprint_id, rank, id);
CREATE INDEX work_items_by_assignee ON work_items (project_id, assignee_id, rank, id);
CREATE INDEX work_items_by_type     ON work_items (project_id, item_type, rank, id);
CREATE INDEX work_items_by_parent   ON work_items (parent_id, rank, id);

INSERT INTO work_items (rowid, id, project_id, number, item_type, parent_id, title,
                        description, status, priority, story_points, assignee_id, sprint_id,
                        rank, version, created_at, created_by, updated_at, updated_by,
                        deleted_at)
SELECT copied_rowid, id, project_id, number, item_type, parent_id, title,
       description, status, priority, story_points, assignee_id, sprint_id,
       rank, version, created_at, created_by, updated_at, updated_by,
       deleted_at
FROM work_items_copy
ORDER BY copied_rowid;

DROP TABLE work_items_copy;

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

-- Nothing refers to swim lanes: the usual rebuild (new table, copy, drop, rename).
CREATE TABLE swim_lanes_next (
    id         TEXT    NOT NULL PRIMARY KEY,
    project_id TEXT    NOT NULL REFERENCES projects (id),
    name       TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    status     TEXT    NOT NULL
                       CHECK (status IN ('backlog', 'todo', 'in_progress', 'review', 'done',
                                         'cancelled')),
    position   INTEGER NOT NULL CHECK (position >= 0),
    wip_limit  INTEGER CHECK (wip_limit BETWEEN 1 AND 10000),
    wip_policy TEXT    NOT NULL DEFAULT 'none' CHECK (wip_policy IN ('none', 'warn', 'refuse')),
    version    INTEGER NOT NULL CHECK (version >= 1),
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT    NOT NULL,
    deleted_at INTEGER
) STRICT;

INSERT INTO swim_lanes_next (id, project_id, name, status, position, wip_limit, version,
                             created_at, created_by, updated_at, updated_by, deleted_at)
SELECT id, project_id, name, status, position, wip_limit, version,
       created_at, created_by, updated_at, updated_by, deleted_at
FROM swim_lanes;

DROP TABLE swim_lanes;
ALTER TABLE swim_lanes_next RENAME TO swim_lanes;

CREATE INDEX swim_lanes_by_project ON swim_lanes (project_id, position, id);
