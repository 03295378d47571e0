//! Helpers shared by the storage tests.
#![allow(unreachable_pub)]

use std::sync::{Arc, LazyLock};

use pm_core::{EntityId, TenantId, UserId};
use pm_db::EventFilter;

pub use crate::env::{TestEnv, TestTenant};
// The engine boundary's methods, for every test module (they glob-import this one).
pub use pm_db::{Engine as _, Tenant as _};
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;

pub static ALICE: LazyLock<UserId> = LazyLock::new(|| UserId::parse("sub", "alice").unwrap());
pub static BOB: LazyLock<UserId> = LazyLock::new(|| UserId::parse("sub", "bob").unwrap());
pub static CAROL: LazyLock<UserId> = LazyLock::new(|| UserId::parse("sub", "carol").unwrap());

pub fn command(kind: C) -> v1::Command {
    v1::Command {
        idempotency_key: String::new(),
        kind: Some(kind),
    }
}

pub async fn exec(
    tenant: &TestTenant,
    actor: &UserId,
    kind: C,
) -> pm_db::Result<v1::CommandResult> {
    tenant.execute(actor, command(kind)).await
}

pub fn entity(result: &v1::CommandResult) -> v1::entity::Kind {
    result
        .entity
        .clone()
        .and_then(|e| e.kind)
        .expect("a command result carries its entity")
}

pub async fn create_project(tenant: &TestTenant, actor: &UserId, key: &str) -> v1::Project {
    let result = exec(
        tenant,
        actor,
        C::CreateProject(v1::CreateProject {
            key: key.into(),
            name: format!("Project {key}"),
            description: String::new(),
        }),
    )
    .await
    .expect("project created");
    match entity(&result) {
        v1::entity::Kind::Project(p) => p,
        other => panic!("expected a project, got {other:?}"),
    }
}

pub async fn create_item(
    tenant: &TestTenant,
    actor: &UserId,
    project_id: &str,
    item_type: v1::WorkItemType,
    title: &str,
) -> (v1::WorkItem, u64) {
    let result = exec(
        tenant,
        actor,
        C::CreateWorkItem(v1::CreateWorkItem {
            project_id: project_id.into(),
            item_type: item_type.into(),
            title: title.into(),
            ..Default::default()
        }),
    )
    .await
    .expect("work item created");
    match entity(&result) {
        v1::entity::Kind::WorkItem(w) => (w, result.seq),
        other => panic!("expected a work item, got {other:?}"),
    }
}

pub async fn query(tenant: &TestTenant, actor: &UserId, kind: Q) -> pm_db::Result<R> {
    let result = tenant.query(actor, v1::Query { kind: Some(kind) }).await?;
    Ok(result.result.expect("a query result"))
}

/// The ids of the live projects `actor` sees, in the order `ListProjects` gives them.
pub async fn project_ids(tenant: &TestTenant, actor: &UserId) -> Vec<String> {
    let kind = Q::ListProjects(v1::ListProjects {
        page: page500(),
        ..Default::default()
    });
    match query(tenant, actor, kind).await {
        Ok(R::ListProjectsResult(page)) => page.items.into_iter().map(|p| p.id).collect(),
        other => panic!("projects: {other:?}"),
    }
}

pub async fn list_items(
    tenant: &TestTenant,
    actor: &UserId,
    project_id: &str,
    page_size: u32,
    page_token: &str,
) -> v1::ListWorkItemsResult {
    match query(
        tenant,
        actor,
        Q::ListWorkItems(v1::ListWorkItems {
            project_id: project_id.into(),
            page: Some(v1::PageRequest {
                page_size,
                page_token: page_token.into(),
            }),
            ..Default::default()
        }),
    )
    .await
    .expect("list work items")
    {
        R::ListWorkItemsResult(r) => r,
        other => panic!("unexpected result {other:?}"),
    }
}

pub fn code(error: &pm_db::Error) -> v1::ErrorCode {
    error.code()
}

/// A command with an idempotency key.
pub fn keyed(key: &str, kind: C) -> v1::Command {
    v1::Command {
        idempotency_key: key.into(),
        kind: Some(kind),
    }
}

/// Entity messages that a `v1::Entity` may carry.
pub trait EntityMsg: Sized + Clone + std::fmt::Debug + PartialEq {
    fn from_kind(kind: v1::entity::Kind) -> Option<Self>;
}

