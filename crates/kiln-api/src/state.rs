//! What every handler shares: the database, the queue, settings, and serving's loaded
//! models. No request state lives in the process: any number of replicas can run behind a
//! load balancer.

use std::sync::Arc;

use kiln_queue::{Queue, QueueConfig};
use kiln_serving::{Serving, ServingArgs};
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
    /// Authenticated tokens (revocations announced by PostgreSQL evict them at once).
    pub tokens: crate::auth::TokenCache,
    /// Deployments loaded into this process (the only in-process state: a cache of what
    /// PostgreSQL says should be served, rebuilt by every replica on its own).
    pub serving: Serving,
    /// Route patterns by path, for metrics labels and span names.
    pub routes: Arc<crate::route::RoutePatterns>,
}

/// Request size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest JSON body accepted.
    pub json_bytes: usize,
    /// Largest dataset upload accepted.
    pub upload_bytes: u64,
    /// Most memory a submitted job's model may need to train (its estimate).
    pub model_memory_bytes: u64,
}

/// The default of `KILN_MAX_MODEL_MEMORY_MIB`: 4 GiB per job.
pub const DEFAULT_MAX_MODEL_MEMORY_MIB: u64 = 4096;

/// How long an authenticated token is trusted without asking PostgreSQL again (revocations
/// evict it at once regardless).
pub const DEFAULT_AUTH_CACHE_SECONDS: u64 = 10;

/// How long a token PostgreSQL confirmed is still accepted while PostgreSQL is unreachable,
/// so serving from memory outlives a database outage.
pub const DEFAULT_AUTH_OUTAGE_SECONDS: u64 = 900;

impl AppState {
    /// The state of one API process: metrics, the queue, serving and (unless it serves
    /// predictions only) the study scheduler, whose background tasks start on the current
    /// tokio runtime.
    pub fn new(
        db: kiln_db::Db,
        store: Arc<dyn ArtifactStore>,
        limits: Limits,
        serving: ServingArgs,
    ) -> Self {
        let metrics = Metrics::new();
        let serving_only = serving.serving_only;
        let serving = Serving::start(serving, db.clone(), store.clone(), &metrics.registry);
        let queue = Queue::new(&db, QueueConfig::default());
        if !serving_only {
            // Every replica runs one; each study is advanced under its row lock by one of
            // them at a time.
            kiln_study::spawn(queue.clone(), kiln_study::DEFAULT_TICK);
        }
        AppState {
            tokens: crate::auth::TokenCache::start(
                std::time::Duration::from_secs(DEFAULT_AUTH_CACHE_SECONDS),
                db.clone(),
            ),
            queue,
            db,
            store,
            metrics,
            limits,
            serving,
            routes: Default::default(),
        }
    }
}
