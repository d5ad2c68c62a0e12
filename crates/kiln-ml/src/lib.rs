//! kiln-ml: everything in Kiln that touches libtorch, through tch. It is the only crate that
//! knows tch; the worker and the serving path speak to it in plain Rust types.
//!
//! It owns the path from uploaded bytes to a trained, servable model:
//!
//! - **Datasets** ([`Dataset`]): a CSV file with a header, or an NPZ archive with `x`
//!   (N×F or N×C×H×W) and `y` (N labels). [`prepare`] types the CSV columns (numeric or
//!   categorical), makes a seeded train/validation split (stratified for classification),
//!   and fits the preprocessing on the training split only: standardisation, one-hot
//!   vocabularies, label names. A bad value is a user error naming its row and column.
//! - **Models**: `linear`, `mlp`, `cnn`, and `torchscript`, a user's own
//!   `torch.jit.script`ed module trained from Rust (tch's `TrainableCModule`): the bridge
//!   from a notebook to the platform.
//! - **Training** ([`train`]): SGD/Adam/AdamW implemented over tensors here, so that their
//!   state can be checkpointed; learning-rate schedules, gradient clipping, early stopping,
//!   per-epoch metrics, a [`TrainObserver`] for progress and for stopping between batches.
//!   All randomness (split, shuffles, initialisation, dropout) derives from the job's seed
//!   and the position in training, so a run resumed from a [`Checkpoint`] ends with the same
//!   weights as an uninterrupted one.
//! - **Model bundles** ([`ModelBundle`]): weights (safetensors) plus `model.json` with the
//!   architecture, the fitted preprocessing, the input schema, metrics and lineage; a
//!   [`LoadedModel`] predicts from raw JSON rows, one at a time or batched. Bundles also
//!   carry the training split's input distribution ([`TrainingStats`]), against which
//!   serving measures drift (population stability index).
//! - **Devices** ([`DeviceChoice`]): CUDA when present, CPU otherwise, or an explicit choice.
//!
//! Errors ([`MlError`]) separate the user's mistakes (bad data, a spec that does not fit the
//! data, a diverging loss: never retried) from infrastructure failures
//! ([`MlError::is_user_error`]).
//!
//! Linking: libtorch is a shared library found at run time through an rpath, never through
//! `LD_LIBRARY_PATH`. A binary that links kiln-ml must re-emit the link arguments from its
//! own build script; see `link_libtorch.rs` and docs/ARCHITECTURE.md.

mod archive;
mod bundle;
mod checkpoint;
mod dataset;
mod device;
mod drift;
mod error;
mod metrics;
mod model;
mod npy;
mod optim;
mod prepare;
mod rng;
mod score;
mod tensors;
#[cfg(feature = "testing")]
pub mod testing;
mod train;

pub use bundle::{FinalMetrics, Lineage, LoadedModel, ModelBundle, ModelMeta, Prediction};
pub use checkpoint::Checkpoint;
pub use dataset::{Dataset, DatasetFormat, schema_of_file, sha256_hex};
pub use device::{
    ComputeDevice, DeviceChoice, cuda_available, cuda_device_count, num_threads, set_num_threads,
};
pub use drift::{FeatureDrift, FeatureStats, NUMERIC_BINS, PSI_FLOOR, TrainingStats};
pub use error::{MlError, Result};
pub use metrics::EpochMetrics;
pub use model::Architecture;
pub use prepare::{
    ColumnEncoding, ExtraFields, InputEncoding, InputProblem, Prepared, Preprocessor, Raw,
    TargetEncoding, prepare,
};
pub use score::{PartScorer, ScoredPart, ScoringInput, schema_problem};
pub use train::{
    NoObserver, StepProgress, StopReason, TrainObserver, TrainOptions, TrainOutcome, TrainedModel,
    train,
};

/// The directory of the libtorch this crate was linked against (and whose path the rpath of
/// kiln-ml's binaries holds), when the build reported one.
pub fn libtorch_lib_dir() -> Option<&'static str> {
    option_env!("KILN_LIBTORCH_LIB")
}
