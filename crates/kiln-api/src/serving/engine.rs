//! One model version on its own inference thread, with dynamic batching.
//!
//! Request handlers validate and encode rows on actix's threads, then hand the encoded rows
//! to the engine through a bounded channel and await a oneshot answer; they never block.
//! The inference thread owns the [`LoadedModel`] (libtorch modules are not `Sync`): it
//! blocks for a first request, gathers more until `max_batch_size` rows or `max_wait_ms`
//! have passed, runs one forward pass, and answers each request with its own rows.
//!
//! When the channel is full, [`Engine::submit`] refuses at once (the API answers 503 with
//! `Retry-After`) instead of queueing without bound. When the last handle to an engine is
//! dropped (a hot swap moved traffic elsewhere and the in-flight requests finished), the
//! channel closes, the thread answers what is still queued, and exits: draining is free.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kiln_ml::{DeviceChoice, LoadedModel, ModelBundle, Prediction, Preprocessor, TrainingStats};
use kiln_types::api::Batching;
use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::oneshot;

/// What a handler gets back: the predictions of its rows, or why inference failed.
pub type Answer = Result<Vec<Prediction>, String>;

struct Work {
    features: Vec<f32>,
    rows: usize,
    reply: oneshot::Sender<Answer>,
    /// The request's span, which the batch span that answers it links to.
    traceparent: Option<String>,
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full: answer 503 and let the client retry.
    Overloaded,
    /// The inference thread is gone (it panicked): answer 503.
    Stopped,
}

/// Instruments an engine reports to, labelled with its deployment and version.
#[derive(Debug, Clone)]
pub struct EngineInstruments {
    pub queue_depth: IntGauge,
    pub batch_rows: Histogram,
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
    ) -> Result<Engine, String> {
        let (tx, rx) = sync_channel::<Work>(config.queue_capacity.max(1));
        let (ready_tx, ready_rx) = oneshot::channel::<Result<String, String>>();
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
                        let _ = ready_tx.send(Err(err.to_string()));
                    }
                }
            })
            .map_err(|e| format!("cannot start an inference thread: {e}"))?;
        let device =
            ready_rx.await.map_err(|_| "the inference thread died while loading".to_owned())??;
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
    let max_rows = batching.max_batch_size.max(1) as usize;
    let max_wait = Duration::from_millis(u64::from(batching.max_wait_ms));
    let mut carried: Option<Work> = None;
    loop {
        let first = match carried.take() {
            Some(work) => work,
            None => match rx.recv() {
                Ok(work) => work,
                Err(_) => return,
            },
        };
        let deadline = Instant::now() + max_wait;
        let mut rows = first.rows;
        let mut batch = vec![first];
        while rows < max_rows {
            let next = match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => rx.recv_timeout(left),
                // Past the deadline: still take what is already queued.
                _ => rx.try_recv().map_err(|_| RecvTimeoutError::Timeout),
            };
            match next {
                Ok(work) if rows + work.rows > max_rows => {
                    carried = Some(work);
                    break;
                }
                Ok(work) => {
                    rows += work.rows;
                    batch.push(work);
                }
                Err(_) => break,
            }
        }
        let left = depth.fetch_sub(batch.len() as u64, Ordering::Relaxed) - batch.len() as u64;
        instruments.queue_depth.set(left as i64);
        instruments.batch_rows.observe(rows as f64);
        answer(model, batch, rows, who);
    }
}

/// Runs one batch and answers each request with its slice of the predictions, under a
/// `kiln.serving.batch` span linked to the span of every request in it.
fn answer(model: &LoadedModel, batch: Vec<Work>, rows: usize, who: &(String, i32)) {
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
    let _entered = span.enter();
    let result = if batch.len() == 1 {
        model.predict_features(&batch[0].features, rows)
    } else {
        let mut features = Vec::with_capacity(batch.iter().map(|w| w.features.len()).sum());
        for work in &batch {
            features.extend_from_slice(&work.features);
        }
        model.predict_features(&features, rows)
    };
    match result {
        Ok(predictions) => {
            let mut predictions = predictions.into_iter();
            for work in batch {
                let mine: Vec<Prediction> = predictions.by_ref().take(work.rows).collect();
                let _ = work.reply.send(Ok(mine));
            }
        }
        Err(err) => {
            let message = err.to_string();
            for work in batch {
                let _ = work.reply.send(Err(message.clone()));
            }
        }
    }
}
