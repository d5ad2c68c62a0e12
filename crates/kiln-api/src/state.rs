//! What every handler shares: the database, the queue and settings. No request state lives
//! in the process: any number of replicas can run behind a load balancer.

use std::sync::Arc;

use kiln_queue::Queue;
use kiln_store::ArtifactStore;

use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct AppState {
    pub db: kiln_db::Db,
    pub queue: Queue,
    /// Datasets, checkpoints and model bundles.
    pub store: Arc<dyn ArtifactStore>,
    pub metrics: Metrics,
    pub limits: Limits,
}

/// Request size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest JSON body accepted.
    pub json_bytes: usize,
    /// Largest dataset upload accepted.
    pub upload_bytes: u64,
}
