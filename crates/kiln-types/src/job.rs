//! Job lifecycle states and device requirements, as stored in the `jobs` table, and the
//! typed contents of its jsonb columns: [`JobInputs`] (written by the API at submission,
//! read by the worker), [`JobProgress`] (written by the worker's heartbeats, shown by the
//! API) and [`JobResult`] (written by the worker on success, read by the API and the model
//! registry). Each serialises to exactly the JSON those columns have always held, so rows
//! written before these types existed read back unchanged.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::digest::Sha256Digest;

/// A string that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind}; expected one of: {expected}")]
pub struct ParseEnumError {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static str,
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling stored in the database and used on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseEnumError {
                        kind: $kind,
                        value: s.to_owned(),
                        expected: concat!($($text, " "),+),
                    }),
                }
            }
        }
    };
}

string_enum!(
    /// Where a job is in its life. `queued → running → succeeded | failed | cancelled`, and
    /// `running → queued` on a lost lease, a graceful release or a retryable error. A
    /// study's trial may also end `pruned` (stopped early by the study's rule, keeping its
    /// checkpoint); ASHA may later promote it back to `queued`, resuming from there.
    JobState, "job state", {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
        Pruned => "pruned",
    }
);

impl JobState {
    /// True for the states a job never leaves on its own.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Pruned
        )
    }
}

string_enum!(
    /// What a job asks of the worker that runs it.
    DeviceRequirement, "device requirement", {
        Any => "any",
        Cuda => "cuda",
        Cpu => "cpu",
    }
);

string_enum!(
    /// What a worker has. A CPU worker never takes a CUDA-only job.
    WorkerDevice, "worker device", {
        Cpu => "cpu",
        Cuda => "cuda",
    }
);

impl WorkerDevice {
    /// The job requirements this worker may run.
    pub const fn accepts(self) -> &'static [DeviceRequirement] {
        match self {
            WorkerDevice::Cpu => &[DeviceRequirement::Any, DeviceRequirement::Cpu],
            WorkerDevice::Cuda => &[DeviceRequirement::Any, DeviceRequirement::Cuda],
        }
    }
}

string_enum!(
    /// What an upload is, as the `datasets.format` column spells it.
    UploadFormat, "upload format", {
        Csv => "csv",
        Npz => "npz",
        #[serde(rename = "torchscript")]
        TorchScript => "torchscript",
    }
);

/// `jobs.inputs`: what the API resolved the spec's ids to at submission, so the worker
/// needs nothing but the job row and the artifact store.
///
/// ```json
/// {"dataset": {"id": "<uuid>", "key": "teams/<team>/blobs/sha256/ab/…", "sha256": "<hex>",
///              "format": "csv", "size_bytes": 1234},
///  "script":  {"id": "<uuid>", "key": "…", "sha256": "<hex>", "format": "torchscript",
///              "size_bytes": 56}}
/// ```
///
/// Both entries may be absent (`{}`, the column's default: a job queued without the API);
/// the worker fails such a job saying so.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobInputs {
    /// The training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<InputBlob>,
    /// The TorchScript module, for `{"type": "torchscript"}` models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<InputBlob>,
    /// The model version that scores the dataset, for batch predictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<crate::batch::ModelInput>,
    /// The study this job is a trial of, and its early-stopping rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<crate::study::TrialInput>,
}

/// One stored upload a job reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InputBlob {
    /// The dataset (upload) id.
    pub id: Uuid,
    /// Its artifact-store key (content-addressed).
    pub key: String,
    pub sha256: Sha256Digest,
    pub format: UploadFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

/// `jobs.progress`: where training is, as the last heartbeat (or the completion) reported
/// it. Epochs and steps are 1-based; `step` counts batches within `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobProgress {
    pub epoch: u32,
    pub epochs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// Batches per epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
}

