//! kiln-worker: the training worker. It owns the path claim → fetch → train → upload →
//! complete, and the promise that a worker may die at any moment without losing or
//! duplicating work.
//!
//! A worker registers itself in `workers` (id, host, pid, device, version) and keeps a
//! heartbeat there; claims jobs its device can run (kiln-queue); fetches the dataset from
//! the artifact store into a local cache keyed by sha256 (kiln-store); trains through
//! kiln-ml on a blocking thread while async tasks renew the lease, stream metrics and log
//! lines to PostgreSQL in batches and upload checkpoints; then uploads the model bundle and
//! completes the job. Every write about a job is fenced by the lease (kiln-queue), so a
//! worker that lost its job — a zombie back from a pause — writes nothing.
//!
//! Failure handling:
//! - user errors (bad spec or inputs, bad data, a model that does not fit the data, a
//!   diverging loss) fail the job at once with kiln-ml's message;
//! - infrastructure errors (store or database, I/O, libtorch) fail the attempt as retryable:
//!   the queue retries it with backoff from the job's last checkpoint;
//! - a cancel request stops training within one heartbeat or one batch; the job ends
//!   `cancelled`, keeping a checkpoint of where it stopped;
//! - SIGTERM/SIGINT: finish the batch, checkpoint, release the job (not an attempt), exit 0
//!   within `KILN_SHUTDOWN_GRACE_SECONDS`; a second signal exits at once;
//! - a lost lease stops training at once, and nothing more is written about the job;
//! - a database or store outage does not stop training: heartbeats and writes are retried
//!   with backoff until, by the worker's own clock, the lease must have expired.
//!
//! Settings (flag = environment variable, see [`Settings`]): `KILN_DATABASE_URL`,
//! `KILN_DATABASE_MAX_CONNECTIONS`, `KILN_ARTIFACT_STORE` (+ `KILN_S3_FORCE_PATH_STYLE` and
//! the AWS SDK's variables), `KILN_WORKER_DEVICE` (auto|cpu|cuda), `KILN_LEASE_SECONDS` (60),
//! `KILN_HEARTBEAT_SECONDS` (10, fractions allowed), `KILN_LOG_FORMAT`,
//! `KILN_WORKER_CACHE_DIR`, `KILN_SHUTDOWN_GRACE_SECONDS` (30),
//! `KILN_CHECKPOINT_EVERY_SECONDS` (600), `KILN_TORCH_THREADS`, `KILN_POLL_SECONDS` (5),
//! `KILN_RETRY_BACKOFF_SECONDS` (5), `KILN_RETRY_BACKOFF_CAP_SECONDS` (600),
//! `KILN_WORKER_MAX_JOBS` (`--max-jobs`), `KILN_WORKER_METRICS_BIND` (its own `/metrics`,
//! see the `metrics` module; off when unset).

mod control;
mod inputs;
mod job;
mod metrics;
pub mod settings;
pub mod shutdown;
mod worker;

pub use settings::{DeviceSetting, Settings};
pub use shutdown::Shutdown;
pub use worker::run;
