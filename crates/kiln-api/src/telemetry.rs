//! Tracing of HTTP requests: one server span per request, continuing the caller's trace
//! when the request carries a W3C `traceparent` header, and Prometheus gauges of the queue.
//!
//! The span is named `METHOD route` (the route pattern, never the raw path with its ids) and
//! carries the method, route, path and status, nothing else of the request: no query
//! string, no header, no body, so no token or dataset byte can reach a trace. Handlers'
//! own spans (the job submission's `kiln.job.submit`) nest under it; the submission stores
//! its span's context on the job row, and the worker continues the trace from there.
//!
//! Every request also logs one `debug` line (with the trace id) when it ends.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use prometheus::{Gauge, IntGaugeVec, Opts, Registry};
use tracing::Instrument as _;
use tracing::field::Empty;

/// Middleware: the server span of every request.
pub async fn trace_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let route = match req.app_data::<actix_web::web::Data<crate::state::AppState>>() {
        Some(state) => state.routes.of(&req),
        None => req.match_pattern().as_deref().unwrap_or("unmatched").into(),
    };
    let method = req.method().as_str().to_owned();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %req.path(),
        http.response.status_code = Empty,
        trace_id = Empty,
    );
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    kiln_telemetry::continue_trace(&span, header("traceparent"), header("tracestate"));
    kiln_telemetry::record_trace_id(&span);
    let res = next.call(req).instrument(span.clone()).await;
    let status = match &res {
        Ok(r) => r.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    tracing::debug!(parent: &span, status = status.as_u16(), "request finished");
    res
}

/// Queue depth, refreshed from PostgreSQL on each scrape of `/metrics`.
#[derive(Debug, Clone)]
pub struct QueueGauges {
    /// `kiln_queue_jobs{state, team}`.
    pub jobs: IntGaugeVec,
    /// `kiln_queue_oldest_queued_age_seconds`.
    pub oldest_queued_age: Gauge,
}

impl QueueGauges {
    pub fn register(registry: &Registry) -> Self {
        let jobs = IntGaugeVec::new(
            Opts::new("kiln_queue_jobs", "Jobs by state and team (queue depth)"),
            &["state", "team"],
        )
        .expect("valid metric");
        let oldest_queued_age = Gauge::new(
            "kiln_queue_oldest_queued_age_seconds",
            "Age of the oldest queued job, by the database's clock (0 when none)",
        )
        .expect("valid metric");
        registry.register(Box::new(jobs.clone())).expect("register once");
        registry.register(Box::new(oldest_queued_age.clone())).expect("register once");
        Self { jobs, oldest_queued_age }
    }

    /// Reads the queue's counts. A database failure leaves the last values (and is logged):
    /// a scrape must not fail because of it.
    pub async fn refresh(&self, queue: &kiln_queue::Queue) {
        match queue.stats().await {
            Ok(stats) => {
                self.jobs.reset();
                for count in &stats.counts {
                    self.jobs
                        .with_label_values(&[count.state.as_str(), count.team.as_str()])
                        .set(count.count);
                }
                self.oldest_queued_age.set(stats.oldest_queued_age_seconds.unwrap_or(0.0));
            }
            Err(err) => tracing::warn!(error = %err, "queue depth not refreshed for /metrics"),
        }
    }
}
