//! Tenants: a token's tenant id is checked before any path is formed (paths, encodings and
//! look-alikes are refused and create nothing on disk), and tenants share nothing: the same user
//! id and project key in two tenants stay apart, and another tenant's ids are `NOT_FOUND`
//! exactly like ids that do not exist.

use pm_gateway::auth::unix_now;
use pm_proto::v1;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as QR;
use serde_json::json;

// Not a glob: `get_project` here is this module's own (below).
use crate::support::{
    assert_probes_learn_nothing, auth_failed, claims, code, create_item, error, get_work_item,
    hs256, list_activity, list_items, refused, spawn_app, token_until, unblocked, Client,
    TestAppExt,
};

/// Every file and directory under `dir`, relative to it, sorted.
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).expect("a readable directory") {
            let path = entry.expect("a directory entry").path();
            found.push(
                path.strip_prefix(dir)
                    .expect("under dir")
                    .display()
                    .to_string(),
            );
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

/// `GetProject`'s raw answer, which a test can match on. (Support's `get_project` unwraps it to
/// the project result; where only the error matters, both are the same.)
async fn get_project(client: &mut Client, id: &str) -> Result<QR, v1::Error> {
    client
        .query(Q::GetProject(v1::GetProject { id: id.into() }))
        .await
}

#[tokio::test]
async fn tenant_ids_that_are_paths_or_look_alikes_are_refused_before_any_path_is_formed() {
    let app = spawn_app().await;
    let start = "must start with a lower-case letter or digit";
    let only = "may contain only a-z, 0-9, '_' and '-'";
    let long = "must be at most 63 characters";
    let overlong = "a".repeat(64);
    let huge = "a".repeat(10_000);
    let attacks: Vec<(&str, &str)> = vec![
        ("..", start),
        ("../etc", start),
        ("/etc/passwd", start),
        ("acme/../globex", only),
        ("acme/..", only),
        ("acme\\..\\globex", only),
        ("%2e%2e", start),
        ("%2e%2e%2fetc", start),
        ("acme%2f..%2fglobex", only),
        ("acme\0", only),
        ("\0acme", start),
        ("acme\0../../etc", only),
        // Cyrillic 'а' (U+0430) first, Cyrillic 'е' (U+0435) last.
        ("\u{430}cme", start),
        ("acm\u{435}", only),
        // Full-width letters, a zero-width space, a combining accent.
        ("\u{ff41}\u{ff43}\u{ff4d}\u{ff45}", start),
        ("acme\u{200b}", only),
        ("acme\u{301}", only),
        ("ACME", start),
        ("Acme", start),
        ("acme.", only),
        (".acme", start),
        ("acme tenant", only),
        ("-acme", start),
        ("_acme", start),
        ("", "must not be empty"),
        (&overlong, long),
        (&huge, long),
    ];
    let count = attacks.len();
    for (tid, why) in attacks {
        let token = hs256(&claims(tid, "alice", json!({})));
        assert_eq!(
            refused(&app, &token).await,
            auth_failed(&format!("invalid token: claim `tid`: tenant_id: {why}")),
            "tid {tid:?}"
        );
    }
    assert_eq!(count, 27);
    // Nothing was created anywhere under the data directory, let alone beside it.
    assert_eq!(tree(app.data_dir()), Vec::<String>::new());
    // A valid tenant id still works, and creates exactly its own directory.
    let (_client, welcome) = app.client("acme", "alice").await;
    assert_eq!(welcome.tenant_id, "acme");
    let created = tree(app.data_dir());
    assert!(created.starts_with(&["tenants".into(), "tenants/acme".into()]));
    assert!(
        created.iter().all(|p| p.starts_with("tenants")),
        "{created:?}"
    );
}

#[tokio::test]
async fn a_token_whose_tenant_id_is_a_path_is_refused() {
    let app = spawn_app().await;
    let token = token_until("../etc", "alice", unix_now() + 3600);
    assert_eq!(
        refused(&app, &token).await,
        auth_failed(
            "invalid token: claim `tid`: tenant_id: must start with a lower-case letter or digit"
        )
    );
    // Nothing was created for it next to the tenants.
    assert!(!app.data_dir().join("etc").exists());
}

#[tokio::test]
async fn two_tenants_with_the_same_user_and_key_share_nothing() {
    let app = spawn_app().await;
    let (mut acme, _) = app.client("acme", "alice").await;
    let (mut globex, _) = app.client("globex", "alice").await;

    let acme_project = acme.create_project("PM").await;
    let mut acme_items = Vec::new();
    for i in 0..3 {
        let (item, seq) = acme
            .create_item(&acme_project.id, &format!("acme {i}"))
            .await;
        assert_eq!(seq, 3 + i);
        acme_items.push(item);
    }
    let globex_project = globex.create_project("PM").await;
    assert_ne!(globex_project.id, acme_project.id);
    let (globex_item, seq) = globex.create_item(&globex_project.id, "globex 0").await;
    assert_eq!(
        seq, 3,
        "globex's seqs start at 1: project 1, member 2, item 3"
    );
    assert_eq!(globex_item.display_key, "PM-1");

    assert_eq!(app.client("acme", "alice").await.1.head_seq, 5);
    assert_eq!(app.client("globex", "alice").await.1.head_seq, 3);

    // Each log starts at 1 and holds only its own tenant's changes.
    for (client, project, head) in [
        (&mut acme, &acme_project, 5u64),
        (&mut globex, &globex_project, 3),
    ] {
        let log = list_activity(
            client,
            v1::ListActivity {
                oldest_first: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            log.items.iter().map(|a| a.seq).collect::<Vec<_>>(),
            (1..=head).collect::<Vec<_>>()
        );
        assert!(log.items.iter().all(|a| a.project_id == project.id));
        assert_eq!(log.as_of_seq, head);
    }

    // Acme's entities from globex are NOT_FOUND, and the text says nothing of them.
    let leaks = |e: &v1::Error| {
        assert_eq!(code(e), v1::ErrorCode::NotFound, "{e:?}");
        assert!(!e.message.contains(&acme_project.id), "{e:?}");
        assert!(
            acme_items.iter().all(|i| !e.message.contains(&i.id)),
            "{e:?}"
        );
        assert!(!e.message.contains("acme"), "{e:?}");
    };
    leaks(
        &get_project(&mut globex, &acme_project.id)
            .await
            .unwrap_err(),
    );
    leaks(
        &get_work_item(&mut globex, &acme_items[0].id, "")
            .await
            .unwrap_err(),
    );
    leaks(
        &list_items(&mut globex, &acme_project.id, 0, "", "")
            .await
            .unwrap_err(),
    );
    leaks(
        &globex
            .command(create_item(&acme_project.id, "cross-tenant"))
            .await
            .unwrap_err(),
    );
    leaks(&get_work_item(&mut globex, "", "PM-2").await.unwrap_err());
    // The same display key names globex's own item.
    assert_eq!(
        get_work_item(&mut globex, "", "PM-1").await.unwrap(),
        unblocked(&globex_item)
    );
    assert!(matches!(
        globex.subscribe_to(&[&acme_project.id], &[], 0).await,
        Err(ref e) if code(e) == v1::ErrorCode::NotFound
    ));

    // A globex subscription replays globex's log only and never gets acme's events.
    let (mut watcher, _) = app.client("globex", "alice").await;
    assert_eq!(watcher.subscribe(0).await.unwrap(), 3);
    for expected in 1..=3 {
        let event = watcher.event().await;
        assert_eq!(event.seq, expected);
        assert_eq!(event.project_id, globex_project.id);
    }
    let (_, acme_seq) = acme.create_item(&acme_project.id, "acme live").await;
    assert_eq!(acme_seq, 6);
    let (live, globex_seq) = globex.create_item(&globex_project.id, "globex live").await;
    assert_eq!(globex_seq, 4);
    let event = watcher.event().await;
    assert_eq!(event.seq, 4);
    assert_eq!(event.entity_id, live.id);
    assert_eq!(event.project_id, globex_project.id);
}

#[tokio::test]
async fn another_tenants_ids_are_not_found_exactly_like_ids_that_do_not_exist() {
    let app = spawn_app().await;
    let (mut victim, _) = app.client("acme", "alice").await;
    let project = victim.create_project("PM").await;
    let (item, _) = victim.create_item(&project.id, "secret plan").await;
    // The attacker is "alice" too, an admin of its own "PM" project, in another tenant.
    let (mut attacker, _) = app.client("globex", "alice").await;
    let own = attacker.create_project("PM").await;
    assert_probes_learn_nothing(&mut attacker, &project.id, &item.id, "PM-9").await;
    // Subscribing to the victim's project is refused like any unknown project.
    assert_eq!(
        attacker.subscribe_to(&[&project.id], &[], 0).await,
        Err(error(
            v1::ErrorCode::NotFound,
            "project not found",
            "project_ids"
        ))
    );
    // Nothing the attacker tried reached the victim's tenant.
    let (mut check, welcome) = app.client("acme", "alice").await;
    assert_eq!(welcome.head_seq, 3);
    match get_project(&mut check, &project.id).await {
        Ok(QR::GetProjectResult(r)) => assert_eq!(r.project, Some(project.clone())),
        other => panic!("{other:?}"),
    }
    // And the attacker's own project is untouched by its failed probes.
    assert_eq!(app.client("globex", "alice").await.1.head_seq, 2);
    assert_ne!(own.id, project.id);
}