macro_rules! entity_msgs {
    ($($t:ident),* $(,)?) => {
        $(impl EntityMsg for v1::$t {
            fn from_kind(kind: v1::entity::Kind) -> Option<Self> {
                match kind {
                    v1::entity::Kind::$t(x) => Some(x),
                    _ => None,
                }
            }
        })*
    };
}

entity_msgs!(
    Project,
    ProjectMember,
    WorkItem,
    Sprint,
    Comment,
    TimeEntry,
    Dependency,
    SwimLane,
    LlmContext
);

/// The entity inside `entity`, of the expected message type.
pub fn entity_as<T: EntityMsg>(entity: Option<&v1::Entity>) -> T {
    let kind = entity
        .and_then(|e| e.kind.clone())
        .expect("an entity is present");
    T::from_kind(kind.clone())
        .unwrap_or_else(|| panic!("expected a {}, got {kind:?}", std::any::type_name::<T>()))
}

/// Runs a command that must succeed; returns its entity and seq.
pub async fn run<T: EntityMsg>(tenant: &TestTenant, actor: &UserId, kind: C) -> (T, u64) {
    let result = exec(tenant, actor, kind)
        .await
        .unwrap_or_else(|e| panic!("command failed: {e:?}"));
    assert!(!result.replayed, "a fresh command is not a replay");
    (entity_as(result.entity.as_ref()), result.seq)
}

/// Runs a command that must fail; returns the error.
pub async fn fail(tenant: &TestTenant, actor: &UserId, kind: C) -> pm_db::Error {
    match exec(tenant, actor, kind).await {
        Ok(result) => panic!("expected the command to fail, got {result:?}"),
        Err(e) => e,
    }
}

