//! Queue benchmark: enqueue rate, claim+complete throughput with 1/2/4/8 workers, and
//! submit→claim latency, against a `pgbench` baseline that runs the very same claim and
//! complete statements (`kiln_queue::sql`) with the same client count, in the same run.
//!
//! Run: `cargo bench -p kiln-queue` (needs PostgreSQL at `KILN_TEST_DATABASE_URL` and
//! `pgbench` on PATH; `scripts/bench-queue.sh` does both). Prints a Markdown table.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_db::testing::fresh_database;
use kiln_queue::{Claimer, NewJob, Queue, QueueConfig, sql};
use kiln_types::{JobResult, WorkerDevice};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::json;
use uuid::Uuid;

const DRAIN_JOBS: usize = 4_000;

async fn exec(db: &DatabaseConnection, sql: &str) {
    db.execute(Statement::from_string(db.get_database_backend(), sql.to_owned())).await.unwrap();
}

async fn reset(db: &DatabaseConnection) {
    exec(db, "TRUNCATE jobs CASCADE").await;
    exec(db, "VACUUM ANALYZE jobs").await;
    exec(db, "VACUUM ANALYZE job_attempts").await;
}

fn jobs(team: Uuid, n: usize) -> Vec<NewJob> {
    (0..n).map(|i| NewJob::new(team, json!({"n": i, "model": {"type": "mlp"}}))).collect()
}

/// A job result as the worker writes it.
fn result() -> JobResult {
    let sha = "9cc1c345c71bcc9b486b74cbf6063fa66f4bb5e0f603a4b3c3471ec2e5e8e355";
    serde_json::from_value(json!({
        "model_bundle": format!("teams/t/blobs/sha256/9c/{sha}"), "bundle_sha256": sha,
        "metrics": {"train_loss": 0.5, "val_loss": 0.4, "best_epoch": 1, "stopped_early": false},
        "dataset_sha256": sha, "device": "cpu", "training_seconds": 0.1,
        "epochs_completed": 1, "resumed_from_epoch": null,
    }))
    .expect("a valid result")
}

async fn fill(queue: &Queue, team: Uuid, n: usize) {
    for chunk in jobs(team, n).chunks(1_000) {
        queue.enqueue_batch(chunk).await.unwrap();
    }
}

/// Claims and completes until the queue is empty with `workers` concurrent claimers.
async fn drain(queue: &Queue, workers: usize) -> (usize, Duration) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let claimer = Claimer { worker_id: Uuid::now_v7(), device: WorkerDevice::Cpu };
                let mut done = 0;
                while let Some(lease) = queue.claim(claimer).await.unwrap() {
                    queue.complete(&lease, &result(), "cpu", None).await.unwrap();
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    (total, started.elapsed())
}

/// The pgbench script: Kiln's claim and complete statements, parameters as variables.
fn pgbench_script() -> String {
    let p = |s: &str, vars: &[(&str, &str)]| {
        let mut s = s.replace('\n', " ");
        // Replace higher numbers first so `$1` does not clobber `$10`.
        for (i, (_, value)) in vars.iter().enumerate().rev() {
            s = s.replace(&format!("${}", i + 1), value);
        }
        s
    };
    let devices = "'{any,cpu}'::text[]";
    format!(
        "BEGIN;\n{} \\gset t_\n{} \\gset\n{} \\gset\n{} \\gset c_\nCOMMIT;\n{};\n",
        p(sql::CHOOSE_TEAM, &[("devices", devices), ("skip", "'{}'::uuid[]")]),
        p(sql::LOCK_TEAM, &[("team", ":t_id")]),
        p(sql::COUNT_RUNNING, &[("team", ":t_id")]),
        p(
            &sql::CLAIM_IN_TEAM,
            &[("team", ":t_id"), ("devices", devices), ("worker", ":worker"), ("lease", "60")]
        ),
        p(
            &sql::COMPLETE,
            &[
                ("job", ":c_id"),
                ("epoch", ":c_lease_epoch"),
                ("result", "'{\"ok\": true}'"),
                ("device", "'cpu'")
            ]
        ),
    )
}

