//! Roles and membership in a project: viewers read and cannot write anything (alone or in a
//! batch), editors write, admins manage members; a non-member learns nothing of a project (every
//! read, write and subscription is `NOT_FOUND`, exactly like for an id that does not exist); a
//! changed role or a removal takes effect at once, on open connections and subscriptions too.

use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use pm_proto::v1::response::Result as Out;
use v1::command::Kind as Cmd;
use v1::query::Kind as Q;
use v1::query_result::Result as QR;

use crate::support::*;

#[tokio::test]
async fn viewers_read_editors_write_and_non_members_learn_nothing() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let hidden = alice.create_project("HIDDEN").await; // seqs 1, 2
    alice
        .add_member(&hidden.id, "bob", v1::ProjectRole::Viewer)
        .await; // 3
    alice
        .add_member(&hidden.id, "carol", v1::ProjectRole::Editor)
        .await; // 4
    let (secret, seq) = alice.create_item(&hidden.id, "secret plan").await;
    assert_eq!(seq, 5);
    assert_eq!(secret.display_key, "HIDDEN-1");
    let open = alice.create_project("OPEN").await; // 6, 7
    alice
        .add_member(&open.id, "dave", v1::ProjectRole::Viewer)
        .await; // 8

    // Bob, a viewer, reads but does not write.
    let (mut bob, _) = app.client("acme", "bob").await;
    let got = get_project(&mut bob, &hidden.id).await.unwrap();
    assert_eq!(got.project.as_ref(), Some(&hidden));
    assert_eq!(got.as_of_seq, 8);
    let listed = all_items(&mut bob, &hidden.id).await;
    assert_eq!(listed.items, [unblocked(&secret)]);
    let denied = bob
        .command(create_item(&hidden.id, "from bob"))
        .await
        .expect_err("a viewer cannot create");
    assert_eq!(code(&denied), v1::ErrorCode::PermissionDenied);
    assert_eq!(
        denied.message,
        "this needs the editor role in the project; you are a viewer"
    );

    // Carol, an editor, writes.
    let (mut carol, _) = app.client("acme", "carol").await;
    let (carols, seq) = carol.create_item(&hidden.id, "from carol").await;
    assert_eq!(seq, 9);
    assert_eq!(carols.created_by, "carol");

    // Dave is no member of HIDDEN: every way in is NOT_FOUND and says nothing about it.
    let (mut dave, _) = app.client("acme", "dave").await;
    let leaks = |e: &v1::Error| {
        assert_eq!(code(e), v1::ErrorCode::NotFound, "{e:?}");
        assert!(!e.message.contains(&hidden.id), "{e:?}");
        assert!(!e.message.contains("HIDDEN"), "{e:?}");
        assert!(!e.message.contains(&secret.id), "{e:?}");
        assert_eq!(e.current, None);
    };
    let e = get_project(&mut dave, &hidden.id).await.unwrap_err();
    leaks(&e);
    assert_eq!(e.message, "project not found");
    let e = get_work_item(&mut dave, &secret.id, "").await.unwrap_err();
    leaks(&e);
    assert_eq!(e.message, "work item not found");
    let e = get_work_item(&mut dave, "", "HIDDEN-1").await.unwrap_err();
    leaks(&e);
    assert_eq!(e.message, "work item not found");
    let e = list_items(&mut dave, &hidden.id, 0, "", "")
        .await
        .unwrap_err();
    leaks(&e);
    let e = dave
        .query(Q::ListMembers(v1::ListMembers {
            project_id: hidden.id.clone(),
            page: None,
        }))
        .await
        .unwrap_err();
    leaks(&e);
    let e = dave
        .command(create_item(&hidden.id, "from dave"))
        .await
        .unwrap_err();
    leaks(&e);
    let e = dave
        .command(Cmd::UpdateWorkItem(v1::UpdateWorkItem {
            id: secret.id.clone(),
            expected_version: 1,
            title: Some("taken over".into()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    leaks(&e);
    let e = list_activity(
        &mut dave,
        v1::ListActivity {
            project_id: hidden.id.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    leaks(&e);

    match dave
        .query(Q::ListProjects(v1::ListProjects::default()))
        .await
        .unwrap()
    {
        QR::ListProjectsResult(r) => assert_eq!(r.items, std::slice::from_ref(&open)),
        other => panic!("{other:?}"),
    }
    let activity = list_activity(&mut dave, v1::ListActivity::default())
        .await
        .unwrap();
    assert_eq!(
        activity.items.iter().map(|a| a.seq).collect::<Vec<_>>(),
        [8, 7, 6]
    );
    assert!(activity.items.iter().all(|a| a.project_id == open.id));
    let by_entity = list_activity(
        &mut dave,
        v1::ListActivity {
            entity_id: secret.id.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(by_entity.items, []);

    let e = dave.subscribe_to(&[&hidden.id], &[], 0).await.unwrap_err();
    leaks(&e);
    assert_eq!(e.field, "project_ids");

    // An all-projects subscription replays and streams OPEN only.
    assert_eq!(dave.subscribe_to(&[], &[], 0).await.unwrap(), 9);
    for expected in [6, 7, 8] {
        let event = dave.event().await;
        assert_eq!(event.seq, expected);
        assert_eq!(event.project_id, open.id);
    }
    let (_, in_hidden) = alice.create_item(&hidden.id, "more secrets").await;
    assert_eq!(in_hidden, 10);
    let (visible, in_open) = alice.create_item(&open.id, "for everyone").await;
    assert_eq!(in_open, 11);
    let event = dave.event().await;
    assert_eq!(event.seq, 11);
    assert_eq!(event.project_id, open.id);
    assert_eq!(event.entity_id, visible.id);
    assert_eq!(
        event.change,
        Some(v1::event::Change::WorkItem(visible.clone()))
    );
}

#[tokio::test]
async fn a_viewer_cannot_write_anything() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (item, _) = alice.create_item(&project.id, "read only").await;
    alice
        .add_member(&project.id, "victor", v1::ProjectRole::Viewer)
        .await;
    let head = 4;
    let (mut victor, _) = app.client("acme", "victor").await;
    let needs = |role: &str| {
        error(
            v1::ErrorCode::PermissionDenied,
            &format!("this needs the {role} role in the project; you are a viewer"),
            "",
        )
    };
    let attacks: Vec<(&str, Cmd, v1::Error)> = vec![
        (
            "CreateWorkItem",
            create_item(&project.id, "by a viewer"),
            needs("editor"),
        ),
        (
            "UpdateWorkItem",
            Cmd::UpdateWorkItem(v1::UpdateWorkItem {
                id: item.id.clone(),
                expected_version: 1,
                title: Some("by a viewer".into()),
                ..Default::default()
            }),
            needs("editor"),
        ),
        (
            "MoveWorkItem",
            Cmd::MoveWorkItem(v1::MoveWorkItem {
                id: item.id.clone(),
                expected_version: 1,
                status: Some(v1::WorkItemStatus::Done.into()),
                ..Default::default()
            }),
            needs("editor"),
        ),
        (
            "DeleteWorkItem",
            Cmd::DeleteWorkItem(v1::DeleteWorkItem {
                id: item.id.clone(),
                expected_version: 1,
            }),
            needs("editor"),
        ),
        (
            "CreateSprint",
            Cmd::CreateSprint(v1::CreateSprint {
                project_id: project.id.clone(),
                name: "S1".into(),
                ..Default::default()
            }),
            needs("editor"),
        ),
        (
            "CreateSwimLane",
            Cmd::CreateSwimLane(v1::CreateSwimLane {
                project_id: project.id.clone(),
                name: "Lane".into(),
                status: v1::WorkItemStatus::Todo.into(),
                ..Default::default()
            }),
            needs("editor"),
        ),
        (
            "UpdateProject",
            Cmd::UpdateProject(v1::UpdateProject {
                id: project.id.clone(),
                expected_version: 1,
                name: Some("renamed".into()),
                ..Default::default()
            }),
            needs("editor"),
        ),
        (
            "AddMember (granting oneself more)",
            Cmd::AddMember(v1::AddMember {
                project_id: project.id.clone(),
                user_id: "mallory".into(),
                role: v1::ProjectRole::Admin.into(),
            }),
            needs("admin"),
        ),
        (
            "UpdateMember (promoting oneself)",
            Cmd::UpdateMember(v1::UpdateMember {
                project_id: project.id.clone(),
                user_id: "victor".into(),
                expected_version: 1,
                role: v1::ProjectRole::Admin.into(),
            }),
            needs("admin"),
        ),
        (
            "RemoveMember (removing the admin)",
            Cmd::RemoveMember(v1::RemoveMember {
                project_id: project.id.clone(),
                user_id: "alice".into(),
                expected_version: 1,
            }),
            needs("admin"),
        ),
        (
            "DeleteProject",
            Cmd::DeleteProject(v1::DeleteProject {
                id: project.id.clone(),
                expected_version: 1,
            }),
            needs("admin"),
        ),
    ];
    for (name, command, expected) in attacks {
        assert_eq!(victor.command(command).await, Err(expected), "{name}");
    }
    // The same writes in a batch are refused as a whole.
    match victor
        .request(In::Batch(v1::Batch {
            commands: vec![v1::Command {
                idempotency_key: String::new(),
                kind: Some(create_item(&project.id, "batched")),
            }],
            atomic: true,
        }))
        .await
    {
        Out::Error(e) => assert_eq!(e, needs("editor")),
        other => panic!("{other:?}"),
    }
    // Nothing changed.
    assert_eq!(app.client("acme", "alice").await.1.head_seq, head);
}

#[tokio::test]
async fn a_non_member_reads_lists_searches_and_subscribes_to_nothing_of_a_project() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let hidden = alice.create_project("HIDDEN").await; // 1, 2
    let (secret, _) = alice.create_item(&hidden.id, "secret plan").await; // 3
    let (mut mallory, _) = app.client("acme", "mallory").await;
    assert_probes_learn_nothing(&mut mallory, &hidden.id, &secret.id, "HIDDEN-1").await;

    // Lists over everything the caller may see show nothing of it.
    match mallory
        .query(Q::ListProjects(v1::ListProjects {
            include_deleted: true,
            ..Default::default()
        }))
        .await
    {
        Ok(QR::ListProjectsResult(r)) => assert_eq!((r.items, r.as_of_seq), (vec![], 3)),
        other => panic!("{other:?}"),
    }
    match mallory
        .query(Q::ListActivity(v1::ListActivity {
            entity_id: secret.id.clone(),
            ..Default::default()
        }))
        .await
    {
        Ok(QR::ListActivityResult(r)) => assert_eq!(r.items, vec![]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        mallory.subscribe_to(&[&hidden.id], &[], 0).await,
        Err(error(
            v1::ErrorCode::NotFound,
            "project not found",
            "project_ids"
        ))
    );
    // Subscribed to everything from the start of the log: nothing of HIDDEN, replayed or live.
    assert_eq!(mallory.subscribe_to(&[], &[], 0).await, Ok(3));
    let (_, seq) = alice.create_item(&hidden.id, "more secrets").await;
    assert_eq!(seq, 4);
    // Alice's own subscription shows when the event has been published.
    let (mut barrier, _) = app.client("acme", "alice").await;
    assert_eq!(barrier.subscribe(3).await, Ok(4));
    assert_eq!(barrier.event().await.seq, 4);
    mallory.assert_nothing_more(1).await;
}

#[tokio::test]
async fn a_changed_role_and_a_removal_take_effect_at_once() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    alice
        .add_member(&project.id, "bob", v1::ProjectRole::Editor)
        .await; // 3
    let (mut bob, _) = app.client("acme", "bob").await;
    let (_, seq) = bob.create_item(&project.id, "as editor").await;
    assert_eq!(seq, 4);

    let demoted = alice
        .command(Cmd::UpdateMember(v1::UpdateMember {
            project_id: project.id.clone(),
            user_id: "bob".into(),
            expected_version: 1,
            role: v1::ProjectRole::Viewer.into(),
        }))
        .await
        .expect("bob demoted");
    assert_eq!(demoted.seq, 5);
    let e = bob
        .command(create_item(&project.id, "as viewer"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), v1::ErrorCode::PermissionDenied);
    assert_eq!(all_items(&mut bob, &project.id).await.items.len(), 1);

    let removed = alice
        .command(Cmd::RemoveMember(v1::RemoveMember {
            project_id: project.id.clone(),
            user_id: "bob".into(),
            expected_version: 2,
        }))
        .await
        .expect("bob removed");
    assert_eq!(removed.seq, 6);
    let e = bob
        .command(create_item(&project.id, "as nobody"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), v1::ErrorCode::NotFound);
    assert_eq!(e.message, "project not found");
    let e = get_project(&mut bob, &project.id).await.unwrap_err();
    assert_eq!(code(&e), v1::ErrorCode::NotFound);
    let e = list_items(&mut bob, &project.id, 0, "", "")
        .await
        .unwrap_err();
    assert_eq!(code(&e), v1::ErrorCode::NotFound);
    assert_eq!(all_items(&mut alice, &project.id).await.as_of_seq, 6);
}

#[tokio::test]
async fn a_member_removed_while_subscribed_stops_receiving_and_reading_at_once() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    alice
        .add_member(&project.id, "bob", v1::ProjectRole::Editor)
        .await; // 3
    let (mut bob, _) = app.client("acme", "bob").await;
    // Subscribed to exactly that project.
    assert_eq!(bob.subscribe_to(&[&project.id], &[], 3).await, Ok(3));
    let (item, seq) = alice.create_item(&project.id, "before").await;
    assert_eq!(bob.event().await.seq, seq);

    let removed = alice
        .command(Cmd::RemoveMember(v1::RemoveMember {
            project_id: project.id.clone(),
            user_id: "bob".into(),
            expected_version: 1,
        }))
        .await
        .expect("bob removed");
    // Bob sees his own removal, then nothing more of the project.
    let event = bob.event().await;
    assert_eq!(
        (event.seq, event.entity_id.as_str(), event.action),
        (removed.seq, "bob", v1::ChangeAction::Deleted as i32)
    );
    let (_, after) = alice.create_item(&project.id, "after").await;
    let (mut barrier, _) = app.client("acme", "alice").await;
    assert_eq!(barrier.subscribe(after - 1).await, Ok(after));
    assert_eq!(barrier.event().await.seq, after);
    bob.assert_nothing_more(1).await;
    // And every read or write of it is NOT_FOUND from now on, on the same connection.
    assert_probes_learn_nothing(&mut bob, &project.id, &item.id, "PM-1").await;
    // Resubscribing (even from before the removal) replays nothing of it.
    assert_eq!(
        bob.subscribe_to(&[&project.id], &[], 0).await,
        Err(error(
            v1::ErrorCode::NotFound,
            "project not found",
            "project_ids"
        ))
    );
    assert_eq!(bob.subscribe(0).await, Ok(after));
    bob.assert_nothing_more(2).await;
}

#[tokio::test]
async fn a_removed_member_stops_receiving_the_project_and_a_re_added_one_resumes() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let one = alice.create_project("ONE").await;
    let two = alice.create_project("TWO").await;
    assert_eq!(
        alice
            .add_member(&one.id, "bob", v1::ProjectRole::Editor)
            .await,
        5
    );
    assert_eq!(
        alice
            .add_member(&two.id, "bob", v1::ProjectRole::Viewer)
            .await,
        6
    );
    let (mut bob, _) = app.client("acme", "bob").await;
    assert_eq!(bob.subscribe(6).await, Ok(6));

    let removed = alice
        .command(v1::command::Kind::RemoveMember(v1::RemoveMember {
            project_id: one.id.clone(),
            user_id: "bob".into(),
            expected_version: 1,
        }))
        .await
        .expect("bob removed");
    assert_eq!(removed.seq, 7);
    let event = bob.event().await;
    assert_eq!(event.seq, 7);
    assert_eq!(event.project_id, one.id);
    assert_eq!(event.entity_type, v1::EntityType::ProjectMember as i32);
    assert_eq!(event.entity_id, "bob");
    assert_eq!(event.action, v1::ChangeAction::Deleted as i32);

    let (_, s8) = alice.create_item(&one.id, "hidden").await;
    let (_, s9) = alice.create_item(&one.id, "hidden too").await;
    let (_, s10) = alice.create_item(&two.id, "visible").await;
    assert_eq!((s8, s9, s10), (8, 9, 10));
    let event = bob.event().await;
    assert_eq!(
        (event.seq, event.project_id.as_str()),
        (10, two.id.as_str())
    );
    bob.assert_nothing_more(1).await;

    assert_eq!(
        alice
            .add_member(&one.id, "bob", v1::ProjectRole::Viewer)
            .await,
        11
    );
    let event = bob.event().await;
    assert_eq!(event.seq, 11);
    assert_eq!(event.project_id, one.id);
    assert_eq!(event.entity_type, v1::EntityType::ProjectMember as i32);
    assert_eq!(event.entity_id, "bob");
    assert_eq!(event.action, v1::ChangeAction::Created as i32);
    let (_, s12) = alice.create_item(&one.id, "visible again").await;
    let event = bob.event().await;
    assert_eq!(
        (event.seq, event.project_id.as_str()),
        (s12, one.id.as_str())
    );
    bob.assert_nothing_more(2).await;
}

/// A deleted project's members keep their membership, hidden while it is deleted: once it is
/// restored they see it again at once, live, whether they subscribed before its deletion or
/// while it was deleted, exactly as a resume from the same position replays it.
#[tokio::test]
async fn the_members_of_a_restored_project_see_it_again_live_as_a_resume_does() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("ONE").await;
    let added = alice
        .add_member(&project.id, "bob", v1::ProjectRole::Editor)
        .await;
    let (mut before, _) = app.client("acme", "bob").await;
    assert_eq!(before.subscribe(added).await, Ok(added));

    let deleted = alice
        .command(Cmd::DeleteProject(v1::DeleteProject {
            id: project.id.clone(),
            expected_version: project.version,
        }))
        .await
        .expect("project deleted");
    let event = before.event().await;
    assert_eq!(
        (event.seq, event.action),
        (deleted.seq, v1::ChangeAction::Deleted as i32)
    );
    // Subscribed while the project is deleted: nothing of it yet.
    let (mut during, _) = app.client("acme", "bob").await;
    assert_eq!(during.subscribe(deleted.seq).await, Ok(deleted.seq));

    let restored = alice
        .command(Cmd::RestoreProject(v1::RestoreProject {
            id: project.id.clone(),
            expected_version: project.version + 1,
        }))
        .await
        .expect("project restored");
    let (_, created) = alice.create_item(&project.id, "after the restore").await;
    let seen = |events: Vec<v1::Event>| -> Vec<(u64, String, i32)> {
        events
            .into_iter()
            .map(|e| (e.seq, e.project_id, e.action))
            .collect()
    };
    let expected = vec![
        (
            restored.seq,
            project.id.clone(),
            v1::ChangeAction::Restored as i32,
        ),
        (
            created,
            project.id.clone(),
            v1::ChangeAction::Created as i32,
        ),
    ];
    for bob in [&mut before, &mut during] {
        assert_eq!(seen(events_until(bob, created).await), expected);
        bob.assert_nothing_more(1).await;
    }
    // A resume from the deletion replays the same events.
    let (mut resumed, _) = app.client("acme", "bob").await;
    assert_eq!(resumed.subscribe(deleted.seq).await, Ok(created));
    assert_eq!(seen(events_until(&mut resumed, created).await), expected);
}
