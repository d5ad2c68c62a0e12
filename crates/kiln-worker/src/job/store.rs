//! The artifact store as a job uses it: reads and writes retried while the store may
//! recover, briefly for checkpoints (a newer one follows), patiently for what the attempt
//! cannot do without (inputs, the model bundle).

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kiln_store::{ErrorKind, Key, ObjectInfo, StoreError, Team};

use super::lease::{JobCtx, jitter};

/// How long a store operation waits out a store that may recover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Patience {
    /// A few quick retries: checkpoints, where a newer one follows and training goes on.
    Brief,
    /// Up to `KILN_STORE_RETRY_SECONDS` from the first failure: what the attempt cannot do
    /// without (inputs, the model bundle).
    Patient,
}

/// The longest wait between two tries of a patient store operation.
const STORE_RETRY_MAX_DELAY: Duration = Duration::from_secs(10);

/// Store failures that may end by themselves: an outage, a full or read-only disk (an
/// operator frees space or remounts). Anything else fails at once.
fn store_may_recover(err: &StoreError) -> bool {
    err.is_retryable() || matches!(err.kind(), ErrorKind::NoSpace | ErrorKind::ReadOnly)
}

impl JobCtx {
    /// Runs a store operation, retrying while the store may recover (see
    /// [`store_may_recover`]) and the lease holds: `Brief`ly, three more tries within about
    /// a second and a half; `Patient`ly, with exponential backoff (half a second doubling to
    /// ten, jittered) until `store_retry` has passed since the first failure, so a store
    /// outage of a minute costs no attempt. (The S3 backend also retries each call.)
    pub(super) async fn with_store_retry<T, F, Fut>(
        &self,
        what: &str,
        patience: Patience,
        mut op: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut delay = Duration::from_millis(match patience {
            Patience::Brief => 200,
            Patience::Patient => 500,
        });
        let mut first_failure = None;
        let mut tries = 0u32;
        loop {
            tries += 1;
            let err = match op().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let since = *first_failure.get_or_insert_with(Instant::now);
            let more = match patience {
                Patience::Brief => tries < 4,
                Patience::Patient => since.elapsed() + delay / 2 <= self.store_retry,
            };
            if !store_may_recover(&err) || !more || self.control.lease_lost() {
                if tries > 1 {
                    tracing::warn!(
                        job = %self.job_id(), what, tries, error = %err,
                        "the artifact store did not recover; giving up"
                    );
                }
                return Err(err);
            }
            tracing::warn!(
                job = %self.job_id(), what, tries, error = %err,
                "the artifact store failed; retrying"
            );
            tokio::time::sleep(jitter(delay)).await;
            delay = (delay * 2).min(STORE_RETRY_MAX_DELAY);
        }
    }

    /// Uploads bytes content-addressed under the job's team.
    pub(super) async fn put_bytes(
        &self,
        bytes: &[u8],
        patience: Patience,
    ) -> Result<ObjectInfo, StoreError> {
        let team = Team::parse(self.lease.job.team_id.to_string())?;
        let started = Instant::now();
        let team = &team;
        let result = self
            .with_store_retry("upload", patience, || async move {
                let mut reader = bytes;
                self.store.put_stream(team, &mut reader).await
            })
            .await;
        let seconds = started.elapsed().as_secs_f64();
        kiln_telemetry::metrics::store_operation(
            "put",
            bytes.len() as u64,
            seconds,
            result.is_ok(),
        );
        result
    }

    /// Reads a whole object, patiently.
    pub(super) async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let key = Key::parse(key.to_owned())?;
        let started = Instant::now();
        let key = &key;
        let result = self
            .with_store_retry("download", Patience::Patient, || async move {
                let mut stream = self.store.get(key, None).await?;
                let mut out = Vec::new();
                while let Some(chunk) = stream.next().await {
                    out.extend_from_slice(&chunk?);
                }
                Ok::<_, StoreError>(out)
            })
            .await;
        let seconds = started.elapsed().as_secs_f64();
        let size = result.as_ref().map_or(0, |bytes| bytes.len() as u64);
        kiln_telemetry::metrics::store_operation("get", size, seconds, result.is_ok());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_that_may_end_by_themselves_are_retried() {
        for kind in [ErrorKind::Unavailable, ErrorKind::NoSpace, ErrorKind::ReadOnly] {
            assert!(store_may_recover(&StoreError::new(kind, "x")), "{kind:?}");
        }
        for kind in [ErrorKind::NotFound, ErrorKind::Integrity, ErrorKind::InvalidKey] {
            assert!(!store_may_recover(&StoreError::new(kind, "x")), "{kind:?}");
        }
    }
}
