//! Retries with full-jitter exponential backoff, budget exhaustion, non-retryable failures,
//! and graceful release.

use std::time::Duration;

use chrono::Utc;
use kiln_queue::{FailOutcome, QueueConfig};
use kiln_types::{JobState, WorkerDevice};

use crate::{Harness, cpu, test_config};

#[tokio::test]
async fn retryable_failures_back_off_then_exhaust_the_budget() {
    let h = Harness::new().await; // zero backoff: each retry is claimable at once
    let team = h.team("alpha", 4).await;
    let [job_id] = h.submit(team, 1).await[..] else { unreachable!() };

    for attempt in 1..=3 {
        let lease = h.claim(WorkerDevice::Cpu).await.expect("claimable again");
        assert_eq!(lease.job.attempt, attempt);
        let outcome =
            h.queue.fail(&lease, &format!("store timeout #{attempt}"), true).await.unwrap();
        if attempt < 3 {
            assert!(matches!(outcome, FailOutcome::Retrying { .. }), "attempt {attempt}");
            assert_eq!(h.queue.get(job_id).await.unwrap().state, JobState::Queued);
        } else {
            assert_eq!(outcome, FailOutcome::Failed, "budget of 3 spent");
        }
    }
    let job = h.queue.get(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error.as_deref(), Some("store timeout #3"));
    assert!(job.finished_at.is_some());
    assert!(h.claim(WorkerDevice::Cpu).await.is_none());
    let outcomes: Vec<_> =
        h.queue.attempts(job_id).await.unwrap().into_iter().map(|a| a.outcome.unwrap()).collect();
    assert_eq!(outcomes, ["retrying", "retrying", "failed"]);
}

#[tokio::test]
async fn backoff_is_full_jitter_exponential_and_capped() {
    let config = QueueConfig {
        backoff_base: Duration::from_secs(10),
        backoff_cap: Duration::from_secs(15),
        ..test_config()
    };
    let h = Harness::with_config(config).await;
    let team = h.team("alpha", 100).await;
    let ids = h.submit(team, 40).await;

    let delays = |outcomes: Vec<FailOutcome>| -> Vec<f64> {
        let now = Utc::now();
        outcomes
            .into_iter()
            .map(|o| match o {
                FailOutcome::Retrying { run_after } => (run_after - now).as_seconds_f64(),
                FailOutcome::Failed => panic!("should retry"),
            })
            .collect()
    };
    // Claim every job before failing any, so a retry whose jittered delay is ~0 cannot be
    // claimed twice in one round.
    async fn fail_all(h: &Harness, n: usize) -> Vec<FailOutcome> {
        let mut leases = Vec::new();
        for _ in 0..n {
            leases.push(h.claim(WorkerDevice::Cpu).await.expect("claimable"));
        }
        let mut outcomes = Vec::new();
        for lease in &leases {
            outcomes.push(h.queue.fail(lease, "flaky", true).await.unwrap());
        }
        outcomes
    }
    // First failures: delays within [0, base].
    let first = delays(fail_all(&h, ids.len()).await);
    assert!(first.iter().all(|d| (-1.0..=10.5).contains(d)), "{first:?}");
    // A backed-off job is claimable only once its run_after has passed.
    while let Some(lease) = h.claim(WorkerDevice::Cpu).await {
        assert!(lease.job.run_after <= Utc::now(), "claimed before its backoff ended");
        h.queue.release(&lease).await.unwrap();
        h.sql(&format!(
            "UPDATE jobs SET run_after = now() + interval '1 hour' WHERE id = '{}'",
            lease.job_id()
        ))
        .await;
    }

    // Second failures: up to 2 × base, capped at 15 s; jitter spreads them past base.
    h.sql("UPDATE jobs SET run_after = now()").await;
    let second = fail_all(&h, ids.len()).await;
    let second = delays(second);
    assert!(second.iter().all(|d| (-1.0..=15.5).contains(d)), "{second:?}");
    assert!(second.iter().any(|d| *d > 10.5), "the window doubled: {second:?}");
    let spread = second.iter().cloned().fold(f64::MIN, f64::max)
        - second.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 3.0, "full jitter spreads retries: {second:?}");
}

#[tokio::test]
async fn non_retryable_failure_fails_at_once() {
    let h = Harness::new().await;
    let team = h.team("alpha", 4).await;
    let [job_id] = h.submit(team, 1).await[..] else { unreachable!() };
    let lease = h.claim(WorkerDevice::Cpu).await.unwrap();
    let outcome =
        h.queue.fail(&lease, "target column `species` not in dataset", false).await.unwrap();
    assert_eq!(outcome, FailOutcome::Failed);
    let job = h.queue.get(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempt, 1);
    assert!(h.claim(WorkerDevice::Cpu).await.is_none());
}

#[tokio::test]
async fn release_requeues_without_counting_an_attempt() {
    let h = Harness::new().await;
    let team = h.team("alpha", 4).await;
    let [job_id] = h.submit(team, 1).await[..] else { unreachable!() };
    for _ in 0..5 {
        let lease = h.queue.claim(cpu()).await.unwrap().unwrap();
        h.queue.checkpoint(&lease, "ckpt", 2).await.unwrap();
        h.queue.release(&lease).await.unwrap();
    }
    let job = h.queue.get(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempt, 0, "five graceful releases spend none of the 3 attempts");
    assert_eq!(job.lease_epoch, 5);
    assert_eq!(job.checkpoint_epoch, Some(2));
    let attempts = h.queue.attempts(job_id).await.unwrap();
    assert_eq!(attempts.len(), 5);
    assert!(attempts.iter().all(|a| a.outcome.as_deref() == Some("released")));
}

#[tokio::test]
async fn retry_requeues_a_failed_job_with_a_fresh_budget_and_its_checkpoint() {
    let h = Harness::new().await;
    let team = h.team("alpha", 4).await;
    let [job_id] = h.submit(team, 1).await[..] else { unreachable!() };
    let lease = h.claim(WorkerDevice::Cpu).await.unwrap();
    h.queue.checkpoint(&lease, "teams/x/ckpt", 4).await.unwrap();
    h.queue.fail(&lease, "bad", false).await.unwrap();
    let job = h.queue.retry(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempt, 0);
    assert_eq!(job.error, None);
    assert_eq!(job.checkpoint_epoch, Some(4));
    // Retrying a queued job is refused.
    assert!(matches!(
        h.queue.retry(job_id).await,
        Err(kiln_queue::QueueError::InvalidState { state: JobState::Queued, .. })
    ));
}
