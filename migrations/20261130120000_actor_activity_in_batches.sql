-- The change log's events of each actor, indexed in batches rather than by every commit.
--
-- The index `change_log_by_actor (actor_id, seq)` took one new row per event at the end of
-- that actor's range: a commit of a group with 30 actors in it wrote 30 index pages, 44 % of
-- all the pages of a commit with 64 writers. `change_log_actors` holds the same pairs, but the
-- tenant's writer appends them only when a commit crosses a multiple of 256 seqs, every
-- actor once for all of their events since the last time. `change_log_actors_upto` says up to
-- which seq it is complete; `ListActivity` by actor reads the rest (fewer than 256 events plus
-- one group) from the log itself. See `sqlite/changelog.rs`.
CREATE TABLE change_log_actors (
    actor_id TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (actor_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE change_log_actors_upto (
    id  INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL CHECK (seq >= 0)
) STRICT;

INSERT INTO change_log_actors (actor_id, seq) SELECT actor_id, seq FROM change_log;
INSERT INTO change_log_actors_upto (id, seq)
    VALUES (1, (SELECT COALESCE(MAX(seq), 0) FROM change_log));

-- Whatever deletes events (retention, an import that replaces the content) deletes their
-- pairs with them.
CREATE TRIGGER change_log_actors_delete AFTER DELETE ON change_log BEGIN
    DELETE FROM change_log_actors WHERE actor_id = old.actor_id AND seq = old.seq;
END;

DROP INDEX change_log_by_actor;
