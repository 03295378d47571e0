//! People: profiles kept from token claims, `ListUsers`, and the display names that members,
//! assignees and the activity feed carry.

use pm_core::UserId;
use pm_db::UserProfile;
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;

use crate::support::*;

fn profile(user: &UserId, name: &str, email: Option<&str>) -> UserProfile {
    UserProfile::from_claims(user.clone(), Some(name), email)
}

async fn users(tenant: &TestTenant, actor: &UserId, q: v1::ListUsers) -> v1::ListUsersResult {
    match query(tenant, actor, Q::ListUsers(q))
        .await
        .expect("ListUsers")
    {
        R::ListUsersResult(r) => r,
        other => panic!("expected ListUsersResult, got {other:?}"),
    }
}

/// (id, name, email) of each user listed.
fn people(result: &v1::ListUsersResult) -> Vec<(&str, &str, &str)> {
    result
        .items
        .iter()
        .map(|u| (u.id.as_str(), u.name.as_str(), u.email.as_str()))
        .collect()
}

#[tokio::test]
async fn users_sharing_a_project_are_listed_with_their_latest_claims() {
    let (_env, tenant, pm) = setup().await;
    let dave = UserId::parse("sub", "dave").unwrap();
    tenant
        .remember_user(&profile(&ALICE, "Alice Liddell", Some("alice@example.com")))
        .await
        .unwrap();
    tenant
        .remember_user(&profile(&BOB, "Bob", None))
        .await
        .unwrap();
    // Dave has connected but shares no project with Alice.
    tenant
        .remember_user(&profile(&dave, "Dave", None))
        .await
        .unwrap();
    add_member(&tenant, &pm.id, &BOB, v1::ProjectRole::Editor).await;
    // Carol is a member who never connected: listed by id only.
    add_member(&tenant, &pm.id, &CAROL, v1::ProjectRole::Viewer).await;

    let listed = users(&tenant, &ALICE, v1::ListUsers::default()).await;
    assert_eq!(
        people(&listed),
        vec![
            ("alice", "Alice Liddell", "alice@example.com"),
            ("bob", "Bob", ""),
            ("carol", "", ""),
        ]
    );
    assert_eq!(listed.as_of_seq, tenant.head_seq());
    assert!(listed.items[0].first_seen_at > 0);
    assert_eq!(listed.items[2].first_seen_at, 0);

    // Dave sees only himself: he shares no project with anyone.
    let own = create_project(&tenant, &dave, "DV").await;
    let listed = users(&tenant, &dave, v1::ListUsers::default()).await;
    assert_eq!(people(&listed), vec![("dave", "Dave", "")]);
    // And cannot name Alice's project.
    let refused = query(
        &tenant,
        &dave,
        Q::ListUsers(v1::ListUsers {
            project_id: pm.id.clone(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&refused), v1::ErrorCode::NotFound);
    let in_own = users(
        &tenant,
        &dave,
        v1::ListUsers {
            project_id: own.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(people(&in_own), vec![("dave", "Dave", "")]);

    // A new name replaces the old one; the same claims again change nothing.
    let before = listed.items[0].updated_at;
    tenant
        .remember_user(&profile(&dave, "Dave", None))
        .await
        .unwrap();
    tenant
        .remember_user(&profile(&BOB, "Robert", Some("bob@example.com")))
        .await
        .unwrap();
    let listed = users(&tenant, &ALICE, v1::ListUsers::default()).await;
    assert_eq!(listed.items[1].name, "Robert");
    assert_eq!(listed.items[1].email, "bob@example.com");
    let dave_now = users(&tenant, &dave, v1::ListUsers::default()).await;
    assert_eq!(dave_now.items[0].updated_at, before);
}

#[tokio::test]
async fn users_are_paged_by_id() {
    let (_env, tenant, pm) = setup().await;
    for n in 0..7 {
        let user = UserId::parse("sub", &format!("user-{n}")).unwrap();
        add_member(&tenant, &pm.id, &user, v1::ProjectRole::Viewer).await;
    }
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = users(
            &tenant,
            &ALICE,
            v1::ListUsers {
                page: Some(v1::PageRequest {
                    page_size: 3,
                    page_token: token.clone(),
                }),
                project_id: String::new(),
            },
        )
        .await;
        ids.extend(page.items.iter().map(|u| u.id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<String> = (0..7).map(|n| format!("user-{n}")).collect();
    expected.insert(0, "alice".into());
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn members_assignees_and_activity_carry_display_names() {
    let (_env, tenant, pm) = setup().await;
    tenant
        .remember_user(&profile(&ALICE, "Alice Liddell", None))
        .await
        .unwrap();
    tenant
        .remember_user(&profile(&BOB, "Bob Builder", None))
        .await
        .unwrap();
    add_member(&tenant, &pm.id, &BOB, v1::ProjectRole::Editor).await;
    add_member(&tenant, &pm.id, &CAROL, v1::ProjectRole::Editor).await;

    let members = match query(
        &tenant,
        &ALICE,
        Q::ListMembers(v1::ListMembers {
            project_id: pm.id.clone(),
            page: None,
        }),
    )
    .await
    .unwrap()
    {
        R::ListMembersResult(r) => r,
        other => panic!("{other:?}"),
    };
    let names: Vec<(&str, &str)> = members
        .items
        .iter()
        .map(|m| (m.user_id.as_str(), m.display_name.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("alice", "Alice Liddell"),
            ("bob", "Bob Builder"),
            ("carol", "")
        ]
    );

    let (item, _) = run::<v1::WorkItem>(
        &tenant,
        &BOB,
        C::CreateWorkItem(v1::CreateWorkItem {
            project_id: pm.id.clone(),
            item_type: v1::WorkItemType::Task.into(),
            title: "Build it".into(),
            assignee_id: Some("bob".into()),
            ..Default::default()
        }),
    )
    .await;
    // Events carry ids only; queries fill in the names.
    assert_eq!(item.assignee_name, "");
    let got = match query(
        &tenant,
        &ALICE,
        Q::GetWorkItem(v1::GetWorkItem {
            id: item.id.clone(),
            display_key: String::new(),
        }),
    )
    .await
    .unwrap()
    {
        R::GetWorkItemResult(r) => r.work_item.unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(got.assignee_name, "Bob Builder");
    let listed = list_items(&tenant, &ALICE, &pm.id, 10, "").await;
    assert_eq!(listed.items[0].assignee_name, "Bob Builder");

    let activity = match query(
        &tenant,
        &ALICE,
        Q::ListActivity(v1::ListActivity::default()),
    )
    .await
    .unwrap()
    {
        R::ListActivityResult(r) => r,
        other => panic!("{other:?}"),
    };
    let actors: Vec<(&str, &str)> = activity
        .items
        .iter()
        .map(|e| (e.actor_id.as_str(), e.actor_name.as_str()))
        .collect();
    // Newest first: Bob's item, then Alice's changes (the project, its members).
    assert_eq!(actors[0], ("bob", "Bob Builder"));
    assert!(actors.len() >= 4, "{actors:?}");
    assert!(
        actors[1..].iter().all(|a| *a == ("alice", "Alice Liddell")),
        "{actors:?}"
    );
}

#[test]
fn claims_are_tidied_before_they_are_kept() {
    let user = UserId::parse("sub", "u").unwrap();
    let p = UserProfile::from_claims(user.clone(), Some("  Ann\u{7}\n Lee "), Some(" ann@x.io "));
    assert_eq!(p.name, "Ann Lee");
    assert_eq!(p.email.as_deref(), Some("ann@x.io"));
    let p = UserProfile::from_claims(user.clone(), Some(&"é".repeat(300)), Some("not-an-email"));
    assert_eq!(p.name.chars().count(), UserProfile::MAX_NAME_CHARS);
    assert_eq!(p.email, None);
    let p = UserProfile::from_claims(user, None, Some(&format!("{}@x.io", "a".repeat(400))));
    assert_eq!((p.name.as_str(), p.email), ("", None));
}
