//! kiln-ml's one error type, split into the user's mistakes and the platform's failures.
//!
//! A *user error* is something retrying cannot fix: the data, the spec or the model is wrong,
//! or the loss diverged. Its message is written for a data scientist and names the row,
//! column, field, epoch or step at fault. The worker fails such a job at once
//! ([`MlError::is_user_error`]). Everything else (libtorch failing, a missing GPU, an
//! unreadable artifact) is infrastructure and worth another attempt.

use tch::TchError;

#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// The dataset cannot be read at all (not CSV, not NPZ, wrong arrays, too few rows).
    #[error("bad dataset: {0}")]
    Dataset(String),
    /// One value in the dataset is missing or cannot be parsed.
    #[error("row {row} (line {line}), column `{column}`: {problem}")]
    DatasetValue { row: usize, line: u64, column: String, problem: String },
    /// The spec does not fit the dataset (unknown target column, a CNN on a table...).
    #[error("{field}: {message}")]
    Spec { field: String, message: String },
    /// The user's TorchScript module cannot be loaded, or its outputs do not fit the task.
    #[error("torchscript model: {0}")]
    Script(String),
    /// Training diverged.
    #[error(
        "the training loss became {loss} at epoch {epoch}, step {step}: training diverged; \
         try a lower learning_rate, grad_clip, or standardised features"
    )]
    NonFiniteLoss { epoch: u32, step: u64, loss: f64 },
    /// A row given to `predict` does not fit the model's input schema.
    #[error("instance {index}, field `{field}`: {message}")]
    Input { index: usize, field: String, message: String },
    /// A checkpoint that belongs to another model or dataset.
    #[error("checkpoint does not match this job: {0}")]
    CheckpointMismatch(String),
    /// CUDA was asked for but this process cannot see a GPU.
    #[error("CUDA was requested but no CUDA device is available to this worker")]
    CudaUnavailable,
    /// A checkpoint or model bundle that cannot be decoded.
    #[error("corrupt {what}: {message}")]
    Corrupt { what: &'static str, message: String },
    /// A forward pass failed for rows that were themselves valid.
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("libtorch error: {0}")]
    Torch(#[from] TchError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl MlError {
    /// True when the job itself is at fault and another attempt would fail the same way.
    pub fn is_user_error(&self) -> bool {
        match self {
            MlError::Dataset(_)
            | MlError::DatasetValue { .. }
            | MlError::Spec { .. }
            | MlError::Script(_)
            | MlError::NonFiniteLoss { .. }
            | MlError::Input { .. } => true,
            MlError::CheckpointMismatch(_)
            | MlError::CudaUnavailable
            | MlError::Corrupt { .. }
            | MlError::Inference(_)
            | MlError::Torch(_)
            | MlError::Io(_) => false,
        }
    }

    pub(crate) fn spec(field: impl Into<String>, message: impl Into<String>) -> Self {
        MlError::Spec { field: field.into(), message: message.into() }
    }

    pub(crate) fn corrupt(what: &'static str, message: impl std::fmt::Display) -> Self {
        MlError::Corrupt { what, message: message.to_string() }
    }
}

pub type Result<T, E = MlError> = std::result::Result<T, E>;
