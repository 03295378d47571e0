-- CHECK constraints that compare with `=` instead of a list of three or more values.
--
-- SQLite checks `x IN ('a', 'b', 'c')` by building a temporary b-tree of the list, and in a
-- CHECK constraint it builds it again for every row written: a new b-tree, its page cache and
-- its pages, five of them for each work item created (type, status, priority, and the change
-- log's entity type and action). Profiles of 50 busy tenants put 6 % of the server's CPU in
-- opening and closing those b-trees. A list of `=` comparisons joined by OR accepts and
-- refuses exactly the same values (NULL included) with a few comparisons.
--
-- The constraints change in place, by SQLite's documented procedure for changes that leave
-- the stored rows as they are (https://www.sqlite.org/lang_altertable.html#otheralter): the
-- table's CREATE statement in `sqlite_schema` is edited, this connection's schema reloaded
-- (`writable_schema = RESET` parses the new text here, inside the migration's transaction, so
-- a mistake fails the migration rather than the database), and the schema's version bumped
-- so that every other connection reloads it too. Every row already satisfies the new
-- constraints, which are the old ones written differently. A table created by another path
-- with different text keeps its old constraint: slower, equally strict.
PRAGMA writable_schema = ON;

UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (role IN (''viewer'', ''editor'', ''admin''))',
    'CHECK (role = ''viewer'' OR role = ''editor'' OR role = ''admin'')')
WHERE type = 'table' AND name = 'project_members';

UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (status IN (''planned'', ''active'', ''completed'', ''cancelled''))',
    'CHECK (status = ''planned'' OR status = ''active'' OR status = ''completed''
                                   OR status = ''cancelled'')')
WHERE type = 'table' AND name = 'sprints';

UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (category IN (''schema_doc'', ''query_pattern'',
                                                    ''business_rule'', ''example'', ''instruction''))',
    'CHECK (category = ''schema_doc'' OR category = ''query_pattern''
                                    OR category = ''business_rule'' OR category = ''example''
                                    OR category = ''instruction'')')
WHERE type = 'table' AND name = 'llm_context';

UPDATE sqlite_schema
SET sql = replace(replace(sql,
    'CHECK (entity_type IN (''project'', ''project_member'', ''work_item'',
                        ''sprint'', ''comment'', ''time_entry'', ''dependency'', ''swim_lane'', ''llm_context''))',
    'CHECK (entity_type = ''project'' OR entity_type = ''project_member''
                        OR entity_type = ''work_item'' OR entity_type = ''sprint''
                        OR entity_type = ''comment'' OR entity_type = ''time_entry''
                        OR entity_type = ''dependency'' OR entity_type = ''swim_lane''
                        OR entity_type = ''llm_context'')'),
    'CHECK (action IN (''created'', ''updated'', ''deleted'', ''restored'', ''moved''))',
    'CHECK (action = ''created'' OR action = ''updated'' OR action = ''deleted''
                                OR action = ''restored'' OR action = ''moved'')')
WHERE type = 'table' AND name = 'change_log';

UPDATE sqlite_schema
SET sql = replace(replace(replace(sql,
    'CHECK (item_type IN (''epic'', ''story'', ''task'', ''bug''))',
    'CHECK (item_type = ''epic'' OR item_type = ''story'' OR item_type = ''task''
                                OR item_type = ''bug'')'),
    'CHECK (status IN (''backlog'', ''todo'', ''in_progress'', ''review'', ''done'',
                                           ''cancelled''))',
    'CHECK (status = ''backlog'' OR status = ''todo'' OR status = ''in_progress''
                                OR status = ''review'' OR status = ''done'' OR status = ''cancelled'')'),
    'CHECK (priority IN (''low'', ''medium'', ''high'', ''critical''))',
    'CHECK (priority = ''low'' OR priority = ''medium'' OR priority = ''high''
                                OR priority = ''critical'')')
WHERE type = 'table' AND name = 'work_items';

UPDATE sqlite_schema
SET sql = replace(replace(sql,
    'CHECK (status IN (''backlog'', ''todo'', ''in_progress'', ''review'', ''done'',
                                         ''cancelled''))',
    'CHECK (status = ''backlog'' OR status = ''todo'' OR status = ''in_progress''
                              OR status = ''review'' OR status = ''done'' OR status = ''cancelled'')'),
    'CHECK (wip_policy IN (''none'', ''warn'', ''refuse''))',
    'CHECK (wip_policy = ''none'' OR wip_policy = ''warn'' OR wip_policy = ''refuse'')')
WHERE type = 'table' AND name = 'swim_lanes';

PRAGMA writable_schema = RESET;

-- Any schema change bumps the schema's version, which SQLite's procedure asks for: the other
-- connections of this database see it at their next transaction and read the schema again.
CREATE TABLE schema_version_bump (unused INTEGER);
DROP TABLE schema_version_bump;
