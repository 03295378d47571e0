-- Initial schema of a tenant on PostgreSQL: the state the four SQLite migrations of
-- `migrations/` reach (initial, board read model, search of sprints and LLM context, users),
-- squashed into one, since no PostgreSQL tenant ever had the older schemas. Later changes are
-- new files here, written beside their SQLite counterparts.
--
-- Each tenant has its own schema (`t_<tenant id>`); this file runs with `search_path` set to
-- that schema only, so no name here is schema-qualified.
--
-- Translation rules, so that SQL text can be shared between the engines where possible:
-- - Same tables, same column names and meanings, same CHECK / FOREIGN KEY / UNIQUE
--   constraints, same indexes; rows are soft-deleted (`deleted_at`), never removed.
-- - INTEGER becomes BIGINT, BLOB becomes BYTEA. Times stay Unix milliseconds (UTC) in BIGINT;
--   ids stay canonical UUID text.
-- - Every TEXT column is `COLLATE "C"`: SQLite compares text byte by byte, and ranks, ids and
--   keyset pages depend on that order; a database created with a natural-language collation
--   would otherwise sort them differently.
-- - GLOB checks become regular expressions over the same character classes.
-- - Full-text search: SQLite's FTS5 tables (`work_item_fts`, `comment_fts`, `sprint_fts`,
--   `llm_context_fts`) and the triggers that keep them current are replaced by a generated
--   `search` tsvector column on the searched table itself (`work_items`, `comments`,
--   `sprints`, `llm_context`) with a GIN index. The 'simple' configuration lower-cases and
--   does not stem, like FTS5's unicode61 tokenizer; unlike it, it keeps diacritics (folding
--   them needs the `unaccent` extension, whose function is not immutable). Where FTS5 ranks
--   with bm25 weights 4:1 (first column : second), the first column here has weight A and the
--   second weight B, for ts_rank with weights {0, 0, 0.25, 1}.
-- - The change log keeps its columns. Its seqs come from `tenant_head`, a one-row counter
--   that every writing transaction bumps (`UPDATE ... RETURNING`) before inserting its rows:
--   the row lock orders writers of a tenant across all nodes, so seq order is commit order and
--   a rolled-back transaction leaves no gap. Never a SEQUENCE: it would leave gaps and hand
--   out numbers in start order, not commit order.

CREATE TABLE projects (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    key         TEXT COLLATE "C" NOT NULL UNIQUE
                                 CHECK (length(key) BETWEEN 2 AND 10
                                        AND key ~ '^[A-Z][A-Z0-9]*$'),
    name        TEXT COLLATE "C" NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description TEXT COLLATE "C" NOT NULL CHECK (length(description) <= 10000),
    status      TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'archived')),
    version     BIGINT           NOT NULL CHECK (version >= 1),
    created_at  BIGINT           NOT NULL,
    created_by  TEXT COLLATE "C" NOT NULL,
    updated_at  BIGINT           NOT NULL,
    updated_by  TEXT COLLATE "C" NOT NULL,
    deleted_at  BIGINT
);

CREATE TABLE project_members (
    project_id TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
    user_id    TEXT COLLATE "C" NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    role       TEXT COLLATE "C" NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    version    BIGINT           NOT NULL CHECK (version >= 1),
    created_at BIGINT           NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    updated_at BIGINT           NOT NULL,
    updated_by TEXT COLLATE "C" NOT NULL,
    deleted_at BIGINT           CHECK (deleted_at IS NULL),
    PRIMARY KEY (project_id, user_id)
);

-- "Projects of user U" (membership checks, ListProjects, activity filters).
CREATE INDEX project_members_by_user ON project_members (user_id, project_id);

CREATE TABLE sprints (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
    name       TEXT COLLATE "C" NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    goal       TEXT COLLATE "C" NOT NULL CHECK (length(goal) <= 10000),
    status     TEXT COLLATE "C" NOT NULL
                                CHECK (status IN ('planned', 'active', 'completed', 'cancelled')),
    start_at   BIGINT,
    end_at     BIGINT           CHECK (end_at IS NULL OR start_at IS NULL OR end_at >= start_at),
    version    BIGINT           NOT NULL CHECK (version >= 1),
    created_at BIGINT           NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    updated_at BIGINT           NOT NULL,
    updated_by TEXT COLLATE "C" NOT NULL,
    deleted_at BIGINT,
    -- Replaces `sprint_fts`.
    search     tsvector GENERATED ALWAYS AS (
                   setweight(to_tsvector('simple', name), 'A')
                   || setweight(to_tsvector('simple', goal), 'B')
               ) STORED
);

CREATE INDEX sprints_by_project ON sprints (project_id, created_at, id);
-- At most one active sprint per project.
CREATE UNIQUE INDEX sprints_one_active ON sprints (project_id)
    WHERE status = 'active' AND deleted_at IS NULL;
CREATE INDEX sprints_search ON sprints USING gin (search);

