//! Storage tests on real SQLite files: one temporary data directory per test.

mod support;

use pm_proto::v1;
use support::*;

#[tokio::test]
async fn create_project_and_work_item_then_read_them_back() {
    let env = TestEnv::new();
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    assert_eq!(project.key, "PM");
    assert_eq!(project.version, 1);
    let (item, seq) = create_item(
        &tenant,
        &ALICE,
        &project.id,
        v1::WorkItemType::Epic,
        "First",
    )
    .await;
    assert_eq!(item.number, 1);
    assert_eq!(item.display_key, "PM-1");
    // Project (1) + its admin member (2) + the item (3).
    assert_eq!(seq, 3);
    assert_eq!(tenant.head_seq(), 3);

    let listed = list_items(&tenant, &ALICE, &project.id, 0, "").await;
    assert_eq!(listed.as_of_seq, 3);
    assert_eq!(listed.items, vec![item]);
}
