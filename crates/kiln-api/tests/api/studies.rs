//! Studies at the API (no worker runs here; tests/e2e/studies.rs trains trials through the
//! real binaries): a study is accepted and its scheduler queues `parallel_trials` trials as
//! jobs of the team, every bad field is named in one 422, a study fails once more trials
//! failed than allowed, a stop cancels the open trials, roles and teams are enforced, and
//! two replicas' schedulers never propose a trial twice.

use std::time::{Duration, Instant};

use kiln_queue::{Claimer, Queue, QueueConfig};
use kiln_types::WorkerDevice;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{TestApp, assert_error, example, spawn_app};

fn study(dataset: &Value) -> Value {
    json!({
        "name": "iris-lr",
        "base": {"dataset_id": dataset["id"], "task": "classification", "target": "species",
                 "model": {"type": "mlp", "hidden": [16]}, "hyperparameters": {"epochs": 5}},
        "parameters": {"hyperparameters.learning_rate": {"type": "float", "min": 0.001, "max": 0.1, "log": true},
                       "model.hidden": {"type": "categorical", "values": [[8], [16, 8]]}},
        "objective": {"metric": "val_accuracy", "goal": "maximize"},
        "algorithm": "random", "seed": 3, "max_trials": 5, "parallel_trials": 2,
        "max_failed_trials": 1
    })
}

async fn get_study(app: &TestApp, token: &str, id: &str) -> Value {
    let res = app.get(&format!("/v1/studies/{id}"), token).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Polls the study until `done` holds (the scheduler runs every half second).
async fn wait_for(app: &TestApp, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = get_study(app, token, id).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "study never got there: {s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_study_queues_parallel_trials_as_jobs_and_fails_after_too_many_failures() {
    let app = spawn_app().await;
    let team = app.team("search").await;
    let data = app.upload(&team.member, "iris", "text/csv", example("iris.csv")).await;
    let res = app.post("/v1/studies", &team.member, study(&data)).await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["state"], "running");
    assert_eq!(created["spec"]["early_stopping"], Value::Null);
    let id = created["id"].as_str().unwrap().to_owned();

    // The scheduler queues two trials (parallel_trials) and no more while they are open.
    let s = wait_for(&app, &team.viewer, &id, |s| s["counts"]["queued"] == 2).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let s2 = get_study(&app, &team.viewer, &id).await;
    assert_eq!(s2["trials"].as_array().unwrap().len(), 2, "{s2:#}");
    let trials = s["trials"].as_array().unwrap();
    for (i, t) in trials.iter().enumerate() {
        assert_eq!(t["number"], i);
        let lr = t["params"]["hyperparameters.learning_rate"].as_f64().unwrap();
        assert!((0.001..=0.1).contains(&lr), "{t}");
        // Each trial is an ordinary training job of the team, with its values put in.
        let job: Value = app
            .get(&format!("/v1/jobs/{}", t["job_id"].as_str().unwrap()), &team.viewer)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!((job["kind"].as_str(), job["state"].as_str()), (Some("train"), Some("queued")));
        assert_eq!(job["spec"]["hyperparameters"]["learning_rate"].as_f64(), Some(lr));
        assert_eq!(job["spec"]["model"]["hidden"], t["params"]["model.hidden"]);
        assert_eq!(job["spec"]["hyperparameters"]["epochs"], 5);
        // And a run, whose params show the searched values.
        let run: Value = app
            .get(&format!("/v1/runs/{}", t["job_id"].as_str().unwrap()), &team.viewer)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(run["name"], format!("iris-lr trial {i}"));
        assert_eq!(run["params"]["model.hidden"], t["params"]["model.hidden"]);
    }
    // Seeded: the same spec and seed propose the same first trials in another team.
    let other = app.team("search-2").await;
    let data2 = app.upload(&other.member, "iris", "text/csv", example("iris.csv")).await;
    let res = app.post("/v1/studies", &other.member, study(&data2)).await;
    let id2 = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let s_other = wait_for(&app, &other.viewer, &id2, |s| s["counts"]["queued"] == 2).await;
    for i in 0..2 {
        assert_eq!(s_other["trials"][i]["params"], trials[i]["params"], "trial {i}");
    }
    // Another team's study is not found.
    let res = app.get(&format!("/v1/studies/{id}"), &other.viewer).await;
    assert_error(res, 404, "not_found").await;

    // Two trials fail (more than max_failed_trials = 1): the study fails and its open
    // trials are cancelled.
    let queue = Queue::new(&app.test.db, QueueConfig::default());
    let claimer = Claimer { worker_id: Uuid::now_v7(), device: WorkerDevice::Cpu };
    let mut failed = 0;
    while failed < 2 {
        let lease = queue.claim(claimer).await.unwrap().expect("a queued trial");
        if lease.job.team_id != team.id {
            queue.release(&lease).await.unwrap();
            continue;
        }
        queue.fail(&lease, "the test failed it", false).await.unwrap();
        failed += 1;
        if failed == 1 {
            // A free slot: the scheduler proposes the next trial.
            wait_for(&app, &team.viewer, &id, |s| s["trials"].as_array().unwrap().len() == 3).await;
        }
    }
    let s = wait_for(&app, &team.viewer, &id, |s| s["state"] != "running").await;
    assert_eq!(s["state"], "failed", "{s:#}");
    assert!(s["reason"].as_str().unwrap().contains("max_failed_trials"), "{s}");
    assert_eq!(s["counts"]["failed"], 2);
    assert_eq!(s["counts"]["cancelled"], 1, "{s:#}");
    assert_eq!(s["best_trial"], Value::Null);
    // Nothing to register.
    let res = app
        .post(&format!("/v1/studies/{id}/register"), &team.maintainer, json!({"model": "m"}))
        .await;
    assert_error(res, 409, "invalid_state").await;
}

