//! A worker whose lease was taken over can write nothing.

use std::time::Duration;

use kiln_queue::{LogLine, MetricPoint, QueueConfig, QueueError};
use kiln_types::JobState;

use crate::{Harness, cpu, test_config};

fn lost<T: std::fmt::Debug>(result: Result<T, QueueError>) -> bool {
    matches!(result, Err(QueueError::LeaseLost { .. }))
}

#[tokio::test]
async fn expired_lease_is_fenced_out_after_takeover() {
    // A real (short) lease that really expires.
    let config = QueueConfig { lease: Duration::from_millis(600), ..test_config() };
    let h = Harness::with_config(config).await;
    let team = h.team("alpha", 4).await;
    let [job_id] = h.submit(team, 1).await[..] else { unreachable!() };

    let a = h.queue.claim(cpu()).await.unwrap().expect("A claims");
    assert_eq!(a.epoch, 1);
    h.queue.heartbeat(&a, None).await.expect("A's lease holds while fresh");
    // Nothing to rescue while the lease is fresh.
    assert!(h.queue.rescue().await.unwrap().is_empty());

    tokio::time::sleep(Duration::from_millis(900)).await;
    let rescued = h.queue.rescue().await.unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].new_state, JobState::Queued);

    let b = h.queue.claim(cpu()).await.unwrap().expect("B claims");
    assert_eq!(b.job_id(), job_id);
    assert_eq!(b.epoch, 2);

    // A wakes up: every write is rejected.
    assert!(lost(h.queue.heartbeat(&a, Some(&crate::progress(9, 10))).await));
    assert!(lost(h.queue.checkpoint(&a, "ckpt/a", 9).await));
    assert!(lost(h.queue.mark_resumed(&a, 9).await));
    assert!(lost(h.queue.append_logs(&a, &[LogLine { level: "info", message: "A".into() }]).await));
    assert!(lost(
        h.queue
            .append_metrics(&a, &[MetricPoint { name: "train_loss".into(), step: 9, value: 1.0 }])
            .await
    ));
    assert!(lost(h.queue.complete(&a, &crate::result("by A"), "cpu", None).await));
    assert!(lost(h.queue.fail(&a, "A failed", true).await));
    assert!(lost(h.queue.release(&a).await));
    assert!(lost(h.queue.cancelled(&a).await));

    // B's writes land, and B's result is the job's result.
    h.queue.checkpoint(&b, "ckpt/b", 3).await.unwrap();
    h.queue.append_logs(&b, &[LogLine { level: "info", message: "B".into() }]).await.unwrap();
    h.queue.complete(&b, &crate::result("by B"), "cpu", None).await.unwrap();
    let job = h.queue.get(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.result, Some(crate::result("by B")));
    assert_eq!(job.checkpoint_key.as_deref(), Some("ckpt/b"));
    assert_eq!(job.progress, None, "A's progress never landed");
    assert_eq!(job.attempt, 2);

    let attempts = h.queue.attempts(job_id).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome.as_deref()).collect();
    assert_eq!(outcomes, [Some("lease_expired"), Some("succeeded")]);
    assert_ne!(attempts[0].worker_id, attempts[1].worker_id);

    // Only B's log line exists.
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM job_events WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(h.test.db.get_postgres_connection_pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn heartbeat_extends_the_lease_by_the_database_clock() {
    let h = Harness::new().await;
    let team = h.team("alpha", 4).await;
    h.submit(team, 1).await;
    let lease = h.claim(kiln_types::WorkerDevice::Cpu).await.unwrap();
    let before = lease.job.lease_expires_at.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reply = h.queue.heartbeat(&lease, Some(&crate::progress(2, 10))).await.unwrap();
    assert!(reply.lease_expires_at > before);
    assert!(!reply.cancel_requested);
    let job = h.queue.get(lease.job_id()).await.unwrap();
    assert_eq!(job.progress, Some(crate::progress(2, 10)));
    assert_eq!(job.lease_expires_at, Some(reply.lease_expires_at));
}
