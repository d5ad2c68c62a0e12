//! Metrics ingest benchmark: points/s accepted by `POST /v1/runs/{id}/metrics` against the
//! MLflow tracking server's `runs/log-batch` (both 1,000 points a request, both backed by
//! the same PostgreSQL, same client concurrency), in the same run.
//!
//! Run: `scripts/bench-ingest.sh` (installs MLflow into `$KILN_CACHE/mlflow`, then
//! `cargo bench -p kiln-api --bench ingest`). Prints a Markdown table.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kiln_api::Application;
use kiln_api::serving::ServingArgs;
use kiln_api::state::{AppState, Limits};
use kiln_db::repo::{teams, tokens};
use kiln_db::testing::{admin_url, fresh_database, replace_database};
use kiln_types::Role;
use serde_json::{Value, json};

const CONNECTIONS: usize = 8;
const POINTS_PER_REQUEST: usize = 1_000;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("--").arg(format!("-{}", self.0.id())).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Sends `requests` bodies made by `body(i)` over `CONNECTIONS` concurrent clients; returns
/// points per second.
async fn load(
    url: String,
    token: Option<String>,
    requests: usize,
    body: Arc<dyn Fn(u64) -> Value + Send + Sync>,
) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (url, token, next, body) = (url.clone(), token.clone(), next.clone(), body.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests as u64 {
                        break;
                    }
                    let mut req = client.post(&url).json(&body(i));
                    if let Some(t) = &token {
                        req = req.bearer_auth(t);
                    }
                    let res = req.send().await.expect("request");
                    let status = res.status();
                    let text = res.text().await.unwrap_or_default();
                    assert!(status.is_success(), "{url} answered {status}: {text}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (requests * POINTS_PER_REQUEST) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mlflow_bin = std::env::var("KILN_MLFLOW").unwrap_or_else(|_| {
        format!("{}/.cache/kiln/mlflow/bin/mlflow", std::env::var("HOME").unwrap_or_default())
    });

    // Kiln, in process, on its own fresh database.
    let test = fresh_database(16).await.expect("database");
    let team = teams::create(&test.db, "bench", 4).await.unwrap();
    let token =
        tokens::issue(&test.db, Some(team.id), Role::Member, "bench", None).await.unwrap().secret;
    let artifacts = tempfile::tempdir().unwrap();
    let state = AppState::new(
        test.db.clone(),
        kiln_store::open_local(artifacts.path()).await.unwrap(),
        Limits {
            json_bytes: 8 << 20,
            upload_bytes: 1 << 20,
            model_memory_bytes: kiln_api::state::DEFAULT_MAX_MODEL_MEMORY_MIB << 20,
        },
        ServingArgs::defaults(),
    );
    let app =
        Application::from_state(state, TcpListener::bind("127.0.0.1:0").unwrap(), Some(2)).unwrap();
    let kiln = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let run: Value = client
        .post(format!("{kiln}/v1/runs"))
        .bearer_auth(&token)
        .json(&json!({"name": "bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = run["id"].as_str().unwrap().to_owned();

    // MLflow 3 with 2 workers on another fresh database of the same server.
    let mlflow_db = format!("kiln_mlflow_{}", uuid::Uuid::new_v4().simple());
    let status = Command::new("psql")
        .arg(admin_url())
        .arg("-Xqc")
        .arg(format!("create database {mlflow_db}"))
        .status()
        .unwrap();
    assert!(status.success());
    let backend = replace_database(&admin_url(), &mlflow_db).replacen(
        "postgres://",
        "postgresql+psycopg2://",
        1,
    );
    let port = free_port();
    let mut command = Command::new(&mlflow_bin);
    command
        .args([
            "server",
            "--backend-store-uri",
            &backend,
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--workers",
            "2",
        ])
        .args(["--default-artifact-root", &artifacts.path().join("mlflow").to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let _mlflow = Killed(
        command
            .spawn()
            .unwrap_or_else(|e| panic!("start {mlflow_bin}: {e} (run scripts/bench-ingest.sh)")),
    );
    let mlflow = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(180);
    let mlflow_run_id = loop {
        let created = client
            .post(format!("{mlflow}/api/2.0/mlflow/runs/create"))
            .json(&json!({"experiment_id": "0", "run_name": "bench"}))
            .send()
            .await;
        if let Ok(res) = created
            && res.status().is_success()
        {
            let v: Value = res.json().await.unwrap();
            break v["run"]["info"]["run_id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "MLflow did not start");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Unique points in every request (MLflow de-duplicates identical metric rows).
    let kiln_body: Arc<dyn Fn(u64) -> Value + Send + Sync> = Arc::new(|i| {
        let points: Vec<Value> = (0..POINTS_PER_REQUEST as u64)
            .map(|j| json!({"name": format!("m{}", j % 10), "step": i * 1000 + j, "value": (i * j) as f64 * 0.001}))
            .collect();
        json!({ "points": points })
    });
    let mlflow_body: Arc<dyn Fn(u64) -> Value + Send + Sync> = {
        let run_id = mlflow_run_id.clone();
        Arc::new(move |i| {
            let metrics: Vec<Value> = (0..POINTS_PER_REQUEST as u64)
                .map(|j| json!({"key": format!("m{}", j % 10), "step": i * 1000 + j, "value": (i * j) as f64 * 0.001, "timestamp": 1_700_000_000_000u64 + i * 1000 + j}))
                .collect();
            json!({"run_id": run_id, "metrics": metrics})
        })
    };

    // Warm both up, then measure.
    load(format!("{kiln}/v1/runs/{run_id}/metrics"), Some(token.clone()), 16, kiln_body.clone())
        .await;
    load(format!("{mlflow}/api/2.0/mlflow/runs/log-batch"), None, 8, mlflow_body.clone()).await;
    let kiln_rate =
        load(format!("{kiln}/v1/runs/{run_id}/metrics"), Some(token), 400, kiln_body).await;
    let mlflow_rate =
        load(format!("{mlflow}/api/2.0/mlflow/runs/log-batch"), None, 48, mlflow_body).await;

    println!(
        "| measure ({CONNECTIONS} connections, {POINTS_PER_REQUEST} points a request) | points/s | vs MLflow |"
    );
    println!("|---|---|---|");
    println!(
        "| Kiln `POST /v1/runs/{{id}}/metrics` | {kiln_rate:.0} | {:.1}× |",
        kiln_rate / mlflow_rate
    );
    println!("| MLflow 3.17 `runs/log-batch` (2 workers) | {mlflow_rate:.0} | 1.0× |");
    let _ = Command::new("psql")
        .arg(admin_url())
        .arg("-Xqc")
        .arg(format!("drop database if exists {mlflow_db} with (force)"))
        .status();
}
