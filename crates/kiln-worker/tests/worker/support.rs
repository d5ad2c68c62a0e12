//! The test bench: a fresh PostgreSQL database, a real artifact store (s3s-fs, an
//! S3-compatible server checking SigV4, or a local directory), a team, datasets uploaded
//! the way the API does, and the real `kiln-worker` binary started as a child process.
//! Shared by the integration tests and the overhead benchmark.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_db::testing::{TestDatabase, fresh_database};
use kiln_queue::{Job, NewJob, Queue, QueueConfig};
use kiln_store::testing::{ACCESS_KEY, BUCKET, S3sServer, SECRET_KEY};
use kiln_store::{ArtifactStore, Key, LocalStore, S3Store, Team};
use kiln_types::spec::JobSpec;
use kiln_types::{InputBlob, JobInputs, Sha256Digest};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

pub const PREFIX: &str = "kiln";

/// How long any condition may take on a loaded 2-core machine before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(150);

/// The repository's `data/` directory.
pub fn data_file(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data").join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

/// Which artifact store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    S3,
    Local,
}

#[derive(Debug)]
enum StoreBackend {
    S3(S3sServer),
    Local(PathBuf),
}

/// One test's world.
#[derive(Debug)]
pub struct Bench {
    pub test: TestDatabase,
    pub queue: Queue,
    pub store: Arc<dyn ArtifactStore>,
    backend: StoreBackend,
    pub team_id: Uuid,
    pub team: Team,
    /// The workers' dataset cache (one machine: shared by the workers of a test).
    pub cache_dir: PathBuf,
    /// Worker logs.
    pub log_dir: PathBuf,
    _dir: tempfile::TempDir,
}

/// A dataset uploaded the way the API does: its `job.inputs` entry.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub id: Uuid,
    pub inputs: JobInputs,
    pub key: Key,
}

impl Bench {
    pub async fn new(kind: StoreKind) -> Self {
        Self::build(kind, None).await
    }

    /// A bench whose local store lives at `root` (a small file system, say).
    pub async fn with_local_store(root: PathBuf) -> Self {
        Self::build(StoreKind::Local, Some(root)).await
    }

