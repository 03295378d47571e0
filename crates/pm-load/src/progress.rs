//! A progress bar on stderr, drawn only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Redraws once a second until dropped.
#[derive(Debug)]
pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Shows `label`, a bar filling over `planned`, and `counter` with its rate per second
    /// (labelled `unit`). Does nothing unless `enabled` and stderr is a terminal.
    pub fn start(
        enabled: bool,
        label: &'static str,
        unit: &'static str,
        planned: Duration,
        counter: Arc<AtomicU64>,
    ) -> Progress {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress { task: None };
        }
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            let mut last = 0;
            loop {
                ticker.tick().await;
                let now = counter.load(Ordering::Relaxed);
                let elapsed = started.elapsed();
                let done = (elapsed.as_secs_f64() / planned.as_secs_f64().max(0.001)).min(1.0);
                let filled = (done * 30.0) as usize;
                let _ = write!(
                    std::io::stderr(),
                    "\r{label} [{}{}] {:>4.0}s/{:.0}s {now} {unit} ({}/s)   ",
                    "#".repeat(filled),
                    " ".repeat(30 - filled),
                    elapsed.as_secs_f64(),
                    planned.as_secs_f64(),
                    now.saturating_sub(last),
                );
                last = now;
            }
        });
        Progress { task: Some(task) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = write!(std::io::stderr(), "\r{:80}\r", "");
        }
    }
}
