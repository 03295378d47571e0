//! One group's transaction: the commands and batches the writer applies together, what they
//! leave to write at the end (deferred inserts, change-log rows, idempotency answers), and the
//! one script that writes it and commits.
//!
//! One failing command fails alone: handlers validate before they write and write with a
//! single statement (SQLite undoes a failed statement by itself); the few that write more run
//! in a savepoint, as do atomic batches. On PostgreSQL, where a failed statement aborts the
//! whole transaction, every command runs in a savepoint. How the group commits is the
//! engine's (`commit` beside its writer).

use pm_core::{text, UserId};
use pm_proto::v1;

use super::commands::{self, Applied, Cache, Cx};
use super::dialect::Conn;
use super::idempotency;
use super::pending::Pending;
use crate::error::{Error, Result};
use crate::events::{CommittedEvent, PendingEvent};
use crate::work::Work;

/// What applying commands needs of the writer: its connection inside the group's
/// transaction, its cache, and the batch limit.
pub(crate) struct Tx<'a> {
    pub(crate) conn: &'a mut Conn,
    pub(crate) cache: &'a mut Cache,
    pub(crate) max_batch_commands: usize,
}

/// A command's own outcome; the outer `Result` of the functions below is a storage failure
/// that dooms the whole attempt.
pub(crate) type Outcome = Result<v1::CommandResult>;

/// A group's uncommitted output.
#[derive(Debug)]
pub(crate) struct Group {
    /// The head before the group: its first change gets `base + 1`.
    pub(crate) base: u64,
    pub(crate) events: Vec<PendingEvent>,
    pub(crate) answers: Vec<idempotency::Entry>,
    /// Inside an atomic batch's savepoint: nothing may be deferred past its end.
    pub(crate) in_savepoint: bool,
    pub(crate) pending: Pending,
}

pub(crate) async fn exec(conn: &mut Conn, sql: &str) -> Result<()> {
    sqlx::query(sql).execute(conn).await?;
    Ok(())
}

impl Group {
    pub(crate) fn new(base: u64) -> Self {
        Group {
            base,
            events: Vec::new(),
            answers: Vec::new(),
            in_savepoint: false,
            pending: Pending::default(),
        }
    }

    /// The head once the group is committed.
    pub(crate) fn head(&self) -> u64 {
        self.base + self.events.len() as u64
    }

    /// The group's events as subscribers get them once it is committed (`None`: it changed
    /// nothing), one slice shared by all.
    pub(crate) fn committed(&self) -> Option<std::sync::Arc<[CommittedEvent]>> {
        (!self.events.is_empty()).then(|| self.events.iter().map(CommittedEvent::from).collect())
    }

    fn next_seq(&self) -> u64 {
        self.head() + 1
    }

    fn mark(&self) -> (usize, usize) {
        (self.events.len(), self.answers.len())
    }

    fn rollback_to(&mut self, (events, answers): (usize, usize)) {
        self.events.truncate(events);
        self.answers.truncate(answers);
    }

    /// Numbers the changes of a successful command and builds its result.
    fn push(&mut self, actor: &UserId, now: i64, applied: Applied) -> v1::CommandResult {
        for change in applied.changes {
            let seq = self.next_seq();
            self.events
                .push(PendingEvent::new(seq, now, actor.as_str(), change));
        }
        v1::CommandResult {
            seq: self.head(),
            entity: Some(v1::Entity::of(applied.entity)),
            replayed: false,
            warnings: applied.warnings,
        }
    }

    /// Applies a queued job, filling in its answer; `Err` is a storage failure that dooms
    /// the whole attempt.
    pub(crate) async fn apply(
        &mut self,
        tx: &mut Tx<'_>,
        actor: &UserId,
        work: &mut Work,
        now: i64,
        safe: bool,
    ) -> Result<()> {
        match work {
            Work::Command(command, reply) => {
                let outcome = self.command(tx, actor, command, now, safe).await?;
                reply.result = Some(Box::new(outcome));
            }
            Work::Batch(batch, reply) => {
                let outcome = self.batch(tx, actor, batch, now, safe).await?;
                reply.result = Some(Box::new(outcome));
            }
        }
        Ok(())
    }

