//! Batch predictions: offline scoring of a whole dataset by a registered model version, run
//! as a job of kind [`JobKind::BatchPrediction`] through the same queue as training.
//!
//! The request ([`BatchPredictionSpec`], stored as the job's spec), what the API resolved it
//! to ([`ModelInput`], in `jobs.inputs`), and the record the worker keeps as it goes
//! ([`OutputPart`], [`BadRow`]): the output is written in parts of at most
//! `rows_per_part` input rows, each part recorded under the lease fence once stored, so a
//! crashed attempt's successor starts at the first row no recorded part covers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::digest::Sha256Digest;
use crate::spec::ValidationErrors;

/// What a job does, as the `jobs.kind` column spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Trains a model from a job spec (`POST /v1/jobs`).
    Train,
    /// Scores a dataset with a registered model version (`POST /v1/batch-predictions`).
    BatchPrediction,
}

impl JobKind {
    pub const ALL: &'static [JobKind] = &[JobKind::Train, JobKind::BatchPrediction];

    pub const fn as_str(self) -> &'static str {
        match self {
            JobKind::Train => "train",
            JobKind::BatchPrediction => "batch_prediction",
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobKind {
    type Err = crate::ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL.iter().copied().find(|k| k.as_str() == s).ok_or_else(|| {
            crate::ParseEnumError {
                kind: "job kind",
                value: s.to_owned(),
                expected: "train batch_prediction",
            }
        })
    }
}

/// Input rows per output part unless the request says otherwise.
pub const DEFAULT_ROWS_PER_PART: u64 = 100_000;
/// Bounds of `rows_per_part`.
pub const MIN_ROWS_PER_PART: u64 = 100;
pub const MAX_ROWS_PER_PART: u64 = 10_000_000;
/// How many bad rows the result lists with their errors (all are counted).
pub const MAX_BAD_ROW_SAMPLES: usize = 100;

/// `POST /v1/batch-predictions`: which model version scores which dataset.
///
/// ```json
/// {"model": "wine", "version": 3, "dataset_id": "…"}
/// {"model": "wine", "alias": "production", "dataset_id": "…", "id_column": "order_id"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchPredictionSpec {
    /// A registered model of the caller's team.
    pub model: String,
    /// The version to score with; exactly one of `version` and `alias`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
    /// An alias of the model, resolved to its version when the request is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// A CSV or NPZ dataset of the caller's team: the rows to score.
    pub dataset_id: Uuid,
    /// A CSV column copied into the output beside each prediction (for joining the
    /// predictions back); by default a column named `id`, if the input has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_column: Option<String>,
    /// Input rows per output part (default 100,000; 100 to 10,000,000). Each part is
    /// checkpointed: a crash resumes at the first row no stored part covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_part: Option<u64>,
}

impl BatchPredictionSpec {
    /// Checks the request's own fields, naming every bad one (the API's 422).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if self.model.trim().is_empty() {
            errors.add("model", "must name a registered model");
        }
        match (self.version, &self.alias) {
            (Some(_), Some(_)) => {
                errors.add("alias", "give either `version` or `alias`, not both");
            }
            (None, None) => errors.add("version", "give `version` or `alias`"),
            (Some(v), None) if v < 1 => errors.add("version", "must be 1 or more"),
            (None, Some(a)) if a.trim().is_empty() => {
                errors.add("alias", "must not be empty");
            }
            _ => {}
        }
        if let Some(column) = &self.id_column
            && column.is_empty()
        {
            errors.add("id_column", "must not be empty");
        }
        if let Some(n) = self.rows_per_part
            && !(MIN_ROWS_PER_PART..=MAX_ROWS_PER_PART).contains(&n)
        {
            errors.add(
                "rows_per_part",
                format!("must be between {MIN_ROWS_PER_PART} and {MAX_ROWS_PER_PART}"),
            );
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    pub fn rows_per_part(&self) -> u64 {
        self.rows_per_part.unwrap_or(DEFAULT_ROWS_PER_PART)
    }
}