    async fn build(kind: StoreKind, local_root: Option<PathBuf>) -> Self {
        let test = fresh_database(4).await.expect("fresh database");
        let queue = Queue::new(&test.db, QueueConfig::default());
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, backend): (Arc<dyn ArtifactStore>, StoreBackend) = match kind {
            StoreKind::S3 => {
                let server = S3sServer::start();
                let settings = server.settings(&format!("{PREFIX}/"));
                let store = S3Store::connect(settings).await.expect("connect to s3s-fs");
                (Arc::new(store), StoreBackend::S3(server))
            }
            StoreKind::Local => {
                let root = local_root.unwrap_or_else(|| dir.path().join("artifacts"));
                let store = LocalStore::open(&root).await.expect("open local store");
                (Arc::new(store), StoreBackend::Local(root))
            }
        };
        let team_id = Uuid::now_v7();
        let bench = Self {
            queue,
            store,
            backend,
            team_id,
            team: Team::parse(team_id.to_string()).expect("team"),
            cache_dir: dir.path().join("cache"),
            log_dir: dir.path().join("logs"),
            _dir: dir,
            test,
        };
        std::fs::create_dir_all(&bench.log_dir).expect("log dir");
        bench
            .sql(&format!(
                "INSERT INTO teams (id, name, max_running_jobs) VALUES ('{team_id}', 'team-{}', 100)",
                &team_id.simple().to_string()[..12]
            ))
            .await;
        bench
    }

    /// The S3 server behind the store (S3 benches only).
    pub fn s3_server(&mut self) -> &mut S3sServer {
        match &mut self.backend {
            StoreBackend::S3(server) => server,
            StoreBackend::Local(_) => panic!("this bench has a local store"),
        }
    }

    pub async fn sql(&self, sql: &str) {
        self.test
            .db
            .execute(Statement::from_string(self.test.db.get_database_backend(), sql.to_owned()))
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }

    /// One number from the database.
    pub async fn count(&self, sql: &str) -> i64 {
        let row = self
            .test
            .db
            .query_one(Statement::from_string(self.test.db.get_database_backend(), sql.to_owned()))
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
            .expect("a row");
        row.try_get_by_index::<i64>(0).unwrap_or_else(|err| panic!("{sql}: {err}"))
    }

    /// Uploads a dataset content-addressed, as the API does, and returns its inputs entry.
    pub async fn upload(&self, bytes: &[u8], format: &str) -> Uploaded {
        let info = self.store.put_stream(&self.team, &mut &bytes[..]).await.expect("upload");
        let id = Uuid::now_v7();
        let inputs = JobInputs {
            dataset: Some(InputBlob {
                id,
                key: info.key.to_string(),
                sha256: Sha256Digest::parse(info.sha256.to_string()).expect("a digest"),
                format: format.parse().expect("csv, npz or torchscript"),
                size_bytes: Some(info.size),
            }),
            script: None,
            model: None,
            trial: None,
        };
        Uploaded { id, inputs, key: info.key }
    }

    /// Enqueues a training job: `spec` without `dataset_id`, which is filled in.
    pub async fn submit(&self, dataset: &Uploaded, mut spec: Value) -> Uuid {
        spec["dataset_id"] = json!(dataset.id);
        let spec = JobSpec::parse(&spec).expect("a valid spec").to_json();
        let mut job = NewJob::new(self.team_id, spec);
        job.inputs = dataset.inputs.clone();
        self.queue.enqueue(job).await.expect("enqueue").job().id
    }

    pub async fn job(&self, id: Uuid) -> Job {
        self.queue.get(id).await.expect("job")
    }

    /// Polls the job until `done` holds; fails with the job and the worker logs otherwise.
    pub async fn wait_for(&self, id: Uuid, what: &str, done: impl Fn(&Job) -> bool) -> Job {
        let started = Instant::now();
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            if started.elapsed() > DEADLINE {
                panic!(
                    "timed out waiting for {what}; job: {job:#?}\nworker logs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every worker log of this test, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut entries: Vec<_> =
            std::fs::read_dir(&self.log_dir).map(|d| d.flatten().collect()).unwrap_or_default();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            out.push_str(&format!("--- {} ---\n{text}\n", entry.file_name().to_string_lossy()));
        }
        out
    }

    /// The job's log lines (job_events), oldest first.
    pub async fn job_log(&self, id: Uuid) -> Vec<String> {
        self.queue
            .logs(id, None, 10_000)
            .await
            .expect("logs")
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    /// The environment a worker needs to reach this bench, plus test-speed timings.
    pub fn worker_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_owned(), v);
        };
        set("KILN_DATABASE_URL", self.test.url.clone());
        set("KILN_DATABASE_MAX_CONNECTIONS", "4".into());
        set("KILN_WORKER_DEVICE", "cpu".into());
        set("KILN_LEASE_SECONDS", "10".into());
        set("KILN_HEARTBEAT_SECONDS", "0.3".into());
        set("KILN_POLL_SECONDS", "0.2".into());
        set("KILN_RETRY_BACKOFF_SECONDS", "0".into());
        set("KILN_RETRY_BACKOFF_CAP_SECONDS", "0".into());
        set("KILN_TORCH_THREADS", "1".into());
        set("KILN_SHUTDOWN_GRACE_SECONDS", "60".into());
        set("KILN_WORKER_CACHE_DIR", self.cache_dir.display().to_string());
        set("RUST_LOG", "info".into());
        match &self.backend {
            StoreBackend::S3(server) => {
                set("KILN_ARTIFACT_STORE", format!("s3://{BUCKET}/{PREFIX}"));
                set("KILN_S3_FORCE_PATH_STYLE", "true".into());
                set("AWS_ENDPOINT_URL", server.endpoint());
                set("AWS_REGION", "us-east-1".into());
                set("AWS_ACCESS_KEY_ID", ACCESS_KEY.into());
                set("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into());
            }
            StoreBackend::Local(root) => {
                set("KILN_ARTIFACT_STORE", format!("file://{}", root.display()));
            }
        }
        env
    }

    /// Starts the real `kiln-worker` with this bench's environment and `extra` on top.
    pub fn spawn_worker(&self, name: &str, extra: &[(&str, &str)]) -> WorkerProcess {
        let mut env = self.worker_env();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let log_path = self.log_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("worker log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln-worker"));
        // Nothing from the test's own environment may leak in (AWS_* or KILN_*).
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("AWS_") || key.starts_with("KILN_") {
                command.env_remove(key);
            }
        }
        let child = command
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start kiln-worker");
        WorkerProcess { name: name.to_owned(), child: Some(child), log_path }
    }

    /// The id the worker with this pid registered under, once it has.
    pub async fn worker_id(&self, worker: &WorkerProcess) -> Uuid {
        let pid = worker.pid();
        let started = Instant::now();
        loop {
            let rows = self.queue.workers().await.expect("workers");
            if let Some(row) = rows.iter().find(|w| w.pid == Some(pid as i32)) {
                return row.id;
            }
            assert!(started.elapsed() < DEADLINE, "worker {} never registered", worker.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A running `kiln-worker`. Killed (SIGKILL) on drop if still running.
#[derive(Debug)]
pub struct WorkerProcess {
    pub name: String,
    child: Option<Child>,
    pub log_path: PathBuf,
}

impl WorkerProcess {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`, `INT`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Waits for the process to exit; fails the test with its log if it does not.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("poll worker") {
                return status;
            }
            if started.elapsed() > DEADLINE {
                panic!("worker {} did not exit; its log:\n{}", self.name, self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the worker's log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        let started = Instant::now();
        while !self.log().contains(needle) {
            if started.elapsed() > DEADLINE {
                panic!("worker {} never logged {needle:?}; its log:\n{}", self.name, self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().expect("spawned").try_wait().expect("poll worker").is_none()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An Iris classifier spec: an MLP, checkpointed every epoch.
pub fn iris_spec(epochs: u32, batch_size: u32) -> Value {
    json!({
        "task": "classification",
        "target": "species",
        "model": {"type": "mlp", "hidden": [32]},
        "hyperparameters": {
            "epochs": epochs, "batch_size": batch_size, "learning_rate": 0.01,
            "checkpoint_every_epochs": 1, "seed": 7,
        },
    })
}

/// A job that runs for several seconds (about 5 s on an idle machine, longer on a loaded
/// one): Iris with one row per batch, so each epoch is 120 optimiser steps, checkpointed
/// every epoch. Tests stop it after its first checkpoints, long before its end.
pub fn long_iris_spec() -> Value {
    iris_spec(LONG_EPOCHS, 1)
}

pub const LONG_EPOCHS: u32 = 300;
