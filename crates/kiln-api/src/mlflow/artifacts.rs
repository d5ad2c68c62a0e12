//! The `mlflow-artifacts:` proxy: upload, download, list and delete (and the multipart
//! variant) streamed into Kiln's artifact store under the team's prefix.

use actix_web::web;

/// Mounts the artifact routes inside an `mlflow-artifacts` scope (paths relative to
/// `/api/2.0/mlflow-artifacts`).
pub fn configure(_cfg: &mut web::ServiceConfig) {}
