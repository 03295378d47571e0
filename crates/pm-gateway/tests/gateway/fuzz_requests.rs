//! Property tests over a live connection, requests: well-formed but wrong commands, queries
//! and batches, from an admin, a viewer and an outsider in turn. Whatever arrives, the server
//! never panics, answers every request exactly once with a result or a coded error (never
//! `INTERNAL`, never text that names SQL or files), and keeps serving other connections.
//! Random and mutated frames are in `fuzz_frames`.
//!
//! Inputs come from proptest strategies drawn with a `TestRunner` inside the async test (one
//! server for all cases). A failing case prints its input; the runner's seed is random per
//! run, so CI explores new inputs each time.

use proptest::collection::vec;
use proptest::prelude::*;

use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use pm_proto::v1::response::Result as Out;
use v1::command::Kind as Cmd;
use v1::query::Kind as Q;

use crate::support::*;

/// Commands and queries per run: a second or two on a loaded machine.
const CASES: u32 = 256;

/// Field values that are well formed on the wire and wrong in many ways.
#[derive(Debug, Clone)]
struct Values {
    s: [String; 4],
    o: [Option<String>; 3],
    n: [u64; 2],
    t: [i64; 2],
    e: [i32; 3],
    u: u32,
    b: bool,
    list: Vec<String>,
}

fn text(known: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        8 => proptest::sample::select(known),
        1 => "[a-zA-Z0-9 _-]{0,24}",
        1 => any::<String>().prop_map(|s| s.chars().take(40).collect()),
        1 => Just("../../etc/passwd".to_owned()),
        1 => Just("' OR 1=1 --".to_owned()),
        1 => Just("\"; DROP TABLE projects; --".to_owned()),
        1 => Just("NEAR(a b) OR title:* AND \"".to_owned()),
        1 => Just("\0".to_owned()),
        1 => Just("\u{202e}\u{200b}\u{ff41}".to_owned()),
        1 => Just("x".repeat(501)),
        1 => Just("PM-1".to_owned()),
        1 => Just("PM-99999999999999999999".to_owned()),
        1 => Just(uuid::Uuid::nil().to_string()),
        1 => Just("ffffffff-ffff-ffff-ffff-ffffffffffff".to_owned()),
        1 => any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
    ]
}

fn values(known: Vec<String>) -> impl Strategy<Value = Values> {
    let s = || text(known.clone());
    let number = prop_oneof![Just(0u64), Just(1), Just(2), Just(u64::MAX), any::<u64>()];
    let time = prop_oneof![
        Just(0i64),
        Just(-1),
        Just(i64::MIN),
        Just(i64::MAX),
        Just(1_700_000_000_000),
        Just(253_402_300_800_000),
        any::<i64>()
    ];
    let enumeration = prop_oneof![-1i32..8, Just(99), Just(i32::MAX), Just(i32::MIN)];
    (
        [s(), s(), s(), s()],
        [
            proptest::option::of(s()),
            proptest::option::of(s()),
            proptest::option::of(s()),
        ],
        [number.clone(), number],
        [time.clone(), time],
        [enumeration.clone(), enumeration.clone(), enumeration],
        prop_oneof![Just(0u32), Just(1), Just(100), Just(u32::MAX), any::<u32>()],
        any::<bool>(),
        vec(s(), 0..4),
    )
        .prop_map(|(s, o, n, t, e, u, b, list)| Values {
            s,
            o,
            n,
            t,
            e,
            u,
            b,
            list,
        })
}

