//! Claim order: priority, fairness across teams, per-team caps, device matching.

use std::collections::HashSet;

use crate::{Harness, cpu};
use kiln_queue::NewJob;
use kiln_types::{DeviceRequirement, WorkerDevice};
use serde_json::json;

#[tokio::test]
async fn a_team_with_one_job_is_not_starved_by_a_team_with_a_thousand() {
    let h = Harness::new().await;
    let big = h.team("big", 100).await;
    let small = h.team("small", 100).await;
    h.submit(big, 1_000).await;
    let [small_job] = h.submit(small, 1).await[..] else { unreachable!() };

    // The big team's jobs are all older; still the small team's job goes second.
    let first = h.claim(WorkerDevice::Cpu).await.unwrap();
    assert_eq!(first.job.team_id, big);
    let second = h.claim(WorkerDevice::Cpu).await.unwrap();
    assert_eq!(second.job_id(), small_job);
}

#[tokio::test]
async fn fairness_alternates_between_busy_teams() {
    let h = Harness::new().await;
    let a = h.team("alpha", 100).await;
    let b = h.team("beta", 100).await;
    h.submit(a, 20).await;
    h.submit(b, 20).await;
    let mut teams = Vec::new();
    for _ in 0..10 {
        teams.push(h.claim(WorkerDevice::Cpu).await.unwrap().job.team_id);
    }
    let from_a = teams.iter().filter(|t| **t == a).count();
    assert_eq!(from_a, 5, "running jobs split evenly: {teams:?}");
}

#[tokio::test]
async fn priority_comes_before_fairness_and_age() {
    let h = Harness::new().await;
    let a = h.team("alpha", 100).await;
    h.submit(a, 5).await;
    let urgent = h
        .queue
        .enqueue(NewJob { priority: 10, ..NewJob::new(a, json!({"urgent": true})) })
        .await
        .unwrap()
        .job()
        .id;
    assert_eq!(h.claim(WorkerDevice::Cpu).await.unwrap().job_id(), urgent);
    // Oldest first among equals.
    let next = h.claim(WorkerDevice::Cpu).await.unwrap();
    assert_eq!(next.job.spec, json!({"n": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_team_cap_holds_under_concurrent_claims() {
    let h = Harness::new().await;
    let capped = h.team("capped", 2).await;
    let other = h.team("other", 10).await;
    h.submit(capped, 10).await;
    // Sixteen concurrent claimers race for the capped team's jobs.
    let claims: Vec<_> = (0..16)
        .map(|_| {
            let queue = h.queue.clone();
            tokio::spawn(async move { queue.claim(cpu()).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for c in claims {
        won += usize::from(c.await.unwrap().is_some());
    }
    assert_eq!(won, 2, "exactly the cap of 2 running jobs");
    // The capped team does not block other teams.
    let [other_job] = h.submit(other, 1).await[..] else { unreachable!() };
    assert_eq!(h.claim(WorkerDevice::Cpu).await.unwrap().job_id(), other_job);
}

#[tokio::test]
async fn completing_a_job_frees_a_slot_under_the_cap() {
    let h = Harness::new().await;
    let team = h.team("alpha", 1).await;
    h.submit(team, 2).await;
    let first = h.claim(WorkerDevice::Cpu).await.unwrap();
    assert!(h.claim(WorkerDevice::Cpu).await.is_none());
    h.queue.complete(&first, &crate::result("cpu"), "cpu", None).await.unwrap();
    assert!(h.claim(WorkerDevice::Cpu).await.is_some());
}

#[tokio::test]
async fn device_requirements_are_matched() {
    let h = Harness::new().await;
    let team = h.team("alpha", 10).await;
    let submit =
        |device| NewJob { device, ..NewJob::new(team, json!({"device": device.as_str()})) };
    let cuda_only = h.queue.enqueue(submit(DeviceRequirement::Cuda)).await.unwrap().job().id;
    let cpu_only = h.queue.enqueue(submit(DeviceRequirement::Cpu)).await.unwrap().job().id;
    let any = h.queue.enqueue(submit(DeviceRequirement::Any)).await.unwrap().job().id;

    let mut cpu_claims = HashSet::new();
    while let Some(lease) = h.claim(WorkerDevice::Cpu).await {
        cpu_claims.insert(lease.job_id());
    }
    assert_eq!(
        cpu_claims,
        HashSet::from([cpu_only, any]),
        "a CPU worker never takes a CUDA-only job"
    );
    let lease = h.claim(WorkerDevice::Cuda).await.unwrap();
    assert_eq!(lease.job_id(), cuda_only);
    assert!(h.claim(WorkerDevice::Cuda).await.is_none());
}
