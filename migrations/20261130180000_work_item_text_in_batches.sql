-- Work items' titles and descriptions reach the full-text index in batches rather than by
-- every commit.
--
-- Indexing by trigger made every commit that created or renamed an item write a new FTS5
-- segment: about 4.4 of the 16 WAL pages of a one-command commit. The triggers now note the
-- item in `work_item_fts_pending` instead (one row, on a page the next commits share), and the
-- tenant's writer indexes every noted item in one statement when a commit crosses a multiple
-- of 64 seqs, or before it answers a search that must see them. A reader whose snapshot holds
-- noted items hands its search to the writer, so a search always sees every committed change
-- (see `sqlite/text_index.rs`).
--
-- `indexed` says whether the index holds the item's old text, kept in `title` and
-- `description`: an external-content FTS5 table can only remove a row given the text it was
-- indexed with. `OR IGNORE` keeps the first note, whose text is what the index holds.
CREATE TABLE work_item_fts_pending (
    item_rowid  INTEGER PRIMARY KEY,
    indexed     INTEGER NOT NULL CHECK (indexed IN (0, 1)),
    title       TEXT,
    description TEXT
) STRICT;

DROP TRIGGER work_items_fts_insert;
CREATE TRIGGER work_items_fts_insert AFTER INSERT ON work_items BEGIN
    INSERT OR IGNORE INTO work_item_fts_pending (item_rowid, indexed) VALUES (new.rowid, 0);
END;

DROP TRIGGER work_items_fts_update;
CREATE TRIGGER work_items_fts_update AFTER UPDATE OF title, description ON work_items
WHEN old.title IS NOT new.title OR old.description IS NOT new.description BEGIN
    INSERT OR IGNORE INTO work_item_fts_pending (item_rowid, indexed, title, description)
    VALUES (old.rowid, 1, old.title, old.description);
END;
