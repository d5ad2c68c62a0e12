//! The worker's settings: every one a flag and an environment variable (OPERATIONS.md).
//!
//! Durations are given in (possibly fractional) seconds, so tests can run with leases of a
//! few seconds and heartbeats of a few hundred milliseconds.

use std::path::PathBuf;
use std::time::Duration;

use kiln_types::WorkerDevice;

/// Which device this worker offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceSetting {
    /// CUDA when libtorch sees a GPU, else the CPU.
    Auto,
    Cpu,
    /// The first GPU; the worker refuses to start without one.
    Cuda,
}

/// `kiln-worker`'s command line and environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "kiln-worker",
    version,
    about = "Kiln's training worker: claims jobs from the queue in PostgreSQL, trains them with \
             libtorch, checkpoints to the artifact store."
)]
pub struct Settings {
    #[command(flatten)]
    pub db: kiln_db::DbArgs,

    #[command(flatten)]
    pub store: kiln_store::StoreArgs,

    #[command(flatten)]
    pub telemetry: kiln_telemetry::TelemetryArgs,

    /// The device this worker trains on: `auto`, `cpu` or `cuda`.
    #[arg(long = "device", env = "KILN_WORKER_DEVICE", value_enum, default_value_t = DeviceSetting::Auto)]
    pub device: DeviceSetting,

    /// How long a job's lease lasts without a heartbeat, in seconds.
    #[arg(long = "lease-seconds", env = "KILN_LEASE_SECONDS", default_value_t = 60.0, value_parser = seconds)]
    pub lease_seconds: f64,

    /// How often the worker renews its lease and reports progress, in seconds.
    #[arg(long = "heartbeat-seconds", env = "KILN_HEARTBEAT_SECONDS", default_value_t = 10.0, value_parser = seconds)]
    pub heartbeat_seconds: f64,

    /// Where downloaded datasets are cached, one file per sha256
    /// [default: $XDG_CACHE_HOME/kiln/worker or ~/.cache/kiln/worker].
    #[arg(long = "cache-dir", env = "KILN_WORKER_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// After SIGTERM/SIGINT: how long the worker may take to checkpoint and release its job
    /// before it exits non-zero without releasing (the lease then expires and the job is
    /// rescued).
    #[arg(long = "shutdown-grace-seconds", env = "KILN_SHUTDOWN_GRACE_SECONDS", default_value_t = 30.0, value_parser = seconds)]
    pub shutdown_grace_seconds: f64,

    /// Checkpoint at least this often, in seconds, besides every `checkpoint_every_epochs`
    /// epochs of the job's spec.
    #[arg(long = "checkpoint-every-seconds", env = "KILN_CHECKPOINT_EVERY_SECONDS", default_value_t = 600.0, value_parser = seconds)]
    pub checkpoint_every_seconds: f64,

    /// libtorch's intra-op threads [default: libtorch's own choice].
    #[arg(long = "torch-threads", env = "KILN_TORCH_THREADS")]
    pub torch_threads: Option<usize>,

    /// How often an idle worker looks for work when no notification arrives, in seconds.
    #[arg(long = "poll-seconds", env = "KILN_POLL_SECONDS", default_value_t = 5.0, value_parser = seconds)]
    pub poll_seconds: f64,

    /// First retry delay of a job whose attempt failed for an infrastructure reason, in
    /// seconds (full-jitter exponential backoff from the database clock).
    #[arg(long = "retry-backoff-seconds", env = "KILN_RETRY_BACKOFF_SECONDS", default_value_t = 5.0, value_parser = seconds)]
    pub retry_backoff_seconds: f64,

    /// Longest retry delay, in seconds.
    #[arg(long = "retry-backoff-cap-seconds", env = "KILN_RETRY_BACKOFF_CAP_SECONDS", default_value_t = 600.0, value_parser = seconds)]
    pub retry_backoff_cap_seconds: f64,

    /// How long a job keeps retrying an artifact store that is unavailable, full or
    /// read-only (downloads, the model bundle upload), in seconds, with exponential backoff
    /// from the first failure, before the attempt fails as retryable. Checkpoints are not
    /// waited for: one that cannot be stored is skipped and training goes on.
    #[arg(long = "store-retry-seconds", env = "KILN_STORE_RETRY_SECONDS", default_value_t = 120.0, value_parser = seconds)]
    pub store_retry_seconds: f64,

    /// Exit after this many jobs (whatever their outcome) [default: run until signalled].
    #[arg(long = "max-jobs", env = "KILN_WORKER_MAX_JOBS")]
    pub max_jobs: Option<u64>,

