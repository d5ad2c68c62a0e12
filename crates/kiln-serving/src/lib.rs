//! Kiln's inference runtime: what one process serves and how. It owns the deployments
//! loaded into the process, each version on its own batching inference thread ([`engine`],
//! with its batch policy), model bundles cached by content hash ([`bundles`]), the sample
//! of traffic kept for drift monitoring ([`samples`]), a prediction's way through them once
//! its rows are encoded ([`predict`]), and the drift report of a deployment against its
//! training statistics ([`drift`]; the PSI maths is kiln-ml's). HTTP is not here: kiln-api's
//! native and Open Inference Protocol routes authenticate, parse, encode and answer, and
//! call this crate in between.
//!
//! PostgreSQL holds what should be served (the `deployments` rows, resolved through model
//! aliases); [`Serving::sync`] makes this process serve exactly that. It runs after every
//! change made through this process (create, PATCH, alias moves: the answer returns once the
//! new version is loaded and taking traffic) and every `KILN_SERVING_SYNC_SECONDS` for
//! changes made through other replicas. A sync loads and warms new versions *before* it
//! switches a deployment's routing to them, and an old version's engine keeps running until
//! its in-flight requests are answered, so a rollout or rollback fails no request.
//!
//! Every lock on the predict path recovers from poisoning ([`read`], [`write`], [`lock`]): a
//! panic while one is held (the data under these locks is replaced whole, never left half
//! written) must not make every later request panic too.
//!
//! The Prometheus instruments ([`ServingMetrics`]) are registered on the registry the
//! caller passes to [`Serving::start`]; their names and labels are those of
//! docs/observability.md.

pub mod bundles;
pub mod drift;
pub mod engine;
pub mod predict;
pub mod samples;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use kiln_db::repo::deployments::{self, Deployment as Row, VersionBundle};
use kiln_ml::DeviceChoice;
use kiln_store::ArtifactStore;
use kiln_types::api::{Batching, LoadedVersion, TrafficSplit};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use uuid::Uuid;

use self::bundles::BundleCache;
use self::engine::{EngineConfig, EngineInstruments};
use self::samples::SampleSink;

pub use self::drift::{DriftError, MIN_DRIFT_SAMPLES};
pub use self::engine::{Engine, InferenceError, SubmitError};
pub use self::predict::{Pick, PickError, PredictError, Request, Served};

