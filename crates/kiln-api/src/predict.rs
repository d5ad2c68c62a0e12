//! One prediction request's HTTP side, whatever protocol it came in: the native
//! `POST /v1/deployments/{name}/predict` and the Open Inference Protocol's
//! `POST /v2/models/{name}/infer` both run [`find`] then [`predict`], so they share the
//! deployment lookup (team-scoped: another team's deployment is 404), the role check, the
//! row count and encoding checks and the answers of every failure. What happens between
//! (the routing pick, the batching engine, the per-version metrics, the drift sample, the
//! `kiln.serving.predict` span) is kiln-serving's [`kiln_serving::predict`]. What differs
//! is how rows arrive, which a protocol says through [`Rows`].

use std::sync::Arc;

use kiln_db::repo::deployments;
use kiln_ml::{ExtraFields, Preprocessor};
use kiln_serving::{Engine, Live, Pick, PickError, PredictError, Served};
use kiln_types::{ErrorCode, Role};
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::error::ApiError;
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

/// The answer when no version of a deployment can take a request: 503 when none takes
/// traffic, 404 when the split does not route to the version asked for.
impl From<PickError> for ApiError {
    fn from(err: PickError) -> Self {
        match err {
            PickError::NoVersion { why } => ApiError::unavailable("the deployment", why),
            PickError::NotServed { .. } => ApiError::new(ErrorCode::NotFound, err.to_string()),
        }
    }
}

/// 503 with `Retry-After` for a full queue or a stopped inference thread; 500 (the cause
/// logged, not answered) for a failed forward pass.
impl From<PredictError> for ApiError {
    fn from(err: PredictError) -> Self {
        match err {
            PredictError::Overloaded { .. } => ApiError {
                retry_after: Some(1),
                ..ApiError::new(ErrorCode::Overloaded, err.to_string())
            },
            PredictError::Stopped => ApiError::unavailable("the deployment", err),
            PredictError::Inference(err) => ApiError::internal(err),
        }
    }
}

/// The engine of version `version` when the deployment's split routes to it.
pub fn serving_version(live: &Live, version: i32) -> Result<Arc<Engine>, ApiError> {
    Ok(live.serving_version(version)?)
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
    let request = state.serving.request(live, pick)?;
    let max = state.serving.args().max_instances;
    if rows.is_empty() || rows.len() > max {
        request.reject();
        return Err(rows.count_error(max));
    }
    let extra =
        if live.row.allow_extra_features { ExtraFields::Ignore } else { ExtraFields::Refuse };
    let preprocessing = &request.engine().preprocessing;
    let features = match rows.encode(preprocessing, extra) {
        Ok(features) => features,
        Err(err) => {
            request.reject();
            return Err(err);
        }
    };
    let engine = request.engine().clone();
    let served =
        request.run(features, rows.len(), |i| rows.instance(&engine.preprocessing, i)).await?;
    Ok(served)
}