/// The field of an `InvalidArgument` error.
pub fn field(error: &pm_db::Error) -> &str {
    match error {
        pm_db::Error::InvalidArgument { field, .. } => field,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

/// Asserts an `INVALID_ARGUMENT` on `expected_field`.
pub fn assert_invalid(error: &pm_db::Error, expected_field: &str) {
    assert_eq!(error.code(), v1::ErrorCode::InvalidArgument, "{error:?}");
    assert_eq!(field(error), expected_field, "{error:?}");
}

/// Entities with a `Get*` query.
pub trait Gettable: EntityMsg {
    fn get_query(id: &str) -> Q;
    fn from_result(result: R) -> Option<Self>;
}

macro_rules! gettables {
    ($($t:ident => $q:ident, $r:ident, $f:ident);* $(;)?) => {
        $(impl Gettable for v1::$t {
            fn get_query(id: &str) -> Q {
                Q::$q(v1::$q { id: id.into() })
            }
            fn from_result(result: R) -> Option<Self> {
                match result {
                    R::$r(r) => r.$f,
                    _ => None,
                }
            }
        })*
    };
}

gettables!(
    Project => GetProject, GetProjectResult, project;
    Sprint => GetSprint, GetSprintResult, sprint;
    Comment => GetComment, GetCommentResult, comment;
    TimeEntry => GetTimeEntry, GetTimeEntryResult, time_entry;
    Dependency => GetDependency, GetDependencyResult, dependency;
    SwimLane => GetSwimLane, GetSwimLaneResult, swim_lane;
    LlmContext => GetLlmContext, GetLlmContextResult, llm_context;
);

impl Gettable for v1::WorkItem {
    fn get_query(id: &str) -> Q {
        Q::GetWorkItem(v1::GetWorkItem {
            id: id.into(),
            display_key: String::new(),
        })
    }
    fn from_result(result: R) -> Option<Self> {
        match result {
            R::GetWorkItemResult(r) => r.work_item,
            _ => None,
        }
    }
}

/// `Get*` of one entity by id.
pub async fn get<T: Gettable>(tenant: &TestTenant, actor: &UserId, id: &str) -> pm_db::Result<T> {
    let result = query(tenant, actor, T::get_query(id)).await?;
    Ok(T::from_result(result.clone())
        .unwrap_or_else(|| panic!("unexpected query result {result:?}")))
}

/// A page of at most 500.
pub fn page500() -> Option<v1::PageRequest> {
    Some(v1::PageRequest {
        page_size: 500,
        page_token: String::new(),
    })
}

/// `CreateWorkItem` with a type, a title and an optional parent.
pub fn new_item(
    project_id: &str,
    item_type: v1::WorkItemType,
    title: &str,
    parent_id: Option<&str>,
) -> C {
    C::CreateWorkItem(v1::CreateWorkItem {
        project_id: project_id.into(),
        item_type: item_type.into(),
        title: title.into(),
        parent_id: parent_id.map(Into::into),
        ..Default::default()
    })
}

/// Every work item of a project (up to 500), optionally with the deleted ones.
pub async fn all_items(
    tenant: &TestTenant,
    actor: &UserId,
    project_id: &str,
    include_deleted: bool,
) -> Vec<v1::WorkItem> {
    match query(
        tenant,
        actor,
        Q::ListWorkItems(v1::ListWorkItems {
            project_id: project_id.into(),
            page: page500(),
            include_deleted,
            ..Default::default()
        }),
    )
    .await
    .expect("list work items")
    {
        R::ListWorkItemsResult(r) => {
            assert_eq!(r.next_page_token, "", "fewer than 500 items");
            r.items
        }
        other => panic!("unexpected result {other:?}"),
    }
}

/// A project created by `actor` with key `key`, in a fresh tenant `acme`.
pub async fn setup() -> (TestEnv, Arc<TestTenant>, v1::Project) {
    let env = TestEnv::new();
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    (env, tenant, project)
}

/// Adds `user` to the project with `role` (as ALICE, an admin).
pub async fn add_member(
    tenant: &TestTenant,
    project_id: &str,
    user: &UserId,
    role: v1::ProjectRole,
) -> v1::ProjectMember {
    run(
        tenant,
        &ALICE,
        C::AddMember(v1::AddMember {
            project_id: project_id.into(),
            user_id: user.as_str().into(),
            role: role.into(),
        }),
    )
    .await
    .0
}

/// Asserts that `got` is the seq right after `*last`, and advances `*last`.
pub fn next_seq(last: &mut u64, got: u64) {
    *last += 1;
    assert_eq!(got, *last, "seqs of consecutive commands are consecutive");
}

/// Runs a `List*` query (page size 500) that must succeed and returns its items.
macro_rules! list {
    ($tenant:expr, $actor:expr, $q:ident { $($body:tt)* } => $r:ident) => {
        match query($tenant, $actor, Q::$q(v1::$q { page: page500(), $($body)* }))
            .await
            .expect("list query")
        {
            R::$r(r) => {
                assert_eq!(r.next_page_token, "", "everything fits in one page");
                r.items
            }
            other => panic!("unexpected result {other:?}"),
        }
    };
}
pub(crate) use list;

/// A fresh entity id, in text form: an id that names nothing.
pub fn a_uuid() -> String {
    EntityId::new().to_text()
}

/// The titles of the work items that `ListWorkItems.text` finds for `text` (as ALICE).
pub async fn search(
    tenant: &TestTenant,
    project_id: &str,
    text: &str,
) -> pm_db::Result<Vec<String>> {
    match query(
        tenant,
        &ALICE,
        Q::ListWorkItems(v1::ListWorkItems {
            project_id: project_id.into(),
            page: page500(),
            text: text.into(),
            ..Default::default()
        }),
    )
    .await?
    {
        R::ListWorkItemsResult(r) => Ok(r.items.into_iter().map(|i| i.title).collect()),
        other => panic!("unexpected result {other:?}"),
    }
}

/// The id of the tenant `acme`.
pub fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// Every stored event of a tenant, in seq order: (seq, encoded event).
pub async fn events(tenant: &TestTenant) -> Vec<(u64, Vec<u8>)> {
    tenant
        .read_events(0, None, u32::MAX, &EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.event.to_vec()))
        .collect()
}

/// A work item as reads show it when nothing blocks it: reads derive `blocked`, command
/// results and events leave it out.
pub fn unblocked(item: &v1::WorkItem) -> v1::WorkItem {
    v1::WorkItem {
        blocked: Some(false),
        ..item.clone()
    }
}

/// A connection to a new SQLite database at `file`, with the embedded migrations before
/// `version` applied: a tenant as an older binary made it, for the tests of a migration.
/// Foreign keys are off, so that a test may write rows without what they refer to.
pub async fn database_before(file: &std::path::Path, version: i64) -> sqlx::SqliteConnection {
    std::fs::create_dir_all(file.parent().expect("a tenant file has a directory")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for m in pm_db::MIGRATOR.iter().filter(|m| m.version < version) {
        let name = format!("{}_{}.sql", m.version, m.description.replace(' ', "_"));
        std::fs::write(dir.path().join(name), m.sql.as_ref()).unwrap();
    }
    let old = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .foreign_keys(false);
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap();
    old.run(&mut conn).await.unwrap();
    conn
}