/// Reads a lock, recovering it if a panic poisoned it.
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Writes a lock, recovering it if a panic poisoned it.
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Locks a mutex, recovering it if a panic poisoned it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a model version could not be loaded for serving: its bundle could not be fetched,
/// verified or parsed, or its inference thread could not start, load or warm it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("bundle hash `{0}` is not a sha256")]
    NotASha256(String),
    #[error("{0}")]
    BadKey(#[source] kiln_store::StoreError),
    #[error("creating the bundle cache {}: {source}", dir.display())]
    CacheDir { dir: PathBuf, source: std::io::Error },
    #[error("downloading the model bundle: {0}")]
    Download(#[source] kiln_store::StoreError),
    #[error("the stored model bundle does not match its sha256 {0}")]
    DigestMismatch(String),
    #[error("parsing the bundle: {0}")]
    ParseTask(#[source] tokio::task::JoinError),
    /// The bundle, its model or its warm-up was refused by kiln-ml.
    #[error("{0}")]
    Model(#[source] kiln_ml::MlError),
    #[error("cannot start an inference thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the inference thread died while loading")]
    ThreadDied,
}

/// Where serving runs its models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServingDevice {
    Cpu,
    Auto,
    Cuda,
}

impl From<ServingDevice> for DeviceChoice {
    fn from(device: ServingDevice) -> Self {
        match device {
            ServingDevice::Cpu => DeviceChoice::Cpu,
            ServingDevice::Auto => DeviceChoice::Auto,
            ServingDevice::Cuda => DeviceChoice::Cuda,
        }
    }
}

/// Serving settings of `kiln-api` (every flag is also an environment variable).
#[derive(Debug, Clone, clap::Args)]
pub struct ServingArgs {
    /// Serve predictions only: mount the health, metrics, deployment-read, predict and drift
    /// routes and nothing else (a scale-out replica reading the same registry).
    #[arg(long = "serving-only", env = "KILN_SERVING_ONLY", default_value_t = false)]
    pub serving_only: bool,
    /// Device models are served on.
    #[arg(long = "serving-device", env = "KILN_SERVING_DEVICE", value_enum, default_value_t = ServingDevice::Cpu)]
    pub device: ServingDevice,
    /// Local directory caching model bundles by content hash (default:
    /// `$XDG_CACHE_HOME/kiln/serving`).
    #[arg(long = "serving-cache-dir", env = "KILN_SERVING_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Requests that may wait for one version's inference thread; beyond it, 503.
    #[arg(
        long = "serving-queue-capacity",
        env = "KILN_SERVING_QUEUE_CAPACITY",
        default_value_t = 1024
    )]
    pub queue_capacity: usize,
    /// Share of predicted rows kept in PostgreSQL for drift monitoring (0 to 1).
    #[arg(long = "serving-sample-rate", env = "KILN_SERVING_SAMPLE_RATE", default_value_t = 0.1)]
    pub sample_rate: f64,
    /// Sampled rows kept per deployment per second, at most (0: no cap). Drift needs a
    /// steady sample, not every row of a busy deployment: without a cap, the database work
    /// grows with traffic while the pruner throws most of it away.
    #[arg(
        long = "serving-samples-per-second",
        env = "KILN_SERVING_SAMPLES_PER_SECOND",
        default_value_t = 200.0
    )]
    pub samples_per_second: f64,
    /// Samples kept per deployment (the newest).
    #[arg(
        long = "serving-samples-kept",
        env = "KILN_SERVING_SAMPLES_KEPT",
        default_value_t = 10_000
    )]
    pub samples_kept: u64,
    /// How often to pick up deployment and alias changes made through other replicas.
    #[arg(long = "serving-sync-seconds", env = "KILN_SERVING_SYNC_SECONDS", default_value_t = 2.0)]
    pub sync_seconds: f64,
    /// Instances per predict request, at most.
    #[arg(
        long = "serving-max-instances",
        env = "KILN_SERVING_MAX_INSTANCES",
        default_value_t = 10_000
    )]
    pub max_instances: usize,
    /// libtorch intra-op threads of each inference thread. One suits CPU serving: batches
    /// of a few rows gain nothing from more, and libtorch's idle workers spin (OpenMP's
    /// busy-wait) on the cores the HTTP workers need; each deployment version already has
    /// its own thread. Raise it for one large model on a machine of its own.
    #[arg(long = "serving-torch-threads", env = "KILN_SERVING_TORCH_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub torch_threads: u16,
}

impl ServingArgs {
    /// Defaults, for tests and embedders.
    pub fn defaults() -> Self {
        ServingArgs {
            serving_only: false,
            device: ServingDevice::Cpu,
            cache_dir: None,
            queue_capacity: 1024,
            sample_rate: 0.1,
            samples_per_second: 200.0,
            samples_kept: 10_000,
            sync_seconds: 2.0,
            max_instances: 10_000,
            torch_threads: 1,
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(std::env::temp_dir)
                .join("kiln/serving")
        })
    }
}

/// Prometheus instruments of serving, labelled by team, deployment and version.
#[derive(Debug, Clone)]
pub struct ServingMetrics {
    /// `outcome`: `ok`, `invalid`, `overloaded`, `error`.
    pub predictions: IntCounterVec,
    pub latency: HistogramVec,
    pub batch_rows: HistogramVec,
    /// How long batches were held open for more requests.
    pub batch_wait: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub samples_dropped: IntCounter,
    pub bundle_loads: IntCounterVec,
    /// Time to fetch, load and warm a version, by deployment and version.
    pub model_load: HistogramVec,
    /// The version taking the most traffic, by deployment.
    pub active_version: IntGaugeVec,
}

