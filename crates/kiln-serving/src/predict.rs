//! One prediction's way through serving, whatever protocol it came in. kiln-api's native
//! `POST /v1/deployments/{name}/predict` and the Open Inference Protocol's
//! `POST /v2/models/{name}/infer` look the deployment up and check the caller (HTTP), then
//! both call [`Serving::request`] (the routing pick: canary split or an asked-for version),
//! encode the rows for the [`Request::engine`] that will answer (or report them invalid with
//! [`Request::reject`]), and [`Request::run`] them: the batching engine, the per-version
//! metrics, the drift sample and the `kiln.serving.predict` span. So answers, batching,
//! metrics and drift are shared by both protocols.
//!
//! The `kiln.serving.predict` span, and the `traceparent` the batch span links to, are made
//! only when traces are exported ([`kiln_telemetry::traces_exported`]): without an
//! exporter, no one can see them, and they were a measurable share of the predict path's
//! CPU (docs/benchmarks.md). Log lines keep their trace id either way: it belongs to the
//! request's server span, which kiln-api always opens.

use std::sync::Arc;
use std::time::Instant;

use kiln_types::api::Prediction;
use serde_json::{Map, Value};

use crate::engine::{Engine, InferenceError, SubmitError};
use crate::{Live, Serving};

/// Which of a deployment's versions answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// One picked by the traffic split's weights.
    Routed,
    /// This version, if the split routes to it (stable or canary); else an error.
    Version(i32),
}

/// Why no version of a deployment can answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// No version takes traffic; `why` says why (the routing's error, when it has one).
    #[error("{why}")]
    NoVersion { why: String },
    /// The split does not route to the version asked for.
    #[error(
        "deployment `{deployment}` does not serve version {version} (it serves {})",
        serving_list(.serving)
    )]
    NotServed { deployment: String, version: i32, serving: Vec<i32> },
}

fn serving_list(serving: &[i32]) -> String {
    if serving.is_empty() {
        "no version".to_owned()
    } else {
        serving.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// Why a prediction of valid rows failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PredictError {
    /// The version's queue is full: answer 503 with `Retry-After` and let the client retry.
    #[error("deployment `{deployment}` has too many requests queued; retry shortly")]
    Overloaded { deployment: String },
    /// The version's inference thread is gone.
    #[error("inference thread stopped")]
    Stopped,
    /// The forward pass failed.
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

/// What a prediction answered.
#[derive(Debug)]
pub struct Served {
    /// The version that answered.
    pub engine: Arc<Engine>,
    /// One per row, in order.
    pub predictions: Vec<Prediction>,
}

impl Live {
    /// The engine of version `version` when the deployment's split routes to it.
    pub fn serving_version(&self, version: i32) -> Result<Arc<Engine>, PickError> {
        let routing = self.routing();
        routing.engine(version).cloned().ok_or_else(|| PickError::NotServed {
            deployment: self.row.name.clone(),
            version,
            serving: routing.routes.iter().map(|r| r.engine.version).collect(),
        })
    }

    /// The engine that answers a request: one picked by weight, or the one asked for.
    pub fn pick(&self, pick: Pick) -> Result<Arc<Engine>, PickError> {
        match pick {
            Pick::Routed => {
                let routing = self.routing();
                routing.pick().cloned().ok_or_else(|| PickError::NoVersion {
                    why: routing
                        .error
                        .clone()
                        .unwrap_or_else(|| "no version takes traffic".to_owned()),
                })
            }
            Pick::Version(version) => self.serving_version(version),
        }
    }
}

impl Serving {
    /// Starts a prediction on `live`: picks the version that answers. Its latency is
    /// measured from here to the answer (`kiln_prediction_duration_seconds`).
    pub fn request<'a>(&'a self, live: &'a Live, pick: Pick) -> Result<Request<'a>, PickError> {
        let started = Instant::now();
        let engine = live.pick(pick)?;
        Ok(Request { serving: self, live, engine, started })
    }
}

/// A prediction routed to one version, before its rows are run.
#[derive(Debug)]
pub struct Request<'a> {
    serving: &'a Serving,
    live: &'a Live,
    engine: Arc<Engine>,
    started: Instant,
}

impl Request<'_> {
    /// The version that answers: its preprocessing encodes the rows.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Counts the request as `invalid` (too many or too few rows, rows that do not fit the
    /// model): it ends here.
    pub fn reject(self) {
        self.engine.instruments().invalid.inc();
    }

    /// Runs `rows` encoded rows (row-major, `rows × width`) on the version's batching
    /// engine and awaits the predictions; records the outcome and latency, and offers the
    /// rows to the drift sample (`instance(i)` is row `i` as a native predict instance,
    /// built only for the rows the sample keeps).
    pub async fn run(
        self,
        features: Vec<f32>,
        rows: usize,
        instance: impl Fn(usize) -> Map<String, Value>,
    ) -> Result<Served, PredictError> {
        let Request { serving, live, engine, started } = self;
        let metrics = engine.instruments();
        let span = if kiln_telemetry::traces_exported() {
            tracing::info_span!(
                "kiln.serving.predict",
                team.id = %live.row.team_id,
                deployment = %live.row.name,
                model.version = engine.version,
                instances = rows,
            )
        } else {
            tracing::Span::none()
        };
        let traceparent = if span.is_none() { None } else { kiln_telemetry::traceparent(&span) };
        let answer = engine.submit(features, rows, traceparent).map_err(|err| {
            metrics.overloaded.inc();
            match err {
                SubmitError::Overloaded => {
                    PredictError::Overloaded { deployment: live.row.name.clone() }
                }
                SubmitError::Stopped => PredictError::Stopped,
            }
        })?;
        let predictions = match tracing::Instrument::instrument(answer, span).await {
            Ok(Ok(predictions)) => predictions,
            Ok(Err(error)) => {
                metrics.failed.inc();
                return Err(PredictError::Inference(error));
            }
            Err(_) => {
                metrics.failed.inc();
                return Err(PredictError::Stopped);
            }
        };
        let predictions: Vec<Prediction> = predictions
            .into_iter()
            .map(|p| match p {
                kiln_ml::Prediction::Class { label, probabilities } => {
                    Prediction::Class { label, probabilities }
                }
                kiln_ml::Prediction::Value { value } => Prediction::Value { value },
            })
            .collect();
        serving.samples().offer_with(live.row.id, engine.version, rows, instance, &predictions);
        metrics.ok.inc();
        metrics.latency.observe(started.elapsed().as_secs_f64());
        Ok(Served { engine, predictions })
    }
}