/// `jobs.result`: what a succeeded job produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobResult {
    /// The model bundle's artifact-store key.
    pub model_bundle: String,
    pub bundle_sha256: Sha256Digest,
    pub metrics: ResultMetrics,
    /// The training data's digest (lineage).
    pub dataset_sha256: Sha256Digest,
    /// Where it trained: `cpu` or `cuda:N`.
    pub device: String,
    pub training_seconds: f64,
    pub epochs_completed: u32,
    /// The checkpoint epoch the successful attempt started from; `null` when from scratch.
    pub resumed_from_epoch: Option<u32>,
}

/// The final metrics of a succeeded job: the validation series of the epoch whose weights
/// the model ships (API.md's series names), the confusion matrix for classification.
/// A non-finite value is stored as `null` and reads back as NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResultMetrics {
    #[serde(deserialize_with = "nullable_f64")]
    pub train_loss: f64,
    #[serde(deserialize_with = "nullable_f64")]
    pub val_loss: f64,
    #[serde(
        default,
        deserialize_with = "nullable_opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub val_accuracy: Option<f64>,
    /// Macro-F1.
    #[serde(
        default,
        deserialize_with = "nullable_opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub val_f1: Option<f64>,
    #[serde(
        default,
        deserialize_with = "nullable_opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub val_rmse: Option<f64>,
    #[serde(
        default,
        deserialize_with = "nullable_opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub val_mae: Option<f64>,
    #[serde(
        default,
        deserialize_with = "nullable_opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub val_r2: Option<f64>,
    /// `confusion_matrix[true][predicted]`, in label order (classification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confusion_matrix: Option<Vec<Vec<u64>>>,
    /// The epoch whose weights the model has (the best one under early stopping).
    pub best_epoch: u32,
    pub stopped_early: bool,
}

impl ResultMetrics {
    /// `(series name, value)` of every validation metric present, `train_loss` first.
    pub fn series(&self) -> Vec<(&'static str, f64)> {
        metric_series(
            self.train_loss,
            self.val_loss,
            [self.val_accuracy, self.val_f1, self.val_rmse, self.val_mae, self.val_r2],
        )
    }
}

/// The optional validation series, in the order [`metric_series`] takes their values.
pub const OPTIONAL_SERIES: [&str; 5] = ["val_accuracy", "val_f1", "val_rmse", "val_mae", "val_r2"];

/// `(series name, value)` for the losses and every optional validation metric present
/// (values in [`OPTIONAL_SERIES`] order), `train_loss` first: the one naming of an epoch's
/// or a result's metrics.
pub fn metric_series(
    train_loss: f64,
    val_loss: f64,
    optional: [Option<f64>; 5],
) -> Vec<(&'static str, f64)> {
    let mut out = vec![("train_loss", train_loss), ("val_loss", val_loss)];
    out.extend(OPTIONAL_SERIES.into_iter().zip(optional).filter_map(|(name, v)| Some((name, v?))));
    out
}

/// serde_json writes a non-finite `f64` as `null`; this reads it back as NaN.
fn nullable_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A present `null` is a non-finite value (NaN); an absent field is `None` (`default`).
fn nullable_opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(Some(nullable_f64(d)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_spelling() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), *state);
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }

    #[test]
    fn unknown_state_names_the_valid_ones() {
        let err = "done".parse::<JobState>().unwrap_err();
        assert_eq!(err.value, "done");
        assert!(err.to_string().contains("queued running succeeded failed cancelled pruned"));
    }

    #[test]
    fn cpu_worker_never_accepts_cuda_only_jobs() {
        assert!(!WorkerDevice::Cpu.accepts().contains(&DeviceRequirement::Cuda));
        assert!(WorkerDevice::Cuda.accepts().contains(&DeviceRequirement::Any));
        assert!(!WorkerDevice::Cuda.accepts().contains(&DeviceRequirement::Cpu));
    }

    #[test]
    fn terminal_states() {
        let terminal: Vec<_> = JobState::ALL.iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(
            terminal,
            [&JobState::Succeeded, &JobState::Failed, &JobState::Cancelled, &JobState::Pruned]
        );
    }
}
