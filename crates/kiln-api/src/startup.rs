//! Building and running the server, so tests start the real thing on port 0
//! (zero-to-production's `Application::build` → `port()` → `run_until_stopped()`).

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::middleware::{ErrorHandlers, from_fn};
use actix_web::{App, HttpServer, web};
use kiln_db::DbArgs;
use kiln_serving::ServingArgs;

use crate::error::{self, extractors};
use crate::state::{AppState, Limits};

/// Settings of `kiln-api` (every flag is also an environment variable).
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub store: kiln_store::StoreArgs,
    /// Address to listen on.
    #[arg(long = "bind", env = "KILN_API_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// HTTP worker threads (default: one per core).
    #[arg(long = "workers", env = "KILN_API_WORKERS")]
    pub workers: Option<usize>,
    /// Largest JSON body accepted, in bytes.
    #[arg(long = "max-json-bytes", env = "KILN_MAX_JSON_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_json_bytes: usize,
    /// Largest dataset upload accepted, in bytes.
    #[arg(long = "max-upload-bytes", env = "KILN_MAX_UPLOAD_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_upload_bytes: u64,
    /// Most memory a job's model may need to train, in MiB (weights, gradients, optimizer
    /// state and activations, as estimated at submission); a bigger model is refused with
    /// a 422 naming the field at fault.
    #[arg(long = "max-model-memory-mib", env = "KILN_MAX_MODEL_MEMORY_MIB", default_value_t = crate::state::DEFAULT_MAX_MODEL_MEMORY_MIB)]
    pub max_model_memory_mib: u64,
    /// Seconds an authenticated token is trusted without asking PostgreSQL again (a
    /// revocation evicts it at once on every replica; 0 turns the cache off).
    #[arg(long = "auth-cache-seconds", env = "KILN_AUTH_CACHE_SECONDS", default_value_t = crate::state::DEFAULT_AUTH_CACHE_SECONDS as f64)]
    pub auth_cache_seconds: f64,
    /// Seconds a token PostgreSQL confirmed is still accepted while PostgreSQL is
    /// unreachable, so predictions go on from memory through an outage (0 turns it off).
    #[arg(long = "auth-outage-seconds", env = "KILN_AUTH_OUTAGE_SECONDS", default_value_t = crate::state::DEFAULT_AUTH_OUTAGE_SECONDS as f64)]
    pub auth_outage_seconds: f64,
    /// A second address serving only `GET /metrics`, without a token, for an in-cluster
    /// Prometheus (on the main address `/metrics` needs an admin token).
    #[arg(long = "metrics-bind", env = "KILN_METRICS_BIND")]
    pub metrics_bind: Option<String>,
    #[command(flatten)]
    pub serving: ServingArgs,
}

/// A built server, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    /// The metrics-only address (`KILN_METRICS_BIND`): its port and server.
    metrics: Option<(u16, Server)>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .field("metrics_port", &self.metrics_port())
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Connects to PostgreSQL (migrations must already be applied: `kiln admin migrate`)
    /// and binds the listener.
    pub async fn build(args: &ApiArgs) -> anyhow::Result<Self> {
        let db = kiln_db::connect(&args.db).await?;
        let pending = kiln_db::pending_migrations(&db).await?;
        anyhow::ensure!(
            pending.is_empty(),
            "the database has {} pending migration(s) ({}); run `kiln admin migrate` first",
            pending.len(),
            pending.join(", ")
        );
        let store = kiln_store::open(&args.store).await?;
        let state = AppState::new(
            db,
            store,
            Limits {
                json_bytes: args.max_json_bytes,
                upload_bytes: args.max_upload_bytes,
                model_memory_bytes: args.max_model_memory_mib.saturating_mul(1 << 20),
            },
            args.serving.clone(),
        );
        state.tokens.set_ttl(seconds(args.auth_cache_seconds));
        state.tokens.set_outage_ttl(seconds(args.auth_outage_seconds));
        let listener = TcpListener::bind(&args.bind)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.bind))?;
        let app = Self::from_state(state, listener, args.workers)?;
        match &args.metrics_bind {
            Some(bind) => {
                let listener = TcpListener::bind(bind)
                    .map_err(|e| anyhow::anyhow!("cannot listen on {bind} (metrics): {e}"))?;
                app.serve_metrics_on(listener)
            }
            None => Ok(app),
        }
    }

    pub fn from_state(
        state: AppState,
        listener: TcpListener,
        workers: Option<usize>,
    ) -> anyhow::Result<Self> {
        let port = listener.local_addr()?.port();
        let state = web::Data::new(state);
        let app_state = state.clone();
        let json_limit = state.limits.json_bytes;
        let serving_only = state.serving.args().serving_only;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(
                    web::JsonConfig::default().limit(json_limit).error_handler(extractors::json),
                )
                .app_data(web::QueryConfig::default().error_handler(extractors::query))
                .app_data(web::PathConfig::default().error_handler(extractors::path))
                .wrap(ErrorHandlers::new().default_handler(error::json_error_bodies))
                .wrap(from_fn(crate::validate::refuse_nul_in_url))
                .wrap(from_fn(crate::metrics::record))
                .wrap(from_fn(crate::telemetry::trace_requests))
                .configure(|cfg| crate::routes::configure(cfg, serving_only, json_limit))
                .default_service(web::to(error::unknown_route))
        })
        .listen(listener)?;
        if let Some(workers) = workers {
            server = server.workers(workers);
        }
        Ok(Self { port, server: server.run(), state: app_state, metrics: None })
    }

    /// Also serves `GET /metrics` on `listener`, without a token (`KILN_METRICS_BIND`): an
    /// address for an in-cluster Prometheus only, never exposed like the API's.
    pub fn serve_metrics_on(mut self, listener: TcpListener) -> anyhow::Result<Self> {
        let port = listener.local_addr()?.port();
        let state = self.state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(ErrorHandlers::new().default_handler(error::json_error_bodies))
                .service(
                    web::resource("/metrics").get(crate::routes::health::metrics_unauthenticated),
                )
                .default_service(web::to(error::unknown_route))
        })
        .workers(1)
        .listen(listener)?
        .run();
        self.metrics = Some((port, server));
        Ok(self)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the metrics address, when [`Application::serve_metrics_on`] added one.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(port, _)| *port)
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        match self.metrics {
            Some((_, metrics)) => futures::try_join!(self.server, metrics).map(|_| ()),
            None => self.server.await,
        }
    }
}

fn seconds(value: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(if value.is_finite() { value.max(0.0) } else { 0.0 })
}
