//! The database goes away while a job trains: a TCP proxy between the worker and
//! PostgreSQL cuts every connection and refuses new ones.

use std::time::Duration;

use kiln_types::JobState;

use crate::support::{Bench, LONG_EPOCHS, StoreKind, data_file, long_iris_spec};
use kiln_db::testing::{DbProxy, db_addr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_database_outage_does_not_stop_training_or_lose_metrics() {
    let bench = Bench::new(StoreKind::Local).await;
    let proxy = DbProxy::start(db_addr(&bench.test.url)).await;
    let iris = bench.upload(&data_file("iris.csv"), "csv").await;
    let id = bench.submit(&iris, long_iris_spec()).await;
    let url = proxy.url_for(&bench.test.url);
    let mut worker = bench.spawn_worker(
        "worker",
        &[("KILN_DATABASE_URL", &url), ("KILN_LEASE_SECONDS", "20"), ("KILN_WORKER_MAX_JOBS", "1")],
    );
    let running = bench
        .wait_for(id, "a checkpoint", |j| j.state.is_terminal() || j.checkpoint_epoch >= Some(1))
        .await;
    assert_eq!(running.state, JobState::Running, "{running:#?}");

    // Well within the lease: the worker trains on and catches up afterwards.
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();

    let job = bench.wait_for(id, "the job to end", |j| j.state.is_terminal()).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{}", bench.logs());
    assert!(worker.wait_exit().await.success());
    let attempts = bench.queue.attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 1, "the outage cost no attempt: {attempts:#?}");
    assert!(worker.log().contains("failed; "), "the outage was noticed:\n{}", worker.log());
    let epochs = bench
        .count(&format!(
            "SELECT count(DISTINCT step) FROM metrics WHERE run_id = '{id}' AND name = 'val_loss'"
        ))
        .await;
    assert_eq!(epochs, i64::from(LONG_EPOCHS), "no epoch's metrics were lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_lease_stops_the_attempt_and_the_job_resumes_after() {
    let bench = Bench::new(StoreKind::Local).await;
    let proxy = DbProxy::start(db_addr(&bench.test.url)).await;
    let iris = bench.upload(&data_file("iris.csv"), "csv").await;
    let id = bench.submit(&iris, long_iris_spec()).await;
    let url = proxy.url_for(&bench.test.url);
    let mut worker = bench.spawn_worker(
        "worker",
        &[("KILN_DATABASE_URL", &url), ("KILN_LEASE_SECONDS", "3"), ("KILN_WORKER_MAX_JOBS", "2")],
    );
    let running = bench
        .wait_for(id, "a checkpoint", |j| j.state.is_terminal() || j.checkpoint_epoch >= Some(1))
        .await;
    assert_eq!(running.state, JobState::Running, "{running:#?}");

    proxy.cut();
    // The worker trains on, retrying its heartbeat, until by its own clock the lease must
    // have expired; then it stops the attempt and writes nothing more.
    worker.wait_for_log("stopping as if").await;
    proxy.restore();

    // The worker gave the job up; once the database is back it (the only worker) rescues
    // the expired lease, claims the job again and resumes it.
    let job = bench.wait_for(id, "the job to end", |j| j.state.is_terminal()).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{}", bench.logs());
    assert!(job.resumed_from_epoch >= Some(1), "{job:#?}");
    let attempts = bench.queue.attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(attempts[0].outcome.as_deref(), Some("lease_expired"));
    assert_eq!(attempts[1].outcome.as_deref(), Some("succeeded"));
    assert!(worker.wait_exit().await.success(), "{}", worker.log());
}