#[tokio::test]
async fn a_stop_cancels_the_open_trials_and_is_audited() {
    let app = spawn_app().await;
    let team = app.team("stopper").await;
    let data = app.upload(&team.member, "iris", "text/csv", example("iris.csv")).await;
    // A viewer may read but not start a study.
    let res = app.post("/v1/studies", &team.viewer, study(&data)).await;
    assert_error(res, 403, "forbidden").await;
    let res = app.post("/v1/studies", &team.member, study(&data)).await;
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    wait_for(&app, &team.viewer, &id, |s| s["counts"]["queued"] == 2).await;
    let res = app.post(&format!("/v1/studies/{id}/stop"), &team.member, json!({})).await;
    assert_eq!(res.status(), 200);
    let s: Value = res.json().await.unwrap();
    assert_eq!(s["state"], "stopped");
    assert_eq!(s["counts"]["cancelled"], 2, "{s:#}");
    // The scheduler leaves a stopped study alone.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let s = get_study(&app, &team.viewer, &id).await;
    assert_eq!(s["trials"].as_array().unwrap().len(), 2);
    let page: Value = app.get("/v1/studies", &team.viewer).await.json().await.unwrap();
    assert_eq!(page["items"][0]["id"], id.as_str());
    assert_eq!(page["items"][0]["trials"], json!([]), "lists leave the trials out");
    assert_eq!(page["items"][0]["counts"]["cancelled"], 2);
    let audit: Value = app.get("/v1/audit", &team.maintainer).await.json().await.unwrap();
    let actions: Vec<&str> =
        audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"study.create") && actions.contains(&"study.stop"), "{actions:?}");
}

#[tokio::test]
async fn bad_study_specs_name_every_field() {
    let app = spawn_app().await;
    let team = app.team("typos").await;
    let data = app.upload(&team.member, "iris", "text/csv", example("iris.csv")).await;
    let res = app
        .post(
            "/v1/studies",
            &team.member,
            json!({
                "name": "bad",
                "base": {"dataset_id": data["id"], "task": "classification", "target": "colour",
                         "model": {"type": "mlp"}, "hyperparameters": {"epochs": 4}},
                "parameters": {"hyperparameters.learning_rate": {"type": "float", "min": 0.2, "max": 0.1},
                               "hyperparameters.batch_size": {"type": "int", "min": 8, "max": 64, "step": 0},
                               "hyperparameters.momentun": {"type": "float", "min": 0.1, "max": 0.9},
                               "dataset_id": {"type": "categorical", "values": ["x"]}},
                "objective": {"metric": "val_rmse"},
                "algorithm": "bayesian",
                "max_trials": 0,
                "early_stopping": {"type": "asha", "min_epochs": 4, "reduction_factor": 1}
            }),
        )
        .await;
    let body = assert_error(res, 422, "validation_failed").await;
    let fields = body["error"]["details"]["fields"].as_object().unwrap();
    for f in [
        "parameters.hyperparameters.learning_rate.max",
        "parameters.hyperparameters.batch_size.step",
        "parameters.hyperparameters.momentun",
        "parameters.dataset_id",
        "objective.metric",
        "algorithm",
        "max_trials",
        "early_stopping.reduction_factor",
        "early_stopping.min_epochs",
    ] {
        assert!(fields.contains_key(f), "{f} missing: {body:#}");
    }
    // The base spec's own problems, and those only its dataset reveals, are under `base.`.
    let res = app
        .post(
            "/v1/studies",
            &team.member,
            json!({
                "name": "bad-base",
                "base": {"dataset_id": data["id"], "task": "classification", "target": "colour",
                         "model": {"type": "mlp"}},
                "parameters": {"hyperparameters.learning_rate": {"type": "float", "min": 0.01, "max": 0.1}},
                "objective": {"metric": "val_accuracy"}
            }),
        )
        .await;
    let body = assert_error(res, 422, "validation_failed").await;
    assert!(body["error"]["details"]["fields"]["base.target"].is_string(), "{body:#}");
    let page: Value = app.get("/v1/studies", &team.viewer).await.json().await.unwrap();
    assert_eq!(page["items"], json!([]), "nothing was created");
}

#[tokio::test]
async fn two_replicas_schedule_a_study_without_proposing_a_trial_twice() {
    let app = spawn_app().await;
    // A second API process on the same database: its own scheduler races the first.
    let (_replica, _cache) = app.replica(kiln_api::serving::ServingArgs::defaults()).await;
    let team = app.team("replicas").await;
    let data = app.upload(&team.member, "iris", "text/csv", example("iris.csv")).await;
    let mut spec = study(&data);
    spec["parallel_trials"] = json!(3);
    let res = app.post("/v1/studies", &team.member, spec).await;
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let s = wait_for(&app, &team.viewer, &id, |s| s["counts"]["queued"] == 3).await;
    // Several passes of both schedulers later: still three trials, numbered once each, and
    // the team has exactly their three jobs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s2 = get_study(&app, &team.viewer, &id).await;
    assert_eq!(s2["trials"], s["trials"], "{s2:#}");
    let numbers: Vec<u64> =
        s2["trials"].as_array().unwrap().iter().map(|t| t["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [0, 1, 2]);
    let jobs: Value = app.get("/v1/jobs", &team.viewer).await.json().await.unwrap();
    assert_eq!(jobs["items"].as_array().unwrap().len(), 3, "{jobs:#}");
}
