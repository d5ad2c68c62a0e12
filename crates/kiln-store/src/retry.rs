//! Retry with timeout: every remote call goes through [`retry`].
//!
//! Each attempt gets its own timeout; only [`ErrorKind::Unavailable`] errors are retried,
//! with full-jitter exponential backoff (a random wait between zero and
//! `min(cap, base * 2^n)`), at most `max_attempts` times and never past `deadline`. So a
//! stopped server turns into an `Unavailable` error in seconds, never a hang, and a wrong
//! key or a missing object fails at once.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::error::{ErrorKind, Result, StoreError};

/// How hard to try. The defaults give up within a few seconds of a dead server.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first retry waits up to this long; each further one up to twice as long...
    pub base_delay: Duration,
    /// ...but never longer than this.
    pub max_delay: Duration,
    /// Each attempt is abandoned (and counts as `Unavailable`) after this long.
    pub attempt_timeout: Duration,
    /// No retry starts after this much time has passed since the first attempt.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(60),
            deadline: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The full-jitter wait before retry number `retry` (1-based).
    fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        ceiling.mul_f64(rand::rng().random::<f64>())
    }
}

/// Runs `op` until it succeeds, fails permanently, or the policy gives up.
pub(crate) async fn retry<T, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = match tokio::time::timeout(policy.attempt_timeout, op()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::new(
                ErrorKind::Unavailable,
                format!("no answer within {:?}", policy.attempt_timeout),
            )),
        };
        let err = match outcome {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let delay = policy.backoff(attempt);
        if !err.is_retryable()
            || attempt >= policy.max_attempts
            || started.elapsed() + delay > policy.deadline
        {
            let err = if err.is_retryable() {
                err.context(format!("{what} (gave up after {attempt} attempts)"))
            } else {
                err.context(what)
            };
            return Err(err);
        }
        tracing::debug!(what, attempt, ?delay, error = %err, "transient store error; retrying");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            attempt_timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(60),
        }
    }

    async fn run(kinds: &[ErrorKind]) -> (Result<u32>, u32) {
        let calls = AtomicU32::new(0);
        let result = retry(&fast(), "op", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
            match kinds.get(n) {
                Some(kind) => Err(StoreError::new(*kind, "boom")),
                None => Ok(n as u32),
            }
        })
        .await;
        (result, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let (result, calls) = run(&[ErrorKind::Unavailable, ErrorKind::Unavailable]).await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let (result, calls) = run(&[ErrorKind::Unavailable; 10]).await;
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.to_string().contains("gave up after 3 attempts"), "{err}");
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        for kind in [ErrorKind::NotFound, ErrorKind::Unauthorized, ErrorKind::Integrity] {
            let (result, calls) = run(&[kind, kind]).await;
            assert_eq!(result.unwrap_err().kind(), kind);
            assert_eq!(calls, 1);
        }
    }

    #[tokio::test]
    async fn a_hung_attempt_times_out_as_unavailable() {
        let policy = RetryPolicy { attempt_timeout: Duration::from_millis(20), ..fast() };
        let err = retry(&policy, "hang", std::future::pending::<Result<()>>).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn backoff_is_capped() {
        let policy = RetryPolicy { max_delay: Duration::from_millis(2), ..fast() };
        for retry in 1..100 {
            assert!(policy.backoff(retry) <= Duration::from_millis(2));
        }
    }
}