/// One of 38 commands, built from `v`.
fn command(which: usize, v: Values) -> Cmd {
    let Values {
        s: [a, b, c, d],
        o: [x, y, z],
        n: [n, m],
        t: [t, t2],
        e: [e, e2, e3],
        u,
        b: flag,
        list,
    } = v;
    let opt_t = flag.then_some(t2);
    match which % 38 {
        0 => Cmd::CreateProject(v1::CreateProject {
            key: a,
            name: b,
            description: c,
        }),
        1 => Cmd::UpdateProject(v1::UpdateProject {
            id: a,
            expected_version: n,
            name: x,
            description: y,
            status: flag.then_some(e),
        }),
        2 => Cmd::DeleteProject(v1::DeleteProject {
            id: a,
            expected_version: n,
        }),
        3 => Cmd::RestoreProject(v1::RestoreProject {
            id: a,
            expected_version: n,
        }),
        4 => Cmd::AddMember(v1::AddMember {
            project_id: a,
            user_id: b,
            role: e,
        }),
        5 => Cmd::UpdateMember(v1::UpdateMember {
            project_id: a,
            user_id: b,
            expected_version: n,
            role: e,
        }),
        6 => Cmd::RemoveMember(v1::RemoveMember {
            project_id: a,
            user_id: b,
            expected_version: n,
        }),
        7 => Cmd::CreateWorkItem(v1::CreateWorkItem {
            project_id: a,
            item_type: e,
            parent_id: x,
            title: b,
            description: c,
            status: e2,
            priority: e3,
            story_points: flag.then_some(u),
            assignee_id: y,
            sprint_id: z,
        }),
        8 => Cmd::UpdateWorkItem(v1::UpdateWorkItem {
            id: a,
            expected_version: n,
            title: x,
            description: y,
            status: flag.then_some(e),
            priority: flag.then_some(e2),
            story_points: flag.then_some(u),
            assignee_id: z,
            clear_fields: list,
        }),
        9 => Cmd::DeleteWorkItem(v1::DeleteWorkItem {
            id: a,
            expected_version: n,
        }),
        10 => Cmd::MoveWorkItem(v1::MoveWorkItem {
            id: a,
            expected_version: n,
            status: flag.then_some(e),
            after_id: x,
            before_id: y,
            sprint_id: z,
            parent_id: flag.then_some(b),
        }),
        11 => Cmd::RestoreWorkItem(v1::RestoreWorkItem {
            id: a,
            expected_version: n,
        }),
        12 => Cmd::CreateSprint(v1::CreateSprint {
            project_id: a,
            name: b,
            goal: c,
            start_at: flag.then_some(t),
            end_at: opt_t,
        }),
        13 => Cmd::UpdateSprint(v1::UpdateSprint {
            id: a,
            expected_version: n,
            name: x,
            goal: y,
            status: flag.then_some(e),
            start_at: Some(t),
            end_at: opt_t,
            clear_fields: list,
        }),
        14 => Cmd::DeleteSprint(v1::DeleteSprint {
            id: a,
            expected_version: n,
        }),
        15 => Cmd::RestoreSprint(v1::RestoreSprint {
            id: a,
            expected_version: n,
        }),
        16 => Cmd::CreateComment(v1::CreateComment {
            work_item_id: a,
            content: b,
        }),
        17 => Cmd::UpdateComment(v1::UpdateComment {
            id: a,
            expected_version: n,
            content: b,
        }),
        18 => Cmd::DeleteComment(v1::DeleteComment {
            id: a,
            expected_version: n,
        }),
        19 => Cmd::RestoreComment(v1::RestoreComment {
            id: a,
            expected_version: n,
        }),
        20 => Cmd::CreateTimeEntry(v1::CreateTimeEntry {
            work_item_id: a,
            started_at: t,
            ended_at: t2,
            description: b,
        }),
        21 => Cmd::UpdateTimeEntry(v1::UpdateTimeEntry {
            id: a,
            expected_version: n,
            started_at: Some(t),
            ended_at: opt_t,
            description: x,
        }),
        22 => Cmd::DeleteTimeEntry(v1::DeleteTimeEntry {
            id: a,
            expected_version: n,
        }),
        23 => Cmd::RestoreTimeEntry(v1::RestoreTimeEntry {
            id: a,
            expected_version: n,
        }),
        24 => Cmd::StartTimer(v1::StartTimer {
            work_item_id: a,
            description: b,
        }),
        25 => Cmd::StopTimer(v1::StopTimer {}),
        26 => Cmd::CreateDependency(v1::CreateDependency {
            blocking_item_id: a,
            blocked_item_id: b,
            dependency_type: e,
        }),
        27 => Cmd::UpdateDependency(v1::UpdateDependency {
            id: a,
            expected_version: n,
            dependency_type: e,
        }),
        28 => Cmd::DeleteDependency(v1::DeleteDependency {
            id: a,
            expected_version: n,
        }),
        29 => Cmd::RestoreDependency(v1::RestoreDependency {
            id: a,
            expected_version: n,
        }),
        30 => Cmd::CreateSwimLane(v1::CreateSwimLane {
            project_id: a,
            name: b,
            status: e,
            position: u,
            wip_limit: flag.then_some(u),
            wip_policy: e2,
        }),
        31 => Cmd::UpdateSwimLane(v1::UpdateSwimLane {
            id: a,
            expected_version: n,
            name: x,
            status: flag.then_some(e),
            position: Some(u),
            wip_limit: flag.then_some(m as u32),
            clear_fields: list,
            wip_policy: flag.then_some(e3),
        }),
        32 => Cmd::DeleteSwimLane(v1::DeleteSwimLane {
            id: a,
            expected_version: n,
        }),
        33 => Cmd::RestoreSwimLane(v1::RestoreSwimLane {
            id: a,
            expected_version: n,
        }),
        34 => Cmd::CreateLlmContext(v1::CreateLlmContext {
            project_id: a,
            category: e,
            title: b,
            content: c,
            priority: e2,
        }),
        35 => Cmd::UpdateLlmContext(v1::UpdateLlmContext {
            id: a,
            expected_version: n,
            category: flag.then_some(e),
            title: x,
            content: y,
            priority: Some(e2),
        }),
        36 => Cmd::DeleteLlmContext(v1::DeleteLlmContext {
            id: a,
            expected_version: n,
        }),
        _ => Cmd::RestoreLlmContext(v1::RestoreLlmContext {
            id: d,
            expected_version: m,
        }),
    }
}

