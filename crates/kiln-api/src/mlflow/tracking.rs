//! MLflow tracking: experiments, runs, params, tags, metrics, search.

use actix_web::web;

/// Mounts the tracking routes inside an MLflow scope (paths relative to `/api/2.0/mlflow`).
pub fn configure(_cfg: &mut web::ServiceConfig) {}
