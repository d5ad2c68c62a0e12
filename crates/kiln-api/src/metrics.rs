//! Prometheus metrics of the API process, served at `GET /metrics`.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::state::AppState;

/// The registry and the API's own instruments. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    /// Queue depth by state (crate::telemetry), refreshed when `/metrics` is scraped.
    pub queue: crate::telemetry::QueueGauges,
    /// The largest feature PSI of each deployment version's last drift report.
    pub drift_psi: GaugeVec,
    /// 1 when that report flagged drift (some feature above its threshold), else 0.
    pub drift_flagged: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("kiln_http_requests_total", "HTTP requests by route, method and status"),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "kiln_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route", "method"],
        )
        .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("register once");
        registry.register(Box::new(latency.clone())).expect("register once");
        let queue = crate::telemetry::QueueGauges::register(&registry);
        let drift_labels = &["team", "deployment", "version"];
        let drift_psi = GaugeVec::new(
            Opts::new(
                "kiln_drift_max_psi",
                "Largest feature PSI of the last drift report of a deployment version",
            ),
            drift_labels,
        )
        .expect("valid metric");
        let drift_flagged = IntGaugeVec::new(
            Opts::new(
                "kiln_drift_flagged",
                "1 when the last drift report of a deployment version flagged a feature",
            ),
            drift_labels,
        )
        .expect("valid metric");
        registry.register(Box::new(drift_psi.clone())).expect("register once");
        registry.register(Box::new(drift_flagged.clone())).expect("register once");
        Self { registry, requests, latency, queue, drift_psi, drift_flagged }
    }

    /// Records the outcome of a drift report (`GET /v1/deployments/{name}/drift`).
    pub fn record_drift(
        &self,
        team: &str,
        deployment: &str,
        version: i32,
        max_psi: f64,
        flagged: bool,
    ) {
        let version = version.to_string();
        let labels = [team, deployment, version.as_str()];
        self.drift_psi.with_label_values(&labels).set(max_psi);
        self.drift_flagged.with_label_values(&labels).set(i64::from(flagged));
    }

    /// The Prometheus text exposition of every registered metric, then the job series
    /// derived from PostgreSQL at the last refresh (crate::telemetry::QueueGauges).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding");
        let mut text = String::from_utf8(out).expect("prometheus text is UTF-8");
        text.push_str(&self.queue.job_series());
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware: counts and times every request by its route pattern (never the raw path,
/// which would explode the label set with ids).
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let route = state.as_ref().map(|s| s.routes.of(&req));
    let res = next.call(req).await;
    if let (Some(state), Some(route)) = (state, route) {
        let metrics = &state.metrics;
        let status = match &res {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        metrics.requests.with_label_values(&[&*route, &method, &status.to_string()]).inc();
        metrics
            .latency
            .with_label_values(&[&*route, &method])
            .observe(started.elapsed().as_secs_f64());
    }
    res
}
