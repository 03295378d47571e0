//! What the tests that run the real `pm-server` binary share: reading the banner of
//! `serve --dev` and killing a server with SIGKILL.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::Child;

/// Reads what a `serve --dev` child prints at start, up to its last line (or its exit); the
/// WebSocket URL it printed.
pub(crate) fn dev_banner_url(child: &mut Child) -> String {
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
