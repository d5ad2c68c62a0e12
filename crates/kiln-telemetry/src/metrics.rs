//! Kiln's OpenTelemetry metrics: one name per measurement, in one place, so dashboards and
//! docs can rely on them. Exported over OTLP when an endpoint is set (see the crate's
//! documentation); without one, every call here is a no-op.
//!
//! | name | kind, unit | attributes |
//! |---|---|---|
//! | `kiln.job.duration` | histogram, s | `job.outcome`, `model.type`, `device` |
//! | `kiln.job.queue_wait` | histogram, s | `model.type` |
//! | `kiln.queue.claim.duration` | histogram, s | `claimed` |
//! | `kiln.training.throughput` | histogram, {sample}/s | `model.type`, `device` |
//! | `kiln.store.transferred` | counter, By | `store.operation` |
//! | `kiln.store.operation.duration` | histogram, s | `store.operation`, `outcome` |
//!
//! A collector's Prometheus exporter names them `kiln_job_duration_seconds`,
//! `kiln_queue_claim_duration_seconds`, `kiln_store_transferred_bytes_total`, and so on;
//! the API's own Prometheus metrics (`kiln_http_*`, `kiln_queue_jobs`) use those spellings.
//!
//! Instruments are created on first use from the global meter provider, which [`crate::init`]
//! installs: record nothing before `init`.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};

pub const JOB_DURATION: &str = "kiln.job.duration";
pub const JOB_QUEUE_WAIT: &str = "kiln.job.queue_wait";
pub const QUEUE_CLAIM_DURATION: &str = "kiln.queue.claim.duration";
pub const TRAINING_THROUGHPUT: &str = "kiln.training.throughput";
pub const STORE_TRANSFERRED: &str = "kiln.store.transferred";
pub const STORE_OPERATION_DURATION: &str = "kiln.store.operation.duration";

/// Every metric name, for docs and tests.
pub const ALL: [&str; 6] = [
    JOB_DURATION,
    JOB_QUEUE_WAIT,
    QUEUE_CLAIM_DURATION,
    TRAINING_THROUGHPUT,
    STORE_TRANSFERRED,
    STORE_OPERATION_DURATION,
];

/// Bucket boundaries in seconds for fast operations (a claim, a store call).
const FAST_SECONDS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Bucket boundaries in seconds for jobs and queue waits.
const SLOW_SECONDS: [f64; 14] =
    [0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0];
/// Bucket boundaries in samples per second.
const THROUGHPUT: [f64; 12] = [10.0, 100.0, 500.0, 1e3, 5e3, 1e4, 5e4, 1e5, 5e5, 1e6, 5e6, 1e7];

struct Instruments {
    job_duration: Histogram<f64>,
    job_queue_wait: Histogram<f64>,
    claim_duration: Histogram<f64>,
    training_throughput: Histogram<f64>,
    store_transferred: Counter<u64>,
    store_duration: Histogram<f64>,
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter("kiln");
        let seconds = |name: &'static str, description: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        Instruments {
            job_duration: seconds(
                JOB_DURATION,
                "One attempt of a job, from its claim to its final write",
                &SLOW_SECONDS,
            ),
            job_queue_wait: seconds(
                JOB_QUEUE_WAIT,
                "How long a runnable job waited for a worker (since it became runnable)",
                &SLOW_SECONDS,
            ),
            claim_duration: seconds(
                QUEUE_CLAIM_DURATION,
                "Latency of one claim transaction",
                &FAST_SECONDS,
            ),
            training_throughput: meter
                .f64_histogram(TRAINING_THROUGHPUT)
                .with_unit("{sample}/s")
                .with_description("Training samples per second, one measurement per epoch")
                .with_boundaries(THROUGHPUT.to_vec())
                .build(),
            store_transferred: meter
                .u64_counter(STORE_TRANSFERRED)
                .with_unit("By")
                .with_description("Bytes read from or written to the artifact store")
                .build(),
            store_duration: seconds(
                STORE_OPERATION_DURATION,
                "Latency of one artifact store transfer, retries included",
                &FAST_SECONDS,
            ),
        }
    })
}

/// An attempt ended (`outcome`: succeeded, failed, cancelled, released, lease_lost, abandoned).
pub fn job_finished(seconds: f64, outcome: &str, model_type: &str, device: &str) {
    instruments().job_duration.record(
        seconds,
        &[
            KeyValue::new("job.outcome", outcome.to_owned()),
            KeyValue::new("model.type", model_type.to_owned()),
            KeyValue::new("device", device.to_owned()),
        ],
    );
}

/// A claimed job had been runnable for `seconds`.
pub fn job_queue_wait(seconds: f64, model_type: &str) {
    instruments()
        .job_queue_wait
        .record(seconds.max(0.0), &[KeyValue::new("model.type", model_type.to_owned())]);
}

/// One claim transaction took `seconds`; `claimed`: whether it returned a job.
pub fn claim_finished(seconds: f64, claimed: bool) {
    instruments().claim_duration.record(seconds, &[KeyValue::new("claimed", claimed)]);
}

/// One epoch trained `samples_per_second`.
pub fn epoch_throughput(samples_per_second: f64, model_type: &str, device: &str) {
    instruments().training_throughput.record(
        samples_per_second,
        &[
            KeyValue::new("model.type", model_type.to_owned()),
            KeyValue::new("device", device.to_owned()),
        ],
    );
}

/// One artifact store transfer (`operation`: get or put) moved `bytes` in `seconds`.
pub fn store_operation(operation: &'static str, bytes: u64, seconds: f64, ok: bool) {
    let i = instruments();
    if ok {
        i.store_transferred.add(bytes, &[KeyValue::new("store.operation", operation)]);
    }
    i.store_duration.record(
        seconds,
        &[
            KeyValue::new("store.operation", operation),
            KeyValue::new("outcome", if ok { "ok" } else { "error" }),
        ],
    );
}
