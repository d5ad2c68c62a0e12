//! LISTEN/NOTIFY wake-ups, and the polling fallback.

use std::time::{Duration, Instant};

use kiln_queue::{NewJob, QueueConfig, Wake};
use serde_json::json;

use crate::{Harness, test_config};

#[tokio::test]
async fn a_waiting_claimer_is_woken_by_notify_long_before_its_poll() {
    let config = QueueConfig { poll_interval: Duration::from_secs(30), ..test_config() };
    let h = Harness::with_config(config).await;
    let team = h.team("alpha", 4).await;
    let mut waiter = h.queue.waiter().await.unwrap();

    let queue = h.queue.clone();
    let submitter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        queue.enqueue(NewJob::new(team, json!({}))).await.unwrap();
    });
    let started = Instant::now();
    let wake = waiter.wait().await;
    let waited = started.elapsed();
    submitter.await.unwrap();
    assert_eq!(wake, Wake::Notified);
    assert!(waited < Duration::from_secs(5), "woken after {waited:?}, poll is 30 s");
    assert!(h.claim(kiln_types::WorkerDevice::Cpu).await.is_some());
}

#[tokio::test]
async fn without_a_notification_the_waiter_polls() {
    let config = QueueConfig { poll_interval: Duration::from_millis(150), ..test_config() };
    let h = Harness::with_config(config).await;
    let mut waiter = h.queue.waiter().await.unwrap();
    let started = Instant::now();
    assert_eq!(waiter.wait().await, Wake::Poll);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn a_requeued_job_notifies_too() {
    let config = QueueConfig { poll_interval: Duration::from_secs(30), ..test_config() };
    let h = Harness::with_config(config).await;
    let team = h.team("alpha", 4).await;
    h.submit(team, 1).await;
    let lease = h.claim(kiln_types::WorkerDevice::Cpu).await.unwrap();
    let mut waiter = h.queue.waiter().await.unwrap();
    h.queue.release(&lease).await.unwrap();
    assert_eq!(waiter.wait_at_most(Duration::from_secs(10)).await, Wake::Notified);
}
