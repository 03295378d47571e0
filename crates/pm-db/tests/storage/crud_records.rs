//! CRUD, soft delete and restore of what is recorded about the work: comments, time entries
//! (and the timer) and LLM context.

use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;

use crate::support::*;

use v1::ErrorCode as E;
use v1::WorkItemType as T;

#[tokio::test]
async fn comment_crud_soft_delete_and_restore() {
    let (_env, tenant, project) = setup().await;
    let (item, mut last) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Task, "Task", None),
    )
    .await;
    let (created, seq) = run::<v1::Comment>(
        &tenant,
        &ALICE,
        C::CreateComment(v1::CreateComment {
            work_item_id: item.id.clone(),
            content: "Looks **good**".into(),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert_eq!(
        created,
        v1::Comment {
            id: created.id.clone(),
            project_id: project.id.clone(),
            work_item_id: item.id.clone(),
            content: "Looks **good**".into(),
            version: 1,
            created_at: created.created_at,
            created_by: "alice".into(),
            updated_at: created.created_at,
            updated_by: "alice".into(),
            deleted_at: None,
        }
    );
    assert_eq!(
        get::<v1::Comment>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        created
    );

    let (updated, seq) = run::<v1::Comment>(
        &tenant,
        &ALICE,
        C::UpdateComment(v1::UpdateComment {
            id: created.id.clone(),
            expected_version: 1,
            content: "Looks good, merged".into(),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = created.clone();
    expected.content = "Looks good, merged".into();
    expected.version = 2;
    expected.updated_at = updated.updated_at;
    assert_eq!(updated, expected);
    assert_eq!(
        get::<v1::Comment>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        updated
    );

    let (deleted, seq) = run::<v1::Comment>(
        &tenant,
        &ALICE,
        C::DeleteComment(v1::DeleteComment {
            id: created.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = updated.clone();
    expected.version = 3;
    expected.updated_at = deleted.updated_at;
    expected.deleted_at = Some(deleted.updated_at);
    assert_eq!(deleted, expected);
    let live = list!(&tenant, &ALICE, ListComments { work_item_id: item.id.clone(), ..Default::default() } => ListCommentsResult);
    assert_eq!(live, vec![]);
    let all = list!(&tenant, &ALICE, ListComments { work_item_id: item.id.clone(), include_deleted: true } => ListCommentsResult);
    assert_eq!(all, vec![deleted.clone()]);

    let (restored, seq) = run::<v1::Comment>(
        &tenant,
        &ALICE,
        C::RestoreComment(v1::RestoreComment {
            id: created.id.clone(),
            expected_version: 3,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = deleted.clone();
    expected.version = 4;
    expected.updated_at = restored.updated_at;
    expected.deleted_at = None;
    assert_eq!(restored, expected);
    let live = list!(&tenant, &ALICE, ListComments { work_item_id: item.id.clone(), ..Default::default() } => ListCommentsResult);
    assert_eq!(live, vec![restored.clone()]);
    assert_eq!(tenant.head_seq(), last);

    // Only the author edits a comment.
    add_member(&tenant, &project.id, &BOB, v1::ProjectRole::Editor).await;
    let err = fail(
        &tenant,
        &BOB,
        C::UpdateComment(v1::UpdateComment {
            id: created.id.clone(),
            expected_version: 4,
            content: "Not mine".into(),
        }),
    )
    .await;
    assert_eq!(err.code(), E::PermissionDenied);
}

#[tokio::test]
async fn time_entry_crud_timer_soft_delete_and_restore() {
    let (_env, tenant, project) = setup().await;
    let (item, mut last) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Task, "Task", None),
    )
    .await;
    let started = 1_700_000_000_000;
    let (created, seq) = run::<v1::TimeEntry>(
        &tenant,
        &ALICE,
        C::CreateTimeEntry(v1::CreateTimeEntry {
            work_item_id: item.id.clone(),
            started_at: started,
            ended_at: started + 3_600_000,
            description: "Pairing".into(),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert_eq!(
        created,
        v1::TimeEntry {
            id: created.id.clone(),
            project_id: project.id.clone(),
            work_item_id: item.id.clone(),
            user_id: "alice".into(),
            started_at: started,
            ended_at: Some(started + 3_600_000),
            description: "Pairing".into(),
            version: 1,
            created_at: created.created_at,
            created_by: "alice".into(),
            updated_at: created.created_at,
            updated_by: "alice".into(),
            deleted_at: None,
        }
    );
    assert_eq!(
        get::<v1::TimeEntry>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        created
    );

    let (updated, seq) = run::<v1::TimeEntry>(
        &tenant,
        &ALICE,
        C::UpdateTimeEntry(v1::UpdateTimeEntry {
            id: created.id.clone(),
            expected_version: 1,
            description: Some("Pairing with Bob".into()),
            ..Default::default()
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = created.clone();
    expected.description = "Pairing with Bob".into();
    expected.version = 2;
    expected.updated_at = updated.updated_at;
    assert_eq!(updated, expected);
    assert_eq!(
        get::<v1::TimeEntry>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        updated
    );

    let (deleted, seq) = run::<v1::TimeEntry>(
        &tenant,
        &ALICE,
        C::DeleteTimeEntry(v1::DeleteTimeEntry {
            id: created.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = updated.clone();
    expected.version = 3;
    expected.updated_at = deleted.updated_at;
    expected.deleted_at = Some(deleted.updated_at);
    assert_eq!(deleted, expected);
    let live = list!(&tenant, &ALICE, ListTimeEntries { project_id: project.id.clone(), ..Default::default() } => ListTimeEntriesResult);
    assert_eq!(live, vec![]);
    let all = list!(&tenant, &ALICE, ListTimeEntries { project_id: project.id.clone(), include_deleted: true, ..Default::default() } => ListTimeEntriesResult);
    assert_eq!(all, vec![deleted.clone()]);

    let (restored, seq) = run::<v1::TimeEntry>(
        &tenant,
        &ALICE,
        C::RestoreTimeEntry(v1::RestoreTimeEntry {
            id: created.id.clone(),
            expected_version: 3,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = deleted.clone();
    expected.version = 4;
    expected.updated_at = restored.updated_at;
    expected.deleted_at = None;
    assert_eq!(restored, expected);

    // The timer: a running entry without `ended_at`, then stopped.
    let (running, seq) = run::<v1::TimeEntry>(
        &tenant,
        &ALICE,
        C::StartTimer(v1::StartTimer {
            work_item_id: item.id.clone(),
            description: "Focus".into(),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert_eq!(
        running,
        v1::TimeEntry {
            id: running.id.clone(),
            project_id: project.id.clone(),
            work_item_id: item.id.clone(),
            user_id: "alice".into(),
            started_at: running.created_at,
            ended_at: None,
            description: "Focus".into(),
            version: 1,
            created_at: running.created_at,
            created_by: "alice".into(),
            updated_at: running.created_at,
            updated_by: "alice".into(),
            deleted_at: None,
        }
    );
    let (stopped, seq) =
        run::<v1::TimeEntry>(&tenant, &ALICE, C::StopTimer(v1::StopTimer {})).await;
    next_seq(&mut last, seq);
    let ended = stopped.ended_at.expect("a stopped timer has ended");
    assert!(ended > running.started_at);
    let mut expected = running.clone();
    expected.ended_at = Some(ended);
    expected.version = 2;
    expected.updated_at = stopped.updated_at;
    assert_eq!(stopped, expected);
    let mine = list!(&tenant, &ALICE, ListTimeEntries {
        project_id: project.id.clone(),
        user_id: Some("alice".into()),
        ..Default::default()
    } => ListTimeEntriesResult);
    assert_eq!(mine, vec![restored, stopped]);
    assert_eq!(tenant.head_seq(), last);
}

#[tokio::test]
async fn llm_context_crud_soft_delete_and_restore() {
    let (_env, tenant, project) = setup().await;
    let mut last = 2;
    let (created, seq) = run::<v1::LlmContext>(
        &tenant,
        &ALICE,
        C::CreateLlmContext(v1::CreateLlmContext {
            project_id: project.id.clone(),
            category: v1::LlmContextCategory::SchemaDoc.into(),
            title: "Work items".into(),
            content: "Epics hold stories; stories hold tasks and bugs.".into(),
            priority: 5,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert_eq!(
        created,
        v1::LlmContext {
            id: created.id.clone(),
            project_id: project.id.clone(),
            category: v1::LlmContextCategory::SchemaDoc.into(),
            title: "Work items".into(),
            content: "Epics hold stories; stories hold tasks and bugs.".into(),
            priority: 5,
            version: 1,
            created_at: created.created_at,
            created_by: "alice".into(),
            updated_at: created.created_at,
            updated_by: "alice".into(),
            deleted_at: None,
        }
    );
    assert_eq!(
        get::<v1::LlmContext>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        created
    );

    let (updated, seq) = run::<v1::LlmContext>(
        &tenant,
        &ALICE,
        C::UpdateLlmContext(v1::UpdateLlmContext {
            id: created.id.clone(),
            expected_version: 1,
            title: Some("Work item hierarchy".into()),
            ..Default::default()
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = created.clone();
    expected.title = "Work item hierarchy".into();
    expected.version = 2;
    expected.updated_at = updated.updated_at;
    assert_eq!(updated, expected);
    assert_eq!(
        get::<v1::LlmContext>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        updated
    );

    let (deleted, seq) = run::<v1::LlmContext>(
        &tenant,
        &ALICE,
        C::DeleteLlmContext(v1::DeleteLlmContext {
            id: created.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = updated.clone();
    expected.version = 3;
    expected.updated_at = deleted.updated_at;
    expected.deleted_at = Some(deleted.updated_at);
    assert_eq!(deleted, expected);
    let live = list!(&tenant, &ALICE, ListLlmContext { project_id: project.id.clone(), ..Default::default() } => ListLlmContextResult);
    assert_eq!(live, vec![]);
    let all = list!(&tenant, &ALICE, ListLlmContext { project_id: project.id.clone(), include_deleted: true, ..Default::default() } => ListLlmContextResult);
    assert_eq!(all, vec![deleted.clone()]);

    let (restored, seq) = run::<v1::LlmContext>(
        &tenant,
        &ALICE,
        C::RestoreLlmContext(v1::RestoreLlmContext {
            id: created.id.clone(),
            expected_version: 3,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = deleted.clone();
    expected.version = 4;
    expected.updated_at = restored.updated_at;
    expected.deleted_at = None;
    assert_eq!(restored, expected);
    let live = list!(&tenant, &ALICE, ListLlmContext { project_id: project.id.clone(), ..Default::default() } => ListLlmContextResult);
    assert_eq!(live, vec![restored]);
    assert_eq!(tenant.head_seq(), last);
}
