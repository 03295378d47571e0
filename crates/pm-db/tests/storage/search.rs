//! Full-text search of work items: titles, descriptions and live comments.

use pm_proto::v1;
use pm_proto::v1::command::Kind as C;

use crate::support::*;

use v1::WorkItemType as T;

#[tokio::test]
async fn text_search_covers_titles_descriptions_and_live_comments() {
    let (_env, tenant, project) = setup().await;
    let pid = project.id.as_str();
    let create = |title: &str, description: &str| {
        C::CreateWorkItem(v1::CreateWorkItem {
            project_id: pid.into(),
            item_type: T::Task.into(),
            title: title.into(),
            description: description.into(),
            ..Default::default()
        })
    };
    let comment = |item: &v1::WorkItem, content: &str| {
        C::CreateComment(v1::CreateComment {
            work_item_id: item.id.clone(),
            content: content.into(),
        })
    };
    let (a, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        create("Checkout button misaligned", "Seen on mobile Safari"),
    )
    .await;
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        create(
            "Quarterly report export",
            "Finance needs a spreadsheet download",
        ),
    )
    .await;
    let (c, _) = run::<v1::WorkItem>(&tenant, &ALICE, create("Refactor settings", "")).await;
    let (d, _) = run::<v1::WorkItem>(&tenant, &ALICE, create("Dark mode", "")).await;
    let (e, _) = run::<v1::WorkItem>(&tenant, &ALICE, create("Checkout redesign", "")).await;
    run::<v1::Comment>(
        &tenant,
        &ALICE,
        comment(&c, "Customers mention zebra stripes"),
    )
    .await;
    run::<v1::Comment>(&tenant, &ALICE, comment(&d, "Zebra crossing at night")).await;
    let (platypus, _) =
        run::<v1::Comment>(&tenant, &ALICE, comment(&d, "A platypus sighting")).await;
    // Several matches on one item list it once.
    run::<v1::Comment>(&tenant, &ALICE, comment(&a, "checkout also fails on iPad")).await;

    let s = |text: &'static str| search(&tenant, pid, text);
    assert_eq!(
        s("checkout").await.unwrap(),
        ["Checkout button misaligned", "Checkout redesign"]
    );
    assert_eq!(
        s("CHECKOUT").await.unwrap(),
        ["Checkout button misaligned", "Checkout redesign"]
    );
    assert_eq!(s("safari").await.unwrap(), ["Checkout button misaligned"]);
    assert_eq!(s("spreadsheet").await.unwrap(), ["Quarterly report export"]);
    assert_eq!(s("spread*").await.unwrap(), ["Quarterly report export"]);
    assert_eq!(
        s("report export").await.unwrap(),
        ["Quarterly report export"]
    );
    assert_eq!(s("report checkout").await.unwrap(), Vec::<String>::new());
    assert_eq!(
        s("zebra").await.unwrap(),
        ["Refactor settings", "Dark mode"]
    );
    assert_eq!(s("zeb*").await.unwrap(), ["Refactor settings", "Dark mode"]);
    assert_eq!(s("ipad").await.unwrap(), ["Checkout button misaligned"]);
    assert_eq!(s("platypus").await.unwrap(), ["Dark mode"]);

    // A deleted comment no longer matches; a deleted item is not listed.
    run::<v1::Comment>(
        &tenant,
        &ALICE,
        C::DeleteComment(v1::DeleteComment {
            id: platypus.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    assert_eq!(s("platypus").await.unwrap(), Vec::<String>::new());
    assert_eq!(
        s("zebra").await.unwrap(),
        ["Refactor settings", "Dark mode"]
    );
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: e.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    assert_eq!(s("checkout").await.unwrap(), ["Checkout button misaligned"]);

    // The index follows title changes.
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: a.id.clone(),
            expected_version: 1,
            title: Some("Payment button misaligned".into()),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(
        s("misaligned payment").await.unwrap(),
        ["Payment button misaligned"]
    );
    // Still found through its comment.
    assert_eq!(s("checkout").await.unwrap(), ["Payment button misaligned"]);
    assert_eq!(s("button checkout").await.unwrap(), Vec::<String>::new());

    // Quotes, operators and punctuation are plain text, never an error.
    for text in [
        "payment\" OR \"x",
        "NEAR(payment",
        "payment AND",
        "payment OR",
        "NOT payment",
        "-payment",
        "title:payment",
        "description:payment",
        "(payment)",
        "payment^",
        "^payment",
        "'payment'",
        "{payment}",
        "payment;DROP TABLE work_items;--",
        "*payment",
        "pay**",
        "\"payment\"",
        "payment\"",
        "a:b:c",
        "!!!",
        "+",
        "@#$%",
        "'",
        "payment + button",
    ] {
        let found = search(&tenant, pid, text).await;
        assert!(found.is_ok(), "{text:?}: {found:?}");
    }
    assert_eq!(s("(payment)").await.unwrap(), ["Payment button misaligned"]);
    assert_eq!(
        s("\"payment\"").await.unwrap(),
        ["Payment button misaligned"]
    );
    assert_eq!(s("pay**").await.unwrap(), ["Payment button misaligned"]);
    assert_eq!(s("NOT payment").await.unwrap(), Vec::<String>::new());
    // Blank text is no filter at all.
    assert_eq!(s("   ").await.unwrap().len(), 4);

    // Control characters are either searched for or refused as a bad `text`; they are never
    // a storage failure.
    for text in [
        "\u{0}payment",
        "pay\u{0}ment",
        "payment\u{0}",
        "\u{1}payment",
        "\u{7f}",
    ] {
        match search(&tenant, pid, text).await {
            Ok(_) => {}
            Err(err) => assert_invalid(&err, "text"),
        }
    }
}
