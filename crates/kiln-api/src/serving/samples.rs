//! The sample of predictions kept in PostgreSQL for the drift monitor.
//!
//! Predict handlers offer their rows; a share (`KILN_SERVING_SAMPLE_RATE`) goes into a
//! bounded channel, and one background task writes them in multi-row inserts. A slow
//! database drops samples (counted), never slows or fails a prediction. Another task keeps
//! only the newest `KILN_SERVING_SAMPLES_KEPT` samples of each deployment.

use std::time::Duration;

use kiln_db::repo::deployments::{self, Sample};
use prometheus::IntCounter;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

/// Samples written per insert, at most.
const BATCH: usize = 500;
/// How long a partial batch waits for more.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct SampleSink {
    tx: mpsc::Sender<Sample>,
    rate: f64,
    dropped: IntCounter,
}

impl SampleSink {
    /// Starts the writer and pruner tasks on the current tokio runtime.
    pub fn start(db: kiln_db::Db, rate: f64, keep: u64, dropped: IntCounter) -> Self {
        let (tx, rx) = mpsc::channel(BATCH * 20);
        tokio::spawn(write(db.clone(), rx));
        tokio::spawn(prune(db, keep));
        SampleSink { tx, rate: rate.clamp(0.0, 1.0), dropped }
    }

    /// Offers a request's rows and answers; each is kept with probability `rate`, and only
    /// the kept ones are copied and serialised.
    pub fn offer<T: serde::Serialize>(
        &self,
        deployment_id: Uuid,
        version: i32,
        instances: &[Map<String, Value>],
        outputs: &[T],
    ) {
        if self.rate <= 0.0 {
            return;
        }
        for (input, output) in instances.iter().zip(outputs) {
            if self.rate < 1.0 && rand::random::<f64>() >= self.rate {
                continue;
            }
            let output = serde_json::to_value(output).unwrap_or(Value::Null);
            let sample =
                Sample { deployment_id, version, input: Value::Object(input.clone()), output };
            if self.tx.try_send(sample).is_err() {
                self.dropped.inc();
            }
        }
    }
}

async fn write(db: kiln_db::Db, mut rx: mpsc::Receiver<Sample>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(sample)) => batch.push(sample),
                Ok(None) | Err(_) => break,
            }
        }
        if let Err(err) = deployments::insert_samples(&db, &batch).await {
            tracing::warn!(error = %err, samples = batch.len(), "could not store prediction samples");
        }
        batch.clear();
    }
}

async fn prune(db: kiln_db::Db, keep: u64) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.tick().await;
    loop {
        every.tick().await;
        match deployments::prune_samples(&db, keep).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "pruned prediction samples"),
            Err(err) => tracing::warn!(error = %err, "could not prune prediction samples"),
        }
    }
}
