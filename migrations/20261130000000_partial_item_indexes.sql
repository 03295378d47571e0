-- Work items without a sprint, an assignee or a parent (most new items: the backlog) are left
-- out of the three indexes that look items up by those. Every query through them asks for one
-- sprint, assignee or parent (`= ?`, which SQLite's planner knows excludes NULL), so they are
-- still used, and creating such an item writes three index pages fewer: a one-command commit
-- went from 17 WAL pages to 14.
DROP INDEX work_items_by_sprint;
CREATE INDEX work_items_by_sprint ON work_items (project_id, sprint_id, rank, id)
    WHERE sprint_id IS NOT NULL;

DROP INDEX work_items_by_assignee;
CREATE INDEX work_items_by_assignee ON work_items (project_id, assignee_id, rank, id)
    WHERE assignee_id IS NOT NULL;

DROP INDEX work_items_by_parent;
CREATE INDEX work_items_by_parent ON work_items (parent_id, rank, id)
    WHERE parent_id IS NOT NULL;