impl ServingMetrics {
    pub fn register(registry: &Registry) -> Self {
        let labels = &["team", "deployment", "version"];
        let predictions = IntCounterVec::new(
            Opts::new(
                "kiln_predictions_total",
                "Predict requests by deployment, version and outcome",
            ),
            &["team", "deployment", "version", "outcome"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "kiln_prediction_duration_seconds",
                "Predict latency from routing to answer, by deployment and version",
            )
            .buckets(vec![
                0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            labels,
        )
        .expect("valid metric");
        let batch_rows = HistogramVec::new(
            HistogramOpts::new("kiln_prediction_batch_rows", "Rows per forward pass").buckets(
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0],
            ),
            labels,
        )
        .expect("valid metric");
        let batch_wait = HistogramVec::new(
            HistogramOpts::new(
                "kiln_prediction_batch_wait_seconds",
                "How long a batch was held open for more requests before its forward pass",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
            ]),
            labels,
        )
        .expect("valid metric");
        let model_load = HistogramVec::new(
            HistogramOpts::new(
                "kiln_serving_model_load_seconds",
                "Time to fetch, load and warm a model version for a deployment",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
            labels,
        )
        .expect("valid metric");
        let active_version = IntGaugeVec::new(
            Opts::new(
                "kiln_deployment_active_version",
                "The model version taking the most traffic of a deployment in this process",
            ),
            &["team", "deployment"],
        )
        .expect("valid metric");
        let queue_depth = IntGaugeVec::new(
            Opts::new("kiln_prediction_queue_depth", "Requests waiting for an inference thread"),
            labels,
        )
        .expect("valid metric");
        let samples_dropped = IntCounter::new(
            "kiln_prediction_samples_dropped_total",
            "Prediction samples not stored because the writer fell behind",
        )
        .expect("valid metric");
        let bundle_loads = IntCounterVec::new(
            Opts::new(
                "kiln_serving_bundle_loads_total",
                "Model bundles loaded, by where they came from",
            ),
            &["source"],
        )
        .expect("valid metric");
        for metric in [
            Box::new(predictions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(batch_rows.clone()),
            Box::new(queue_depth.clone()),
            Box::new(samples_dropped.clone()),
            Box::new(bundle_loads.clone()),
            Box::new(batch_wait.clone()),
            Box::new(model_load.clone()),
            Box::new(active_version.clone()),
        ] {
            registry.register(metric).expect("register once");
        }
        ServingMetrics {
            predictions,
            latency,
            batch_rows,
            batch_wait,
            queue_depth,
            samples_dropped,
            bundle_loads,
            model_load,
            active_version,
        }
    }
}

/// One version's place in a deployment's routing.
#[derive(Debug, Clone)]
pub struct Route {
    pub weight: u32,
    pub engine: Arc<Engine>,
}

/// What a deployment serves right now in this process.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Versions with a positive weight.
    pub routes: Vec<Route>,
    /// Why the deployment cannot serve (or serves a stale version), if it cannot.
    pub error: Option<String>,
}

impl Routing {
    /// Picks a version by weight.
    pub fn pick(&self) -> Option<&Arc<Engine>> {
        let total: u64 = self.routes.iter().map(|r| u64::from(r.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut ticket = rand::random_range(0..total);
        for route in &self.routes {
            if ticket < u64::from(route.weight) {
                return Some(&route.engine);
            }
            ticket -= u64::from(route.weight);
        }
        self.routes.last().map(|r| &r.engine)
    }

    fn engine(&self, version: i32) -> Option<&Arc<Engine>> {
        self.routes.iter().map(|r| &r.engine).find(|e| e.version == version)
    }
}

/// A deployment as this process serves it.
#[derive(Debug)]
pub struct Live {
    pub row: Row,
    routing: RwLock<Arc<Routing>>,
}

impl Live {
    pub fn routing(&self) -> Arc<Routing> {
        read(&self.routing).clone()
    }

    /// The versions loaded, for `GET /v1/deployments/{name}`.
    pub fn loaded(&self) -> Vec<LoadedVersion> {
        self.routing()
            .routes
            .iter()
            .map(|r| LoadedVersion {
                version: r.engine.version,
                bundle_sha256: r.engine.bundle_sha256.clone(),
                device: r.engine.device.clone(),
                queue_depth: r.engine.queue_depth(),
                loaded_at: r.engine.loaded_at,
            })
            .collect()
    }
}

/// The deployment's batching settings, with defaults for anything missing.
pub fn batching_of(row: &Row) -> Batching {
    serde_json::from_value(row.batching.clone()).unwrap_or_default()
}

/// The explicit split of a deployment, or everything to its alias's or pinned version.
pub fn traffic_of(row: &Row) -> Vec<TrafficSplit> {
    let explicit: Vec<TrafficSplit> =
        serde_json::from_value(row.traffic.clone()).unwrap_or_default();
    if !explicit.is_empty() {
        return explicit;
    }
    row.primary_version()
        .map(|version| vec![TrafficSplit { version, weight: 100 }])
        .unwrap_or_default()
}

/// Serving's shared state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Serving {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    args: ServingArgs,
    db: kiln_db::Db,
    bundles: BundleCache,
    metrics: ServingMetrics,
    samples: SampleSink,
    live: RwLock<HashMap<Uuid, Arc<Live>>>,
    sync_lock: tokio::sync::Mutex<()>,
}

impl Serving {
    /// Sets serving up and starts its background tasks (sample writer, periodic sync) on the
    /// current tokio runtime. Nothing is loaded until the first sync.
    pub fn start(
        args: ServingArgs,
        db: kiln_db::Db,
        store: Arc<dyn ArtifactStore>,
        registry: &Registry,
    ) -> Self {
        let metrics = ServingMetrics::register(registry);
        let bundles = BundleCache::new(args.cache_dir(), store, metrics.bundle_loads.clone());
        let samples = SampleSink::start(
            db.clone(),
            args.sample_rate,
            args.samples_per_second,
            args.samples_kept,
            metrics.samples_dropped.clone(),
        );
        let serving = Serving {
            inner: Arc::new(Inner {
                args,
                db,
                bundles,
                metrics,
                samples,
                live: RwLock::new(HashMap::new()),
                sync_lock: tokio::sync::Mutex::new(()),
            }),
        };
        let background = serving.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs_f64(background.inner.args.sync_seconds.max(0.1));
            loop {
                if let Err(err) = background.sync().await {
                    tracing::warn!(error = %err, "serving sync failed; retrying");
                }
                tokio::time::sleep(period).await;
            }
        });
        serving
    }

