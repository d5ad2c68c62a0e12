//! The worker process: register, then claim and run jobs until told to stop.
//!
//! Besides the claim loop, one housekeeping task keeps the worker's row in `workers` fresh
//! (with the job it runs) every heartbeat period and runs [`Queue::rescue`] every half
//! lease, so a fleet of workers needs no separate rescuer: whichever worker comes first
//! takes back the jobs of a dead one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kiln_ml::DeviceChoice;
use kiln_queue::{Claimer, Queue, QueueConfig, WorkerInfo};
use kiln_types::WorkerDevice;
use uuid::Uuid;

use crate::inputs::DatasetCache;
use crate::job::{JobEnd, WorkerEnv, run_job};
use crate::settings::Settings;
use crate::shutdown::Shutdown;

/// Runs the worker until a shutdown is requested (and the current job released) or
/// `--max-jobs` jobs have ended.
pub async fn run(settings: Settings, shutdown: Arc<Shutdown>) -> anyhow::Result<()> {
    settings.validate().map_err(anyhow::Error::msg)?;
    let device = settings.device.resolve().map_err(anyhow::Error::msg)?;
    if let Some(threads) = settings.torch_threads {
        kiln_ml::set_num_threads(threads);
    }
    let cache_dir = settings.cache_dir().map_err(anyhow::Error::msg)?;
    let db = kiln_db::connect(&settings.db).await?;
    let queue = Queue::new(
        &db,
        QueueConfig {
            lease: settings.lease(),
            backoff_base: Duration::from_secs_f64(settings.retry_backoff_seconds),
            backoff_cap: Duration::from_secs_f64(settings.retry_backoff_cap_seconds),
            poll_interval: settings.poll(),
        },
    );
    let store = kiln_store::open(&settings.store).await.context("opening the artifact store")?;

    let worker_id = Uuid::now_v7();
    let info = WorkerInfo {
        id: worker_id,
        host: hostname(),
        pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
        device,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    queue.register_worker(&info).await.context("registering the worker")?;
    let mut waiter = queue.waiter().await.context("listening for new jobs")?;
    tracing::info!(
        worker = %worker_id,
        host = info.host,
        device = device.as_str(),
        store = store.describe(),
        cache = %cache_dir.display(),
        lease_seconds = settings.lease_seconds,
        heartbeat_seconds = settings.heartbeat_seconds,
        "kiln-worker started"
    );

    let env = WorkerEnv {
        queue: queue.clone(),
        store,
        cache: DatasetCache::new(cache_dir),
        worker_id,
        device: match device {
            WorkerDevice::Cpu => DeviceChoice::Cpu,
            WorkerDevice::Cuda => DeviceChoice::Cuda,
        },
        device_name: device.as_str(),
        shutdown: shutdown.clone(),
        lease: settings.lease(),
        heartbeat: settings.heartbeat(),
        checkpoint_every: settings.checkpoint_every(),
    };
    let current_job = Arc::new(Mutex::new(None));
    let housekeeping = tokio::spawn(housekeeping(
        queue.clone(),
        worker_id,
        current_job.clone(),
        settings.heartbeat(),
        settings.lease() / 2,
    ));

    let claimer = Claimer { worker_id, device };
    let mut jobs_ended = 0u64;
    let mut claim_delay = Duration::from_millis(100);
    while !shutdown.is_requested() && settings.max_jobs.is_none_or(|max| jobs_ended < max) {
        match queue.claim(claimer).await {
            Ok(Some(lease)) => {
                claim_delay = Duration::from_millis(100);
                let job_id = lease.job.id;
                tracing::info!(job = %job_id, attempt = lease.job.attempt, "claimed a job");
                *current_job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job_id);
                let _ = queue.worker_heartbeat(worker_id, Some(job_id)).await;
                let end = run_job(&env, lease).await;
                *current_job.lock().unwrap_or_else(|e| e.into_inner()) = None;
                jobs_ended += 1;
                log_end(job_id, end);
            }
            Ok(None) => {
                tokio::select! {
                    _ = waiter.wait() => {}
                    _ = shutdown.wait() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "claiming a job failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(claim_delay) => {}
                    _ = shutdown.wait() => {}
                }
                claim_delay = (claim_delay * 2).min(settings.poll().max(Duration::from_secs(1)));
            }
        }
    }
    housekeeping.abort();
    if let Err(err) = queue.worker_stopped(worker_id).await {
        tracing::warn!(error = %err, "could not mark the worker stopped");
    }
    tracing::info!(worker = %worker_id, jobs_ended, "kiln-worker stopped");
    Ok(())
}

fn log_end(job_id: Uuid, end: JobEnd) {
    match end {
        JobEnd::Succeeded => tracing::info!(job = %job_id, "job succeeded"),
        JobEnd::Failed { retrying } => {
            tracing::warn!(job = %job_id, retrying, "job attempt failed")
        }
        JobEnd::Cancelled => tracing::info!(job = %job_id, "job cancelled"),
        JobEnd::Released => tracing::info!(job = %job_id, "job released back to the queue"),
        JobEnd::LeaseLost => {
            tracing::warn!(job = %job_id, "lease lost; another attempt owns the job")
        }
        JobEnd::Abandoned => {
            tracing::error!(job = %job_id, "attempt abandoned; its lease will expire and be rescued")
        }
    }
}

async fn housekeeping(
    queue: Queue,
    worker_id: Uuid,
    current_job: Arc<Mutex<Option<Uuid>>>,
    period: Duration,
    rescue_every: Duration,
) {
    let mut last_rescue: Option<Instant> = None;
    loop {
        let job = *current_job.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = queue.worker_heartbeat(worker_id, job).await {
            tracing::warn!(error = %err, "worker heartbeat failed");
        }
        if last_rescue.is_none_or(|at| at.elapsed() >= rescue_every) {
            last_rescue = Some(Instant::now());
            match queue.rescue().await {
                Ok(rescued) => {
                    for r in rescued {
                        tracing::info!(job = %r.job_id, state = %r.new_state, "rescued an expired lease");
                    }
                }
                Err(err) => tracing::warn!(error = %err, "rescue failed"),
            }
        }
        tokio::time::sleep(period).await;
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}
