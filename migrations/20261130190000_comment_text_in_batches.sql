-- Comments' text reaches the full-text index in batches, as work items' text does (see
-- `20261130180000_work_item_text_in_batches.sql` and `sqlite/text_index.rs`): the triggers
-- note a comment in `comment_fts_pending`, with the text the index holds for it when it holds
-- one, and the tenant's writer indexes every noted comment together with the noted items.
CREATE TABLE comment_fts_pending (
    comment_rowid INTEGER PRIMARY KEY,
    indexed       INTEGER NOT NULL CHECK (indexed IN (0, 1)),
    content       TEXT
) STRICT;

DROP TRIGGER comments_fts_insert;
CREATE TRIGGER comments_fts_insert AFTER INSERT ON comments BEGIN
    INSERT OR IGNORE INTO comment_fts_pending (comment_rowid, indexed) VALUES (new.rowid, 0);
END;

DROP TRIGGER comments_fts_update;
CREATE TRIGGER comments_fts_update AFTER UPDATE OF content ON comments
WHEN old.content IS NOT new.content BEGIN
    INSERT OR IGNORE INTO comment_fts_pending (comment_rowid, indexed, content)
    VALUES (old.rowid, 1, old.content);
END;
