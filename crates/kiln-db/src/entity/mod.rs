//! sea-orm entities, one module per table, mirroring the SQL migrations.
//!
//! Relations are expressed in queries rather than derived: the queue and the API write
//! their joins explicitly.

pub mod api_tokens;
pub mod audit_log;
pub mod datasets;
pub mod deployments;
pub mod job_attempts;
pub mod job_events;
pub mod jobs;
pub mod model_aliases;
pub mod model_versions;
pub mod models;
pub mod runs;
pub mod teams;
pub mod workers;
