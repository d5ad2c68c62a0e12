//! Tracing of HTTP requests: one server span per request, continuing the caller's trace
//! when the request carries a W3C `traceparent` header, and Prometheus gauges of the queue.
//!
//! The span is named `METHOD route` (the route pattern, never the raw path with its ids) and
//! carries the method, route, path and status, nothing else of the request: no query
//! string, no header, no body, so no token or dataset byte can reach a trace. Handlers'
//! own spans (the job submission's `kiln.job.submit`) nest under it; the submission stores
//! its span's context on the job row, and the worker continues the trace from there.
//!
//! Every request also logs one `debug` line (with the trace id) when it ends. The span is
//! made whether or not traces are exported, since its trace id is what every log line under
//! the request carries; only `otel.name`, the span's name in the trace view, is built for
//! exported traces alone ([`kiln_telemetry::traces_exported`]).
//!
//! On each scrape of `/metrics` the queue's numbers are read from PostgreSQL, so every API
//! replica reports the platform's (workers scale to zero and take their counters along):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `kiln_queue_jobs` | gauge | `state`, `team`: every state of every team, 0 included |
//! | `kiln_queue_oldest_queued_age_seconds` | gauge | |
//! | `kiln_jobs_finished_total` | counter | `team`, `outcome` (succeeded, failed, cancelled) |
//! | `kiln_jobs_running` | gauge | `team` |
//! | `kiln_jobs_duration_seconds` | histogram | `team`, `outcome`: claim to end of finished jobs |
//! | `kiln_jobs_queue_wait_seconds` | histogram | `team`: submission to first claim |
//! | `kiln_workers_alive` | gauge | `device` (cpu, cuda): heartbeat within 120 s |
//!
//! The last five are written as text after the registry's (histograms from bucket counts
//! computed in SQL cannot be fed to a `prometheus::Histogram`). Every replica reports the
//! same numbers: aggregate with `max`, not `sum`, across replicas.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use kiln_types::JobState;
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
    // The name a trace view shows (`POST /v1/jobs`): without an exporter no one sees it, so
    // it is not built (the field is then absent).
    let otel_name = kiln_telemetry::traces_exported().then(|| format!("{} {route}", req.method()));
    let span = tracing::info_span!(
        "http.request",
        otel.name = otel_name.as_deref().map(tracing::field::display),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %req.method(),
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
    /// The text of the series derived from the jobs and workers tables at the last refresh.
    job_series: Arc<Mutex<String>>,
}

/// Upper bounds (seconds) of the job duration and queue wait histograms.
pub const JOB_SECONDS_BUCKETS: [f64; 15] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
    43200.0, 86400.0,
];
/// A worker whose last heartbeat is older than this is not counted alive (the default
/// heartbeat is 10 s, the default lease 60 s).
pub const WORKER_ALIVE_SECONDS: f64 = 120.0;
const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "pruned"];

/// `{name="value",...}` with Prometheus's escaping of label values.
fn labels(pairs: &[(&str, &str)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

fn write_histograms(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    histograms: &[kiln_queue::DurationHistogram],
    with_outcome: bool,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for h in histograms {
        let mut base = vec![("team", h.team.as_str())];
        if with_outcome {
            base.push(("outcome", h.outcome.as_str()));
        }
        for (bound, count) in bounds.iter().zip(&h.cumulative) {
            let le = bound.to_string();
            let mut l = base.clone();
            l.push(("le", le.as_str()));
            let _ = writeln!(out, "{name}_bucket{} {count}", labels(&l));
        }
        let mut l = base.clone();
        l.push(("le", "+Inf"));
        let _ = writeln!(out, "{name}_bucket{} {}", labels(&l), h.count);
        let _ = writeln!(out, "{name}_sum{} {}", labels(&base), h.sum_seconds);
        let _ = writeln!(out, "{name}_count{} {}", labels(&base), h.count);
    }
}

/// The text exposition of the job series from one read of the queue.
pub fn render_job_series(
    teams: &[String],
    stats: &kiln_queue::QueueStats,
    jobs: &kiln_queue::JobMetrics,
) -> String {
    let count = |team: &str, state: &str| {
        stats
            .counts
            .iter()
            .filter(|c| c.team == team && c.state == state)
            .map(|c| c.count)
            .sum::<i64>()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP kiln_jobs_finished_total Jobs that ended, by team and outcome (from PostgreSQL)\n\
         # TYPE kiln_jobs_finished_total counter"
    );
    for team in teams {
        for outcome in TERMINAL {
            let l = labels(&[("team", team), ("outcome", outcome)]);
            let _ = writeln!(out, "kiln_jobs_finished_total{l} {}", count(team, outcome));
        }
    }
    let _ = writeln!(
        out,
        "# HELP kiln_jobs_running Jobs running now, by team\n# TYPE kiln_jobs_running gauge"
    );
    for team in teams {
        let l = labels(&[("team", team)]);
        let _ = writeln!(out, "kiln_jobs_running{l} {}", count(team, "running"));
    }
    write_histograms(
        &mut out,
        "kiln_jobs_duration_seconds",
        "Finished jobs from first claim to end, by team and outcome",
        &jobs.bounds,
        &jobs.durations,
        true,
    );
    write_histograms(
        &mut out,
        "kiln_jobs_queue_wait_seconds",
        "Started jobs from submission to first claim, by team",
        &jobs.bounds,
        &jobs.queue_waits,
        false,
    );
    let _ = writeln!(
        out,
        "# HELP kiln_workers_alive Workers heard from within {WORKER_ALIVE_SECONDS} s, by device\n\
         # TYPE kiln_workers_alive gauge"
    );
    for device in ["cpu", "cuda"] {
        let n: i64 =
            jobs.alive_workers.iter().filter(|w| w.device == device).map(|w| w.count).sum();
        let _ = writeln!(out, "kiln_workers_alive{} {n}", labels(&[("device", device)]));
    }
    out
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
        Self { jobs, oldest_queued_age, job_series: Arc::default() }
    }

    /// The job series of the last refresh, as Prometheus text (empty before the first).
    pub fn job_series(&self) -> String {
        self.job_series.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the queue's counts. A database failure leaves the last values (and is logged):
    /// a scrape must not fail because of it.
    pub async fn refresh(&self, queue: &kiln_queue::Queue) {
        let read = async {
            let stats = queue.stats().await?;
            let jobs = queue.job_metrics(&JOB_SECONDS_BUCKETS, WORKER_ALIVE_SECONDS).await?;
            Ok::<_, kiln_queue::QueueError>((stats, jobs))
        };
        match read.await {
            Ok((stats, jobs)) => {
                self.jobs.reset();
                // Every state of every team, 0 included, so a query over a state that has
                // no jobs yet finds a series rather than nothing.
                for team in &jobs.teams {
                    for state in JobState::ALL {
                        self.jobs.with_label_values(&[state.as_str(), team.as_str()]).set(0);
                    }
                }
                for count in &stats.counts {
                    self.jobs
                        .with_label_values(&[count.state.as_str(), count.team.as_str()])
                        .set(count.count);
                }
                self.oldest_queued_age.set(stats.oldest_queued_age_seconds.unwrap_or(0.0));
                let text = render_job_series(&jobs.teams, &stats, &jobs);
                *self.job_series.lock().unwrap_or_else(|e| e.into_inner()) = text;
            }
            Err(err) => tracing::warn!(error = %err, "queue depth not refreshed for /metrics"),
        }
    }
}