/// The model version a batch prediction scores with, as the API resolved it (in
/// `jobs.inputs.model`): the worker needs nothing but this and the artifact store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelInput {
    pub model_id: Uuid,
    pub name: String,
    pub version: i32,
    /// The alias the request named, if it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The bundle's artifact-store key.
    pub bundle_key: String,
    pub bundle_sha256: Sha256Digest,
}

/// One stored part of a batch prediction's output: a CSV file with a header line, holding
/// the predictions of input rows `first_row .. first_row + rows` (bad rows left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutputPart {
    /// 0-based, in row order.
    pub index: u32,
    /// Its artifact-store key.
    pub key: String,
    /// The first input row (0-based, the header not counted) this part covers.
    pub first_row: u64,
    /// Input rows covered, bad ones included.
    pub rows: u64,
    /// Prediction lines written (the rows covered less the bad ones).
    pub predictions: u64,
    pub size_bytes: u64,
    pub sha256: Sha256Digest,
}

/// An input row that could not be scored, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BadRow {
    /// 0-based input row (the header not counted).
    pub row: u64,
    /// The field at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub error: String,
}

/// How far a batch prediction has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchProgress {
    /// Input rows covered by stored output parts.
    pub rows_done: u64,
    /// Input rows, once a worker has read the input.
    pub rows: Option<u64>,
}

/// Where a succeeded batch prediction's predictions are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchOutput {
    /// The whole output as one CSV (the parts joined, one header):
    /// `GET /v1/batch-predictions/{id}/output`; one part: `?part=N`.
    pub download: String,
    /// Prediction lines in all (input rows less bad rows).
    pub predictions: u64,
    pub size_bytes: u64,
    /// The CSV header line every part starts with.
    pub header: String,
    pub parts: Vec<OutputPart>,
}

/// A batch prediction as `GET /v1/batch-predictions/{id}` answers it. Its id is also its
/// job's: `POST /v1/jobs/{id}/cancel`, `/retry` and `/logs` apply to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchPrediction {
    pub id: Uuid,
    /// The job's state: `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    pub model: String,
    /// The version that scores (an alias is resolved when the request is accepted).
    pub version: i32,
    pub alias: Option<String>,
    pub dataset_id: Option<Uuid>,
    pub id_column: Option<String>,
    pub rows_per_part: u64,
    pub progress: BatchProgress,
    /// Rows that could not be scored (left out of the output).
    pub bad_rows: u64,
    /// The first 100 bad rows with their errors.
    pub bad_row_samples: Vec<BadRow>,
    /// Once succeeded.
    pub output: Option<BatchOutput>,
    pub attempt: i32,
    pub max_attempts: i32,
    /// Why the job failed, when it did.
    pub error: Option<String>,
    /// Where it ran (`cpu`, `cuda:0`), once known.
    pub ran_on_device: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> BatchPredictionSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn kinds_round_trip_through_their_spelling() {
        for kind in JobKind::ALL {
            assert_eq!(kind.as_str().parse::<JobKind>().unwrap(), *kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        assert!("predict".parse::<JobKind>().unwrap_err().to_string().contains("train"));
    }

    #[test]
    fn a_request_names_exactly_one_of_version_and_alias() {
        let id = "0190a5f2-0000-7000-8000-000000000000";
        assert!(
            spec(serde_json::json!({"model": "m", "version": 1, "dataset_id": id}))
                .validate()
                .is_ok()
        );
        let both = spec(serde_json::json!({"model": "m", "version": 1, "alias": "p",
                                            "dataset_id": id}));
        let err = both.validate().unwrap_err();
        assert!(err.fields().contains_key("alias"), "{err:?}");
        let none = spec(serde_json::json!({"model": "", "dataset_id": id, "rows_per_part": 5}));
        let err = none.validate().unwrap_err();
        let fields: Vec<&str> = err.fields().keys().map(String::as_str).collect();
        assert_eq!(fields, ["model", "rows_per_part", "version"]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<BatchPredictionSpec>(serde_json::json!({
            "model": "m", "version": 1, "dataset_id": "0190a5f2-0000-7000-8000-000000000000",
            "dataset": "x"}))
        .unwrap_err();
        assert!(err.to_string().contains("dataset"), "{err}");
    }
}