    /// Serve the worker's Prometheus metrics (epoch times, checkpoint sizes, attempts by
    /// outcome) at `GET /metrics` on this address, e.g. 0.0.0.0:9091 [default: not served].
    #[arg(long = "metrics-bind", env = "KILN_WORKER_METRICS_BIND", value_name = "ADDR")]
    pub metrics_bind: Option<std::net::SocketAddr>,
}

fn seconds(s: &str) -> Result<f64, String> {
    let value: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if (0.0..=1e9).contains(&value) {
        Ok(value)
    } else {
        Err(format!("`{s}` must be a number of seconds between 0 and 1e9"))
    }
}

impl Settings {
    pub fn lease(&self) -> Duration {
        Duration::from_secs_f64(self.lease_seconds)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_seconds)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_grace_seconds)
    }

    pub fn checkpoint_every(&self) -> Duration {
        Duration::from_secs_f64(self.checkpoint_every_seconds)
    }

    pub fn store_retry(&self) -> Duration {
        Duration::from_secs_f64(self.store_retry_seconds)
    }

    pub fn poll(&self) -> Duration {
        Duration::from_secs_f64(self.poll_seconds)
    }

    /// Checks what clap cannot: a heartbeat must come well within the lease.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_seconds <= 0.0 || self.heartbeat_seconds <= 0.0 {
            return Err("KILN_LEASE_SECONDS and KILN_HEARTBEAT_SECONDS must be > 0".into());
        }
        if self.heartbeat_seconds * 2.0 > self.lease_seconds {
            return Err(format!(
                "KILN_HEARTBEAT_SECONDS ({}) must be at most half of KILN_LEASE_SECONDS ({}), \
                 or one late heartbeat loses the lease",
                self.heartbeat_seconds, self.lease_seconds
            ));
        }
        if self.checkpoint_every_seconds <= 0.0 {
            return Err("KILN_CHECKPOINT_EVERY_SECONDS must be > 0".into());
        }
        Ok(())
    }

    /// The dataset cache directory.
    pub fn cache_dir(&self) -> Result<PathBuf, String> {
        if let Some(dir) = &self.cache_dir {
            return Ok(dir.clone());
        }
        let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
        std::env::var_os("XDG_CACHE_HOME")
            .and_then(absolute)
            .or_else(|| std::env::var_os("HOME").and_then(absolute).map(|h| h.join(".cache")))
            .map(|cache| cache.join("kiln/worker"))
            .ok_or_else(|| {
                "no KILN_WORKER_CACHE_DIR, and neither XDG_CACHE_HOME nor HOME is set".to_owned()
            })
    }
}

impl DeviceSetting {
    /// The device this machine offers, or why it cannot.
    pub fn resolve(self) -> Result<WorkerDevice, String> {
        match self {
            DeviceSetting::Cpu => Ok(WorkerDevice::Cpu),
            DeviceSetting::Auto if kiln_ml::cuda_available() => Ok(WorkerDevice::Cuda),
            DeviceSetting::Auto => Ok(WorkerDevice::Cpu),
            DeviceSetting::Cuda if kiln_ml::cuda_available() => Ok(WorkerDevice::Cuda),
            DeviceSetting::Cuda => {
                Err("KILN_WORKER_DEVICE=cuda but libtorch sees no CUDA device".to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        let mut all = vec!["kiln-worker", "--database-url", "postgres://u@h/db"];
        all.extend_from_slice(args);
        Settings::try_parse_from(all)
    }

    #[test]
    fn defaults_match_operations_md() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.lease(), Duration::from_secs(60));
        assert_eq!(s.heartbeat(), Duration::from_secs(10));
        assert_eq!(s.device, DeviceSetting::Auto);
        assert_eq!(s.store_retry(), Duration::from_secs(120));
        assert!(s.validate().is_ok());
    }

    #[test]
    fn fractional_seconds_parse_and_nonsense_is_refused() {
        let s = parse(&["--lease-seconds", "2.5", "--heartbeat-seconds", "0.3"]).unwrap();
        assert_eq!(s.heartbeat(), Duration::from_millis(300));
        assert!(s.validate().is_ok());
        assert!(parse(&["--lease-seconds", "soon"]).is_err());
        assert!(parse(&["--lease-seconds", "-1"]).is_err());
        let slow = parse(&["--lease-seconds", "10", "--heartbeat-seconds", "6"]).unwrap();
        assert!(slow.validate().unwrap_err().contains("at most half"));
    }
}
