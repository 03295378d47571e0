//! CPU time over a measured phase: the server's and pm-load's own.
//!
//! On a machine the generator shares with the server, throughput says as much about the
//! generator as about the server. The server's CPU per operation does not depend on what the
//! generator takes, and `cores / (CPU per operation)` is what the server alone could serve.
//!
//! The server's time comes from `/proc/<pid>/stat` with `--server-pid`, otherwise from
//! `process_cpu_seconds_total` on its `/metrics` (one node only: a cluster's nodes are
//! separate processes). pm-load's own comes from `/proc/self/stat`. Off Linux, or against a
//! server without the metric, the figures are left out of the report.

use std::time::Instant;

use crate::report::Report;
use crate::target::{metric, metrics, Target};

/// Clock ticks per second of `/proc`'s times (`USER_HZ`: 100 on every Linux architecture).
const USER_HZ: f64 = 100.0;

/// CPU seconds at the start of a measured phase.
#[derive(Debug)]
pub struct CpuClock {
    server: Option<f64>,
    own: Option<f64>,
    started: Instant,
}

impl CpuClock {
    /// Reads both clocks now.
    pub async fn start(target: &Target) -> CpuClock {
        CpuClock {
            server: server_cpu(target).await,
            own: process_cpu("self"),
            started: Instant::now(),
        }
    }

    /// Reads both clocks again: what was used since [`CpuClock::start`].
    pub async fn stop(self, target: &Target) -> CpuUsed {
        let wall = self.started.elapsed().as_secs_f64();
        let server = self.server.zip(server_cpu(target).await);
        let own = self.own.zip(process_cpu("self"));
        CpuUsed {
            server: server.map(|(before, after)| after - before),
            own: own.map(|(before, after)| after - before),
            wall,
        }
    }
}

/// CPU seconds used over a measured phase of `wall` seconds.
#[derive(Debug, Clone, Copy)]
pub struct CpuUsed {
    server: Option<f64>,
    own: Option<f64>,
    wall: f64,
}

impl CpuUsed {
    /// Adds the figures to `report`: in all, in cores busy, and (for the server) per
    /// operation of `operations` done.
    pub fn report(&self, report: &mut Report, operations: u64, per: &str) {
        if let Some(used) = self.server {
            report.figure("server CPU", used, "s");
            report.figure("server cores busy", used / self.wall, "cores");
            if operations > 0 {
                report.figure(
                    &format!("server CPU per {per}"),
                    used * 1e6 / operations as f64,
                    "µs",
                );
            }
        }
        if let Some(used) = self.own {
            report.figure("pm-load CPU", used, "s");
            report.figure("pm-load cores busy", used / self.wall, "cores");
        }
    }
}

async fn server_cpu(target: &Target) -> Option<f64> {
    if let Some(pid) = target.server_pid {
        return process_cpu(&pid.to_string());
    }
    if target.nodes() != 1 {
        return None;
    }
    let text = metrics(target).await.ok()?;
    metric(&text, "process_cpu_seconds_total")
}

/// User plus system CPU seconds of `/proc/<pid>/stat`.
fn process_cpu(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_seconds(&stat)
}

/// `utime + stime` (fields 14 and 15 of proc(5)) in seconds, counted after the command
/// name's last `)`, since the name may hold spaces and parentheses.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_are_read_past_the_command_name() {
        let stat = "77 (pm load) (x) R 1 77 77 0 -1 4194304 10 0 0 0 250 75 0 0 20 0 3 0 9";
        assert_eq!(cpu_seconds(stat), Some(3.25));
        assert_eq!(cpu_seconds("77 (pm-load) R 1 77"), None);
        assert!(process_cpu("self").is_some_and(|s| s >= 0.0));
    }
}
