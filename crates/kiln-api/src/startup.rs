//! Building and running the server, so tests start the real thing on port 0
//! (zero-to-production's `Application::build` → `port()` → `run_until_stopped()`).

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::middleware::{ErrorHandlers, from_fn};
use actix_web::{App, HttpServer, web};
use kiln_db::DbArgs;

use crate::error::{self, extractors};
use crate::serving::ServingArgs;
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
    #[command(flatten)]
    pub serving: ServingArgs,
}

/// A built server, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("port", &self.port).finish_non_exhaustive()
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
        state.tokens.set_ttl(std::time::Duration::from_secs_f64(args.auth_cache_seconds.max(0.0)));
        let listener = TcpListener::bind(&args.bind)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.bind))?;
        Self::from_state(state, listener, args.workers)
    }

    pub fn from_state(
        state: AppState,
        listener: TcpListener,
        workers: Option<usize>,
    ) -> anyhow::Result<Self> {
        let port = listener.local_addr()?.port();
        let state = web::Data::new(state);
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
                .configure(|cfg| crate::routes::configure(cfg, serving_only))
                .default_service(web::to(error::unknown_route))
        })
        .listen(listener)?;
        if let Some(workers) = workers {
            server = server.workers(workers);
        }
        Ok(Self { port, server: server.run() })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
