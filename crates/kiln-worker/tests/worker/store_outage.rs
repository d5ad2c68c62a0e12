//! The artifact store goes away while a job trains.

use kiln_types::JobState;

use crate::support::{Bench, StoreKind, data_file, long_iris_spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_while_training_skips_checkpoints_and_the_job_still_succeeds() {
    let mut bench = Bench::new(StoreKind::S3).await;
    let iris = bench.upload(&data_file("iris.csv"), "csv").await;
    let id = bench.submit(&iris, long_iris_spec()).await;
    let mut worker = bench.spawn_worker("worker", &[("KILN_WORKER_MAX_JOBS", "2")]);
    let running = bench
        .wait_for(id, "a checkpoint", |j| j.state.is_terminal() || j.checkpoint_epoch >= Some(1))
        .await;
    assert_eq!(running.state, JobState::Running, "{running:#?}");

    bench.s3_server().stop();
    // Training goes on; a checkpoint that cannot be stored is skipped, not fatal.
    worker.wait_for_log("checkpoint not saved").await;
    bench.s3_server().restart();

    // Either the attempt finishes once the store is back, or (if the bundle upload gave up
    // first) it fails as retryable and the next attempt resumes from the last checkpoint
    // that was recorded. Both end in success, never in a user-facing failure.
    let job = bench.wait_for(id, "the job to end", |j| j.state.is_terminal()).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{}", bench.logs());
    let log = bench.job_log(id).await;
    assert!(
        log.iter().any(|l| l.contains("could not be stored") && l.contains("training goes on")),
        "{log:#?}"
    );
    let attempts = bench.queue.attempts(id).await.unwrap();
    assert!(attempts.iter().all(|a| a.outcome.as_deref() != Some("failed")), "{attempts:#?}");
    worker.signal("TERM");
    assert!(worker.wait_exit().await.success(), "{}", worker.log());
}