fn run_pgbench(url: &str, script: &std::path::Path, clients: usize, per_client: usize) -> f64 {
    let worker = Uuid::now_v7();
    let out = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-f"])
        .arg(script)
        .args(["-c", &clients.to_string(), "-j", &clients.to_string()])
        .args(["-t", &per_client.to_string(), "-D", &format!("worker={worker}")])
        .arg(url)
        .output()
        .expect("run pgbench (is it on PATH?)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failed = text.lines().find(|l| l.starts_with("number of failed transactions"));
    assert!(failed.is_none_or(|l| l.contains(": 0 ")), "pgbench transactions failed:\n{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output:\n{text}"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let test = fresh_database(32).await.expect("database (set KILN_TEST_DATABASE_URL)");
    let db = &test.db;
    let config = QueueConfig { poll_interval: Duration::from_secs(5), ..QueueConfig::default() };
    let queue = Queue::new(db, config);
    let team = Uuid::now_v7();
    exec(
        db,
        &format!(
            "INSERT INTO teams (id, name, max_running_jobs) VALUES ('{team}', 'bench', 100000)"
        ),
    )
    .await;

    println!("| measure | Kiln | pgbench (same SQL) | ratio |");
    println!("|---|---|---|---|");

    // Enqueue, one call per job.
    reset(db).await;
    let n = 2_000;
    let started = Instant::now();
    for job in jobs(team, n) {
        queue.enqueue(job).await.unwrap();
    }
    let single = n as f64 / started.elapsed().as_secs_f64();
    println!("| enqueue, one job per call | {single:.0} jobs/s | | |");
    // Enqueue, batches of 1,000.
    reset(db).await;
    let n = 20_000;
    let started = Instant::now();
    fill(&queue, team, n).await;
    let batched = n as f64 / started.elapsed().as_secs_f64();
    println!("| enqueue, 1,000 jobs per call | {batched:.0} jobs/s | | |");

    // Claim + complete, Kiln vs pgbench on the same statements.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("claim_complete.sql");
    std::fs::write(&script, pgbench_script()).unwrap();
    for workers in [1, 2, 4, 8] {
        reset(db).await;
        fill(&queue, team, DRAIN_JOBS).await;
        let (done, took) = drain(&queue, workers).await;
        assert_eq!(done, DRAIN_JOBS);
        let kiln = done as f64 / took.as_secs_f64();

        reset(db).await;
        fill(&queue, team, DRAIN_JOBS + 10).await;
        let pg = run_pgbench(&test.url, &script, workers, DRAIN_JOBS / workers);
        println!(
            "| claim+complete, {workers} worker(s) | {kiln:.0} jobs/s | {pg:.0} jobs/s | {:.2}× |",
            kiln / pg
        );
    }

    // Submit → claim latency: an idle claimer woken by NOTIFY; one job every 10 ms.
    reset(db).await;
    // Keyed by the job's `n`, recorded before the insert so a fast claimer always finds it.
    let submitted: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let samples = 300;
    let claimer = {
        let queue = queue.clone();
        let submitted = submitted.clone();
        tokio::spawn(async move {
            let claimer = Claimer { worker_id: Uuid::now_v7(), device: WorkerDevice::Cpu };
            let mut waiter = queue.waiter().await.unwrap();
            let mut latencies = Vec::with_capacity(samples);
            while latencies.len() < samples {
                match queue.claim(claimer).await.unwrap() {
                    Some(lease) => {
                        let claimed = Instant::now();
                        let n = lease.job.spec["n"].as_u64().unwrap();
                        let at = submitted.lock().unwrap().remove(&n).unwrap();
                        latencies.push(claimed - at);
                        queue.complete(&lease, &result(), "cpu", None).await.unwrap();
                    }
                    None => {
                        waiter.wait().await;
                    }
                }
            }
            latencies
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (n, job) in jobs(team, samples).into_iter().enumerate() {
        submitted.lock().unwrap().insert(n as u64, Instant::now());
        queue.enqueue(job).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut latencies = claimer.await.unwrap();
    latencies.sort();
    println!(
        "| submit→claim latency (NOTIFY wake-up) | p50 {:.1} ms, p99 {:.1} ms | | |",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
}