    pub fn args(&self) -> &ServingArgs {
        &self.inner.args
    }

    pub fn metrics(&self) -> &ServingMetrics {
        &self.inner.metrics
    }

    pub fn samples(&self) -> &SampleSink {
        &self.inner.samples
    }

    pub fn bundles(&self) -> &BundleCache {
        &self.inner.bundles
    }

    /// A deployment as served by this process.
    pub fn live(&self, id: Uuid) -> Option<Arc<Live>> {
        read(&self.inner.live).get(&id).cloned()
    }

    /// A team's deployment by name, as served by this process.
    pub fn find(&self, team_id: Uuid, name: &str) -> Option<Arc<Live>> {
        let live = read(&self.inner.live);
        live.values().find(|l| l.row.team_id == team_id && l.row.name == name).cloned()
    }

    /// The deployments that follow `alias` of a model.
    pub fn following(&self, model_id: Uuid, alias: &str) -> Vec<Arc<Live>> {
        let live = read(&self.inner.live);
        live.values()
            .filter(|l| l.row.model_id == model_id && l.row.alias.as_deref() == Some(alias))
            .cloned()
            .collect()
    }

    /// Makes this process serve what PostgreSQL says, loading new versions before routing
    /// traffic to them. Deployments whose versions cannot be loaded keep serving what they
    /// served (with the error recorded) rather than stop.
    pub async fn sync(&self) -> Result<(), kiln_db::repo::RepoError> {
        let _one_at_a_time = self.inner.sync_lock.lock().await;
        let rows = deployments::all(&self.inner.db).await?;
        let wanted: Vec<(Uuid, i32)> = rows
            .iter()
            .flat_map(|row| traffic_of(row).into_iter().map(move |t| (row.model_id, t.version)))
            .collect();
        let bundles: HashMap<(Uuid, i32), VersionBundle> =
            deployments::bundles(&self.inner.db, &wanted)
                .await?
                .into_iter()
                .map(|b| ((b.model_id, b.version), b))
                .collect();
        let current = read(&self.inner.live).clone();
        let mut next = HashMap::with_capacity(rows.len());
        for row in rows {
            let previous = current.get(&row.id).map(|live| live.routing());
            let unchanged = current.get(&row.id).is_some_and(|live| live.row == row);
            let routing = match (&previous, unchanged) {
                (Some(routing), true) if routing.error.is_none() => routing.clone(),
                _ => Arc::new(self.route(&row, previous.as_deref(), &bundles).await),
            };
            next.insert(row.id, Arc::new(Live { row, routing: RwLock::new(routing) }));
        }
        // Engines no longer routed to are dropped with their `Live`; each finishes its queue.
        self.publish_active_versions(&current, &next);
        *write(&self.inner.live) = next;
        Ok(())
    }