/// How many kinds of query [`query`] builds.
const QUERIES: usize = 24;

/// One of the [`QUERIES`] queries, built from `v`.
fn query(which: usize, v: Values) -> Q {
    let Values {
        s: [a, b, _, d],
        o: [x, y, z],
        t: [t, t2],
        e: [e, e2, _],
        u,
        b: flag,
        ..
    } = v;
    let page = Some(v1::PageRequest {
        page_size: u,
        page_token: d,
    });
    match which % QUERIES {
        0 => Q::GetProject(v1::GetProject { id: a }),
        1 => Q::ListProjects(v1::ListProjects {
            page,
            include_deleted: flag,
            status: flag.then_some(e),
        }),
        2 => Q::ListMembers(v1::ListMembers {
            project_id: a,
            page,
        }),
        3 => Q::GetWorkItem(v1::GetWorkItem {
            id: a,
            display_key: b,
        }),
        4 => Q::ListWorkItems(v1::ListWorkItems {
            project_id: a,
            page,
            sprint_id: x,
            statuses: vec![e; (t.unsigned_abs() % 4) as usize],
            assignee_id: y,
            item_type: flag.then_some(e),
            parent_id: flag.then_some(b.clone()),
            text: b,
            include_deleted: flag,
        }),
        5 => Q::GetSprint(v1::GetSprint { id: a }),
        6 => Q::ListSprints(v1::ListSprints {
            project_id: a,
            page,
            status: flag.then_some(e),
            include_deleted: flag,
        }),
        7 => Q::GetComment(v1::GetComment { id: a }),
        8 => Q::ListComments(v1::ListComments {
            work_item_id: a,
            page,
            include_deleted: flag,
        }),
        9 => Q::GetTimeEntry(v1::GetTimeEntry { id: a }),
        10 => Q::ListTimeEntries(v1::ListTimeEntries {
            project_id: a,
            page,
            work_item_id: x,
            user_id: y,
            include_deleted: flag,
        }),
        11 => Q::GetDependency(v1::GetDependency { id: a }),
        12 => Q::ListDependencies(v1::ListDependencies {
            project_id: a,
            page,
            work_item_id: x,
            include_deleted: flag,
            direction: e,
            dependency_type: flag.then_some(e2),
        }),
        13 => Q::GetSwimLane(v1::GetSwimLane { id: a }),
        14 => Q::ListSwimLanes(v1::ListSwimLanes {
            project_id: a,
            page,
            include_deleted: flag,
        }),
        15 => Q::GetLlmContext(v1::GetLlmContext { id: a }),
        16 => Q::ListLlmContext(v1::ListLlmContext {
            project_id: a,
            page,
            category: flag.then_some(e),
            include_deleted: flag,
        }),
        17 => Q::ListActivity(v1::ListActivity {
            page,
            project_id: a,
            entity_type: flag.then_some(e),
            entity_id: b,
            actor_id: x.unwrap_or_default(),
            oldest_first: flag,
        }),
        18 => Q::GetBoardSummary(v1::GetBoardSummary {
            project_id: a,
            sprint_id: x,
        }),
        19 => Q::GetWorkItemHierarchy(v1::GetWorkItemHierarchy {
            id: a,
            include_deleted: flag,
        }),
        20 => Q::GetRunningTimer(v1::GetRunningTimer {}),
        21 => Q::Search(v1::Search {
            text: a,
            page,
            entity_types: if flag { vec![e] } else { vec![] },
            project_id: b,
        }),
        22 => Q::ListUsers(v1::ListUsers {
            page,
            project_id: a,
        }),
        _ => Q::GetTimeTotals(v1::GetTimeTotals {
            project_id: a,
            work_item_id: x,
            sprint_id: y,
            user_id: z,
            start_at: flag.then_some(t),
            end_at: Some(t2),
            group_by: e,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_formed_but_wrong_commands_and_queries_get_coded_errors() {
    let app = spawn_app_with(|s| {
        s.limits.requests_per_second = 1_000_000;
        s.limits.request_burst = 1_000_000;
    })
    .await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (item, _) = alice.create_item(&project.id, "target").await;
    let (other, _) = alice.create_item(&project.id, "other").await;
    alice
        .add_member(&project.id, "victor", v1::ProjectRole::Viewer)
        .await;
    // A project the fuzzing never names: the fuzzed requests may legitimately delete,
    // archive or leave `PM` (the admin is among the fuzzing users), and the check after them
    // must not depend on what they did.
    let untouched = alice.create_project("ZZ").await;
    let known = vec![
        project.id.clone(),
        item.id.clone(),
        other.id.clone(),
        "alice".to_owned(),
        "victor".to_owned(),
        "PM".to_owned(),
        "assignee_id".to_owned(),
        "sprint_id".to_owned(),
    ];
    let (mut bystander, _) = app.client("acme", "alice").await;
    let head = bystander.subscribe(0).await.expect("subscribed");
    // The fuzzing users: the admin, a viewer and an outsider, in turn.
    let mut clients = Vec::new();
    for user in ["alice", "victor", "mallory"] {
        clients.push(app.client("acme", user).await.0);
    }

    let strategy = (0usize..38 + QUERIES + 2, values(known));
    let mut runner = runner(CASES);
    let mut refused = std::collections::BTreeMap::<String, u32>::new();
    let mut accepted = 0;
    for case in 0..CASES as usize {
        let (which, v) = draw(&mut runner, &strategy);
        let body = match which {
            0..=37 => In::Command(v1::Command {
                idempotency_key: if v.b { v.s[3].clone() } else { String::new() },
                kind: Some(command(which, v)),
            }),
            n if n < 38 + QUERIES => In::Query(v1::Query {
                kind: Some(query(which - 38, v)),
            }),
            _ => In::Batch(v1::Batch {
                commands: (0..3)
                    .map(|i| v1::Command {
                        idempotency_key: String::new(),
                        kind: Some(command(which + i * 7, v.clone())),
                    })
                    .collect(),
                atomic: v.b,
            }),
        };
        let client = &mut clients[case % 3];
        let shown = format!("{body:?}");
        match client.request(body).await {
            Out::Error(e) => {
                assert_coded(&e, &shown);
                let code = v1::ErrorCode::try_from(e.code).expect("checked");
                *refused.entry(code.as_str_name().to_owned()).or_default() += 1;
            }
            Out::BatchResult(r) => {
                for outcome in r.outcomes {
                    if let Some(v1::command_outcome::Outcome::Error(e)) = outcome.outcome {
                        assert_coded(&e, &shown);
                    }
                }
            }
            Out::CommandResult(_) | Out::QueryResult(_) => accepted += 1,
            other => panic!("unexpected {other:?} for {shown}"),
        }
    }
    assert!(refused.len() >= 2, "{refused:?}");
    eprintln!("{CASES} requests: {accepted} accepted, refused {refused:?}");

    // The bystander still gets its events in order (those of projects the fuzzing users
    // created are not alice's), and a new one arrives live.
    let (fresh, seq) = alice.create_item(&untouched.id, "after the fuzz").await;
    let mut last = 0;
    loop {
        let event = bystander.event().await;
        assert!(
            event.seq > last,
            "{} after {last} (head was {head})",
            event.seq
        );
        last = event.seq;
        if event.seq == seq {
            assert_eq!(event.entity_id, fresh.id);
            break;
        }
    }
}
