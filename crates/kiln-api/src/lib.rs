//! Kiln's REST API for teams, on actix-web: the only crate that knows actix-web.
//!
//! The contract is API.md: bearer tokens with roles (admin, maintainer, member, viewer),
//! team isolation (another team's resource answers 404), one JSON error body for every
//! 4xx/5xx including actix's own extractor failures, cursor pagination, an OpenAPI document
//! generated from the handlers. The process keeps no state of its own: PostgreSQL (through
//! kiln-db and kiln-queue) holds everything, so any number of replicas can serve.
//!
//! Layout: [`startup`] builds the server (tests start it on port 0), [`auth`] authenticates
//! and checks roles, [`error`] maps every failure to the JSON body, [`routes`] holds one
//! module per resource, [`openapi`] the generated document, [`metrics`] Prometheus,
//! [`predict`] the HTTP side of a prediction, shared by the native and OIP routes. The
//! inference runtime itself (deployments loaded into this process, batching inference
//! threads, the bundle cache, prediction samples, drift reports) is the kiln-serving crate,
//! re-exported as [`serving`] so embedders name its settings through this crate.
//! `kiln-api --serving-only` runs a replica that serves only predictions, reading the same
//! registry.
//! [`mlflow`] the MLflow tracking/registry REST API and artifact proxy, [`oip`] the Open
//! Inference Protocol v2 over the same deployments.
//! [`telemetry`] the server span of every request (W3C trace context) and the queue gauges.
//! [`ui`] the web UI under `/ui` (pages rendered by the kiln-ui crate; sessions, reads
//! through the same handlers and repositories).

pub mod auth;
pub mod error;
pub mod metrics;
pub mod mlflow;
pub mod oip;
pub mod openapi;
pub mod pagination;
pub mod predict;
pub mod route;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod ui;
pub mod validate;

pub use kiln_serving as serving;
pub use startup::{ApiArgs, Application};
