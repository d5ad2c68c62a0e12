//! Studies through the real binaries: a search over the digits MLP finds a model above
//! 0.95 validation accuracy while a second team's jobs run beside it (the team cap and
//! `parallel_trials` hold, the other team is not starved); the median rule and ASHA prune,
//! and ASHA promotes a paused trial by resuming it from its checkpoint; a worker `kill -9`
//! and an API restart in the middle of a study lose no trial and duplicate none.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::platform::Platform;

/// A team with its own running-job cap, a maintainer token, and the digits data uploaded.
async fn team_with_digits(p: &Platform, admin: &str, name: &str, cap: i32) -> (String, Value) {
    let team: Value =
        p.post(admin, "/v1/teams", json!({"name": name, "max_running_jobs": cap})).await;
    let token: Value = p
        .post(
            admin,
            &format!("/v1/teams/{}/tokens", team["id"].as_str().unwrap()),
            json!({"name": "ds", "role": "maintainer"}),
        )
        .await;
    let token = token["token"].as_str().unwrap().to_owned();
    let csv = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/digits.csv")).unwrap();
    let dataset: Value = p
        .http
        .post(format!("{}/v1/datasets?name=digits", p.api))
        .bearer_auth(&token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (token, dataset)
}

/// Two workers share two cores: one thread each.
const WORKER: &[(&str, &str)] = &[("KILN_TORCH_THREADS", "1"), ("KILN_POLL_SECONDS", "0.2")];

fn base(dataset: &Value, epochs: u32) -> Value {
    json!({"dataset_id": dataset["id"], "task": "classification", "target": "digit",
           "model": {"type": "mlp", "hidden": [32]},
           "hyperparameters": {"epochs": epochs, "batch_size": 32, "seed": 1}})
}

async fn wait_study(p: &Platform, token: &str, id: &str, minutes: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60 * minutes);
    loop {
        let s = p.get(token, &format!("/v1/studies/{id}")).await;
        if s["state"] != "running" {
            return s;
        }
        assert!(Instant::now() < deadline, "study did not end: {s:#}\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digits_study_beats_095_beside_another_teams_jobs_and_registers_its_best() {
    let mut p = Platform::start_with(&[], WORKER).await;
    p.spawn_worker("kiln-worker-2", WORKER);
    let admin = p.kiln(&["admin", "bootstrap"]).trim().to_owned();
    // The study's team may run one job at a time, whatever parallel_trials says.
    let (token, digits) = team_with_digits(&p, &admin, "search", 1).await;
    let (other, other_digits) = team_with_digits(&p, &admin, "others", 4).await;

    let spec = json!({
        "name": "digits-lr-hidden",
        "base": base(&digits, 12),
        "parameters": {"hyperparameters.learning_rate": {"type": "float", "min": 0.001, "max": 0.05, "log": true},
                       "model.hidden": {"type": "categorical", "values": [[32], [64], [64, 32]]}},
        "objective": {"metric": "val_accuracy", "goal": "maximize"},
        "algorithm": "tpe", "seed": 11, "max_trials": 7, "parallel_trials": 2
    });
    let study = p.post(&token, "/v1/studies", spec).await;
    let id = study["id"].as_str().unwrap().to_owned();
    // The other team's jobs, queued while the study runs.
    let mut other_jobs = Vec::new();
    for _ in 0..2 {
        let job = p.post(&other, "/v1/jobs", base(&other_digits, 12)).await;
        other_jobs.push(job["id"].as_str().unwrap().to_owned());
    }

    let deadline = Instant::now() + Duration::from_secs(900);
    let mut others_done_while_running = false;
    let study = loop {
        let s = p.get(&token, &format!("/v1/studies/{id}")).await;
        let c = &s["counts"];
        let (queued, running) = (c["queued"].as_u64().unwrap(), c["running"].as_u64().unwrap());
        assert!(queued + running <= 2, "more than parallel_trials open: {c}");
        assert!(running <= 1, "the team's cap of 1 running job was exceeded: {c}");
        if s["state"] != "running" {
            break s;
        }
        if !others_done_while_running {
            let mut done = 0;
            for job in &other_jobs {
                let j = p.get(&other, &format!("/v1/jobs/{job}")).await;
                done += usize::from(j["state"] == "succeeded");
            }
            others_done_while_running = done == other_jobs.len();
        }
        assert!(Instant::now() < deadline, "study did not end: {s:#}\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(others_done_while_running, "the other team's jobs waited for the whole study");
    assert_eq!(study["state"], "succeeded", "{study:#}");
    assert_eq!(study["counts"]["succeeded"], 7, "{study:#}");
    let best = &study["best_trial"];
    let accuracy = best["objective"].as_f64().unwrap();
    assert!(accuracy > 0.95, "best validation accuracy {accuracy}: {study:#}");
    let max = study["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["objective"].as_f64())
        .fold(f64::MIN, f64::max);
    assert_eq!(accuracy, max, "the best trial is the best one");

    // The CLI shows the trials and registers the best model in one call.
    let shown = p.kiln_as(&token, &["studies", "show", &id]);
    assert!(
        shown.contains("hyperparameters.learning_rate") && shown.contains("succeeded"),
        "{shown}"
    );
    let registered =
        p.kiln_as(&token, &["--output", "json", "studies", "register", &id, "--model", "digits"]);
    let version: Value = serde_json::from_str(&registered).unwrap();
    assert_eq!((version["model"].as_str(), version["version"].as_i64()), (Some("digits"), Some(1)));
    assert_eq!(version["job_id"], best["job_id"]);
    let audit: Value = p.get(&token, "/v1/audit").await;
    let actions: Vec<&str> =
        audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(
        actions.contains(&"study.create") && actions.contains(&"study.register"),
        "{actions:?}"
    );
}

/// Learning rates from fast to slow: after one epoch the loss ranks them in this order,
/// so the trial that ASHA pauses second-best is the one it promotes.
const RATES: [f64; 6] = [0.01, 0.003, 0.001, 0.0003, 0.0001, 0.00003];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn median_and_asha_prune_and_asha_resumes_a_promoted_trial_from_its_checkpoint() {
    let mut p = Platform::start_with(&[], WORKER).await;
    p.spawn_worker("kiln-worker-2", WORKER);
    let admin = p.kiln(&["admin", "bootstrap"]).trim().to_owned();
    let (token, digits) = team_with_digits(&p, &admin, "pruning", 4).await;
    let study = |name: &str, rule: Value| {
        json!({
            "name": name, "base": base(&digits, 9),
            "parameters": {"hyperparameters.learning_rate": {"type": "categorical", "values": RATES}},
            "objective": {"metric": "val_loss", "goal": "minimize"},
            "algorithm": "grid", "max_trials": 6, "parallel_trials": 1,
            "early_stopping": rule
        })
    };
    let asha = p
        .post(
            &token,
            "/v1/studies",
            study("asha", json!({"type": "asha", "min_epochs": 1, "reduction_factor": 3})),
        )
        .await;
    let median = p
        .post(
            &token,
            "/v1/studies",
            study("median", json!({"type": "median", "min_trials": 2, "start_epoch": 1})),
        )
        .await;
    let asha = wait_study(&p, &token, asha["id"].as_str().unwrap(), 15).await;
    let median = wait_study(&p, &token, median["id"].as_str().unwrap(), 15).await;

    assert_eq!(median["state"], "succeeded", "{median:#}");
    let pruned = median["counts"]["pruned"].as_u64().unwrap();
    assert!(pruned >= 3, "the median rule pruned {pruned} of 6: {median:#}");
    for t in median["trials"].as_array().unwrap() {
        if t["state"] == "pruned" {
            assert!(t["epochs"].as_u64().unwrap() < 9, "{t}");
        }
    }

    assert_eq!(asha["state"], "succeeded", "{asha:#}");
    let trials = asha["trials"].as_array().unwrap();
    let paused = trials.iter().filter(|t| t["state"] == "pruned").count();
    assert!(paused >= 3, "ASHA paused {paused} of 6: {asha:#}");
    let promoted: Vec<&Value> =
        trials.iter().filter(|t| t["promotions"].as_u64().unwrap() > 0).collect();
    assert!(!promoted.is_empty(), "ASHA promoted no trial: {asha:#}\n{}", p.logs());
    for t in promoted {
        let job = p.get(&token, &format!("/v1/jobs/{}", t["job_id"].as_str().unwrap())).await;
        let resumed = job["resumed_from_epoch"].as_i64().unwrap_or(0);
        assert!(resumed > 0, "a promoted trial resumes from its checkpoint: {job:#}");
        assert!(t["epochs"].as_u64().unwrap() > resumed as u64, "and trains on: {t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_kill_and_an_api_restart_mid_study_lose_no_trial() {
    let fast = [
        ("KILN_LEASE_SECONDS", "2"),
        ("KILN_HEARTBEAT_SECONDS", "0.3"),
        ("KILN_RETRY_BACKOFF_SECONDS", "0"),
        ("KILN_RETRY_BACKOFF_CAP_SECONDS", "0"),
        ("KILN_TORCH_THREADS", "1"),
        ("KILN_POLL_SECONDS", "0.2"),
    ];
    let mut p = Platform::start_with(&[], &fast).await;
    let admin = p.kiln(&["admin", "bootstrap"]).trim().to_owned();
    let (token, digits) = team_with_digits(&p, &admin, "crashes", 4).await;
    let spec = json!({
        "name": "survivor", "base": base(&digits, 60),
        "parameters": {"hyperparameters.learning_rate": {"type": "float", "min": 0.001, "max": 0.01, "log": true}},
        "objective": {"metric": "val_accuracy"}, "algorithm": "random", "seed": 5,
        "max_trials": 4, "parallel_trials": 2
    });
    let study = p.post(&token, "/v1/studies", spec).await;
    let id = study["id"].as_str().unwrap().to_owned();

    // Once a trial has trained a few epochs, kill its worker and start another.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let s = p.get(&token, &format!("/v1/studies/{id}")).await;
        if s["trials"].as_array().unwrap().iter().any(|t| t["epochs"].as_u64().unwrap_or(0) >= 3) {
            break;
        }
        assert!(Instant::now() < deadline, "no trial trained: {s:#}\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = p.pid("kiln-worker");
    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    p.spawn_worker("kiln-worker-2", &fast);
    // And the API (the scheduler's process) too.
    p.restart_api(&[]).await;

    let s = wait_study(&p, &token, &id, 15).await;
    assert_eq!(s["state"], "succeeded", "{s:#}\n{}", p.logs());
    assert_eq!(s["counts"]["succeeded"], 4, "{s:#}");
    let numbers: Vec<u64> =
        s["trials"].as_array().unwrap().iter().map(|t| t["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [0, 1, 2, 3]);
    // No trial was proposed twice: the team has exactly the study's four jobs.
    let jobs = p.get(&token, "/v1/jobs?limit=100").await;
    assert_eq!(jobs["items"].as_array().unwrap().len(), 4, "{jobs:#}");
    // The killed trial resumed from its checkpoint on the other worker.
    let mut resumed = 0;
    for t in s["trials"].as_array().unwrap() {
        let job = p.get(&token, &format!("/v1/jobs/{}", t["job_id"].as_str().unwrap())).await;
        if job["attempt"].as_i64().unwrap() > 1 {
            assert!(job["resumed_from_epoch"].as_i64().unwrap_or(0) > 0, "{job:#}");
            resumed += 1;
        }
    }
    assert!(resumed >= 1, "no trial was interrupted: {s:#}");
}
