//! Chaos: `kill -9` of training workers at seeded random moments, over and over, while a
//! batch of jobs trains. Nothing may be lost or done twice: every job succeeds exactly once,
//! every attempt after a kill resumes from a checkpoint, and each metric series holds
//! exactly one point per epoch however many times its epochs were re-run.
//!
//! Bounded in time: small models (Iris, one hidden layer), many short epochs checkpointed
//! after each, 2-second leases, no retry backoff. `KILN_CHAOS_SEED` replays a run; the
//! seed is printed. `scripts/test.sh` skips this test with `KILN_SKIP_CHAOS=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kiln_queue::{Queue, QueueConfig};
use serde_json::json;

use crate::platform::Platform;

const JOBS: usize = 8;
const KILLS: usize = 20;
/// Enough epochs that a job outlives the kills aimed at it on a fast machine: with 200,
/// Iris epochs ran so fast here that every job had finished after 14 of the 20 kills.
const EPOCHS: i64 = 600;
/// Workers alive at any time (a killed one is replaced at once).
const WORKERS: usize = 2;
/// No job is killed more often than this (its attempt budget is larger).
const MAX_KILLS_PER_JOB: usize = 5;

const WORKER_ENV: &[(&str, &str)] = &[
    ("KILN_LEASE_SECONDS", "2"),
    ("KILN_HEARTBEAT_SECONDS", "0.3"),
    ("KILN_POLL_SECONDS", "0.2"),
    ("KILN_RETRY_BACKOFF_SECONDS", "0"),
    ("KILN_RETRY_BACKOFF_CAP_SECONDS", "0"),
    ("KILN_TORCH_THREADS", "1"),
    ("RUST_LOG", "info"),
];

/// A small seeded generator (xorshift64*): the kill schedule replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from))
    }
}

/// The lines of a job's log, with the attempt that wrote each.
async fn log_lines(p: &Platform, token: &str, job: &str) -> Vec<(Option<i64>, String)> {
    let mut lines = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs/{job}/logs?cursor={c}&limit=200"),
            None => format!("/v1/jobs/{job}/logs?limit=200"),
        };
        let page = p.get(token, &path).await;
        for line in page["items"].as_array().unwrap() {
            lines.push((line["attempt"].as_i64(), line["message"].as_str().unwrap().to_owned()));
        }
        match page["next_cursor"].as_str() {
            Some(next) if !page["items"].as_array().unwrap().is_empty() => {
                cursor = Some(next.to_owned())
            }
            _ => return lines,
        }
    }
}

