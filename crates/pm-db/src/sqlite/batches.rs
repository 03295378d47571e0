//! The batches a SQLite writer runs besides its commands: the change log's pairs by actor,
//! project and entity ([`changelog::INDEX_BATCH`], due every [`changelog::LOG_BATCH`] seqs)
//! and the text waiting for the full-text indexes ([`text_index::INDEX_TEXT`], due every
//! [`text_index::TEXT_BATCH`] seqs).
//!
//! Run inside the commit that crossed a multiple, a batch made every caller of that group wait
//! for it, and at a steady rate those were the slowest answers. So a crossing commit leaves its
//! batch owed ([`Owed`]), and the writer runs what is owed in a transaction of its own once the
//! group's answers are out and nothing is queued. A load that never lets the queue empty does
//! not starve a batch: the commit that crosses the next multiple folds the owed batch into its
//! own script, as every crossing commit did before, so neither falls more than two batches
//! behind. When a batch runs never changes an answer: the log's readers read the pairs up to
//! the batch's bound and the log past it, and a search indexes whatever waits before it reads.

use sqlx::SqliteConnection;

use super::group::exec;
use super::{changelog, text_index};
use crate::error::Result;

/// A choice of the two batches.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batches {
    /// The change log's pairs by actor, project and entity.
    pub(crate) log: bool,
    /// The waiting text.
    pub(crate) text: bool,
}

impl Batches {
    /// The batches a commit that takes the head from `base` to `head` crosses a multiple of.
    pub(crate) fn crossed(base: u64, head: u64) -> Self {
        Batches {
            log: base / changelog::LOG_BATCH != head / changelog::LOG_BATCH,
            text: base / text_index::TEXT_BATCH != head / text_index::TEXT_BATCH,
        }
    }

    /// Whether either is chosen.
    pub(crate) fn any(self) -> bool {
        self.log || self.text
    }

    /// Appends the chosen batches' SQL to a script, each statement ended.
    pub(crate) fn push_sql(self, sql: &mut String) {
        if self.log {
            sql.push_str(changelog::INDEX_BATCH);
            sql.push_str(";\n");
        }
        if self.text {
            sql.push_str(text_index::INDEX_TEXT);
            sql.push_str(";\n");
        }
    }

    /// Runs the chosen batches in a transaction of their own, rolled back if they fail.
    pub(crate) async fn run(self, conn: &mut SqliteConnection) -> Result<()> {
        if !self.any() {
            return Ok(());
        }
        let mut sql = String::from("BEGIN IMMEDIATE;\n");
        self.push_sql(&mut sql);
        sql.push_str("COMMIT");
        let ran = exec(conn, &sql).await;
        if ran.is_err() {
            text_index::roll_back(conn).await;
        }
        ran
    }
}

/// The batches a writer owes: crossed by a commit that did not run them.
#[derive(Debug, Default)]
pub(crate) struct Owed(Batches);

impl Owed {
    /// What is owed now.
    pub(crate) fn get(&self) -> Batches {
        self.0
    }

    /// The batches a commit from `base` to `head` runs in its own script: those it crosses a
    /// multiple of while they are still owed from an earlier one.
    pub(crate) fn folded(&self, base: u64, head: u64) -> Batches {
        let crossed = Batches::crossed(base, head);
        Batches {
            log: crossed.log && self.0.log,
            text: crossed.text && self.0.text,
        }
    }

    /// Records a commit from `base` to `head`: a batch it crossed and did not fold in is
    /// owed, one it folded in ([`Owed::folded`]) is not.
    pub(crate) fn committed(&mut self, base: u64, head: u64) {
        let crossed = Batches::crossed(base, head);
        // Crossed while owed: folded in, so paid. Crossed while not owed: owed from now on.
        self.0.log ^= crossed.log;
        self.0.text ^= crossed.text;
    }

    /// Forgets `ran`, run by the writer (or given up on: the next crossing owes it again).
    pub(crate) fn paid(&mut self, ran: Batches) {
        self.0.log &= !ran.log;
        self.0.text &= !ran.text;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: u64 = changelog::LOG_BATCH;
    const TEXT: u64 = text_index::TEXT_BATCH;

    #[test]
    fn a_commit_crosses_the_multiples_between_its_base_and_its_head() {
        let both = Batches {
            log: true,
            text: true,
        };
        assert_eq!(Batches::crossed(0, TEXT - 1), Batches::default());
        assert!(Batches::crossed(TEXT - 1, TEXT).text);
        assert!(!Batches::crossed(TEXT - 1, TEXT).log);
        assert!(!Batches::crossed(TEXT, 2 * TEXT - 1).text);
        assert_eq!(Batches::crossed(LOG - 1, LOG), both);
        assert_eq!(Batches::crossed(10, LOG + 200), both);
        assert!(!Batches::crossed(LOG, 2 * LOG - 1).log);
    }

    #[test]
    fn a_crossed_batch_is_owed_until_paid_or_folded_into_the_next_crossing() {
        let mut owed = Owed::default();
        // The first crossing owes the batch instead of running it.
        assert_eq!(owed.folded(TEXT - 1, TEXT), Batches::default());
        owed.committed(TEXT - 1, TEXT);
        assert!(owed.get().text);
        // Commits that cross nothing leave it owed.
        assert_eq!(owed.folded(TEXT, TEXT + 5), Batches::default());
        owed.committed(TEXT, TEXT + 5);
        assert!(owed.get().text);
        // The next crossing folds it in and owes nothing.
        let folded = owed.folded(2 * TEXT - 1, 2 * TEXT);
        assert!(folded.text && !folded.log);
        owed.committed(2 * TEXT - 1, 2 * TEXT);
        assert_eq!(owed.get(), Batches::default());
        // Paid between groups: the next crossing owes it again rather than folding it.
        owed.committed(3 * TEXT - 1, 3 * TEXT);
        owed.paid(owed.get());
        assert_eq!(owed.get(), Batches::default());
        assert_eq!(owed.folded(4 * TEXT - 1, 4 * TEXT), Batches::default());
    }

    #[test]
    fn each_batch_is_owed_on_its_own() {
        let mut owed = Owed::default();
        owed.committed(LOG - 1, LOG);
        assert_eq!(
            owed.get(),
            Batches {
                log: true,
                text: true
            }
        );
        owed.paid(Batches {
            log: false,
            text: true,
        });
        assert!(owed.get().log && !owed.get().text);
        let folded = owed.folded(LOG + TEXT - 1, LOG + TEXT);
        assert_eq!(folded, Batches::default());
        owed.committed(LOG + TEXT - 1, LOG + TEXT);
        assert!(owed.get().log && owed.get().text);
    }
}
