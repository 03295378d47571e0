//! The CHECK constraints on listed values (migration `20261201150000`): written as `=`
//! comparisons, they build no temporary b-tree for each row written, and they accept the
//! listed values and nothing else, as the `IN` lists they replaced did.

use pm_core::TenantId;
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use sqlx::{Connection, Row, SqliteConnection};

use crate::support::*;

use v1::WorkItemType as T;

/// The statuses of work items and swim lanes.
const STATUSES: &[&str] = &[
    "backlog",
    "todo",
    "in_progress",
    "review",
    "done",
    "cancelled",
];

/// Each constrained column and the values its CHECK lists.
const LISTS: &[(&str, &str, &[&str])] = &[
    ("project_members", "role", &["viewer", "editor", "admin"]),
    (
        "sprints",
        "status",
        &["planned", "active", "completed", "cancelled"],
    ),
    (
        "llm_context",
        "category",
        &[
            "schema_doc",
            "query_pattern",
            "business_rule",
            "example",
            "instruction",
        ],
    ),
    (
        "change_log",
        "entity_type",
        &[
            "project",
            "project_member",
            "work_item",
            "sprint",
            "comment",
            "time_entry",
            "dependency",
            "swim_lane",
            "llm_context",
        ],
    ),
    (
        "change_log",
        "action",
        &["created", "updated", "deleted", "restored", "moved"],
    ),
    ("work_items", "item_type", &["epic", "story", "task", "bug"]),
    ("work_items", "status", STATUSES),
    (
        "work_items",
        "priority",
        &["low", "medium", "high", "critical"],
    ),
    ("swim_lanes", "status", STATUSES),
    ("swim_lanes", "wip_policy", &["none", "warn", "refuse"]),
];

/// A connection of its own to tenant `acme`'s database that may write: SQLite leaves CHECK
/// constraints out of the schema of a read-only connection.
async fn writable(env: &TestEnv) -> SqliteConnection {
    let file = env
        .engine
        .config()
        .db_file(&TenantId::parse("acme").unwrap());
    SqliteConnection::connect(&format!("sqlite:{}", file.display()))
        .await
        .unwrap()
}

#[tokio::test]
async fn writes_build_no_temporary_btree_for_their_checks() {
    let env = TestEnv::new();
    let _tenant = env.tenant("acme").await;
    let mut conn = writable(&env).await;
    let mut tables: Vec<&str> = LISTS.iter().map(|(table, _, _)| *table).collect();
    tables.dedup();
    for table in tables {
        // The program of an insert as the writer makes it, one parameter per column, CHECK
        // constraints included (never run).
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
                .bind(table)
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let params = vec!["?"; columns.len()].join(", ");
        let insert = format!(
            "EXPLAIN INSERT INTO {table} ({}) VALUES ({params})",
            columns.join(", ")
        );
        let program = sqlx::query(&insert).fetch_all(&mut conn).await.unwrap();
        let opcodes: Vec<String> = program.iter().map(|row| row.get("opcode")).collect();
        assert!(
            opcodes.iter().any(|op| op == "Halt"),
            "{table}: {opcodes:?}"
        );
        assert!(
            !opcodes.iter().any(|op| op == "OpenEphemeral"),
            "{table}: {opcodes:?}"
        );
    }
}

#[tokio::test]
async fn the_checks_accept_the_listed_values_and_nothing_else() {
    let (env, tenant, project) = setup().await;
    // A row in every constrained table.
    create_item(&tenant, &ALICE, &project.id, T::Task, "Spec").await;
    for kind in [
        C::CreateSprint(v1::CreateSprint {
            project_id: project.id.clone(),
            name: "Sprint 1".into(),
            ..Default::default()
        }),
        C::CreateSwimLane(v1::CreateSwimLane {
            project_id: project.id.clone(),
            name: "Doing".into(),
            status: v1::WorkItemStatus::InProgress.into(),
            position: 0,
            wip_limit: None,
            wip_policy: v1::WipPolicy::Unspecified.into(),
        }),
        C::CreateLlmContext(v1::CreateLlmContext {
            project_id: project.id.clone(),
            category: v1::LlmContextCategory::SchemaDoc.into(),
            title: "Work items".into(),
            content: "Epics hold stories.".into(),
            priority: 1,
        }),
    ] {
        exec(&tenant, &ALICE, kind).await.unwrap();
    }

    let mut conn = writable(&env).await;
    let mut tx = conn.begin().await.unwrap();
    for (table, column, listed) in LISTS {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert!(rows >= 1, "{table} has no row to check");
        let mut probes: Vec<String> = listed.iter().map(|v| v.to_string()).collect();
        probes.extend([
            "bogus".into(),
            String::new(),
            // The wire's spelling of a listed value, not the stored one.
            "Task".into(),
            // A listed value with something after it, and the list's own text.
            format!("{} ", listed[0]),
            listed.join(", "),
        ]);
        for value in &probes {
            let value = value.as_str();
            // Every row (some of these tables have no rowid); rolled back at the end.
            let set = sqlx::query(&format!("UPDATE {table} SET {column} = ?1"))
                .bind(value)
                .execute(&mut *tx)
                .await;
            match set {
                Ok(done) => {
                    assert!(listed.contains(&value), "{table}.{column} took {value:?}");
                    assert_eq!(done.rows_affected(), rows as u64);
                }
                Err(error) => {
                    assert!(
                        !listed.contains(&value),
                        "{table}.{column} refused {value:?}: {error}"
                    );
                    assert!(
                        error.to_string().contains("CHECK constraint failed"),
                        "{table}.{column} = {value:?}: {error}"
                    );
                }
            }
        }
    }
    tx.rollback().await.unwrap();
}
