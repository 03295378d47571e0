//! The dispatch path on an in-process tenant: arbitrary bytes decoded as a `ClientFrame`, its
//! command, batch or query run through `Tenant::execute` / `batch` / `query` (the calls a
//! session makes) against a real SQLite tenant, as an admin, a viewer or an outsider. Input
//! may fail any way it likes, but never as an internal error (a storage failure, a broken
//! constraint, SQL reaching the client) and never with a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pm_core::{TenantId, UserId};
use pm_db::{Engine, SqliteConfig, SqliteEngine, Tenant};
use pm_proto::v1::{self, client_frame::Body as In, command::Kind as Cmd};
use prost::Message;

struct World {
    runtime: tokio::runtime::Runtime,
    tenant: Arc<dyn Tenant>,
    users: [UserId; 3],
    _engine: SqliteEngine,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let engine = SqliteEngine::new(SqliteConfig::new(dir.path()));
        let users = ["admin", "viewer", "outsider"].map(|u| UserId::parse("sub", u).unwrap());
        let tenant = runtime.block_on(async {
            let tenant = engine
                .open(&TenantId::parse("fuzz").unwrap())
                .await
                .expect("the tenant opens");
            // A project with an item, so that ids and display keys have something to hit.
            let run = |kind| v1::Command {
                idempotency_key: String::new(),
                kind: Some(kind),
            };
            let project = tenant
                .execute(
                    &users[0],
                    run(Cmd::CreateProject(v1::CreateProject {
                        key: "PM".into(),
                        name: "Fuzz".into(),
                        description: String::new(),
                    })),
                )
                .await
                .expect("the project is created");
            let Some(v1::entity::Kind::Project(project)) = project.entity.and_then(|e| e.kind)
            else {
                unreachable!("CreateProject answers with the project")
            };
            for kind in [
                Cmd::AddMember(v1::AddMember {
                    project_id: project.id.clone(),
                    user_id: "viewer".into(),
                    role: v1::ProjectRole::Viewer.into(),
                }),
                Cmd::CreateWorkItem(v1::CreateWorkItem {
                    project_id: project.id.clone(),
                    item_type: v1::WorkItemType::Story.into(),
                    title: "seed".into(),
                    ..Default::default()
                }),
            ] {
                tenant.execute(&users[0], run(kind)).await.expect("seeded");
            }
            tenant
        });
        World {
            runtime,
            tenant,
            users,
            _engine: engine,
            _dir: dir,
        }
    })
}

fn check(error: pm_db::Error) {
    assert!(!error.is_internal(), "internal error: {error}");
    let wire = error.to_wire();
    let message = wire.message.to_lowercase();
    assert!(
        !message.contains("sql") && !message.contains("tenant.db"),
        "{wire:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, rest)) = data.split_first() else {
        return;
    };
    let Ok(frame) = v1::ClientFrame::decode(rest) else {
        return;
    };
    let w = world();
    let actor = &w.users[usize::from(who) % w.users.len()];
    let tenant = &w.tenant;
    w.runtime.block_on(async {
        match frame.body {
            Some(In::Command(command)) => {
                if let Err(e) = tenant.execute(actor, command).await {
                    check(e);
                }
            }
            Some(In::Batch(batch)) => match tenant.batch(actor, batch).await {
                Err(e) => check(e),
                Ok(result) => {
                    for outcome in result.outcomes {
                        if let Some(v1::command_outcome::Outcome::Error(e)) = outcome.outcome {
                            assert_ne!(e.code, v1::ErrorCode::Internal as i32, "{e:?}");
                        }
                    }
                }
            },
            Some(In::Query(query)) => {
                if let Err(e) = tenant.query(actor, query).await {
                    check(e);
                }
            }
            _ => {}
        }
    });
});