    /// Applies one command. `Ok(Err(_))` is the command's own failure.
    pub(crate) async fn command(
        &mut self,
        tx: &mut Tx<'_>,
        actor: &UserId,
        command: &v1::Command,
        now: i64,
        savepoint: bool,
    ) -> Result<Outcome> {
        let Some(kind) = &command.kind else {
            return Ok(Err(Error::invalid(
                "kind",
                "the command names no operation",
            )));
        };
        let key = command.idempotency_key.as_str();
        let hash = if key.is_empty() {
            None
        } else {
            if let Err(e) = text::idempotency_key("idempotency_key", key) {
                return Ok(Err(e.into()));
            }
            let hash = idempotency::command_hash(command);
            let earlier = self
                .answers
                .iter()
                .find(|a| a.user_id == actor.as_str() && a.key == key)
                .map(|a| (a.command_hash, a.result.clone()));
            let earlier = match earlier {
                Some(found) => Some(found),
                None => idempotency::lookup(tx.conn, actor.as_str(), key, now).await?,
            };
            if let Some((stored_hash, result)) = earlier {
                return Ok(replay(stored_hash, hash, result));
            }
            Some(hash)
        };

        let savepoint = savepoint || commands::needs_savepoint(kind);
        let defer = !savepoint && !self.in_savepoint && commands::defers_writes(kind);
        if !defer {
            self.pending.flush(tx.conn).await?;
            self.pending.begin(tx.conn).await?;
        }
        if savepoint {
            exec(tx.conn, "SAVEPOINT command").await?;
        }
        let next_seq = self.next_seq();
        let mut cx = Cx {
            conn: &mut *tx.conn,
            cache: &mut *tx.cache,
            actor,
            now,
            next_seq,
            deferred: defer.then_some(&mut self.pending),
        };
        match commands::apply(&mut cx, kind).await {
            Ok(applied) => {
                if savepoint {
                    exec(tx.conn, "RELEASE command").await?;
                }
                let result = self.push(actor, now, applied);
                if let Some(command_hash) = hash {
                    self.answers.push(idempotency::Entry {
                        user_id: actor.as_str().to_owned(),
                        key: key.to_owned(),
                        created_at: now,
                        command_hash,
                        result: result.clone(),
                    });
                }
                Ok(Ok(result))
            }
            Err(error) if savepoint => {
                exec(tx.conn, "ROLLBACK TO command").await?;
                exec(tx.conn, "RELEASE command").await?;
                tx.cache.clear();
                if error.is_internal() {
                    tracing::error!(%error, "command failed on a storage error");
                }
                Ok(Err(error))
            }
            // Without a savepoint an unexpected error or a storage fault may have left the
            // transaction in an unknown state (SQLite rolls the whole transaction back on some
            // of them): give up on this attempt.
            Err(error) if error.is_internal() || error.is_storage_fault() => Err(error),
            Err(error) => Ok(Err(error)),
        }
    }

    /// Applies a batch: each command on its own, or an atomic one all or nothing.
    pub(crate) async fn batch(
        &mut self,
        tx: &mut Tx<'_>,
        actor: &UserId,
        batch: &v1::Batch,
        now: i64,
        safe: bool,
    ) -> Result<Result<v1::BatchResult>> {
        if batch.commands.is_empty() {
            return Ok(Err(Error::invalid(
                "commands",
                "a batch needs at least one command",
            )));
        }
        if batch.commands.len() > tx.max_batch_commands {
            return Ok(Err(Error::TooLarge(format!(
                "a batch holds at most {} commands",
                tx.max_batch_commands
            ))));
        }
        if !batch.atomic {
            let mut outcomes = Vec::with_capacity(batch.commands.len());
            for (i, command) in batch.commands.iter().enumerate() {
                let outcome = self.command(tx, actor, command, now, safe).await?;
                outcomes.push(outcome_of(
                    outcome.map_err(|e| e.with_field_prefix(&format!("commands[{i}]"))),
                ));
            }
            return Ok(Ok(v1::BatchResult { outcomes }));
        }

        self.pending.flush(tx.conn).await?;
        self.pending.begin(tx.conn).await?;
        exec(tx.conn, "SAVEPOINT batch").await?;
        let mark = self.mark();
        self.in_savepoint = true;
        let mut outcomes = Vec::with_capacity(batch.commands.len());
        for (i, command) in batch.commands.iter().enumerate() {
            let failure = match self.command(tx, actor, command, now, false).await {
                Ok(Ok(result)) => {
                    outcomes.push(outcome_of(Ok(result)));
                    continue;
                }
                Ok(Err(error)) => error,
                Err(error) if safe => error,
                Err(error) => {
                    self.in_savepoint = false;
                    return Err(error);
                }
            };
            self.in_savepoint = false;
            exec(tx.conn, "ROLLBACK TO batch").await?;
            exec(tx.conn, "RELEASE batch").await?;
            self.rollback_to(mark);
            tx.cache.clear();
            return Ok(Err(failure.with_field_prefix(&format!("commands[{i}]"))));
        }
        self.in_savepoint = false;
        exec(tx.conn, "RELEASE batch").await?;
        Ok(Ok(v1::BatchResult { outcomes }))
    }
}

/// The stored answer to a repeated idempotency key, unless the key came with another command.
fn replay(stored_hash: i64, hash: i64, mut result: v1::CommandResult) -> Outcome {
    if stored_hash != hash {
        return Err(Error::invalid(
            "idempotency_key",
            "was already used for a different command",
        ));
    }
    result.replayed = true;
    Ok(result)
}

fn outcome_of(outcome: Outcome) -> v1::CommandOutcome {
    v1::CommandOutcome {
        outcome: Some(match outcome {
            Ok(result) => v1::command_outcome::Outcome::CommandResult(result),
            Err(error) => v1::command_outcome::Outcome::Error(error.to_wire()),
        }),
    }
}
