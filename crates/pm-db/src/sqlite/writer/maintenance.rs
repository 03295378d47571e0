//! The writer's work between groups: control jobs (maintenance queued by callers), pruning
//! the change log, and the batches owed by crossing commits (see `batches`).

use pm_core::time::now_ms;
use std::sync::atomic::Ordering;

use super::Writer;
use crate::error::{Error, Result};
use crate::events::Retention;
use crate::sqlite::batches::Batches;
use crate::sqlite::health::Condition;
use crate::sqlite::queue::Control;
use crate::sqlite::{migrations, people, retention, text_index};

impl Writer {
    pub(super) async fn control(&mut self, control: Control) {
        match control {
            Control::Prune {
                retention,
                now,
                reply,
            } => {
                let _ = reply.send(self.prune(&retention, now).await);
            }
            Control::RememberUser { profile, reply } => {
                let _ = reply.send(people::remember_user(&mut self.conn, &profile, now_ms()).await);
            }
            Control::IndexAndQuery {
                actor,
                query,
                reply,
            } => {
                // Indexing writes: never into a damaged database (its file is never written
                // again), and within the size limit in force. Under a storage fault it is one
                // more try: a failure answers the search with the storage's condition.
                let answer = match self.refuse_if_damaged() {
                    Ok(()) => match self.apply_size_limit().await {
                        Ok(()) => text_index::index_and_run(&mut self.conn, &actor, *query).await,
                        Err(error) => Err(error),
                    },
                    Err(error) => Err(error),
                };
                if answer.is_ok() {
                    self.owed.paid(Batches {
                        log: false,
                        text: true,
                    });
                }
                let _ = reply.send(answer);
            }
            Control::RunOwedBatches { reply } => {
                let ran = match self.refuse_if_damaged() {
                    Ok(()) => self.pay_owed().await,
                    Err(error) => Err(error),
                };
                let _ = reply.send(ran);
            }
            Control::Migrate {
                migrator,
                reply,
                pending,
            } => {
                let result = migrations::apply(&mut self.conn, &migrator).await;
                // A new schema may change what the cached reads would return.
                self.cache.clear();
                // No longer pending: callers stop waiting for room in a full queue.
                drop(pending);
                let _ = reply.send(result);
            }
        }
    }

    /// The quarantine's refusal if the database is damaged: its file is never written again.
    fn refuse_if_damaged(&self) -> Result<()> {
        if self.shared.health.get() != Condition::Damaged {
            return Ok(());
        }
        Err(self
            .safeguards
            .quarantine
            .refusal(&self.tenant)
            .unwrap_or_else(|| Error::StorageIo("the database is damaged".into())))
    }

    /// Runs the batches owed in a transaction of their own, within the size limit in force.
    /// They count as paid either way: after a failure the next crossing owes them again.
    pub(super) async fn pay_owed(&mut self) -> Result<()> {
        let owed = self.owed.get();
        if !owed.any() {
            return Ok(());
        }
        self.owed.paid(owed);
        self.apply_size_limit().await?;
        owed.run(&mut self.conn).await?;
        self.shared
            .stats
            .batch_commits
            .fetch_add(1, Ordering::Relaxed);
        // Its pages are in the WAL like a group's.
        self.count_commit(0);
        Ok(())
    }

    pub(super) async fn prune(&mut self, retention: &Retention, now: i64) -> Result<u64> {
        let deleted = retention::prune(
            &mut self.conn,
            retention,
            self.head,
            now,
            retention::PRUNE_CHUNK,
        )
        .await?;
        if deleted > 0 {
            tracing::debug!(deleted, "change-log events pruned");
            self.shared
                .stats
                .pruned_events
                .fetch_add(deleted, Ordering::Relaxed);
        }
        Ok(deleted)
    }
}
