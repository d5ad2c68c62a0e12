//! The main job, end to end, through the real binaries: a team uploads Iris, submits a
//! training job, a worker trains it, the model is registered and aliased, and the bundle
//! downloads intact. `telemetry.rs`: one OpenTelemetry trace from the API request through
//! the queue to the worker, and silence without a collector. `chaos.rs`: twenty `kill -9`s
//! of workers over eight jobs, nothing lost or done twice. `upload_memory.rs`: a 200 MB
//! upload leaves kiln-api's peak memory within 64 MiB of where it was. `batch.rs`: batch
//! predictions equal a deployment's answers, and a killed worker's successor resumes them.
//! `studies.rs`: hyperparameter studies find a good model, prune, promote from a
//! checkpoint, and survive a worker kill and an API restart.

mod batch;
mod chaos;
mod metrics;
mod platform;
mod studies;
mod telemetry;
mod upload_memory;

use std::time::{Duration, Instant};

use platform::Platform;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_train_register_alias_download() {
    let p = Platform::start().await;
    let platform::DemoTeam { admin, token, dataset } = p.team_with_iris().await;
    assert!(admin.starts_with("kiln_"));
    assert_eq!(dataset["sha256"], hex::encode(Sha256::digest(platform::iris_csv())));

    let spec = json!({
        "dataset_id": dataset["id"], "task": "classification", "target": "species",
        "model": {"type": "mlp", "hidden": [32]},
        "hyperparameters": {"epochs": 30, "batch_size": 16, "learning_rate": 0.01, "seed": 7}
    });
    let job: Value = p.post(&token, "/v1/jobs", spec).await;
    let job_id = job["id"].as_str().unwrap().to_owned();

    // The worker claims and trains it.
    let deadline = Instant::now() + Duration::from_secs(600);
    let job = loop {
        let job: Value = p.get(&token, &format!("/v1/jobs/{job_id}")).await;
        match job["state"].as_str().unwrap() {
            "succeeded" => break job,
            "failed" | "cancelled" => panic!("job ended {job}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "job did not finish: {job}\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(job["ran_on_device"], "cpu");
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["progress"], json!({"epoch": 30, "epochs": 30}));
    assert!(job["model_bundle"].as_str().unwrap().contains("/blobs/sha256/"));

    let metrics: Value = p.get(&token, &format!("/v1/jobs/{job_id}/metrics")).await;
    let loss = metrics["series"]["train_loss"].as_array().unwrap();
    assert_eq!(loss.len(), 30, "one point per epoch");
    assert!(loss[29][1].as_f64().unwrap() < loss[0][1].as_f64().unwrap(), "training loss fell");
    let accuracy = metrics["series"]["val_accuracy"].as_array().unwrap();
    assert!(accuracy.last().unwrap()[1].as_f64().unwrap() >= 0.85, "{accuracy:?}");
    let logs: Value = p.get(&token, &format!("/v1/jobs/{job_id}/logs")).await;
    assert!(!logs["items"].as_array().unwrap().is_empty());

    // Registry with lineage, alias, bundle download.
    let version: Value =
        p.post(&token, "/v1/models/iris/versions", json!({"job_id": job_id})).await;
    assert_eq!(version["version"], 1);
    assert_eq!(version["dataset_sha256"], dataset["sha256"]);
    assert_eq!(version["spec"]["hyperparameters"]["epochs"], 30);
    let alias: Value =
        p.put(&token, "/v1/models/iris/aliases/production", json!({"version": 1})).await;
    assert_eq!(alias["version"], 1);
    let versions: Value = p.get(&token, "/v1/models/iris/versions").await;
    assert_eq!(versions["items"][0]["aliases"], json!(["production"]));
    let bundle = p
        .http
        .get(format!("{}/v1/models/iris/versions/1/bundle", p.api))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bundle)), version["bundle_sha256"].as_str().unwrap());
    assert!(bundle.starts_with(b"PK"), "a zip");

    let audit: Value = p.get(&token, "/v1/audit").await;
    let actions: Vec<&str> =
        audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in ["dataset.upload", "job.submit", "model.register", "model.alias.move"] {
        assert!(actions.contains(&action), "{action} not audited: {actions:?}");
    }

    // The operator's view through the CLI.
    let workers = p.kiln_as(&admin, &["--output", "json", "workers", "list"]);
    let workers: Value = serde_json::from_str(&workers).unwrap();
    assert_eq!(workers[0]["device"], "cpu");
}
