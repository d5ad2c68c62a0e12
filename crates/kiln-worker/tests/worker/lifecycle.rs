//! A job from queued to succeeded, and the dataset cache.

use kiln_ml::{DeviceChoice, ModelBundle, Prediction};
use kiln_store::Key;
use kiln_types::{JobResult, JobState};
use serde_json::{Map, Value, json};

use crate::support::{Bench, StoreKind, data_file, iris_spec};

async fn bundle_of(bench: &Bench, result: &JobResult) -> ModelBundle {
    let key = Key::parse(result.model_bundle.clone()).expect("a key");
    let mut stream = bench.store.get(&key, None).await.expect("bundle in the store");
    let mut bytes = Vec::new();
    use futures::StreamExt;
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("bundle bytes"));
    }
    assert_eq!(result.bundle_sha256, kiln_ml::sha256_hex(&bytes));
    ModelBundle::from_bytes(&bytes).expect("a model bundle")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_goes_from_queued_to_succeeded_with_metrics_logs_and_a_loadable_bundle() {
    let bench = Bench::new(StoreKind::S3).await;
    let iris = bench.upload(&data_file("iris.csv"), "csv").await;
    let epochs = 8;
    let id = bench.submit(&iris, iris_spec(epochs, 16)).await;
    assert_eq!(bench.job(id).await.state, JobState::Queued);

    let mut worker = bench.spawn_worker("worker", &[("KILN_WORKER_MAX_JOBS", "2")]);
    let worker_id = bench.worker_id(&worker).await;
    let job = bench.wait_for(id, "the job to succeed", |j| j.state.is_terminal()).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{}", bench.logs());

    // The result, as the API reads it.
    let result = job.result.clone().expect("a result");
    assert_eq!(job.ran_on_device.as_deref(), Some("cpu"));
    assert_eq!(result.device, "cpu");
    assert_eq!(result.epochs_completed, epochs);
    assert_eq!(result.resumed_from_epoch, None);
    assert_eq!(Some(&result.dataset_sha256), iris.inputs.dataset.as_ref().map(|d| &d.sha256));
    assert!(result.training_seconds > 0.0);
    let metrics = &result.metrics;
    let names: Vec<&str> = metrics.series().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["train_loss", "val_loss", "val_accuracy", "val_f1"], "{metrics:?}");
    assert!(metrics.val_accuracy.unwrap() > 0.6, "Iris is learnable: {metrics:?}");
    assert_eq!(metrics.confusion_matrix.as_ref().map(Vec::len), Some(3));

    // Per-epoch metrics, step = epoch (1-based), one point per series and epoch.
    for name in ["train_loss", "val_loss", "val_accuracy", "val_f1"] {
        let sql = format!(
            "SELECT count(DISTINCT step) FROM metrics WHERE run_id = '{id}' AND name = '{name}' \
             AND step BETWEEN 1 AND {epochs}"
        );
        assert_eq!(bench.count(&sql).await, i64::from(epochs), "{name}");
    }

    // Log lines a person can follow.
    let log = bench.job_log(id).await;
    let has = |needle: &str| log.iter().any(|l| l.contains(needle));
    assert!(has(&format!("claimed by worker {worker_id} on cpu")), "{log:#?}");
    assert!(has("cache miss, downloaded"), "{log:#?}");
    assert!(has(&format!("epoch {epochs}/{epochs}: train_loss")), "{log:#?}");
    assert!(has("checkpoint written at epoch "), "{log:#?}");
    assert!(has("completed: 8 epochs"), "{log:#?}");

    // One attempt, by this worker.
    let attempts = bench.queue.attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].worker_id, worker_id);
    assert_eq!(attempts[0].outcome.as_deref(), Some("succeeded"));

    // The bundle loads and predicts a species from a raw row.
    let bundle = bundle_of(&bench, &result).await;
    let model = bundle.load(DeviceChoice::Cpu).expect("load");
    let row: Map<String, Value> = serde_json::from_value(json!({
        "sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3
    }))
    .unwrap();
    match &model.predict(&[row]).expect("predict")[0] {
        Prediction::Class { label, .. } => {
            assert!(["setosa", "versicolor", "virginica"].contains(&label.as_str()), "{label}")
        }
        other => panic!("a class, not {other:?}"),
    }
    assert_eq!(bundle.meta.lineage.job_id, Some(id));

    // A second job on the same data downloads nothing: with the blob deleted from the
    // store, only the worker's cache can provide it.
    bench.store.delete(&iris.key).await.expect("delete the dataset blob");
    let second = bench.submit(&iris, iris_spec(2, 16)).await;
    let job = bench.wait_for(second, "the second job to end", |j| j.state.is_terminal()).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{}", bench.logs());
    let log = bench.job_log(second).await;
    assert!(log.iter().any(|l| l.contains("cache hit, nothing downloaded")), "{log:#?}");

    // --max-jobs 2: the worker leaves by itself, deregistered.
    let status = worker.wait_exit().await;
    assert!(status.success(), "{status}\n{}", worker.log());
    let row = bench.queue.workers().await.unwrap().into_iter().find(|w| w.id == worker_id);
    let row = row.expect("the worker's row");
    assert!(row.stopped_at.is_some(), "{row:?}");
    assert_eq!(row.device, "cpu");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_based_checkpoints_leave_the_result_unchanged() {
    let bench = Bench::new(StoreKind::Local).await;
    let iris = bench.upload(&data_file("iris.csv"), "csv").await;
    // No checkpoint by epoch count; only KILN_CHECKPOINT_EVERY_SECONDS.
    let mut spec = iris_spec(100, 1);
    spec["hyperparameters"]["checkpoint_every_epochs"] = json!(100_000);

    let timed = bench.submit(&iris, spec.clone()).await;
    let mut worker = bench.spawn_worker(
        "timed",
        &[("KILN_CHECKPOINT_EVERY_SECONDS", "0.1"), ("KILN_WORKER_MAX_JOBS", "1")],
    );
    let timed = bench.wait_for(timed, "the timed job to end", |j| j.state.is_terminal()).await;
    assert!(worker.wait_exit().await.success());
    assert_eq!(timed.state, JobState::Succeeded, "{timed:#?}\n{}", bench.logs());
    assert!(timed.checkpoint_key.is_some(), "time-based checkpoints were recorded");
    let log = bench.job_log(timed.id).await;
    assert!(log.iter().any(|l| l.starts_with("checkpoint written at epoch")), "{log:#?}");

    let plain = bench.submit(&iris, spec).await;
    let mut worker = bench.spawn_worker("plain", &[("KILN_WORKER_MAX_JOBS", "1")]);
    let plain = bench.wait_for(plain, "the plain job to end", |j| j.state.is_terminal()).await;
    assert!(worker.wait_exit().await.success());
    assert_eq!(plain.state, JobState::Succeeded, "{plain:#?}\n{}", bench.logs());
    assert_eq!(plain.checkpoint_key, None, "no checkpoint by time or by epoch");

    // Stopping for a checkpoint and resuming from it is exact: the same final metrics.
    let metrics = |job: &kiln_queue::Job| job.result.as_ref().unwrap().metrics.clone();
    assert_eq!(metrics(&timed), metrics(&plain));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_progress_a_succeeded_job_shows_its_last_epoch_not_its_last_heartbeat() {
    let bench = Bench::new(StoreKind::Local).await;
    let iris = bench.upload(&data_file("iris.csv"), "csv").await;
    let epochs = 12;
    let id = bench.submit(&iris, iris_spec(epochs, 16)).await;
    // Heartbeats 5 s apart: training ends between two of them, so only the final write can
    // say where it ended.
    let mut worker = bench
        .spawn_worker("worker", &[("KILN_WORKER_MAX_JOBS", "1"), ("KILN_HEARTBEAT_SECONDS", "5")]);
    let job = bench.wait_for(id, "the job to succeed", |j| j.state.is_terminal()).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{}", bench.logs());
    let progress = job.progress.expect("the completion records the final progress");
    assert_eq!((progress.epoch, progress.epochs), (epochs, epochs), "{progress:?}");
    assert!(progress.step.is_some(), "{progress:?}");
    assert_eq!(progress.step, progress.steps, "the last step of the last epoch: {progress:?}");
    assert!(worker.wait_exit().await.success(), "{}", worker.log());
}
