//! Kiln's vocabulary: the domain types every other crate speaks, with no I/O.
//!
//! Types here are parsed once at the edge ("parse, don't validate") and are valid from then
//! on: a [`JobState`] is one of six states, a [`DeviceRequirement`] is one of three, and so
//! on. The one table that maps error codes to HTTP status codes lives in [`error`], so every
//! binary answers the same failure with the same code.

pub mod api;
pub mod auth;
pub mod batch;
mod check;
pub mod dataset;
pub mod digest;
pub mod error;
pub mod job;
pub mod memory;
pub mod secret;
pub mod spec;
pub mod study;

pub use auth::Role;
pub use batch::{BadRow, BatchPredictionSpec, JobKind, ModelInput, OutputPart};
pub use dataset::{ColumnType, DatasetSchema};
pub use digest::{DigestError, Sha256Digest};
pub use error::ErrorCode;
pub use job::{
    DeviceRequirement, InputBlob, JobInputs, JobProgress, JobResult, JobState, ParseEnumError,
    ResultMetrics, UploadFormat, WorkerDevice,
};
pub use memory::{DataShape, MemoryEstimate};
pub use secret::Secret;
pub use spec::{JobSpec, ValidationErrors};
