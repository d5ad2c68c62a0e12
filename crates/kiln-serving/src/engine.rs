//! One model version on its own inference thread, with dynamic batching.
//!
//! Request handlers validate and encode rows on actix's threads, then hand the encoded rows
//! to the engine through a bounded channel and await a oneshot answer; they never block.
//! The inference thread owns the [`LoadedModel`] (libtorch modules are not `Sync`): it
//! blocks for a first request, takes every request already queued behind it, and runs the
//! batch as soon as waiting longer cannot make it bigger ([`BatchPolicy`]): when every
//! request submitted to the engine is already in the batch, or none arrived in the last
//! [`ARRIVAL_GAP`]. `max_wait_ms` only bounds how long the first request may be held, and
//! `max_batch_size` the rows of one forward pass. Under load, requests queue while a batch
//! runs, so batches grow by themselves; a lone client is never held back. A panic inside a
//! forward pass fails that batch's requests, not the thread.
//!
//! When the channel is full, [`Engine::submit`] refuses at once (the API answers 503 with
//! `Retry-After`) instead of queueing without bound. When the last handle to an engine is
//! dropped (a hot swap moved traffic elsewhere and the in-flight requests finished), the
//! channel closes, the thread answers what is still queued, and exits: draining is free.
//!
//! Each batch runs under a `kiln.serving.batch` span linked to the `kiln.serving.predict`
//! span of every request in it, when traces leave the process
//! ([`kiln_telemetry::traces_exported`]); without an exporter nobody could see either span,
//! so neither is made (see docs/benchmarks.md, "Released binary vs the in-process bench").

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kiln_ml::{DeviceChoice, LoadedModel, ModelBundle, Prediction, Preprocessor, TrainingStats};
use kiln_types::api::Batching;
use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::oneshot;

use crate::LoadError;

/// What a handler gets back: the predictions of its rows, or why inference failed.
pub type Answer = Result<Vec<Prediction>, InferenceError>;

/// Why a batch's forward pass gave no predictions; every request of the batch gets it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferenceError {
    /// kiln-ml refused or failed the forward pass (its message).
    #[error("{0}")]
    Model(String),
    /// libtorch or the bundle's code panicked during the forward pass.
    #[error("inference panicked: {0}")]
    Panicked(String),
}

struct Work {
    features: Vec<f32>,
    rows: usize,
    reply: oneshot::Sender<Answer>,
    /// The request's span, which the batch span that answers it links to (only when
    /// traces are exported).
    traceparent: Option<String>,
}

/// How long a batch is held open for a request that is known to be on its way (submitted
/// but not yet taken off the queue) after the last arrival. Only that race is waited for:
/// with nothing more submitted, the batch runs at once.
pub const ARRIVAL_GAP: Duration = Duration::from_micros(200);

/// Why a gathering batch runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// `max_batch_size` rows.
    Full,
    /// Every request submitted to the engine is in the batch: waiting cannot grow it.
    AllInFlight,
    /// No request arrived in the last [`ARRIVAL_GAP`].
    Idle,
    /// The first request has waited `max_wait_ms`.
    Deadline,
}

/// What the inference thread does next with the batch it is gathering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Run(Dispatch),
    /// Wait for the next request until this instant, then decide again.
    WaitUntil(Instant),
}

/// A batch being gathered, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gathering {
    /// When the engine took the batch's first request.
    pub opened_at: Instant,
    /// When the engine took the batch's latest request.
    pub last_arrival: Instant,
    pub rows: usize,
    pub requests: u64,
}

/// Adaptive batching: when to stop gathering and run. A pure function of the batch, the
/// number of requests submitted to the engine and not yet answered (`in_flight`, the batch
/// included) and the time, so it is tested with a simulated clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    pub max_rows: usize,
    pub max_wait: Duration,
    pub arrival_gap: Duration,
}

impl BatchPolicy {
    pub fn new(batching: Batching) -> Self {
        BatchPolicy {
            max_rows: batching.max_batch_size.max(1) as usize,
            max_wait: Duration::from_millis(u64::from(batching.max_wait_ms)),
            arrival_gap: ARRIVAL_GAP,
        }
    }

