//! Issue 22: a full artifact store (the local store on a real 20 MiB tmpfs, filled up) and
//! a store outage longer than the old retries lasted.

use kiln_store::Key;
use kiln_store::testing::SmallFs;
use kiln_types::JobState;

use crate::support::{Bench, StoreKind, data_file, iris_spec};

/// Every object file of a local store with its size.
fn object_sizes(root: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.join("objects")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                out.push((entry.path().display().to_string(), entry.metadata().unwrap().len()));
            }
        }
    }
    out
}

/// Before: the bundle upload "succeeded" with a 0-byte file, the job ended `succeeded`,
/// and empty checkpoints were recorded. Now no write that failed is reported or recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_fails_the_bundle_upload_and_records_no_checkpoint() {
    let fs = SmallFs::mount(20);
    let root = fs.path.join("store");
    let bench = Bench::with_local_store(root.clone()).await;
    let iris = bench.upload(&data_file("iris.csv"), "csv").await;
    let id = bench.submit(&iris, iris_spec(3, 16)).await;
    fs.fill_leaving(0);
    let mut worker = bench.spawn_worker(
        "worker",
        &[("KILN_WORKER_MAX_JOBS", "5"), ("KILN_STORE_RETRY_SECONDS", "1")],
    );
    let job = bench.wait_for(id, "the job to fail", |j| j.state.is_terminal()).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}\n{}", bench.logs());
    assert!(job.result.is_none(), "{job:#?}");
    assert_eq!(job.checkpoint_key, None, "a checkpoint that was not stored is not recorded");
    let error = job.error.clone().unwrap_or_default();
    assert!(error.contains("uploading the model bundle"), "{error}");
    assert!(error.contains("No space left on device (os error 28)"), "the OS reason: {error}");
    assert!(!error.contains(&*fs.path.to_string_lossy()), "no server path: {error}");
    let log = bench.job_log(id).await;
    assert!(
        log.iter().any(|l| l.contains("could not be stored") && l.contains("os error 28")),
        "{log:#?}"
    );
    let objects = object_sizes(&root);
    assert_eq!(objects.len(), 1, "only the dataset is stored: {objects:?}");
    assert!(objects.iter().all(|(_, size)| *size > 0), "{objects:?}");

    // Room again: retried, the job succeeds with a whole, verified bundle.
    fs.free_filler();
    bench.queue.retry(id).await.unwrap();
    let job = bench.wait_for(id, "the retry to end", |j| j.state.is_terminal()).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{}", bench.logs());
    let result = job.result.expect("a result");
    let key = Key::parse(result.model_bundle.clone()).unwrap();
    let meta = bench.store.head(&key).await.unwrap();
    assert!(meta.size > 0);
    let mut stream = bench.store.get(&key, None).await.unwrap();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        chunk.expect("the bundle's bytes match its content address");
    }
    worker.signal("TERM");
    assert!(worker.wait_exit().await.success(), "{}", worker.log());
}

/// Before: each store call gave up within seconds and the attempt failed, so a 25 s outage
/// used up three attempts. Now the worker backs off for up to `KILN_STORE_RETRY_SECONDS`
/// (120 by default; 60 here): the outage, longer than the old retries, costs no attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_ridden_out_with_backoff_instead_of_using_up_attempts() {
    let mut bench = Bench::new(StoreKind::S3).await;
    let iris = bench.upload(&data_file("iris.csv"), "csv").await;
    bench.s3_server().stop();
    let id = bench.submit(&iris, iris_spec(2, 16)).await;
    let mut worker = bench.spawn_worker(
        "worker",
        &[("KILN_WORKER_MAX_JOBS", "1"), ("KILN_STORE_RETRY_SECONDS", "60")],
    );
    // The old loop gave up after its 4th try; let the outage outlast 5 tries, each waiting
    // longer than the one before.
    let started = std::time::Instant::now();
    while worker.log().matches("the artifact store failed; retrying").count() < 5 {
        let job = bench.job(id).await;
        assert!(!job.state.is_terminal(), "{job:#?}\n{}", worker.log());
        assert!(started.elapsed() < crate::support::DEADLINE, "{}", worker.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    bench.s3_server().restart();
    let job = bench.wait_for(id, "the job to end", |j| j.state.is_terminal()).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{}", bench.logs());
    let attempts = bench.queue.attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 1, "the outage cost no attempt: {attempts:#?}");
    assert_eq!(job.attempt, 1);
    assert!(worker.wait_exit().await.success(), "{}", worker.log());
}
