//! The operators' Prometheus series (issue 20): the API's `/metrics` derives job counters,
//! durations, queue waits, running jobs and live workers from PostgreSQL, with every queue
//! state present at 0; the worker's own `/metrics` (`KILN_WORKER_METRICS_BIND`) has epoch
//! times and checkpoint sizes.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::platform::Platform;

const EPOCHS: u64 = 3;

/// The value of the one sample whose line starts with `series` (name and labels exactly).
fn sample(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

async fn scrape(p: &Platform, url: &str, admin: &str) -> String {
    // The admin token travels along so the check holds whether /metrics asks for one or not.
    let res = p.http.get(url).bearer_auth(admin).send().await.unwrap();
    assert_eq!(res.status(), 200, "{url}");
    res.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_jobs_by_outcome_and_team_and_the_worker_serves_its_own() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let p = Platform::start_with(&[], &[("KILN_WORKER_METRICS_BIND", bind.as_str())]).await;
    let demo = p.team_with_iris().await;
    let admin = demo.admin.clone();
    // A second team with no job at all: its states are there, at 0.
    let _: Value = p.post(&admin, "/v1/teams", json!({"name": "quiet"})).await;

    let spec = json!({
        "dataset_id": demo.dataset["id"], "task": "classification", "target": "species",
        "model": {"type": "mlp", "hidden": [8]},
        "hyperparameters": {"epochs": EPOCHS, "batch_size": 16, "learning_rate": 0.01, "seed": 7,
                            "checkpoint_every_epochs": 1}
    });
    let job: Value = p.post(&demo.token, "/v1/jobs", spec).await;
    let job_id = job["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let job: Value = p.get(&demo.token, &format!("/v1/jobs/{job_id}")).await;
        match job["state"].as_str().unwrap() {
            "succeeded" => break,
            "failed" | "cancelled" => panic!("job ended {job}\n{}", p.logs()),
            _ => {}
        }
        assert!(Instant::now() < deadline, "job did not finish: {job}\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let api = scrape(&p, &format!("{}/metrics", p.api), &admin).await;
    let demo_ok = r#"{team="demo",outcome="succeeded"}"#;
    assert_eq!(sample(&api, &format!("kiln_jobs_finished_total{demo_ok}")), 1.0);
    assert_eq!(sample(&api, r#"kiln_jobs_finished_total{team="demo",outcome="failed"}"#), 0.0);
    assert_eq!(sample(&api, r#"kiln_jobs_finished_total{team="quiet",outcome="failed"}"#), 0.0);
    assert_eq!(sample(&api, r#"kiln_jobs_running{team="demo"}"#), 0.0);
    for state in ["queued", "running", "succeeded", "failed", "cancelled"] {
        let want = if state == "succeeded" { 1.0 } else { 0.0 };
        assert_eq!(
            sample(&api, &format!(r#"kiln_queue_jobs{{state="{state}",team="demo"}}"#)),
            want
        );
        assert_eq!(
            sample(&api, &format!(r#"kiln_queue_jobs{{state="{state}",team="quiet"}}"#)),
            0.0
        );
    }
    assert_eq!(sample(&api, &format!("kiln_jobs_duration_seconds_count{demo_ok}")), 1.0);
    let inf = r#"kiln_jobs_duration_seconds_bucket{team="demo",outcome="succeeded",le="+Inf"}"#;
    assert_eq!(sample(&api, inf), 1.0);
    assert!(sample(&api, &format!("kiln_jobs_duration_seconds_sum{demo_ok}")) > 0.0);
    assert_eq!(sample(&api, r#"kiln_jobs_queue_wait_seconds_count{team="demo"}"#), 1.0);
    // The queue wait of a job claimed at once is far below a day: every bucket has it.
    let day = r#"kiln_jobs_queue_wait_seconds_bucket{team="demo",le="86400"}"#;
    assert_eq!(sample(&api, day), 1.0);
    assert_eq!(sample(&api, r#"kiln_workers_alive{device="cpu"}"#), 1.0);
    assert_eq!(sample(&api, r#"kiln_workers_alive{device="cuda"}"#), 0.0);

    let worker = scrape(&p, &format!("http://{bind}/metrics"), &admin).await;
    let epochs = r#"kiln_worker_epoch_duration_seconds_count{device="cpu",model_type="mlp"}"#;
    assert_eq!(sample(&worker, epochs), EPOCHS as f64, "{worker}");
    assert!(sample(&worker, "kiln_worker_checkpoint_bytes_count") >= 1.0, "{worker}");
    assert!(sample(&worker, "kiln_worker_checkpoint_bytes_sum") > 0.0, "{worker}");
    assert_eq!(sample(&worker, r#"kiln_worker_jobs_total{outcome="succeeded"}"#), 1.0);
    assert_eq!(sample(&worker, r#"kiln_worker_jobs_total{outcome="failed"}"#), 0.0);
    assert_eq!(sample(&worker, "kiln_worker_busy"), 0.0);
    let res = p.http.get(format!("http://{bind}/nothing")).send().await.unwrap();
    assert_eq!(res.status(), 404);
}
