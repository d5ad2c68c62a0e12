//! The queue against a real PostgreSQL, a fresh database per test. One test binary; each
//! feature is a module.

mod cancel;
mod claim;
mod concurrency;
mod crash;
mod enqueue;
mod fencing;
mod retry;
mod wakeup;
mod workers;

use std::time::Duration;

use kiln_db::testing::{TestDatabase, fresh_database};
use kiln_queue::{Claimer, Lease, NewJob, Queue, QueueConfig};
use kiln_types::{JobProgress, JobResult, WorkerDevice};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use uuid::Uuid;

/// A job result as the worker writes it; `device` tells results apart.
pub fn result(device: &str) -> JobResult {
    let sha = "9cc1c345c71bcc9b486b74cbf6063fa66f4bb5e0f603a4b3c3471ec2e5e8e355";
    serde_json::from_value(json!({
        "model_bundle": format!("teams/t/blobs/sha256/9c/{sha}"), "bundle_sha256": sha,
        "metrics": {"train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.9, "val_f1": 0.9,
                    "best_epoch": 3, "stopped_early": false},
        "dataset_sha256": sha, "device": device, "training_seconds": 1.5,
        "epochs_completed": 3, "resumed_from_epoch": null,
    }))
    .expect("a valid result")
}

/// Progress as a heartbeat reports it.
pub fn progress(epoch: u32, epochs: u32) -> JobProgress {
    JobProgress { epoch, epochs, step: Some(4), steps: Some(4) }
}

/// A fresh database with a queue over it.
#[derive(Debug)]
pub struct Harness {
    pub test: TestDatabase,
    pub queue: Queue,
}

/// Config for tests: zero backoff so retries are claimable at once, unless a test says so.
pub fn test_config() -> QueueConfig {
    QueueConfig {
        lease: Duration::from_secs(30),
        backoff_base: Duration::ZERO,
        backoff_cap: Duration::ZERO,
        poll_interval: Duration::from_millis(200),
    }
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_config(test_config()).await
    }

    pub async fn with_config(config: QueueConfig) -> Self {
        let test = fresh_database(10).await.expect("fresh database");
        let queue = Queue::new(&test.db, config);
        Self { test, queue }
    }

    pub async fn sql(&self, sql: &str) {
        self.test
            .db
            .execute(Statement::from_string(self.test.db.get_database_backend(), sql.to_owned()))
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }

    /// Creates a team with a cap on running jobs.
    pub async fn team(&self, name: &str, max_running: i32) -> Uuid {
        let id = Uuid::now_v7();
        self.sql(&format!(
            "INSERT INTO teams (id, name, max_running_jobs) VALUES ('{id}', '{name}', {max_running})"
        ))
        .await;
        id
    }

    pub async fn submit(&self, team: Uuid, n: usize) -> Vec<Uuid> {
        let jobs: Vec<NewJob> = (0..n).map(|i| NewJob::new(team, json!({"n": i}))).collect();
        self.queue.enqueue_batch(&jobs).await.unwrap()
    }

    /// Makes every running lease look expired, as if its worker had gone silent.
    pub async fn expire_leases(&self) {
        self.sql("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE state = 'running'")
            .await;
    }

    pub async fn claim(&self, device: WorkerDevice) -> Option<Lease> {
        self.queue.claim(cpu_or(device)).await.unwrap()
    }
}

pub fn cpu_or(device: WorkerDevice) -> Claimer {
    Claimer { worker_id: Uuid::now_v7(), device }
}

pub fn cpu() -> Claimer {
    cpu_or(WorkerDevice::Cpu)
}