CREATE TABLE work_items (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id   TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
    number       BIGINT           NOT NULL CHECK (number >= 1),
    item_type    TEXT COLLATE "C" NOT NULL CHECK (item_type IN ('epic', 'story', 'task', 'bug')),
    parent_id    TEXT COLLATE "C" REFERENCES work_items (id)
                                  CHECK (parent_id IS NULL OR parent_id <> id),
    title        TEXT COLLATE "C" NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    description  TEXT COLLATE "C" NOT NULL CHECK (length(description) <= 100000),
    status       TEXT COLLATE "C" NOT NULL
                                  CHECK (status IN ('backlog', 'todo', 'in_progress', 'review',
                                                    'done', 'cancelled')),
    priority     TEXT COLLATE "C" NOT NULL
                                  CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    story_points BIGINT           CHECK (story_points BETWEEN 0 AND 1000),
    assignee_id  TEXT COLLATE "C",
    sprint_id    TEXT COLLATE "C" REFERENCES sprints (id),
    rank         TEXT COLLATE "C" NOT NULL CHECK (length(rank) >= 1),
    version      BIGINT           NOT NULL CHECK (version >= 1),
    created_at   BIGINT           NOT NULL,
    created_by   TEXT COLLATE "C" NOT NULL,
    updated_at   BIGINT           NOT NULL,
    updated_by   TEXT COLLATE "C" NOT NULL,
    deleted_at   BIGINT,
    -- Replaces `work_item_fts`.
    search       tsvector GENERATED ALWAYS AS (
                     setweight(to_tsvector('simple', title), 'A')
                     || setweight(to_tsvector('simple', description), 'B')
                 ) STORED,
    UNIQUE (project_id, number)
);

-- One index per list filter, each ending in the list order (rank, id).
CREATE INDEX work_items_by_rank     ON work_items (project_id, rank, id);
CREATE INDEX work_items_by_status   ON work_items (project_id, status, rank, id);
CREATE INDEX work_items_by_sprint   ON work_items (project_id, sprint_id, rank, id);
CREATE INDEX work_items_by_assignee ON work_items (project_id, assignee_id, rank, id);
CREATE INDEX work_items_by_type     ON work_items (project_id, item_type, rank, id);
CREATE INDEX work_items_by_parent   ON work_items (parent_id, rank, id);
CREATE INDEX work_items_search      ON work_items USING gin (search);

CREATE TABLE comments (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id   TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
    work_item_id TEXT COLLATE "C" NOT NULL REFERENCES work_items (id),
    content      TEXT COLLATE "C" NOT NULL CHECK (length(content) BETWEEN 1 AND 100000),
    version      BIGINT           NOT NULL CHECK (version >= 1),
    created_at   BIGINT           NOT NULL,
    created_by   TEXT COLLATE "C" NOT NULL,
    updated_at   BIGINT           NOT NULL,
    updated_by   TEXT COLLATE "C" NOT NULL,
    deleted_at   BIGINT,
    -- Replaces `comment_fts` (one column, so one weight).
    search       tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
);

CREATE INDEX comments_by_work_item ON comments (work_item_id, created_at, id);
CREATE INDEX comments_search       ON comments USING gin (search);

CREATE TABLE time_entries (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id   TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
    work_item_id TEXT COLLATE "C" NOT NULL REFERENCES work_items (id),
    user_id      TEXT COLLATE "C" NOT NULL,
    started_at   BIGINT           NOT NULL CHECK (started_at >= 0),
    ended_at     BIGINT           CHECK (ended_at IS NULL OR ended_at > started_at),
    description  TEXT COLLATE "C" NOT NULL CHECK (length(description) <= 1000),
    version      BIGINT           NOT NULL CHECK (version >= 1),
    created_at   BIGINT           NOT NULL,
    created_by   TEXT COLLATE "C" NOT NULL,
    updated_at   BIGINT           NOT NULL,
    updated_by   TEXT COLLATE "C" NOT NULL,
    deleted_at   BIGINT
);

CREATE INDEX time_entries_by_work_item ON time_entries (work_item_id, started_at, id);
CREATE INDEX time_entries_by_user      ON time_entries (project_id, user_id, started_at, id);
CREATE INDEX time_entries_by_project   ON time_entries (project_id, started_at, id);
-- At most one running timer per user.
CREATE UNIQUE INDEX time_entries_one_running ON time_entries (user_id)
    WHERE ended_at IS NULL AND deleted_at IS NULL;

CREATE TABLE dependencies (
    id               TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id       TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
    blocking_item_id TEXT COLLATE "C" NOT NULL REFERENCES work_items (id),
    blocked_item_id  TEXT COLLATE "C" NOT NULL REFERENCES work_items (id),
    dependency_type  TEXT COLLATE "C" NOT NULL
                                      CHECK (dependency_type IN ('blocks', 'relates_to')),
    version          BIGINT           NOT NULL CHECK (version >= 1),
    created_at       BIGINT           NOT NULL,
    created_by       TEXT COLLATE "C" NOT NULL,
    updated_at       BIGINT           NOT NULL,
    updated_by       TEXT COLLATE "C" NOT NULL,
    deleted_at       BIGINT,
    CHECK (blocking_item_id <> blocked_item_id)
);

