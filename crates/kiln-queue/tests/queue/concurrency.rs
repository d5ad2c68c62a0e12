//! Exactly-once delivery under concurrent claimers, and concurrent rescuers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiln_queue::QueueError;
use uuid::Uuid;

use crate::{Harness, cpu};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_jobs_eight_claimers_each_completed_exactly_once() {
    const JOBS: usize = 2_000;
    const CLAIMERS: usize = 8;
    let h = Harness::new().await;
    let team_a = h.team("alpha", 1_000).await;
    let team_b = h.team("beta", 1_000).await;
    let mut submitted = h.submit(team_a, JOBS / 2).await;
    submitted.extend(h.submit(team_b, JOBS / 2).await);

    let completions: Arc<Mutex<HashMap<Uuid, usize>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..CLAIMERS {
        let queue = h.queue.clone();
        let completions = completions.clone();
        tasks.push(tokio::spawn(async move {
            let claimer = cpu();
            while let Some(lease) = queue.claim(claimer).await.unwrap() {
                queue.heartbeat(&lease, Some(&crate::progress(1, 3))).await.unwrap();
                queue.complete(&lease, &crate::result("cpu"), "cpu", None).await.unwrap();
                *completions.lock().unwrap().entry(lease.job_id()).or_default() += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let completions = std::mem::take(&mut *completions.lock().unwrap());
    assert_eq!(completions.len(), JOBS, "every job completed");
    assert!(completions.values().all(|&n| n == 1), "no job completed twice");
    for id in &submitted {
        assert!(completions.contains_key(id), "job {id} lost");
    }
    let stats = h.queue.stats().await.unwrap();
    let succeeded: i64 =
        stats.counts.iter().filter(|c| c.state == "succeeded").map(|c| c.count).sum();
    assert_eq!(succeeded, JOBS as i64);
    assert_eq!(stats.counts.iter().map(|c| c.count).sum::<i64>(), JOBS as i64);
    assert!(stats.running.is_empty());
    assert_eq!(stats.oldest_queued_age_seconds, None);
    // Exactly one attempt per job, each ended in success.
    let attempts = h.queue.attempts(submitted[0]).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome.as_deref(), Some("succeeded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rescuers_rescue_each_expired_job_once() {
    let h = Harness::new().await;
    let team = h.team("alpha", 100).await;
    h.submit(team, 50).await;
    let claimer = cpu();
    let mut leases = Vec::new();
    while let Some(lease) = h.queue.claim(claimer).await.unwrap() {
        leases.push(lease);
    }
    assert_eq!(leases.len(), 50);
    h.expire_leases().await;

    let rescuers: Vec<_> = (0..4)
        .map(|_| {
            let queue = h.queue.clone();
            tokio::spawn(async move { queue.rescue().await.unwrap() })
        })
        .collect();
    let mut rescued = Vec::new();
    for r in rescuers {
        rescued.extend(r.await.unwrap());
    }
    let mut ids: Vec<Uuid> = rescued.iter().map(|r| r.job_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50, "each expired job rescued");
    assert_eq!(rescued.len(), 50, "and rescued only once");
    // Every old lease is now fenced out.
    for lease in &leases {
        assert!(matches!(h.queue.heartbeat(lease, None).await, Err(QueueError::LeaseLost { .. })));
    }
}
