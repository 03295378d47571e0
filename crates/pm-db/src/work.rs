//! What callers put in a tenant writer's queue, on either engine: a command or a batch, and
//! where its answer goes once the group it was applied in has committed (or failed).

use pm_proto::v1;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// A caller's answer, filled in by the attempt that commits.
#[derive(Debug)]
pub(crate) struct Reply<T> {
    to: oneshot::Sender<Result<T>>,
    /// Boxed: a command's result holds a whole entity, and jobs move through the queue.
    pub(crate) result: Option<Box<Result<T>>>,
}

impl<T> Reply<T> {
    /// An answer still to be given, to `to`.
    pub(crate) fn new(to: oneshot::Sender<Result<T>>) -> Self {
        Reply { to, result: None }
    }

    fn send(self) {
        // Never filled: the caller's receiver fails, which it reports as UNAVAILABLE. The
        // caller may also have gone away; a committed change is committed all the same.
        if let Some(result) = self.result {
            let _ = self.to.send(*result);
        }
    }
}

/// What a caller asks of the writer, with where its answer goes.
#[derive(Debug)]
pub(crate) enum Work {
    Command(Box<v1::Command>, Reply<v1::CommandResult>),
    Batch(v1::Batch, Reply<v1::BatchResult>),
}

impl Work {
    /// Sends the answer filled in (none: the caller hears that the writer stopped).
    pub(crate) fn send(self) {
        match self {
            Work::Command(_, reply) => reply.send(),
            Work::Batch(_, reply) => reply.send(),
        }
    }

    /// Whether the answer filled in is a failure: of the command, of the batch, or of any
    /// command of a batch.
    pub(crate) fn failed(&self) -> bool {
        match self {
            Work::Command(_, reply) => reply.result.as_deref().is_some_and(Result::is_err),
            Work::Batch(_, reply) => match reply.result.as_deref() {
                Some(Ok(batch)) => batch
                    .outcomes
                    .iter()
                    .any(|o| matches!(o.outcome, Some(v1::command_outcome::Outcome::Error(_)))),
                Some(Err(_)) => true,
                None => false,
            },
        }
    }

    /// Answers with `error` (the group did not commit).
    pub(crate) fn fail(&mut self, error: impl Fn() -> Error) {
        match self {
            Work::Command(_, reply) => reply.result = Some(Box::new(Err(error()))),
            Work::Batch(_, reply) => reply.result = Some(Box::new(Err(error()))),
        }
    }
}