    pub fn decide(&self, batch: &Gathering, in_flight: u64, now: Instant) -> Decision {
        if batch.rows >= self.max_rows {
            return Decision::Run(Dispatch::Full);
        }
        if in_flight <= batch.requests {
            return Decision::Run(Dispatch::AllInFlight);
        }
        let deadline = batch.opened_at + self.max_wait;
        if now >= deadline {
            return Decision::Run(Dispatch::Deadline);
        }
        let idle_at = batch.last_arrival + self.arrival_gap;
        if now >= idle_at {
            return Decision::Run(Dispatch::Idle);
        }
        Decision::WaitUntil(deadline.min(idle_at))
    }
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: answer 503 and let the client retry.
    #[error("too many requests queued")]
    Overloaded,
    /// The inference thread is gone (it panicked): answer 503.
    #[error("inference thread stopped")]
    Stopped,
}

/// Instruments an engine reports to, labelled with its deployment and version.
#[derive(Debug, Clone)]
pub struct EngineInstruments {
    pub queue_depth: IntGauge,
    pub batch_rows: Histogram,
    /// How long each batch was held open for more requests (first taken to run).
    pub batch_wait: Histogram,
    /// Predict requests by outcome.
    pub ok: IntCounter,
    pub invalid: IntCounter,
    pub overloaded: IntCounter,
    pub failed: IntCounter,
    /// Predict latency from routing to answer.
    pub latency: Histogram,
}

/// A loaded, warmed model version taking requests.
#[derive(Debug)]
pub struct Engine {
    pub version: i32,
    pub bundle_sha256: String,
    pub batching: Batching,
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub loaded_at: DateTime<Utc>,
    pub preprocessing: Preprocessor,
    pub training_stats: Option<TrainingStats>,
    tx: SyncSender<Work>,
    depth: Arc<AtomicU64>,
    instruments: EngineInstruments,
}

/// Settings an engine starts with.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub version: i32,
    pub bundle_sha256: String,
    pub batching: Batching,
    pub device: DeviceChoice,
    /// Requests that may wait for the thread.
    pub queue_capacity: usize,
    /// libtorch intra-op threads for this thread's forward passes.
    pub torch_threads: usize,
    /// The thread's name, for `top -H` and debuggers.
    pub thread_name: String,
    /// `team/deployment`, for spans.
    pub deployment: String,
}

impl Engine {
    /// Starts the inference thread, which loads the bundle on its device and warms it; this
    /// answers once the model is ready to take traffic (or failed to load).
    pub async fn start(
        bundle: Arc<ModelBundle>,
        config: EngineConfig,
        instruments: EngineInstruments,
    ) -> Result<Engine, LoadError> {
        let (tx, rx) = sync_channel::<Work>(config.queue_capacity.max(1));
        let (ready_tx, ready_rx) = oneshot::channel::<Result<String, LoadError>>();
        let depth = Arc::new(AtomicU64::new(0));
        let thread_depth = depth.clone();
        let batching = config.batching;
        let thread_bundle = bundle.clone();
        let thread_instruments = instruments.clone();
        let device = config.device;
        let who = (config.deployment.clone(), config.version);
        let torch_threads = config.torch_threads.max(1);
        std::thread::Builder::new()
            .name(config.thread_name.clone())
            .spawn(move || {
                // Set from this thread: OpenMP's thread count is per calling thread.
                kiln_ml::set_num_threads(torch_threads);
                let loaded = thread_bundle.load(device).and_then(|model| {
                    model.warm_up(batching.max_batch_size as usize)?;
                    Ok(model)
                });
                drop(thread_bundle);
                match loaded {
                    Ok(model) => {
                        let _ = ready_tx.send(Ok(model.device().name()));
                        run(&model, &rx, batching, &thread_depth, &thread_instruments, &who);
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(LoadError::Model(err)));
                    }
                }
            })
            .map_err(LoadError::Thread)?;
        let device = ready_rx.await.map_err(|_| LoadError::ThreadDied)??;
        Ok(Engine {
            version: config.version,
            bundle_sha256: config.bundle_sha256,
            batching,
            device,
            loaded_at: Utc::now(),
            preprocessing: bundle.meta.preprocessing.clone(),
            training_stats: bundle.meta.training_stats.clone(),
            tx,
            depth,
            instruments,
        })
    }

    /// Queues encoded rows (row-major, `rows × width`) without waiting.
    pub fn submit(
        &self,
        features: Vec<f32>,
        rows: usize,
        traceparent: Option<String>,
    ) -> Result<oneshot::Receiver<Answer>, SubmitError> {
        let (reply, answer) = oneshot::channel();
        let depth = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
        match self.tx.try_send(Work { features, rows, reply, traceparent }) {
            Ok(()) => {
                self.instruments.queue_depth.set(depth as i64);
                Ok(answer)
            }
            Err(err) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                Err(match err {
                    TrySendError::Full(_) => SubmitError::Overloaded,
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                })
            }
        }
    }

    /// This version's Prometheus instruments (handles resolved once, not per request).
    pub fn instruments(&self) -> &EngineInstruments {
        &self.instruments
    }

    /// Requests waiting for the thread.
    pub fn queue_depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }
}

