//! Kiln's vocabulary: the domain types every other crate speaks, with no I/O.
//!
//! Types here are parsed once at the edge ("parse, don't validate") and are valid from then
//! on: a [`JobState`] is one of five states, a [`DeviceRequirement`] is one of three, and so
//! on. The one table that maps error codes to HTTP status codes lives in [`error`], so every
//! binary answers the same failure with the same code.

pub mod api;
pub mod auth;
pub mod error;
pub mod job;
pub mod memory;
pub mod secret;
pub mod spec;

pub use auth::Role;
pub use error::ErrorCode;
pub use job::{DeviceRequirement, JobState, ParseEnumError, WorkerDevice};
pub use memory::{DataShape, MemoryEstimate};
pub use secret::Secret;
pub use spec::{JobSpec, ValidationErrors};
