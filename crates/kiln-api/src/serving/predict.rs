//! One prediction request, whatever protocol it came in: the native
//! `POST /v1/deployments/{name}/predict` and the Open Inference Protocol's
//! `POST /v2/models/{name}/infer` both run [`find`] then [`predict`], so they share the
//! deployment lookup (team-scoped: another team's deployment is 404), the role check, the
//! routing pick (canary split), the batching engine, the per-version metrics, the drift
//! sample and the `kiln.serving.predict` span. What differs is how rows arrive, which a
//! protocol says through [`Rows`].

use std::sync::Arc;
use std::time::Instant;

use kiln_db::repo::deployments;
use kiln_ml::{ExtraFields, Preprocessor};
use kiln_types::api::Prediction;
use kiln_types::{ErrorCode, Role};
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::serving::Live;
use crate::serving::engine::{Engine, SubmitError};
use crate::state::AppState;

/// Bad fields reported per predict request, at most.
pub const MAX_PROBLEMS: usize = 50;

/// A request's rows, as one protocol carries them.
pub trait Rows {
    /// How many rows the request holds.
    fn len(&self) -> usize;

    /// True when the request holds no row.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer to a request whose row count is not 1 to `max`.
    fn count_error(&self, max: usize) -> ApiError;

    /// The rows encoded for `preprocessing` (row-major, `len() × width`), exactly as
    /// training encoded its rows, or the error naming what is wrong with them.
    fn encode(
        &self,
        preprocessing: &Preprocessor,
        extra: ExtraFields,
    ) -> Result<Vec<f32>, ApiError>;

    /// Row `index` as a native predict instance (feature name → value) of the model
    /// `preprocessing` belongs to, for the drift sample; called only for the rows the
    /// sample keeps.
    fn instance(&self, preprocessing: &Preprocessor, index: usize) -> Map<String, Value>;
}

/// The native route's rows: JSON instances, feature name → value.
#[derive(Debug)]
pub struct Instances(pub Vec<Map<String, Value>>);

impl Rows for Instances {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn count_error(&self, max: usize) -> ApiError {
        ApiError::validation([(
            "instances".to_owned(),
            format!("must hold 1 to {max} instances, got {}", self.0.len()),
        )])
    }

    fn encode(
        &self,
        preprocessing: &Preprocessor,
        extra: ExtraFields,
    ) -> Result<Vec<f32>, ApiError> {
        preprocessing.encode_rows(&self.0, extra, MAX_PROBLEMS).map_err(|problems| {
            ApiError::validation(
                problems
                    .into_iter()
                    .map(|p| (format!("instances[{}].{}", p.index, p.field), p.message)),
            )
        })
    }

    fn instance(&self, _preprocessing: &Preprocessor, index: usize) -> Map<String, Value> {
        self.0[index].clone()
    }
}

/// Which of a deployment's versions answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// One picked by the traffic split's weights.
    Routed,
    /// This version, if the split routes to it (stable or canary); else 404.
    Version(i32),
}

/// What a prediction answered.
#[derive(Debug)]
pub struct Served {
    /// The version that answered.
    pub engine: Arc<Engine>,
    /// One per row, in order.
    pub predictions: Vec<Prediction>,
}

async fn sync(state: &AppState) {
    if let Err(err) = state.serving.sync().await {
        tracing::warn!(error = %err, "serving sync failed after a change; the periodic sync retries");
    }
}

/// The caller's team's deployment `name` as this process serves it, once the caller is
/// known to have `role`. Another team's deployment answers 404 whatever the caller's role.
pub async fn find(
    state: &AppState,
    caller: &Caller,
    name: &str,
    role: Role,
) -> Result<Arc<Live>, ApiError> {
    let team = caller.team()?;
    let live = match state.serving.find(team, name) {
        Some(live) => live,
        // Created through another replica since the last sync?
        None => {
            let row = deployments::get(&state.db, team, name)
                .await?
                .ok_or_else(|| ApiError::not_found("deployment"))?;
            caller.require(role)?;
            sync(state).await;
            state.serving.live(row.id).ok_or_else(|| {
                ApiError::unavailable("the deployment", "not loaded yet in this process")
            })?
        }
    };
    // After the lookup: another team's deployment answers 404 whatever the caller's role.
    caller.require(role)?;
    Ok(live)
}

/// The engine of version `version` when the deployment's split routes to it.
pub fn serving_version(live: &Live, version: i32) -> Result<Arc<Engine>, ApiError> {
    let routing = live.routing();
    routing
        .routes
        .iter()
        .find(|r| r.engine.version == version)
        .map(|r| r.engine.clone())
        .ok_or_else(|| {
            let serving: Vec<String> =
                routing.routes.iter().map(|r| r.engine.version.to_string()).collect();
            ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "deployment `{}` does not serve version {version} (it serves {})",
                    live.row.name,
                    if serving.is_empty() { "no version".to_owned() } else { serving.join(", ") }
                ),
            )
        })
}

/// Predicts `rows` on the deployment: picks a version, encodes the rows for it, queues
/// them on its batching engine and awaits the answer, recording the version's metrics and
/// offering the rows to the drift sample.
pub async fn predict(
    state: &AppState,
    live: &Live,
    pick: Pick,
    rows: &impl Rows,
) -> Result<Served, ApiError> {
    let started = Instant::now();
    let engine = match pick {
        Pick::Routed => {
            let routing = live.routing();
            routing.pick().cloned().ok_or_else(|| {
                let why =
                    routing.error.clone().unwrap_or_else(|| "no version takes traffic".to_owned());
                ApiError::unavailable("the deployment", why)
            })?
        }
        Pick::Version(version) => serving_version(live, version)?,
    };
    let metrics = engine.instruments();
    let max = state.serving.args().max_instances;
    if rows.is_empty() || rows.len() > max {
        metrics.invalid.inc();
        return Err(rows.count_error(max));
    }
    let extra =
        if live.row.allow_extra_features { ExtraFields::Ignore } else { ExtraFields::Refuse };
    let features = rows.encode(&engine.preprocessing, extra).inspect_err(|_| {
        metrics.invalid.inc();
    })?;
    let span = tracing::info_span!(
        "kiln.serving.predict",
        team.id = %live.row.team_id,
        deployment = %live.row.name,
        model.version = engine.version,
        instances = rows.len(),
    );
    let traceparent = kiln_telemetry::traceparent(&span);
    let answer = engine.submit(features, rows.len(), traceparent).map_err(|err| {
        metrics.overloaded.inc();
        match err {
            SubmitError::Overloaded => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    ErrorCode::Overloaded,
                    format!(
                        "deployment `{}` has too many requests queued; retry shortly",
                        live.row.name
                    ),
                )
            },
            SubmitError::Stopped => {
                ApiError::unavailable("the deployment", "inference thread stopped")
            }
        }
    })?;
    let predictions = match tracing::Instrument::instrument(answer, span).await {
        Ok(Ok(predictions)) => predictions,
        Ok(Err(message)) => {
            metrics.failed.inc();
            return Err(ApiError::internal(message));
        }
        Err(_) => {
            metrics.failed.inc();
            return Err(ApiError::unavailable("the deployment", "inference thread stopped"));
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
    state.serving.samples().offer_with(
        live.row.id,
        engine.version,
        rows.len(),
        |i| rows.instance(&engine.preprocessing, i),
        &predictions,
    );
    metrics.ok.inc();
    metrics.latency.observe(started.elapsed().as_secs_f64());
    Ok(Served { engine, predictions })
}
