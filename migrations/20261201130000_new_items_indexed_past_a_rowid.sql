-- New work items reach the full-text index without a note.
--
-- The insert trigger added a row to `work_item_fts_pending` for every new item: one WAL page
-- of the ten a one-command create wrote, and a trigger program per insert. New items need no
-- note, since their rowids only grow (items are never deleted but by an import that empties
-- the table, which starts this over at 0): `work_item_fts_upto` says up to which rowid the
-- index holds every item, and the writer's batch indexes every item past it. Only an edit of
-- an item the index already holds is noted, with the text the index holds for it (an
-- external-content FTS5 table can only remove a row given that text); an edit of a newer item
-- needs nothing, as the batch takes its text as it is then. See `sqlite/text_index.rs`.
CREATE TABLE work_item_fts_upto (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    item_rowid INTEGER NOT NULL CHECK (item_rowid >= 0)
) STRICT;

-- Everything noted so far goes into the index first, so that the bound holds from here on.
INSERT INTO work_item_fts (work_item_fts, rowid, title, description)
    SELECT 'delete', item_rowid, title, description FROM work_item_fts_pending WHERE indexed = 1;
INSERT INTO work_item_fts (rowid, title, description)
    SELECT w.rowid, w.title, w.description
    FROM work_item_fts_pending AS p JOIN work_items AS w ON w.rowid = p.item_rowid;
DELETE FROM work_item_fts_pending;
INSERT INTO work_item_fts_upto (id, item_rowid)
    VALUES (1, (SELECT COALESCE(MAX(rowid), 0) FROM work_items));

DROP TRIGGER work_items_fts_insert;

DROP TRIGGER work_items_fts_update;
CREATE TRIGGER work_items_fts_update AFTER UPDATE OF title, description ON work_items
WHEN old.title IS NOT new.title OR old.description IS NOT new.description BEGIN
    INSERT OR IGNORE INTO work_item_fts_pending (item_rowid, indexed, title, description)
    SELECT old.rowid, 1, old.title, old.description FROM work_item_fts_upto
    WHERE id = 1 AND old.rowid <= item_rowid;
END;
