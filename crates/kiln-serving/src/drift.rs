//! The drift report of a deployment version: the population stability index of each input
//! feature over its recent sampled requests (`prediction_samples`, written by
//! [`crate::samples`]), against the training split's distribution stored in the model
//! bundle ([`kiln_ml::TrainingStats`], whose `drift` does the PSI maths).
//!
//! A feature is judged only once it has [`MIN_DRIFT_SAMPLES`] sampled rows: below that,
//! PSI is dominated by sampling noise and nothing is flagged.

use kiln_db::repo::RepoError;
use kiln_db::repo::deployments::{self, Deployment as Row};
use kiln_types::api::{DriftReport, FeatureDriftReport};
use serde_json::Value;

use crate::Serving;

/// Sampled rows a feature needs before drift is judged: below it, PSI is dominated by
/// sampling noise (one row of a feature gives a PSI of 7–8 against any training split).
pub const MIN_DRIFT_SAMPLES: u64 = 100;

/// Why no drift report can be made.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// This process has not loaded the deployment yet.
    #[error("not loaded yet in this process")]
    NotLoaded,
    /// The version asked for (or any, when none was asked for) takes no traffic here.
    #[error("that version is not serving in this deployment")]
    NotServing,
    /// The version's bundle has no training statistics to compare with.
    #[error(
        "version {0} has no training statistics: drift is measured for models with named tabular inputs"
    )]
    NoTrainingStats(i32),
    /// The samples could not be read.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl Serving {
    /// The drift report of deployment `row` over its last `window` sampled rows of
    /// `version` (default: the version taking the most traffic), flagging features whose
    /// PSI is above `threshold`.
    pub async fn drift(
        &self,
        row: &Row,
        version: Option<i32>,
        window: u64,
        threshold: f64,
    ) -> Result<DriftReport, DriftError> {
        let live = self.live(row.id).ok_or(DriftError::NotLoaded)?;
        let routing = live.routing();
        let engine = match version {
            Some(v) => routing.routes.iter().find(|r| r.engine.version == v),
            None => routing.routes.iter().max_by_key(|r| r.weight),
        }
        .map(|r| r.engine.clone())
        .ok_or(DriftError::NotServing)?;
        let stats =
            engine.training_stats.as_ref().ok_or(DriftError::NoTrainingStats(engine.version))?;
        let inputs =
            deployments::recent_inputs(&self.inner.db, row.id, Some(engine.version), window)
                .await?;
        let rows: Vec<serde_json::Map<String, Value>> = inputs
            .into_iter()
            .filter_map(|v| match v {
                Value::Object(map) => Some(map),
                _ => None,
            })
            .collect();
        let insufficient_samples = (rows.len() as u64) < MIN_DRIFT_SAMPLES;
        let features: Vec<FeatureDriftReport> = stats
            .drift(&rows)
            .into_iter()
            .map(|f| {
                let too_few = insufficient_samples || f.rows < MIN_DRIFT_SAMPLES;
                FeatureDriftReport {
                    drifted: !too_few && f.psi > threshold,
                    feature: f.name,
                    psi: f.psi,
                    rows: f.rows,
                    missing: f.missing,
                    insufficient_samples: too_few,
                }
            })
            .collect();
        Ok(DriftReport {
            deployment: row.name.clone(),
            model_version: engine.version,
            window: rows.len() as u64,
            threshold,
            drifted: features.iter().any(|f| f.drifted),
            features,
            insufficient_samples,
            min_samples: MIN_DRIFT_SAMPLES,
        })
    }
}
