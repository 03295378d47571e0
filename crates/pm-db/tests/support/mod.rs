//! Helpers shared by the storage tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, LazyLock};

use pm_core::{TenantId, UserId};
use pm_db::{RegistryConfig, Tenant, TenantRegistry};
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;

pub static ALICE: LazyLock<UserId> = LazyLock::new(|| UserId::parse("sub", "alice").unwrap());
pub static BOB: LazyLock<UserId> = LazyLock::new(|| UserId::parse("sub", "bob").unwrap());
pub static CAROL: LazyLock<UserId> = LazyLock::new(|| UserId::parse("sub", "carol").unwrap());

/// A fresh data directory and registry.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub registry: TenantRegistry,
}

impl TestEnv {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn with(configure: impl FnOnce(&mut RegistryConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = RegistryConfig::new(dir.path());
        configure(&mut config);
        TestEnv {
            registry: TenantRegistry::new(config),
            dir,
        }
    }

    pub async fn tenant(&self, id: &str) -> Arc<Tenant> {
        self.registry
            .open(&TenantId::parse(id).unwrap())
            .await
            .expect("tenant opens")
    }
}

pub fn command(kind: C) -> v1::Command {
    v1::Command {
        idempotency_key: String::new(),
        kind: Some(kind),
    }
}

pub async fn exec(tenant: &Tenant, actor: &UserId, kind: C) -> pm_db::Result<v1::CommandResult> {
    tenant.execute(actor, command(kind)).await
}

pub fn entity(result: &v1::CommandResult) -> v1::entity::Kind {
    result
        .entity
        .clone()
        .and_then(|e| e.kind)
        .expect("a command result carries its entity")
}

pub async fn create_project(tenant: &Tenant, actor: &UserId, key: &str) -> v1::Project {
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
    tenant: &Tenant,
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

pub async fn query(tenant: &Tenant, actor: &UserId, kind: Q) -> pm_db::Result<R> {
    let result = tenant.query(actor, v1::Query { kind: Some(kind) }).await?;
    Ok(result.result.expect("a query result"))
}

pub async fn list_items(
    tenant: &Tenant,
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
