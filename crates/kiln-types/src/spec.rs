//! The training job specification (`POST /v1/jobs`), parsed once and valid from then on.
//!
//! Filled in by the kiln-ml issue; the queue treats a job's spec as opaque JSON.