    /// `kiln_deployment_active_version`: set for every deployment served, removed for the
    /// ones no longer served.
    fn publish_active_versions(
        &self,
        current: &HashMap<Uuid, Arc<Live>>,
        next: &HashMap<Uuid, Arc<Live>>,
    ) {
        let gauge = &self.inner.metrics.active_version;
        for (id, live) in current {
            if !next.contains_key(id) {
                let _ = gauge.remove_label_values(&[&live.row.team_name, &live.row.name]);
            }
        }
        for live in next.values() {
            let labels = [live.row.team_name.as_str(), live.row.name.as_str()];
            match live.routing().routes.iter().max_by_key(|r| r.weight) {
                Some(route) => {
                    gauge.with_label_values(&labels).set(i64::from(route.engine.version))
                }
                None => {
                    let _ = gauge.remove_label_values(&labels);
                }
            }
        }
    }

    /// Builds a deployment's routing, reusing engines of `previous` where the version,
    /// bundle and batching are unchanged.
    async fn route(
        &self,
        row: &Row,
        previous: Option<&Routing>,
        bundles: &HashMap<(Uuid, i32), VersionBundle>,
    ) -> Routing {
        let traffic = traffic_of(row);
        if traffic.is_empty() {
            let why = match &row.alias {
                Some(alias) => {
                    format!("alias `{alias}` of model `{}` points at no version", row.model)
                }
                None => "the deployment has no version to serve".to_owned(),
            };
            return Routing { routes: Vec::new(), error: Some(why) };
        }
        let batching = batching_of(row);
        let mut routes = Vec::with_capacity(traffic.len());
        for split in traffic.iter().filter(|t| t.weight > 0) {
            let Some(bundle) = bundles.get(&(row.model_id, split.version)) else {
                return self.keep(
                    previous,
                    format!("model `{}` has no version {}", row.model, split.version),
                );
            };
            let reusable = previous
                .and_then(|p| p.engine(split.version))
                .filter(|e| e.bundle_sha256 == bundle.bundle_sha256 && e.batching == batching);
            let engine = match reusable {
                Some(engine) => engine.clone(),
                None => match self.load(row, bundle, batching).await {
                    Ok((engine, took)) => {
                        let version = split.version.to_string();
                        self.inner
                            .metrics
                            .model_load
                            .with_label_values(&[&row.team_name, &row.name, &version])
                            .observe(took.as_secs_f64());
                        Arc::new(engine)
                    }
                    Err(err) => {
                        tracing::error!(deployment = %row.name, version = split.version, error = %err, "cannot load model version");
                        return self.keep(previous, format!("version {}: {err}", split.version));
                    }
                },
            };
            routes.push(Route { weight: split.weight, engine });
        }
        tracing::info!(
            team = %row.team_name, deployment = %row.name,
            versions = ?routes.iter().map(|r| (r.engine.version, r.weight)).collect::<Vec<_>>(),
            "deployment routing updated"
        );
        Routing { routes, error: None }
    }

