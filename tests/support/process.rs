//! What the tests that run the real `pm-server` binary share: starting `serve --dev` and
//! reading its banner, killing a server with SIGKILL, and a client of it.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `pm-server serve --dev` on a free loopback port and `data_dir`, tokens signed with
/// `secret`, no rate limit in the way, quiet logs; the caller adds its own settings.
pub(crate) fn serve_dev(data_dir: &Path, secret: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pm-server"));
    command
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .args(["--set", "limits.requests_per_second=1000000"])
        .args(["--set", "limits.request_burst=1000000"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("PM_JWT_SECRET", secret)
        .env("PM_LOG", "error")
        .stdout(Stdio::piped());
    command
}

/// Starts `command` (from [`serve_dev`]) and waits for its banner: the child and the
/// WebSocket URL it serves.
pub(crate) fn start(mut command: Command) -> (Child, String) {
    let mut child = command.spawn().expect("pm-server starts");
    let url = dev_banner_url(&mut child);
    (child, url)
}

/// Reads what a `serve --dev` child prints at start, up to its last line (or its exit); the
/// WebSocket URL it printed.
fn dev_banner_url(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut url = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("stdout is readable");
        let line = line.trim();
        if let Some(printed) = line.strip_prefix("WebSocket:") {
            url = Some(printed.trim().to_owned());
        }
        if line.starts_with("health:") {
            break;
        }
    }
    url.expect("`serve --dev` prints its WebSocket address")
}

/// SIGKILL; checks that the server was still running until then.
pub(crate) fn kill(mut child: Child) {
    child.kill().expect("SIGKILL is sent");
    let status = child.wait().expect("the killed server is reaped");
    assert_eq!(
        status.signal(),
        Some(9),
        "the server ran until SIGKILL: {status}"
    );
}

/// A `pm-client` of `user` in `tenant` on the server at `url`, whose tokens are signed with
/// `secret`; requests wait at most `wait`, and `event_buffer` events are held for the test.
pub(crate) async fn connect(
    url: &str,
    secret: &str,
    (tenant, user): (&str, &str),
    event_buffer: usize,
    wait: std::time::Duration,
) -> pm_client::Client {
    let token = pm_gateway::auth::mint_hs256(
        secret,
        &pm_core::TenantId::parse(tenant).expect("a valid tenant id"),
        &pm_core::UserId::parse("sub", user).expect("a valid user id"),
        None,
        std::time::Duration::from_secs(24 * 3600),
    )
    .expect("the secret is long enough");
    let options = pm_client::ClientOptions {
        request_timeout: wait,
        event_buffer,
        ..Default::default()
    };
    let (client, welcome) = pm_client::Client::connect(url, token, options)
        .await
        .expect("connected");
    assert_eq!(welcome.tenant_id, tenant);
    client
}
