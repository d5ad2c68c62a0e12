//! The real `kiln-worker` binary against a real PostgreSQL and a real artifact store
//! (s3s-fs, an S3-compatible server, or a local directory). Nothing is mocked: jobs are
//! enqueued with kiln-queue, datasets uploaded with kiln-store, and the tests watch the
//! database while they start, signal, pause and kill worker processes. Conditions are
//! awaited by polling with generous deadlines; no assertion depends on how fast anything
//! runs. One test binary; each feature is a module.

mod crash;
mod drain;
mod failures;
mod fleet;
mod lifecycle;
mod outage;
mod secrets;
mod store_faults;
mod store_outage;
pub mod support;
