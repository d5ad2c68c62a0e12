//! kiln-ml's one error type, split into the user's mistakes and the platform's failures.
//!
//! A *user error* is something retrying cannot fix: the data, the spec or the model is wrong,
//! or the loss diverged. Its message is written for a data scientist and names the row,
//! column, field, epoch or step at fault. The worker fails such a job at once
//! ([`MlError::is_user_error`]). Everything else (libtorch failing, a missing GPU, an
//! unreadable artifact) is infrastructure and worth another attempt.

use kiln_types::ValidationErrors;
use tch::TchError;

#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// The dataset cannot be read at all (not CSV, not NPZ, wrong arrays, too few rows).
    #[error("bad dataset: {0}")]
    Dataset(String),
    /// One value in the dataset is missing or cannot be parsed.
    #[error("row {row} (line {line}), column `{column}`: {problem}")]
    DatasetValue { row: usize, line: u64, column: String, problem: String },
    /// The spec does not fit the dataset's schema (unknown target column, a CNN on a
    /// table...): kiln-types' `JobSpec::check_against`, the rules the API applies at
    /// submission, naming every offending field.
    #[error("the job spec does not fit the dataset: {}", describe_fields(.0))]
    Unfit(ValidationErrors),
    /// The spec does not fit the dataset's values (a target with a single class).
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
    /// libtorch could not allocate memory for the model (its weights, optimizer state or
    /// activations): the model is too big for this worker. A user error: the same attempt
    /// on the same worker would fail the same way.
    #[error("{}", out_of_memory_message(*.estimate_bytes, *.requested_bytes, .device))]
    OutOfMemory {
        /// What training the model needs, by [`kiln_types::JobSpec::memory_estimate`].
        estimate_bytes: Option<u64>,
        /// The one allocation that failed, as libtorch reported it.
        requested_bytes: Option<u64>,
        /// `cpu` or `cuda`.
        device: String,
    },
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
            | MlError::Unfit(_)
            | MlError::Spec { .. }
            | MlError::Script(_)
            | MlError::NonFiniteLoss { .. }
            | MlError::Input { .. }
            | MlError::OutOfMemory { .. } => true,
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

/// `path: message; path: message`.
fn describe_fields(errors: &ValidationErrors) -> String {
    let fields: Vec<String> =
        errors.fields().iter().map(|(path, message)| format!("{path}: {message}")).collect();
    fields.join("; ")
}

fn out_of_memory_message(estimate: Option<u64>, requested: Option<u64>, device: &str) -> String {
    use kiln_types::memory::format_bytes;
    let needs = match estimate {
        Some(bytes) => format!("the model needs ~{} to train", format_bytes(bytes)),
        None => "the model is too big to train".to_owned(),
    };
    let failed = match requested {
        Some(bytes) => format!("{device}: a request for {} failed", format_bytes(bytes)),
        None => format!("{device}: an allocation failed"),
    };
    format!(
        "out of memory: {needs} but the worker could not allocate it ({failed}); use fewer or \
         narrower layers or a smaller batch_size"
    )
}

/// True when a libtorch error message (or a panic's) says an allocation failed: the CPU
/// allocator's "not enough memory" / "can't allocate memory", CUDA's "out of memory".
pub(crate) fn is_allocation_failure(message: &str) -> bool {
    const SIGNS: [&str; 6] = [
        "not enough memory",
        "can't allocate memory",
        "Cannot allocate memory",
        "out of memory",
        "OutOfMemoryError",
        "std::bad_alloc",
    ];
    SIGNS.iter().any(|sign| message.contains(sign))
}

/// The size of the allocation a libtorch out-of-memory message names: the CPU allocator's
/// "you tried to allocate 17179869184 bytes", or CUDA's "Tried to allocate 16.00 GiB".
pub(crate) fn requested_bytes(message: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("tried to allocate ")? + "tried to allocate ".len();
    let mut words = lower[at..].split_whitespace();
    let number = words.next()?;
    let value: f64 = number.parse().ok()?;
    let unit = words.next().unwrap_or("").trim_end_matches(|c: char| !c.is_ascii_alphabetic());
    let scale: f64 = match unit {
        "bytes" | "b" => 1.0,
        "kib" | "kb" => 1024.0,
        "mib" | "mb" => 1024.0 * 1024.0,
        "gib" | "gb" => 1024.0 * 1024.0 * 1024.0,
        "tib" | "tb" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((value * scale) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtorch_allocation_failures_are_recognised_with_their_size() {
        let cpu = "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough \
                   memory: you tried to allocate 17179869184 bytes.";
        let old_cpu = "DefaultCPUAllocator: can't allocate memory: you tried to allocate \
                       1073741824 bytes. Error code 12 (Cannot allocate memory)";
        let cuda = "CUDA out of memory. Tried to allocate 16.00 GiB. GPU 0 has a total \
                    capacity of 79.10 GiB of which 3.19 GiB is free.";
        for (message, bytes) in [(cpu, 17_179_869_184), (old_cpu, 1 << 30), (cuda, 16 << 30)] {
            assert!(is_allocation_failure(message), "{message}");
            assert_eq!(requested_bytes(message), Some(bytes), "{message}");
        }
        assert!(!is_allocation_failure("shape '[2, 3]' is invalid for input of size 7"));
        assert_eq!(requested_bytes("no size here"), None);
    }

    #[test]
    fn the_out_of_memory_message_quotes_the_estimate_and_is_a_user_error() {
        let err = MlError::OutOfMemory {
            estimate_bytes: Some(17 << 30),
            requested_bytes: Some(16 << 30),
            device: "cpu".into(),
        };
        assert!(err.is_user_error());
        assert_eq!(
            err.to_string(),
            "out of memory: the model needs ~17.0 GiB to train but the worker could not \
             allocate it (cpu: a request for 16.0 GiB failed); use fewer or narrower layers or \
             a smaller batch_size"
        );
        let unknown = MlError::OutOfMemory {
            estimate_bytes: None,
            requested_bytes: None,
            device: "cuda".into(),
        };
        assert!(unknown.to_string().starts_with(
            "out of memory: the model is too big to train but the worker could not allocate it \
             (cuda: an allocation failed);"
        ));
    }
}
