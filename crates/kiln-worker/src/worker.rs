//! The worker process: register, then claim and run jobs until told to stop.
//!
//! Besides the claim loop, one housekeeping task keeps the worker's row in `workers` fresh
//! (with the job it runs) every heartbeat period and runs [`Queue::rescue`] every half
//! lease, so a fleet of workers needs no separate rescuer: whichever worker comes first
//! takes back the jobs of a dead one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use kiln_ml::DeviceChoice;
use kiln_queue::{Claimer, Lease, Queue, QueueConfig, WorkerInfo};
use kiln_types::WorkerDevice;
use tracing::Instrument as _;
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
        lease: settings.lease(),
    };
    let metrics = match settings.metrics_bind {
        Some(addr) => Some(crate::metrics::serve(addr, device.as_str()).await?),
        None => None,
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
        metrics = metrics.map(|a| a.to_string()),
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
        store_retry: settings.store_retry(),
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
        let claim_started = (SystemTime::now(), Instant::now());
        let claimed = queue.claim(claimer).await;
        if let Ok(job) = &claimed {
            let seconds = claim_started.1.elapsed().as_secs_f64();
            kiln_telemetry::metrics::claim_finished(seconds, job.is_some());
        }
        match claimed {
            Ok(Some(lease)) => {
                claim_delay = Duration::from_millis(100);
                let job_id = lease.job.id;
                *current_job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job_id);
                let span = job_span(&env, &lease, claim_started.0);
                let job_started = Instant::now();
                crate::metrics::busy(true);
                let model_type = model_type(&lease.job.spec);
                let end = async {
                    tracing::info!(job = %job_id, attempt = lease.job.attempt, "claimed a job");
                    let _ = queue.worker_heartbeat(worker_id, Some(job_id)).await;
                    let end = run_job(&env, lease).await;
                    log_end(job_id, end);
                    end
                }
                .instrument(span.clone())
                .await;
                span.record("job.outcome", end.as_str());
                if matches!(end, JobEnd::Failed { .. } | JobEnd::Abandoned) {
                    span.record("otel.status_code", "error");
                }
                kiln_telemetry::metrics::job_finished(
                    job_started.elapsed().as_secs_f64(),
                    end.as_str(),
                    &model_type,
                    env.device_name,
                );
                crate::metrics::job_finished(job_started.elapsed().as_secs_f64(), end.as_str());
                crate::metrics::busy(false);
                *current_job.lock().unwrap_or_else(|e| e.into_inner()) = None;
                jobs_ended += 1;
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

/// The job's span: it continues the trace stored on the job row at submission (the API
/// request's), so one trace runs from the request through the queue to this worker. The
/// claim transaction, which ran before the job (hence its trace) was known, is recorded as
/// its first child with its real timing.
fn job_span(env: &WorkerEnv, lease: &Lease, claim_started: SystemTime) -> tracing::Span {
    let job = &lease.job;
    let span = tracing::info_span!(
        "kiln.job",
        job.id = %job.id,
        team.id = %job.team_id,
        model.type = %model_type(&job.spec),
        device = env.device_name,
        job.attempt = job.attempt,
        job.max_attempts = job.max_attempts,
        lease.epoch = lease.epoch,
        worker.id = %env.worker_id,
        job.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    kiln_telemetry::continue_trace(&span, job.trace_context.as_deref(), None);
    kiln_telemetry::record_trace_id(&span);
    // How long the job had been runnable: `run_after` (the database's clock) is its
    // submission or the end of its retry backoff; now is this machine's clock.
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let waited = (now_ms - job.run_after.timestamp_millis()).max(0) as f64 / 1000.0;
    kiln_telemetry::metrics::job_queue_wait(waited, &model_type(&job.spec));
    kiln_telemetry::propagation::record_span(
        &span,
        "kiln.job.claim",
        claim_started,
        SystemTime::now(),
        vec![
            ("job.id", job.id.to_string().into()),
            ("worker.id", env.worker_id.to_string().into()),
            ("job.attempt", i64::from(job.attempt).into()),
            ("queue.wait_seconds", waited.into()),
        ],
    );
    span
}

/// The spec's `model.type` (`mlp`, `cnn`…), for span attributes and metric labels.
fn model_type(spec: &serde_json::Value) -> String {
    spec["model"]["type"].as_str().unwrap_or("unknown").to_owned()
}

fn log_end(job_id: Uuid, end: JobEnd) {
    match end {
        JobEnd::Succeeded => tracing::info!(job = %job_id, "job succeeded"),
        JobEnd::Failed { retrying } => {
            tracing::warn!(job = %job_id, retrying, "job attempt failed")
        }
        JobEnd::Cancelled => tracing::info!(job = %job_id, "job cancelled"),
        JobEnd::Pruned => tracing::info!(job = %job_id, "trial pruned by its study's rule"),
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