/// The inference loop: gather a batch, run it, answer, until every sender is gone.
fn run(
    model: &LoadedModel,
    rx: &Receiver<Work>,
    batching: Batching,
    depth: &AtomicU64,
    instruments: &EngineInstruments,
    who: &(String, i32),
) {
    let policy = BatchPolicy::new(batching);
    let mut carried: Option<Work> = None;
    loop {
        let first = match carried.take() {
            Some(work) => work,
            None => match rx.recv() {
                Ok(work) => work,
                Err(_) => return,
            },
        };
        let opened_at = Instant::now();
        let mut gathering =
            Gathering { opened_at, last_arrival: opened_at, rows: first.rows, requests: 1 };
        let mut batch = vec![first];
        'gather: while gathering.rows < policy.max_rows {
            // Everything already queued joins at once.
            loop {
                match rx.try_recv() {
                    Ok(work) if gathering.rows + work.rows > policy.max_rows => {
                        carried = Some(work);
                        break 'gather;
                    }
                    Ok(work) => {
                        gathering.rows += work.rows;
                        gathering.requests += 1;
                        gathering.last_arrival = Instant::now();
                        batch.push(work);
                    }
                    Err(TryRecvError::Empty) => break,
                    // Senders gone: answer what we hold, then the outer recv returns.
                    Err(TryRecvError::Disconnected) => break 'gather,
                }
                if gathering.rows >= policy.max_rows {
                    break 'gather;
                }
            }
            let now = Instant::now();
            let until = match policy.decide(&gathering, depth.load(Ordering::Relaxed), now) {
                Decision::Run(_) => break,
                Decision::WaitUntil(until) => until,
            };
            match rx.recv_timeout(until.saturating_duration_since(now)) {
                Ok(work) if gathering.rows + work.rows > policy.max_rows => {
                    carried = Some(work);
                    break;
                }
                Ok(work) => {
                    gathering.rows += work.rows;
                    gathering.requests += 1;
                    gathering.last_arrival = Instant::now();
                    batch.push(work);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        instruments.batch_wait.observe(opened_at.elapsed().as_secs_f64());
        let left = depth.fetch_sub(batch.len() as u64, Ordering::Relaxed) - batch.len() as u64;
        instruments.queue_depth.set(left as i64);
        instruments.batch_rows.observe(gathering.rows as f64);
        answer(model, batch, gathering.rows, who);
    }
}

/// Runs one batch and answers each request with its slice of the predictions, under a
/// `kiln.serving.batch` span linked to the span of every request in it when traces are
/// exported (without an exporter the span would be made, linked and dropped unseen).
fn answer(model: &LoadedModel, batch: Vec<Work>, rows: usize, who: &(String, i32)) {
    let span = if kiln_telemetry::traces_exported() {
        // A root span: each request it answers has its own trace, linked from here.
        let span = tracing::info_span!(
            parent: None,
            "kiln.serving.batch",
            deployment = %who.0,
            model.version = who.1,
            rows,
            requests = batch.len(),
        );
        for traceparent in batch.iter().filter_map(|w| w.traceparent.as_deref()) {
            kiln_telemetry::link_to(&span, traceparent);
        }
        span
    } else {
        tracing::Span::none()
    };
    let _entered = span.enter();
    // A panic in libtorch or the bundle's code fails this batch, not every later one.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        if batch.len() == 1 {
            model.predict_features(&batch[0].features, rows)
        } else {
            let mut features = Vec::with_capacity(batch.iter().map(|w| w.features.len()).sum());
            for work in &batch {
                features.extend_from_slice(&work.features);
            }
            model.predict_features(&features, rows)
        }
        .map_err(|e| InferenceError::Model(e.to_string()))
    }))
    .unwrap_or_else(|panic| Err(InferenceError::Panicked(panic_message(&*panic).to_owned())));
    match result {
        Ok(predictions) => {
            let mut predictions = predictions.into_iter();
            for work in batch {
                let mine: Vec<Prediction> = predictions.by_ref().take(work.rows).collect();
                let _ = work.reply.send(Ok(mine));
            }
        }
        Err(error) => {
            tracing::error!(deployment = %who.0, model.version = who.1, error = %error, "batch failed");
            for work in batch {
                let _ = work.reply.send(Err(error.clone()));
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated clock: instants as microseconds after an origin.
    struct Clock(Instant);
    impl Clock {
        fn at(&self, micros: u64) -> Instant {
            self.0 + Duration::from_micros(micros)
        }
    }

    fn policy(max_batch_size: u32, max_wait_ms: u32) -> BatchPolicy {
        BatchPolicy::new(Batching { max_batch_size, max_wait_ms })
    }

    fn batch(clock: &Clock, opened: u64, last: u64, rows: usize, requests: u64) -> Gathering {
        Gathering { opened_at: clock.at(opened), last_arrival: clock.at(last), rows, requests }
    }

    #[test]
    fn a_lone_request_runs_at_once_whatever_max_wait() {
        let clock = Clock(Instant::now());
        let lone = batch(&clock, 0, 0, 1, 1);
        for max_wait_ms in [0, 2, 500, 1000] {
            assert_eq!(
                policy(64, max_wait_ms).decide(&lone, 1, clock.at(0)),
                Decision::Run(Dispatch::AllInFlight),
                "max_wait_ms {max_wait_ms}"
            );
        }
    }

    #[test]
    fn a_batch_holding_every_submitted_request_runs_at_once() {
        let clock = Clock(Instant::now());
        // 31 closed-loop clients queued behind a running batch: all taken, nothing more sent.
        let drained = batch(&clock, 0, 5, 31, 31);
        assert_eq!(
            policy(64, 500).decide(&drained, 31, clock.at(6)),
            Decision::Run(Dispatch::AllInFlight)
        );
    }

    #[test]
    fn a_request_on_its_way_is_waited_for_until_the_arrival_gap() {
        let clock = Clock(Instant::now());
        let p = policy(64, 500);
        let gathering = batch(&clock, 0, 10, 3, 3);
        // A fourth was submitted but not yet taken off the queue: wait for it, briefly.
        let gap = ARRIVAL_GAP.as_micros() as u64;
        assert_eq!(p.decide(&gathering, 4, clock.at(10)), Decision::WaitUntil(clock.at(10 + gap)));
        // Nothing came within the gap: run what we have.
        assert_eq!(p.decide(&gathering, 4, clock.at(10 + gap)), Decision::Run(Dispatch::Idle));
    }

    #[test]
    fn max_wait_bounds_the_first_requests_wait() {
        let clock = Clock(Instant::now());
        let p = BatchPolicy { arrival_gap: Duration::from_millis(10), ..policy(64, 2) };
        // Requests keep arriving (the gap is never reached), but the first has waited 2 ms.
        let busy = batch(&clock, 0, 1_900, 20, 20);
        assert_eq!(p.decide(&busy, 40, clock.at(1_900)), Decision::WaitUntil(clock.at(2_000)));
        assert_eq!(p.decide(&busy, 40, clock.at(2_000)), Decision::Run(Dispatch::Deadline));
        // Greedy batching (max_wait_ms 0) never waits.
        let greedy = policy(64, 0);
        assert_eq!(greedy.decide(&busy, 40, clock.at(1_900)), Decision::Run(Dispatch::Deadline));
    }

    #[test]
    fn a_full_batch_runs_and_batching_off_never_gathers() {
        let clock = Clock(Instant::now());
        assert_eq!(
            policy(64, 500).decide(&batch(&clock, 0, 0, 64, 64), 200, clock.at(0)),
            Decision::Run(Dispatch::Full)
        );
        assert_eq!(
            policy(1, 500).decide(&batch(&clock, 0, 0, 1, 1), 200, clock.at(0)),
            Decision::Run(Dispatch::Full)
        );
    }
}
