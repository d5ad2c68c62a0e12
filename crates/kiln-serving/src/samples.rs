//! The sample of predictions kept in PostgreSQL for the drift monitor.
//!
//! Predict handlers offer their rows; a share (`KILN_SERVING_SAMPLE_RATE`), at most
//! `KILN_SERVING_SAMPLES_PER_SECOND` per deployment (a token bucket), goes into a bounded
//! channel, and one background task writes them in multi-row inserts. A slow
//! database drops samples (counted), never slows or fails a prediction. Another task keeps
//! only the newest `KILN_SERVING_SAMPLES_KEPT` samples of each deployment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_db::repo::deployments::{self, Sample};
use prometheus::IntCounter;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

/// Samples written per insert, at most.
const BATCH: usize = 500;
/// How long a partial batch waits for more.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Where predict requests offer their rows for the drift sample. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SampleSink {
    tx: mpsc::Sender<Sample>,
    rate: f64,
    cap: Option<Arc<Cap>>,
    dropped: IntCounter,
}

/// Per-deployment token buckets: `per_second` tokens a second, at most one second's worth
/// saved up.
#[derive(Debug)]
struct Cap {
    per_second: f64,
    buckets: Mutex<HashMap<Uuid, (f64, Instant)>>,
}

impl Cap {
    /// How many of `wanted` rows deployment `id` may keep now.
    fn take(&self, id: Uuid, wanted: usize) -> usize {
        let now = Instant::now();
        let mut buckets = crate::lock(&self.buckets);
        let (tokens, last) = buckets.entry(id).or_insert((self.per_second, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second)
            .min(self.per_second.max(1.0));
        *last = now;
        let granted = (tokens.floor().max(0.0) as usize).min(wanted);
        *tokens -= granted as f64;
        granted
    }
}

impl SampleSink {
    /// Starts the writer and pruner tasks on the current tokio runtime.
    pub fn start(
        db: kiln_db::Db,
        rate: f64,
        per_second: f64,
        keep: u64,
        dropped: IntCounter,
    ) -> Self {
        let (tx, rx) = mpsc::channel(BATCH * 20);
        tokio::spawn(write(db.clone(), rx));
        tokio::spawn(prune(db, keep));
        let cap = (per_second > 0.0)
            .then(|| Arc::new(Cap { per_second, buckets: Mutex::new(HashMap::new()) }));
        SampleSink { tx, rate: rate.clamp(0.0, 1.0), cap, dropped }
    }

    /// Offers a request's rows and answers; each is picked with probability `rate`, the
    /// deployment's bucket lets at most its share through, and only the kept rows are
    /// copied and serialised.
    pub fn offer<T: serde::Serialize>(
        &self,
        deployment_id: Uuid,
        version: i32,
        instances: &[Map<String, Value>],
        outputs: &[T],
    ) {
        self.offer_with(deployment_id, version, instances.len(), |i| instances[i].clone(), outputs);
    }

    /// [`SampleSink::offer`] for rows that are not JSON instances yet (the Open Inference
    /// Protocol's tensors): `instance(i)` builds row `i`'s instance, called for kept rows only.
    pub fn offer_with<T: serde::Serialize>(
        &self,
        deployment_id: Uuid,
        version: i32,
        rows: usize,
        instance: impl Fn(usize) -> Map<String, Value>,
        outputs: &[T],
    ) {
        if self.rate <= 0.0 {
            return;
        }
        let picked: Vec<usize> = (0..rows.min(outputs.len()))
            .filter(|_| self.rate >= 1.0 || rand::random::<f64>() < self.rate)
            .collect();
        if picked.is_empty() {
            return;
        }
        let allowed = match &self.cap {
            Some(cap) => cap.take(deployment_id, picked.len()),
            None => picked.len(),
        };
        for &row in &picked[..allowed] {
            let output = serde_json::to_value(&outputs[row]).unwrap_or(Value::Null);
            let sample =
                Sample { deployment_id, version, input: Value::Object(instance(row)), output };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_lets_a_second_s_worth_through_then_refills_with_time() {
        let cap = Cap { per_second: 100.0, buckets: Mutex::new(HashMap::new()) };
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(cap.take(a, 60), 60);
        assert_eq!(cap.take(a, 60), 40, "one second's worth, no more");
        assert_eq!(cap.take(a, 60), 0);
        // Another deployment has its own bucket.
        assert_eq!(cap.take(b, 500), 100);
        std::thread::sleep(Duration::from_millis(120));
        let refilled = cap.take(a, 1000);
        assert!((10..=30).contains(&refilled), "~12 tokens after 120 ms, got {refilled}");
        // Saved-up tokens never exceed one second's worth.
        let mut buckets = cap.buckets.lock().unwrap();
        buckets.get_mut(&a).unwrap().1 -= Duration::from_secs(60);
        drop(buckets);
        assert_eq!(cap.take(a, 1000), 100);
    }
}
