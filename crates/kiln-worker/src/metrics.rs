//! The worker's own Prometheus metrics, served at `GET /metrics` on
//! `KILN_WORKER_METRICS_BIND` when it is set (the chart's PodMonitor scrapes it):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `kiln_worker_epoch_duration_seconds` | histogram | `model_type`, `device` |
//! | `kiln_worker_checkpoint_bytes` | histogram | |
//! | `kiln_worker_jobs_total` | counter | `outcome` (succeeded, failed, failed_retrying, cancelled, pruned, released, lease_lost, abandoned) |
//! | `kiln_worker_job_duration_seconds` | histogram | `outcome` |
//! | `kiln_worker_busy` | gauge | 1 while an attempt runs |
//! | `kiln_worker_info` | gauge (1) | `device`, `version` |
//!
//! The same events go to OTLP through kiln-telemetry's metrics when an endpoint is set;
//! these are for a Prometheus that scrapes pods. The instruments are process-global (like
//! kiln-telemetry's) so the training observer records without being handed anything.
//!
//! The listener is a minimal HTTP/1.1 server on tokio: it answers `GET /metrics` (and `GET
//! /healthz`) and closes the connection; anything else is 404 or 405. It needs no HTTP
//! framework, and nothing but the metrics is reachable through it.

use std::net::SocketAddr;
use std::sync::OnceLock;

use anyhow::Context as _;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

struct Instruments {
    registry: Registry,
    epoch_duration: HistogramVec,
    checkpoint_bytes: Histogram,
    jobs: IntCounterVec,
    job_duration: HistogramVec,
    busy: IntGauge,
    info: IntGaugeVec,
}

const SLOW_SECONDS: [f64; 16] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    21600.0,
];

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let registry = Registry::new();
        let epoch_duration = HistogramVec::new(
            HistogramOpts::new(
                "kiln_worker_epoch_duration_seconds",
                "Wall time of one training epoch (epochs resumed mid-way are not counted)",
            )
            .buckets(SLOW_SECONDS.to_vec()),
            &["model_type", "device"],
        )
        .expect("valid metric");
        let checkpoint_bytes = Histogram::with_opts(
            HistogramOpts::new("kiln_worker_checkpoint_bytes", "Size of each stored checkpoint")
                .buckets(prometheus::exponential_buckets(1024.0, 4.0, 14).expect("valid buckets")),
        )
        .expect("valid metric");
        let jobs = IntCounterVec::new(
            Opts::new("kiln_worker_jobs_total", "Job attempts this worker ended, by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let job_duration = HistogramVec::new(
            HistogramOpts::new(
                "kiln_worker_job_duration_seconds",
                "One attempt, from its claim to its final write, by outcome",
            )
            .buckets(SLOW_SECONDS.to_vec()),
            &["outcome"],
        )
        .expect("valid metric");
        let busy = IntGauge::new("kiln_worker_busy", "1 while this worker runs a job attempt")
            .expect("valid metric");
        let info = IntGaugeVec::new(
            Opts::new("kiln_worker_info", "Always 1: the worker's device and version"),
            &["device", "version"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(epoch_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(checkpoint_bytes.clone()),
            Box::new(jobs.clone()),
            Box::new(job_duration.clone()),
            Box::new(busy.clone()),
            Box::new(info.clone()),
        ] {
            registry.register(collector).expect("register once");
        }
        Instruments { registry, epoch_duration, checkpoint_bytes, jobs, job_duration, busy, info }
    })
}

/// One full epoch took `seconds`.
pub fn epoch_finished(seconds: f64, model_type: &str, device: &str) {
    instruments().epoch_duration.with_label_values(&[model_type, device]).observe(seconds);
}

/// A checkpoint of `bytes` was stored and recorded.
pub fn checkpoint_stored(bytes: usize) {
    instruments().checkpoint_bytes.observe(bytes as f64);
}

/// An attempt started (`true`) or ended.
pub fn busy(running: bool) {
    instruments().busy.set(i64::from(running));
}

/// An attempt ended with `outcome` after `seconds`.
pub fn job_finished(seconds: f64, outcome: &str) {
    let i = instruments();
    i.jobs.with_label_values(&[outcome]).inc();
    i.job_duration.with_label_values(&[outcome]).observe(seconds);
}

/// The Prometheus text exposition of every worker metric.
pub fn render() -> String {
    let mut out = Vec::new();
    TextEncoder::new().encode(&instruments().registry.gather(), &mut out).expect("text encoding");
    String::from_utf8(out).expect("prometheus text is UTF-8")
}

/// Binds `addr` and serves the metrics until the process exits. Binding happens before it
/// returns, so a port in use fails the worker's start, not silently later.
pub async fn serve(addr: SocketAddr, device: &str) -> anyhow::Result<SocketAddr> {
    let i = instruments();
    i.info.with_label_values(&[device, env!("CARGO_PKG_VERSION")]).set(1);
    for outcome in [
        "succeeded",
        "failed",
        "failed_retrying",
        "cancelled",
        "pruned",
        "released",
        "lease_lost",
        "abandoned",
    ] {
        i.jobs.with_label_values(&[outcome]);
    }
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding KILN_WORKER_METRICS_BIND {addr}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        if let Err(err) = answer(stream).await {
                            tracing::debug!(error = %err, "metrics request failed");
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a metrics connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(local)
}

/// Reads one request head (at most 8 KiB, 5 s) and answers it.
async fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(std::time::Duration::from_secs(5), read).await.is_err() {
        return Ok(());
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", render()),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        (_, "/metrics" | "/healthz") => {
            ("405 Method Not Allowed", "text/plain", "method not allowed\n".to_owned())
        }
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
