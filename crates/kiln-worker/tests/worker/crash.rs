//! Workers that die or freeze in the middle of a job.

use kiln_types::JobState;

use crate::support::{Bench, LONG_EPOCHS, StoreKind, data_file, long_iris_spec};

/// Short leases so that a dead worker's job is rescued quickly.
const SHORT_LEASE: &[(&str, &str)] =
    &[("KILN_LEASE_SECONDS", "3"), ("KILN_HEARTBEAT_SECONDS", "0.3")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_job_and_the_next_worker_resumes_from_its_checkpoint() {
    let bench = Bench::new(StoreKind::S3).await;
    let iris = bench.upload(&data_file("iris.csv"), "csv").await;
    let id = bench.submit(&iris, long_iris_spec()).await;

    let mut first = bench.spawn_worker("first", SHORT_LEASE);
    let first_id = bench.worker_id(&first).await;
    let job = bench
        .wait_for(id, "two checkpoints and a heartbeat", |j| {
            j.state.is_terminal() || (j.checkpoint_epoch >= Some(2) && j.progress.is_some())
        })
        .await;
    assert_eq!(job.state, JobState::Running, "the job must still run when killed: {job:#?}");
    let progress = job.progress.expect("heartbeats report progress");
    assert_eq!(progress.epochs, LONG_EPOCHS, "{progress:?}");
    first.signal("KILL");
    assert!(!first.wait_exit().await.success());

    let second = bench.spawn_worker("second", SHORT_LEASE);
    let second_id = bench.worker_id(&second).await;
    let job = bench.wait_for(id, "the job to end", |j| j.state.is_terminal()).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{}", bench.logs());

    let resumed = job.resumed_from_epoch.expect("resumed_from_epoch is recorded");
    assert!(resumed >= 2, "resumed from epoch {resumed}");
    let result = job.result.expect("result");
    assert_eq!(result.resumed_from_epoch, u32::try_from(resumed).ok());
    assert_eq!(result.epochs_completed, LONG_EPOCHS);

    let attempts = bench.queue.attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(attempts[0].worker_id, first_id);
    assert_eq!(attempts[0].outcome.as_deref(), Some("lease_expired"));
    assert_eq!(attempts[1].worker_id, second_id);
    assert_eq!(attempts[1].outcome.as_deref(), Some("succeeded"));
    let log = bench.job_log(id).await;
    assert!(log.iter().any(|l| l.contains(&format!("resumed from epoch {resumed}"))), "{log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_zombie_writes_nothing_after_another_worker_took_over() {
    let bench = Bench::new(StoreKind::Local).await;
    let iris = bench.upload(&data_file("iris.csv"), "csv").await;
    let id = bench.submit(&iris, long_iris_spec()).await;

    let once: &[(&str, &str)] = &[
        ("KILN_LEASE_SECONDS", "3"),
        ("KILN_HEARTBEAT_SECONDS", "0.3"),
        ("KILN_WORKER_MAX_JOBS", "1"),
    ];
    let mut zombie = bench.spawn_worker("zombie", once);
    let zombie_id = bench.worker_id(&zombie).await;
    let job = bench
        .wait_for(id, "a checkpoint", |j| j.state.is_terminal() || j.checkpoint_epoch >= Some(1))
        .await;
    assert_eq!(job.state, JobState::Running, "{job:#?}");
    zombie.signal("STOP");

    // Another worker rescues the expired lease, resumes and finishes the job.
    let mut rescuer = bench.spawn_worker("rescuer", once);
    let rescuer_id = bench.worker_id(&rescuer).await;
    let done = bench.wait_for(id, "the job to end", |j| j.state.is_terminal()).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}\n{}", bench.logs());
    assert!(rescuer.wait_exit().await.success(), "{}", rescuer.log());

    let events_before =
        bench.count(&format!("SELECT count(*) FROM job_events WHERE job_id = '{id}'")).await;
    let metrics_before =
        bench.count(&format!("SELECT count(*) FROM metrics WHERE run_id = '{id}'")).await;

    // The zombie wakes up: its heartbeat is fenced out, it stops and writes nothing.
    zombie.signal("CONT");
    let status = zombie.wait_exit().await;
    assert!(status.success(), "the zombie exits cleanly: {status}\n{}", zombie.log());
    assert!(zombie.log().contains("lease lost"), "{}", zombie.log());

    let after = bench.job(id).await;
    assert_eq!(after.state, JobState::Succeeded);
    assert_eq!(after.result, done.result, "the result is the rescuer's");
    assert_eq!(after.checkpoint_key, done.checkpoint_key);
    assert_eq!(after.updated_at, done.updated_at, "nothing touched the job row");
    let events_after =
        bench.count(&format!("SELECT count(*) FROM job_events WHERE job_id = '{id}'")).await;
    let metrics_after =
        bench.count(&format!("SELECT count(*) FROM metrics WHERE run_id = '{id}'")).await;
    assert_eq!(events_after, events_before, "no log line from the zombie");
    assert_eq!(metrics_after, metrics_before, "no metric from the zombie");

    let attempts = bench.queue.attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(
        (attempts[0].worker_id, attempts[0].outcome.as_deref()),
        (zombie_id, Some("lease_expired"))
    );
    assert_eq!(
        (attempts[1].worker_id, attempts[1].outcome.as_deref()),
        (rescuer_id, Some("succeeded"))
    );
    // Every line the zombie's attempt wrote predates the takeover.
    let late = bench
        .count(&format!(
            "SELECT count(*) FROM job_events e JOIN job_attempts a \
               ON a.job_id = e.job_id AND a.attempt = 2 \
             WHERE e.job_id = '{id}' AND e.attempt = 1 AND e.ts > a.started_at"
        ))
        .await;
    assert_eq!(late, 0, "the zombie's attempt wrote after the takeover");
}
