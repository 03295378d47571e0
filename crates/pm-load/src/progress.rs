//! A progress bar on stderr, drawn only when stderr is a terminal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Redraws once a second until dropped.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
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
        // indicatif's stderr target is hidden when stderr is not a terminal.
        let bar = if enabled {
            ProgressBar::new(planned.as_secs().max(1))
        } else {
            ProgressBar::hidden()
        };
        if bar.is_hidden() {
            return Progress { bar, task: None };
        }
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos:>4}s/{len}s {msg}")
            .expect("the template is valid")
            .progress_chars("# ");
        bar.set_style(style);
        bar.set_prefix(label);
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            let mut last = 0;
            loop {
                ticker.tick().await;
                let now = counter.load(Ordering::Relaxed);
                shown.set_message(format!("{now} {unit} ({}/s)", now.saturating_sub(last)));
                // The bar stops at its length; the seconds go on if the run overruns.
                shown.set_position(shown.elapsed().as_secs());
                last = now;
            }
        });
        Progress {
            bar,
            task: Some(task),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.bar.finish_and_clear();
    }
}
