//! Frame decoding plus the validation every field goes through, on arbitrary bytes: the
//! gateway's first steps on every frame, without I/O. Crashes are panics (there is no
//! `unsafe` code to corrupt memory).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pm_core::{rank, rules, text, EntityId, TenantId, UserId};
use pm_proto::convert;
use pm_proto::v1::{self, client_frame::Body as In, command::Kind as Cmd, query::Kind as Q};
use prost::Message;

fn verifier() -> &'static pm_gateway::auth::Verifier {
    static VERIFIER: OnceLock<pm_gateway::auth::Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        pm_gateway::auth::Verifier::new(&pm_gateway::settings::AuthSettings {
            secret: "a-fuzzing-secret-of-at-least-32-bytes".into(),
            ..Default::default()
        })
        .expect("a valid configuration")
    })
}

fn id(field: &str, raw: &str) {
    let _ = EntityId::parse(field, raw);
}

fn command(c: &v1::Command) {
    let _ = text::idempotency_key("idempotency_key", &c.idempotency_key);
    let Some(kind) = &c.kind else { return };
    match kind {
        Cmd::CreateProject(c) => {
            let _ = text::project_key("key", &c.key);
            let _ = text::single_line("name", &c.name, text::MAX_NAME);
            let _ = text::multi_line("description", &c.description, text::MAX_LONG_TEXT);
        }
        Cmd::AddMember(c) => {
            id("project_id", &c.project_id);
            let _ = UserId::parse("user_id", &c.user_id);
            let _ = convert::role("role", c.role);
        }
        Cmd::CreateWorkItem(c) => {
            id("project_id", &c.project_id);
            let _ = text::single_line("title", &c.title, text::MAX_TITLE);
            let _ = text::multi_line("description", &c.description, text::MAX_LONG_TEXT);
            let _ = convert::work_item_type("item_type", c.item_type);
            let _ = convert::work_item_status("status", c.status);
            let _ = convert::priority("priority", c.priority);
            if let Some(points) = c.story_points {
                let _ = rules::check_story_points(points);
            }
        }
        Cmd::UpdateWorkItem(c) => {
            id("id", &c.id);
            let _ = rules::check_expected_version(c.expected_version);
            if let Some(title) = &c.title {
                let _ = text::single_line("title", title, text::MAX_TITLE);
            }
        }
        Cmd::MoveWorkItem(c) => {
            id("id", &c.id);
            let _ = rank::between(c.after_id.as_deref(), c.before_id.as_deref());
            if let Some(after) = &c.after_id {
                let _ = rank::check(after);
            }
        }
        Cmd::CreateSprint(c) => {
            if let Some(at) = c.start_at {
                let _ = rules::check_timestamp("start_at", at);
            }
            if let Some(at) = c.end_at {
                let _ = rules::check_timestamp("end_at", at);
            }
        }
        Cmd::CreateTimeEntry(c) => {
            let _ = rules::check_timestamp("started_at", c.started_at);
            let _ = rules::check_timestamp("ended_at", c.ended_at);
        }
        Cmd::CreateDependency(c) => {
            let _ = rules::check_dependency_ends(&c.blocking_item_id, &c.blocked_item_id);
            let _ = convert::dependency_type("dependency_type", c.dependency_type);
        }
        Cmd::CreateSwimLane(c) => {
            let _ = text::single_line("name", &c.name, text::MAX_LANE_NAME);
            if let Some(limit) = c.wip_limit {
                let _ = rules::check_wip_limit(limit);
            }
            let _ = convert::wip_policy("wip_policy", c.wip_policy);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = v1::ServerFrame::decode(data);
    let Ok(frame) = v1::ClientFrame::decode(data) else {
        return;
    };
    // Whatever decodes re-encodes to bytes that decode to the same frame.
    let again =
        v1::ClientFrame::decode(&frame.encode_to_vec()[..]).expect("a re-encoded frame decodes");
    assert_eq!(again, frame);
    match &frame.body {
        Some(In::Hello(hello)) => {
            let _ = verifier().verify(&hello.token);
            let _ = TenantId::parse(&hello.client_name);
        }
        Some(In::RefreshToken(refresh)) => {
            let _ = verifier().verify(&refresh.token);
        }
        Some(In::Command(c)) => command(c),
        Some(In::Batch(b)) => b.commands.iter().for_each(command),
        Some(In::Subscribe(s)) => {
            for raw in &s.project_ids {
                id("project_ids", raw);
            }
            for raw in &s.entity_types {
                let _ = convert::entity_type("entity_types", *raw);
            }
        }
        Some(In::Query(v1::Query {
            kind: Some(Q::GetWorkItem(get)),
        })) => {
            let _ = text::parse_display_key("display_key", &get.display_key);
            id("id", &get.id);
        }
        _ => {}
    }
});
