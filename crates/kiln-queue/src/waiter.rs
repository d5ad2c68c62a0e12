//! Waiting for work: LISTEN/NOTIFY with a polling fallback.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::{NOTIFY_CHANNEL, QueueError};

/// Why [`Waiter::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A job became queued somewhere.
    Notified,
    /// The poll interval passed (or the listener had to reconnect): try a claim anyway.
    Poll,
}

/// Sleeps until a job may be claimable. A notification wakes it at once; without one it
/// wakes every poll interval, so lost notifications, a restarted database or jobs whose
/// backoff just ended are all picked up within one interval.
#[derive(Debug)]
pub struct Waiter {
    listener: PgListener,
    poll_interval: Duration,
}

impl Waiter {
    pub(crate) async fn listen(pool: &PgPool, poll_interval: Duration) -> Result<Self, QueueError> {
        Self::listen_on(pool, NOTIFY_CHANNEL, poll_interval).await
    }

    pub(crate) async fn listen_on(
        pool: &PgPool,
        channel: &str,
        poll_interval: Duration,
    ) -> Result<Self, QueueError> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(channel).await?;
        Ok(Self { listener, poll_interval })
    }

    /// Waits for a notification or the poll interval, whichever comes first.
    pub async fn wait(&mut self) -> Wake {
        self.wait_at_most(self.poll_interval).await
    }

    /// Like [`Waiter::wait`] with an explicit limit.
    pub async fn wait_at_most(&mut self, limit: Duration) -> Wake {
        match tokio::time::timeout(limit, self.listener.try_recv()).await {
            Ok(Ok(Some(_))) => {
                // Fold a burst of notifications into one wake-up.
                while let Ok(Ok(Some(_))) =
                    tokio::time::timeout(Duration::ZERO, self.listener.try_recv()).await
                {
                }
                Wake::Notified
            }
            // The connection dropped (try_recv reconnects on the next call) or errored:
            // back off briefly so a dead database does not become a busy loop.
            Ok(Ok(None)) | Ok(Err(_)) => {
                tokio::time::sleep(limit.min(Duration::from_millis(500))).await;
                Wake::Poll
            }
            Err(_elapsed) => Wake::Poll,
        }
    }
}
