//! SIGTERM: checkpoint, release, exit 0; the next worker resumes.

use kiln_types::JobState;

use crate::support::{Bench, StoreKind, data_file, long_iris_spec};
use kiln_db::testing::{DbProxy, db_addr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_job_with_a_checkpoint_and_the_next_worker_resumes_it() {
    let bench = Bench::new(StoreKind::Local).await;
    let iris = bench.upload(&data_file("iris.csv"), "csv").await;
    let id = bench.submit(&iris, long_iris_spec()).await;

    let mut first = bench.spawn_worker("first", &[]);
    let first_id = bench.worker_id(&first).await;
    let running = bench
        .wait_for(id, "a checkpoint", |j| j.state.is_terminal() || j.checkpoint_epoch >= Some(1))
        .await;
    assert_eq!(running.state, JobState::Running, "{running:#?}");
    first.signal("TERM");
    let status = first.wait_exit().await;
    assert!(status.success(), "a drained worker exits 0: {status}\n{}", first.log());

    // Back on the queue, not failed, the attempt not counted, with a fresh checkpoint.
    let released = bench.job(id).await;
    assert_eq!(released.state, JobState::Queued, "{released:#?}");
    assert_eq!(released.attempt, 0);
    assert_eq!(released.error, None);
    let checkpoint_epoch = released.checkpoint_epoch.expect("a checkpoint");
    assert!(checkpoint_epoch >= 1);
    assert_ne!(released.checkpoint_key, None);
    let attempts = bench.queue.attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome.as_deref(), Some("released"));
    let log = bench.job_log(id).await;
    assert!(log.iter().any(|l| l.contains("released back to the queue")), "{log:#?}");
    let row = bench.queue.workers().await.unwrap().into_iter().find(|w| w.id == first_id).unwrap();
    assert!(row.stopped_at.is_some(), "deregistered: {row:?}");

    let mut second = bench.spawn_worker("second", &[("KILN_WORKER_MAX_JOBS", "1")]);
    let job = bench.wait_for(id, "the job to end", |j| j.state.is_terminal()).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{}", bench.logs());
    assert_eq!(job.resumed_from_epoch, Some(checkpoint_epoch));
    assert!(second.wait_exit().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_exits_0_on_sigint() {
    let bench = Bench::new(StoreKind::Local).await;
    let mut worker = bench.spawn_worker("idle", &[]);
    let worker_id = bench.worker_id(&worker).await;
    worker.signal("INT");
    let status = worker.wait_exit().await;
    assert!(status.success(), "{status}\n{}", worker.log());
    let row = bench.queue.workers().await.unwrap().into_iter().find(|w| w.id == worker_id).unwrap();
    assert!(row.stopped_at.is_some(), "{row:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_without_releasing_the_job() {
    let bench = Bench::new(StoreKind::Local).await;
    // The database sits behind a proxy, so the test can hold the drain up: with the
    // database unreachable, the worker keeps retrying its release (the lease is long).
    let proxy = DbProxy::start(db_addr(&bench.test.url)).await;
    let url = proxy.url_for(&bench.test.url);
    let iris = bench.upload(&data_file("iris.csv"), "csv").await;
    let id = bench.submit(&iris, long_iris_spec()).await;
    let mut worker =
        bench.spawn_worker("worker", &[("KILN_DATABASE_URL", &url), ("KILN_LEASE_SECONDS", "60")]);
    let running = bench
        .wait_for(id, "a checkpoint", |j| j.state.is_terminal() || j.checkpoint_epoch >= Some(1))
        .await;
    assert_eq!(running.state, JobState::Running, "{running:#?}");

    proxy.cut();
    worker.signal("TERM");
    worker.wait_for_log("draining").await;
    worker.signal("INT");
    let status = worker.wait_exit().await;
    assert_eq!(status.code(), Some(130), "{status}\n{}", worker.log());
    assert!(worker.log().contains("second signal: exiting now"), "{}", worker.log());
    proxy.restore();

    // Not released: the job still belongs to the dead attempt until its lease expires.
    let job = bench.job(id).await;
    assert_eq!((job.state, job.attempt), (JobState::Running, 1), "{}", worker.log());
    let attempts = bench.queue.attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, None);
}
