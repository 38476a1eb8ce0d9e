//! Commit tickets: how the caller of a durable write learns that it is on
//! disk (or that it could not be saved), without blocking a thread.

use super::StoreError;
use tokio::sync::oneshot;

/// The promise that a write is durable. A store that keeps nothing hands out
/// commits that are done at once.
#[must_use = "a write is acknowledged only once its commit completes"]
#[derive(Debug)]
pub struct Commit(State);

#[derive(Debug)]
enum State {
    Done,
    Pending(oneshot::Receiver<Result<(), StoreError>>),
    All(Vec<Commit>),
}

/// The store's side of a pending [`Commit`].
#[derive(Debug)]
pub struct CommitSender(oneshot::Sender<Result<(), StoreError>>);

impl CommitSender {
    /// Completes the commit with `result`.
    pub fn complete(self, result: Result<(), StoreError>) {
        // The caller may have stopped waiting (a cancelled call): nothing to tell.
        let _ = self.0.send(result);
    }
}

impl Commit {
    /// A commit that is already done.
    pub fn done() -> Commit {
        Commit(State::Done)
    }

    /// A pending commit and the sender that completes it.
    pub fn pending() -> (Commit, CommitSender) {
        let (tx, rx) = oneshot::channel();
        (Commit(State::Pending(rx)), CommitSender(tx))
    }

    /// One commit for several writes: done when all are, failed when any is.
    pub fn all(commits: Vec<Commit>) -> Commit {
        let mut pending: Vec<Commit> = commits.into_iter().filter(|c| !c.is_done()).collect();
        match pending.len() {
            0 => Commit::done(),
            1 => pending.pop().unwrap_or_else(Commit::done),
            _ => Commit(State::All(pending)),
        }
    }

    /// Whether the commit needs no wait.
    pub fn is_done(&self) -> bool {
        matches!(self.0, State::Done)
    }

    /// Waits until the write is durable.
    pub async fn durable(self) -> Result<(), StoreError> {
        match self.0 {
            State::Done => Ok(()),
            State::Pending(rx) => rx.await.unwrap_or_else(|_| Err(stopped())),
            State::All(all) => {
                for c in all {
                    Box::pin(c.durable()).await?;
                }
                Ok(())
            }
        }
    }

    /// Waits, blocking the thread (tools and tests; never on a tokio worker).
    pub fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            State::Done => Ok(()),
            State::Pending(rx) => rx.blocking_recv().unwrap_or_else(|_| Err(stopped())),
            State::All(all) => all.into_iter().try_for_each(Commit::wait),
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store's writer has stopped".into())
}