CREATE INDEX dependencies_by_project  ON dependencies (project_id, created_at, id);
CREATE INDEX dependencies_by_blocking ON dependencies (blocking_item_id, dependency_type);
CREATE INDEX dependencies_by_blocked  ON dependencies (blocked_item_id, dependency_type);
-- One live link of each type between two items.
CREATE UNIQUE INDEX dependencies_unique
    ON dependencies (blocking_item_id, blocked_item_id, dependency_type)
    WHERE deleted_at IS NULL;

CREATE TABLE swim_lanes (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
    name       TEXT COLLATE "C" NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    status     TEXT COLLATE "C" NOT NULL
                                CHECK (status IN ('backlog', 'todo', 'in_progress', 'review',
                                                  'done', 'cancelled')),
    position   BIGINT           NOT NULL CHECK (position >= 0),
    wip_limit  BIGINT           CHECK (wip_limit BETWEEN 1 AND 10000),
    wip_policy TEXT COLLATE "C" NOT NULL DEFAULT 'none'
                                CHECK (wip_policy IN ('none', 'warn', 'refuse')),
    version    BIGINT           NOT NULL CHECK (version >= 1),
    created_at BIGINT           NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    updated_at BIGINT           NOT NULL,
    updated_by TEXT COLLATE "C" NOT NULL,
    deleted_at BIGINT
);

CREATE INDEX swim_lanes_by_project ON swim_lanes (project_id, position, id);

CREATE TABLE llm_context (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
    category   TEXT COLLATE "C" NOT NULL
                                CHECK (category IN ('schema_doc', 'query_pattern',
                                                    'business_rule', 'example', 'instruction')),
    title      TEXT COLLATE "C" NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    content    TEXT COLLATE "C" NOT NULL CHECK (length(content) BETWEEN 1 AND 100000),
    priority   BIGINT           NOT NULL,
    version    BIGINT           NOT NULL CHECK (version >= 1),
    created_at BIGINT           NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    updated_at BIGINT           NOT NULL,
    updated_by TEXT COLLATE "C" NOT NULL,
    deleted_at BIGINT,
    -- Replaces `llm_context_fts`.
    search     tsvector GENERATED ALWAYS AS (
                   setweight(to_tsvector('simple', title), 'A')
                   || setweight(to_tsvector('simple', content), 'B')
               ) STORED
);

CREATE INDEX llm_context_by_project ON llm_context (project_id, priority DESC, id);
CREATE INDEX llm_context_search     ON llm_context USING gin (search);

-- The change log: audit trail and event stream. `seq` is gapless from 1, taken from
-- `tenant_head` in the same transaction as the change. `event` is the encoded `pm.v1.Event`
-- (changed fields with old and new values, and the entity after the change).
CREATE TABLE change_log (
    seq         BIGINT           NOT NULL PRIMARY KEY CHECK (seq >= 1),
    at          BIGINT           NOT NULL,
    actor_id    TEXT COLLATE "C" NOT NULL,
    project_id  TEXT COLLATE "C" NOT NULL,
    entity_type TEXT COLLATE "C" NOT NULL
                                 CHECK (entity_type IN ('project', 'project_member',
                                        'work_item', 'sprint', 'comment', 'time_entry',
                                        'dependency', 'swim_lane', 'llm_context')),
    entity_id   TEXT COLLATE "C" NOT NULL,
    action      TEXT COLLATE "C" NOT NULL
                                 CHECK (action IN ('created', 'updated', 'deleted', 'restored',
                                                   'moved')),
    event       BYTEA            NOT NULL
);

CREATE INDEX change_log_by_project ON change_log (project_id, seq);
CREATE INDEX change_log_by_entity  ON change_log (entity_id, seq);
CREATE INDEX change_log_by_actor   ON change_log (actor_id, seq);

-- The tenant's last assigned seq (the head of the change log): one row, bumped by every
-- writing transaction. It stays the head when retention prunes the log, where SQLite reads
-- `MAX(seq)`.
CREATE TABLE tenant_head (
    id       SMALLINT NOT NULL PRIMARY KEY CHECK (id = 1),
    last_seq BIGINT   NOT NULL CHECK (last_seq >= 0)
);

INSERT INTO tenant_head (id, last_seq) VALUES (1, 0);

-- Answers to commands sent with an idempotency key, kept 24 hours.
CREATE TABLE idempotency (
    user_id      TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL CHECK (length(key) BETWEEN 1 AND 128),
    created_at   BIGINT           NOT NULL,
    command_hash BIGINT           NOT NULL,
    result       BYTEA            NOT NULL,
    PRIMARY KEY (user_id, key)
);

CREATE INDEX idempotency_by_age ON idempotency (created_at);

-- People: one row per user who has connected to the tenant, kept from their token's claims
-- (`sub`, `name`, optionally `email`) on Hello and RefreshToken. Not part of the change log:
-- names are looked up when read.
CREATE TABLE users (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name          TEXT COLLATE "C" NOT NULL CHECK (length(name) <= 200),
    email         TEXT COLLATE "C" CHECK (email IS NULL OR length(email) BETWEEN 3 AND 320),
    first_seen_at BIGINT           NOT NULL,
    updated_at    BIGINT           NOT NULL
);