/// The epoch attempt `attempt` says it resumed from, if it wrote that line.
fn resumed_at(lines: &[(Option<i64>, String)], attempt: i64) -> Option<i64> {
    lines.iter().filter(|(a, _)| *a == Some(attempt)).find_map(|(_, message)| {
        message.strip_prefix("resumed from epoch ")?.split(' ').next()?.parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_twenty_worker_kills_over_eight_jobs_lose_nothing_and_finish_each_once() {
    let seed: u64 = std::env::var("KILN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b69_6c6e_2009);
    println!("chaos seed {seed} (KILN_CHAOS_SEED replays it)");
    let mut rng = Rng(seed.max(1));

    let mut p = Platform::start_api(&[]).await;
    let team = p.team_with_iris().await;
    let mut pids: Vec<u32> =
        (0..WORKERS).map(|i| p.spawn_worker(&format!("kiln-worker-{i}"), WORKER_ENV)).collect();
    let mut spawned = WORKERS;

    let mut jobs = Vec::new();
    for i in 0..JOBS {
        let spec = json!({
            "dataset_id": team.dataset["id"], "task": "classification", "target": "species",
            "model": {"type": "mlp", "hidden": [16]},
            "hyperparameters": {"epochs": EPOCHS, "batch_size": 8, "learning_rate": 0.01,
                                "seed": i, "checkpoint_every_epochs": 1},
            "max_attempts": 10,
        });
        let job = p.post(&team.token, "/v1/jobs", spec).await;
        jobs.push(job["id"].as_str().unwrap().to_owned());
    }

    // Kill the worker of a running job at a random moment once its attempt is worth
    // resuming: the first attempt after its first checkpoint, a later one once it has
    // resumed from a checkpoint (so every resume is observed, not assumed).
    let mut kills: BTreeMap<String, usize> = BTreeMap::new();
    let mut killed_pids = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(900);
    while kills.values().sum::<usize>() < KILLS {
        assert!(
            Instant::now() < deadline,
            "only {} kills in time: {kills:?}\n{}",
            kills.values().sum::<usize>(),
            p.logs()
        );
        tokio::time::sleep(rng.millis(100, 900)).await;
        let stats = p.get(&team.admin, "/v1/admin/queue").await;
        let workers = p.get(&team.admin, "/v1/admin/workers").await;
        let mut killable = Vec::new();
        for lease in stats["running"].as_array().unwrap() {
            let job_id = lease["job_id"].as_str().unwrap();
            if kills.get(job_id).copied().unwrap_or(0) >= MAX_KILLS_PER_JOB {
                continue;
            }
            let job = p.get(&team.token, &format!("/v1/jobs/{job_id}")).await;
            if job["state"] != "running" || job["checkpoint_epoch"].is_null() {
                continue;
            }
            if job["progress"]["epoch"].as_i64().unwrap_or(0) >= EPOCHS - 5 {
                continue; // about to finish: kill one with work left
            }
            let attempt = job["attempt"].as_i64().unwrap();
            if attempt > 1
                && resumed_at(&log_lines(&p, &team.token, job_id).await, attempt).is_none()
            {
                continue;
            }
            let pid =
                workers.as_array().unwrap().iter().find_map(|w| {
                    (w["id"] == lease["worker_id"]).then(|| w["pid"].as_u64()).flatten()
                });
            if let Some(pid) = pid.map(|pid| pid as u32).filter(|pid| pids.contains(pid)) {
                killable.push((job_id.to_owned(), pid));
            }
        }
        if killable.is_empty() {
            continue;
        }
        let (job_id, pid) = killable.swap_remove(rng.below(killable.len()));
        let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        assert!(status.unwrap().success(), "kill -9 {pid}");
        *kills.entry(job_id).or_default() += 1;
        killed_pids.insert(pid);
        pids.retain(|p| *p != pid);
        pids.push(p.spawn_worker(&format!("kiln-worker-{spawned}"), WORKER_ENV));
        spawned += 1;
    }

    // Every job ends, succeeded.
    for job_id in &jobs {
        let job = loop {
            let job = p.get(&team.token, &format!("/v1/jobs/{job_id}")).await;
            if !matches!(job["state"].as_str(), Some("queued" | "running")) {
                break job;
            }
            assert!(Instant::now() < deadline, "job {job_id} did not end: {job}\n{}", p.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(job["state"], "succeeded", "{job}\n{}", p.logs());
    }

    let queue = Queue::new(&p.test.db, QueueConfig::default());
    for job_id in &jobs {
        let job = p.get(&team.token, &format!("/v1/jobs/{job_id}")).await;
        let killed = kills.get(job_id).copied().unwrap_or(0);
        // One attempt per kill plus the one that finished: nothing else failed.
        let attempt = job["attempt"].as_i64().unwrap();
        assert_eq!(attempt, killed as i64 + 1, "{job}");
        let attempts = queue.attempts(job_id.parse().unwrap()).await.unwrap();
        let outcomes: Vec<Option<&str>> = attempts.iter().map(|a| a.outcome.as_deref()).collect();
        let mut expected = vec![Some("lease_expired"); killed];
        expected.push(Some("succeeded"));
        assert_eq!(outcomes, expected, "job {job_id}: completed exactly once");
        assert_eq!(job["progress"], json!({"epoch": EPOCHS, "epochs": EPOCHS}), "{job}");

        // Every attempt after the first resumed from a checkpoint.
        let lines = log_lines(&p, &team.token, job_id).await;
        for a in 2..=attempt {
            let from = resumed_at(&lines, a);
            assert!(
                from.is_some_and(|e| e > 0),
                "job {job_id} attempt {a} did not resume: {from:?}"
            );
        }
        if killed > 0 {
            assert!(job["resumed_from_epoch"].as_i64().unwrap() > 0, "{job}");
        }

        // Exactly one point per epoch in every series, however often epochs were re-run.
        let metrics = p.get(&team.token, &format!("/v1/jobs/{job_id}/metrics")).await;
        let series = metrics["series"].as_object().unwrap();
        for name in ["train_loss", "val_loss", "val_accuracy"] {
            let steps: Vec<i64> =
                series[name].as_array().unwrap().iter().map(|p| p[0].as_i64().unwrap()).collect();
            assert_eq!(steps, (1..=EPOCHS).collect::<Vec<_>>(), "job {job_id} {name}");
        }
    }
    assert_eq!(kills.values().sum::<usize>(), KILLS);
    assert!(kills.len() >= 4, "kills spread over several jobs: {kills:?}");

    // The killed workers are listed stopped (lost), not live.
    let workers = loop {
        let workers = p.get(&team.admin, "/v1/admin/workers").await;
        let lost = workers
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["pid"].as_u64().is_some_and(|pid| killed_pids.contains(&(pid as u32))))
            .filter(|w| w["lost"] == true && w["stopped_at"].is_string())
            .count();
        if lost == killed_pids.len() {
            break workers;
        }
        assert!(Instant::now() < deadline, "killed workers still listed live: {workers}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let live = workers.as_array().unwrap().iter().filter(|w| w["stopped_at"].is_null()).count();
    assert_eq!(live, WORKERS, "{workers}");
    println!("chaos: {KILLS} kills over {} jobs: {kills:?}", kills.len());
}
