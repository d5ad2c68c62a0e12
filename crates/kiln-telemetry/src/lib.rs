//! Kiln's observability set-up, shared by every binary: `tracing` with text or JSON log
//! lines (`KILN_LOG_FORMAT`) filtered by `RUST_LOG` (default `info`), an OpenTelemetry
//! layer that turns spans into OTLP traces, OTLP metrics, and W3C trace context carried as
//! plain `traceparent` strings (see [`propagation`]), so a trace goes from an API request
//! through the job row in PostgreSQL to the worker that trains the job.
//!
//! This is the only crate that knows OpenTelemetry: the others create `tracing` spans and
//! call the helpers here with strings and numbers.
//!
//! Export follows OpenTelemetry's own variables. With neither `OTEL_EXPORTER_OTLP_ENDPOINT`
//! nor a signal's own endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) set, nothing is exported: no exporter exists, so
//! nothing connects, retries or complains. Spans still get trace ids (an SDK tracer without
//! exporter), so log lines and the job row carry the trace through the system either way.
//! `OTEL_SERVICE_NAME` (default: the binary's name), `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_TRACES_SAMPLER[_ARG]`,
//! `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_TRACES_EXPORTER=none`,
//! `OTEL_METRICS_EXPORTER=none` and `OTEL_SDK_DISABLED=true` are honoured. The transport is
//! OTLP over HTTP with protobuf bodies (`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`, the
//! only one accepted); a collector's port 4318.
//!
//! Whether spans leave the process is [`traces_exported`], decided once by [`init`]. Code
//! that makes spans only for the trace view (serving's per-request and per-batch spans)
//! asks it first: without a trace exporter such spans are built and dropped unseen, and on
//! a hot path that costs (docs/benchmarks.md). Spans that carry the trace id of log lines
//! and job rows are made either way.
//!
//! [`init`] returns a [`TelemetryGuard`]: dropping it flushes and shuts the exporters down,
//! so a short-lived process keeps its last spans. Only spans are exported, never log
//! events: a span carries the attributes its code chose (ids, names, sizes, durations),
//! while log messages may quote user data.

mod export;
pub mod metrics;
pub mod propagation;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use propagation::{continue_trace, link_to, record_trace_id, trace_id, traceparent};

/// Set by [`init`] when a trace exporter is configured; never unset.
static TRACES_EXPORTED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans: [`init`] built an OTLP trace exporter
/// (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set, and neither
/// `OTEL_TRACES_EXPORTER=none` nor `OTEL_SDK_DISABLED=true`). False before `init` and in
/// processes that never call it (in-process tests, benches). One relaxed atomic load: cheap
/// enough to ask per request.
pub fn traces_exported() -> bool {
    TRACES_EXPORTED.load(Ordering::Relaxed)
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = TelemetryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(TelemetryError::BadLogFormat(other.to_owned())),
        }
    }
}

/// Telemetry settings every binary flattens into its arguments. OpenTelemetry's settings
/// are its own `OTEL_*` variables, read by [`init`].
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// `text` or `json` log lines.
    #[arg(long = "log-format", env = "KILN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("KILN_LOG_FORMAT must be `text` or `json`, not `{0}`")]
    BadLogFormat(String),
    #[error("tracing is already set up in this process")]
    AlreadySet,
    #[error(
        "{variable}=`{value}` is not supported: Kiln exports OTLP over HTTP with protobuf \
         bodies (`http/protobuf`, a collector's port 4318)"
    )]
    UnsupportedProtocol { variable: &'static str, value: String },
    #[error("the OTLP {signal} exporter cannot be built: {message}")]
    Exporter { signal: &'static str, message: String },
}

/// Flushes and shuts down the exporters when dropped. Keep it alive until `main` returns.
#[must_use = "dropping the guard shuts telemetry export down"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    exporting: bool,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("traces", &self.tracer_provider.is_some())
            .field("metrics", &self.meter_provider.is_some())
            .field("exporting", &self.exporting)
            .finish()
    }
}

impl TelemetryGuard {
    /// Whether any OTLP exporter is configured (an endpoint is set).
    pub fn is_exporting(&self) -> bool {
        self.exporting
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Shutting down flushes: the batch span processor exports what it holds, the
        // periodic metric reader collects and exports once more. Failures are reported by
        // the SDK itself (its internal logs), once; there is nothing left to retry.
        if let Some(provider) = self.tracer_provider.take() {
            let _ = provider.shutdown();
        }
        if let Some(provider) = self.meter_provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// The OpenTelemetry SDK's own targets: heard from `warn` up (an exporter that cannot reach
/// its collector still says so) unless `RUST_LOG` names them.
const OTEL_TARGETS: [&str; 4] =
    ["opentelemetry", "opentelemetry_sdk", "opentelemetry-otlp", "opentelemetry-http"];

/// `RUST_LOG` (default `info`), with the SDK's informational chatter ("global tracer
/// provider is set"…) left out unless asked for.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let spec = std::env::var("RUST_LOG").ok().filter(|s| !s.trim().is_empty());
    let spec = spec.as_deref().unwrap_or("info");
    let mut filter = tracing_subscriber::EnvFilter::try_new(spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !spec.contains("opentelemetry") {
        for target in OTEL_TARGETS {
            if let Ok(directive) = format!("{target}=warn").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

/// Installs the global subscriber and, where configured, the OTLP exporters. Call once,
/// first thing in `main`, with the binary's name (the default `service.name`), and keep
/// the guard until the process ends.
pub fn init(args: &TelemetryArgs, service: &'static str) -> Result<TelemetryGuard, TelemetryError> {
    let plan = export::Plan::from_env()?;
    let resource = export::resource(service);
    let tracer_provider =
        if plan.disabled { None } else { Some(export::tracer_provider(&plan, resource.clone())?) };
    let meter_provider = if plan.metrics { Some(export::meter_provider(resource)?) } else { None };

    let filter = log_filter();
    let (text, json) = match args.log_format {
        LogFormat::Text => {
            (Some(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)), None)
        }
        LogFormat::Json => {
            (None, Some(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr)))
        }
    };
    let otel = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("kiln"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_level(false)
            .with_target(false)
            // Spans only: log events stay in the logs (see the crate's documentation).
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| meta.is_span()))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(otel)
        .try_init()
        .map_err(|_| TelemetryError::AlreadySet)?;

    if let Some(provider) = &tracer_provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    TRACES_EXPORTED.store(plan.traces && tracer_provider.is_some(), Ordering::Relaxed);
    if let Some(provider) = &meter_provider {
        opentelemetry::global::set_meter_provider(provider.clone());
    }
    Ok(TelemetryGuard { tracer_provider, meter_provider, exporting: plan.traces || plan.metrics })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_exported_before_init() {
        // This test binary never calls `init`: serving skips its trace-only spans.
        assert!(!traces_exported());
    }

    #[test]
    fn log_formats_parse_and_reject_unknown_ones() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        let err = "yaml".parse::<LogFormat>().unwrap_err();
        assert!(err.to_string().contains("`yaml`"));
    }
}
