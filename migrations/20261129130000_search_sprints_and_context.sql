-- Tenant-wide search (the `Search` query) also finds sprints (name, goal) and LLM context
-- (title, content), beside work items and comments. Same tokenizer as the other indexes.
-- Rows are soft-deleted, never removed, so only inserts and updates need triggers; the
-- query filters deleted rows out.

CREATE VIRTUAL TABLE sprint_fts USING fts5 (
    name, goal, content = 'sprints', content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER sprints_fts_insert AFTER INSERT ON sprints BEGIN
    INSERT INTO sprint_fts (rowid, name, goal) VALUES (new.rowid, new.name, new.goal);
END;

CREATE TRIGGER sprints_fts_update AFTER UPDATE OF name, goal ON sprints
WHEN old.name IS NOT new.name OR old.goal IS NOT new.goal BEGIN
    INSERT INTO sprint_fts (sprint_fts, rowid, name, goal)
    VALUES ('delete', old.rowid, old.name, old.goal);
    INSERT INTO sprint_fts (rowid, name, goal) VALUES (new.rowid, new.name, new.goal);
END;

CREATE VIRTUAL TABLE llm_context_fts USING fts5 (
    title, content, content = 'llm_context', content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER llm_context_fts_insert AFTER INSERT ON llm_context BEGIN
    INSERT INTO llm_context_fts (rowid, title, content)
    VALUES (new.rowid, new.title, new.content);
END;

CREATE TRIGGER llm_context_fts_update AFTER UPDATE OF title, content ON llm_context
WHEN old.title IS NOT new.title OR old.content IS NOT new.content BEGIN
    INSERT INTO llm_context_fts (llm_context_fts, rowid, title, content)
    VALUES ('delete', old.rowid, old.title, old.content);
    INSERT INTO llm_context_fts (rowid, title, content)
    VALUES (new.rowid, new.title, new.content);
END;

-- Index what existing tenants already hold.
INSERT INTO sprint_fts (sprint_fts) VALUES ('rebuild');
INSERT INTO llm_context_fts (llm_context_fts) VALUES ('rebuild');
