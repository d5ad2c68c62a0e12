//! Kiln's hyperparameter search: what runs a study once the API has accepted it.
//!
//! - [`sampler`]: proposing trials' values — random (one seeded stream per trial number),
//!   grid (every combination, in order) and TPE (a tree-structured Parzen estimator over
//!   the finished trials).
//! - [`pruner`]: early stopping — the median rule and asynchronous successive halving
//!   (ASHA), including the promotion of paused trials.
//! - [`scheduler`]: the loop each API process runs, advancing every running study under its
//!   PostgreSQL row lock; and [`scheduler::should_prune`], which a trial's worker asks after
//!   each deciding epoch.
//!
//! The study's types (its spec, validation, wire form) are kiln-types' `study` module; its
//! rows and statements are kiln-queue's. Trials are ordinary training jobs, so the queue's
//! fairness, leases, retries and checkpoints apply to them unchanged.

pub mod pruner;
pub mod sampler;
pub mod scheduler;

pub use scheduler::{DEFAULT_TICK, best_trial, objective_of, should_prune, spawn, tick_once};
