-- The change log's events of each project and of each entity, indexed in batches as those of
-- each actor already are (20261130120000_actor_activity_in_batches.sql).
--
-- The indexes `change_log_by_project (project_id, seq)` and `change_log_by_entity (entity_id,
-- seq)` took a new row per event: 2.4 of the 12.7 pages a one-command commit wrote. The pairs
-- go instead into `change_log_projects` and `change_log_entities`, appended by the tenant's
-- writer with the actors' pairs when a commit crosses a multiple of 256 seqs.
-- `change_log_batched_upto` (the actors' table, renamed) says up to which seq all three are
-- complete; reads filtered by actor, entity or project take the newer events from the log
-- itself. See `sqlite/changelog.rs`.
ALTER TABLE change_log_actors_upto RENAME TO change_log_batched_upto;

CREATE TABLE change_log_projects (
    project_id TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (project_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE change_log_entities (
    entity_id TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (entity_id, seq)
) STRICT, WITHOUT ROWID;

-- Up to the same seq as the actors' pairs: one bound for all three.
INSERT INTO change_log_projects (project_id, seq)
    SELECT project_id, seq FROM change_log
    WHERE seq <= (SELECT seq FROM change_log_batched_upto WHERE id = 1);
INSERT INTO change_log_entities (entity_id, seq)
    SELECT entity_id, seq FROM change_log
    WHERE seq <= (SELECT seq FROM change_log_batched_upto WHERE id = 1);

-- Whatever deletes events (retention, an import that replaces the content) deletes their
-- pairs with them: one trigger for the three tables.
DROP TRIGGER change_log_actors_delete;
CREATE TRIGGER change_log_batched_delete AFTER DELETE ON change_log BEGIN
    DELETE FROM change_log_actors WHERE actor_id = old.actor_id AND seq = old.seq;
    DELETE FROM change_log_projects WHERE project_id = old.project_id AND seq = old.seq;
    DELETE FROM change_log_entities WHERE entity_id = old.entity_id AND seq = old.seq;
END;

DROP INDEX change_log_by_project;
DROP INDEX change_log_by_entity;
