//! Cancel while queued, while running, and after the end.

use kiln_queue::{CancelOutcome, QueueError};
use kiln_types::{JobState, WorkerDevice};

use crate::Harness;

#[tokio::test]
async fn cancel_queued_job_ends_it_at_once() {
    let h = Harness::new().await;
    let team = h.team("alpha", 4).await;
    let [job_id] = h.submit(team, 1).await[..] else { unreachable!() };
    assert_eq!(h.queue.cancel(job_id).await.unwrap(), CancelOutcome::Cancelled);
    let job = h.queue.get(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert!(job.finished_at.is_some());
    assert!(h.claim(WorkerDevice::Cpu).await.is_none(), "a cancelled job is never claimed");
}

#[tokio::test]
async fn cancel_running_job_is_seen_by_the_next_heartbeat() {
    let h = Harness::new().await;
    let team = h.team("alpha", 4).await;
    let [job_id] = h.submit(team, 1).await[..] else { unreachable!() };
    let lease = h.claim(WorkerDevice::Cpu).await.unwrap();
    h.queue.checkpoint(&lease, "ckpt/e3", 3).await.unwrap();
    assert!(!h.queue.heartbeat(&lease, None).await.unwrap().cancel_requested);

    assert_eq!(h.queue.cancel(job_id).await.unwrap(), CancelOutcome::Requested);
    assert_eq!(h.queue.get(job_id).await.unwrap().state, JobState::Running);
    assert!(h.queue.heartbeat(&lease, None).await.unwrap().cancel_requested);
    // A second request changes nothing.
    assert_eq!(h.queue.cancel(job_id).await.unwrap(), CancelOutcome::Requested);

    h.queue.cancelled(&lease).await.unwrap();
    let job = h.queue.get(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.checkpoint_key.as_deref(), Some("ckpt/e3"), "last checkpoint kept");
    assert_eq!(h.queue.attempts(job_id).await.unwrap()[0].outcome.as_deref(), Some("cancelled"));
    assert_eq!(
        h.queue.cancel(job_id).await.unwrap(),
        CancelOutcome::AlreadyFinished(JobState::Cancelled)
    );
}

#[tokio::test]
async fn running_job_whose_worker_died_after_cancel_ends_cancelled() {
    let h = Harness::new().await;
    let team = h.team("alpha", 4).await;
    let [job_id] = h.submit(team, 1).await[..] else { unreachable!() };
    let _lease = h.claim(WorkerDevice::Cpu).await.unwrap();
    h.queue.cancel(job_id).await.unwrap();
    h.expire_leases().await;
    let rescued = h.queue.rescue().await.unwrap();
    assert_eq!(rescued[0].new_state, JobState::Cancelled);
}

#[tokio::test]
async fn cancel_finished_or_missing_job() {
    let h = Harness::new().await;
    let team = h.team("alpha", 4).await;
    let [job_id] = h.submit(team, 1).await[..] else { unreachable!() };
    let lease = h.claim(WorkerDevice::Cpu).await.unwrap();
    h.queue.complete(&lease, &crate::result("cpu"), "cpu", None).await.unwrap();
    assert_eq!(
        h.queue.cancel(job_id).await.unwrap(),
        CancelOutcome::AlreadyFinished(JobState::Succeeded)
    );
    assert_eq!(h.queue.get(job_id).await.unwrap().state, JobState::Succeeded);
    assert!(matches!(h.queue.cancel(uuid::Uuid::now_v7()).await, Err(QueueError::NotFound { .. })));
}
