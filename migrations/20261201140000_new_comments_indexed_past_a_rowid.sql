-- New comments reach the full-text index without a note, as new work items do since
-- `20261201130000_new_items_indexed_past_a_rowid.sql`.
--
-- The insert trigger added a row to `comment_fts_pending` for every new comment: a WAL page
-- and a trigger program per create. Comments are never deleted but by an import that empties
-- the table (which starts this over at 0), so their rowids only grow: `comment_fts_upto` says
-- up to which rowid the index holds every comment, and the writer's batch indexes every
-- comment past it. Only an edit of a comment the index already holds is noted, with the text
-- the index holds for it. See `sqlite/text_index.rs`.
CREATE TABLE comment_fts_upto (
    id            INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    comment_rowid INTEGER NOT NULL CHECK (comment_rowid >= 0)
) STRICT;

-- Everything noted so far goes into the index first, so that the bound holds from here on.
INSERT INTO comment_fts (comment_fts, rowid, content)
    SELECT 'delete', comment_rowid, content FROM comment_fts_pending WHERE indexed = 1;
INSERT INTO comment_fts (rowid, content)
    SELECT c.rowid, c.content
    FROM comment_fts_pending AS p JOIN comments AS c ON c.rowid = p.comment_rowid;
DELETE FROM comment_fts_pending;
INSERT INTO comment_fts_upto (id, comment_rowid)
    VALUES (1, (SELECT COALESCE(MAX(rowid), 0) FROM comments));

DROP TRIGGER comments_fts_insert;

DROP TRIGGER comments_fts_update;
CREATE TRIGGER comments_fts_update AFTER UPDATE OF content ON comments
WHEN old.content IS NOT new.content BEGIN
    INSERT OR IGNORE INTO comment_fts_pending (comment_rowid, indexed, content)
    SELECT old.rowid, 1, old.content FROM comment_fts_upto
    WHERE id = 1 AND old.rowid <= comment_rowid;
END;
