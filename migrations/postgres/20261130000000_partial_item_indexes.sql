-- As in the SQLite schema: work items without a sprint, an assignee or a parent are left out
-- of the indexes that look items up by those. Every query through them asks for one value
-- (`= $n`, which PostgreSQL's planner knows excludes NULL), and creating such an item adds
-- three index entries fewer to write and log.
DROP INDEX work_items_by_sprint;
CREATE INDEX work_items_by_sprint ON work_items (project_id, sprint_id, rank, id)
    WHERE sprint_id IS NOT NULL;

DROP INDEX work_items_by_assignee;
CREATE INDEX work_items_by_assignee ON work_items (project_id, assignee_id, rank, id)
    WHERE assignee_id IS NOT NULL;

DROP INDEX work_items_by_parent;
CREATE INDEX work_items_by_parent ON work_items (parent_id, rank, id)
    WHERE parent_id IS NOT NULL;