    /// Keeps serving the previous routing, noting why the new one could not be built.
    fn keep(&self, previous: Option<&Routing>, error: String) -> Routing {
        Routing {
            routes: previous.map(|p| p.routes.clone()).unwrap_or_default(),
            error: Some(error),
        }
    }

    /// Loads and warms one version on a new inference thread; with how long that took.
    async fn load(
        &self,
        row: &Row,
        bundle: &VersionBundle,
        batching: Batching,
    ) -> Result<(Engine, Duration), LoadError> {
        let started = Instant::now();
        let (model, _) = self.inner.bundles.get(&bundle.bundle_key, &bundle.bundle_sha256).await?;
        let version = bundle.version.to_string();
        let labels = [row.team_name.as_str(), row.name.as_str(), version.as_str()];
        let m = &self.inner.metrics;
        let outcome =
            |o: &str| m.predictions.with_label_values(&[labels[0], labels[1], labels[2], o]);
        let instruments = EngineInstruments {
            queue_depth: m.queue_depth.with_label_values(&labels),
            batch_rows: m.batch_rows.with_label_values(&labels),
            batch_wait: m.batch_wait.with_label_values(&labels),
            ok: outcome("ok"),
            invalid: outcome("invalid"),
            overloaded: outcome("overloaded"),
            failed: outcome("error"),
            latency: m.latency.with_label_values(&labels),
        };
        let config = EngineConfig {
            version: bundle.version,
            bundle_sha256: bundle.bundle_sha256.clone(),
            batching,
            device: self.inner.args.device.into(),
            queue_capacity: self.inner.args.queue_capacity,
            torch_threads: usize::from(self.inner.args.torch_threads),
            thread_name: format!("kiln-serve-{}-v{}", truncate(&row.name, 16), bundle.version),
            deployment: format!("{}/{}", row.team_name, row.name),
        };
        let engine = Engine::start(model, config, instruments).await?;
        Ok((engine, started.elapsed()))
    }
}

fn truncate(s: &str, n: usize) -> &str {
    s.get(..n).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic while a lock is held poisons it; the predict path's lock helpers still read
    /// and replace what it holds, so later requests are served instead of panicking too.
    #[test]
    fn a_panic_while_a_lock_is_held_does_not_break_later_readers() {
        let routing = Arc::new(RwLock::new(Arc::new(Routing::default())));
        let held = routing.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = held.write().unwrap();
            panic!("a bug while routing is being replaced");
        })
        .join();
        assert!(panicked.is_err());
        assert!(routing.is_poisoned());
        assert!(read(&routing).routes.is_empty());
        *write(&routing) = Arc::new(Routing { routes: Vec::new(), error: Some("next".into()) });
        assert_eq!(read(&routing).error.as_deref(), Some("next"));

        let cache = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
        let held = cache.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("a bug while the bundle cache is locked");
        })
        .join();
        assert!(cache.is_poisoned());
        lock(&cache).insert("sha".into(), 1);
        assert_eq!(lock(&cache).get("sha"), Some(&1));
    }
}
