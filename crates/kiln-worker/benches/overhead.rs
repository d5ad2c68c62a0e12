//! The platform's overhead per job: end-to-end time (enqueue to succeeded, both by the
//! database clock) minus the training time the worker measured around kiln-ml's `train`
//! (`result.training_seconds`), on the Iris job.
//!
//! One real `kiln-worker` process, a fresh PostgreSQL database, a real artifact store
//! (s3s-fs by default; `KILN_BENCH_STORE=local` for a directory). Jobs are submitted one at a
//! time while the worker idles, so each one also pays the wake-up (LISTEN/NOTIFY), the
//! claim, the dataset fetch (a cache miss for the first job only), per-epoch metrics and
//! checkpoints, the bundle upload and the completion.
//!
//! Run: `cargo bench -p kiln-worker --bench overhead` (`KILN_BENCH_RUNS`, default 15).

#[path = "../tests/worker/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::Duration;

use kiln_types::JobState;
use support::{Bench, StoreKind, data_file, iris_spec};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    let runs: usize =
        std::env::var("KILN_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let kind = match std::env::var("KILN_BENCH_STORE").as_deref() {
        Ok("local") => StoreKind::Local,
        _ => StoreKind::S3,
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let bench = Bench::new(kind).await;
        let iris = bench.upload(&data_file("iris.csv"), "csv").await;
        // Production timings (heartbeat 10 s, lease 60 s, poll 5 s): wake-ups must come from
        // notifications, not from a short poll interval.
        let worker = bench.spawn_worker(
            "bench",
            &[
                ("KILN_LEASE_SECONDS", "60"),
                ("KILN_HEARTBEAT_SECONDS", "10"),
                ("KILN_POLL_SECONDS", "5"),
                ("RUST_LOG", "warn"),
            ],
        );
        bench.worker_id(&worker).await;
        println!("store: {kind:?}; {runs} Iris jobs (MLP [32], 20 epochs, batch 16, checkpoint every epoch)");
        println!("{:>4} {:>10} {:>10} {:>10}", "run", "e2e_s", "train_s", "overhead_s");
        let mut overheads = Vec::new();
        for run in 0..runs {
            let id = bench.submit(&iris, iris_spec(20, 16)).await;
            let job = bench.wait_for(id, "the job to end", |j| j.state.is_terminal()).await;
            assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{}", bench.logs());
            let e2e = (job.finished_at.expect("finished") - job.created_at).as_seconds_f64();
            let training = job.result.as_ref().unwrap().training_seconds;
            let overhead = e2e - training;
            println!("{run:>4} {e2e:>10.3} {training:>10.3} {overhead:>10.3}{}", if run == 0 { "  (cold cache)" } else { "" });
            overheads.push(overhead);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut warm: Vec<f64> = overheads[1..].to_vec();
        warm.sort_by(f64::total_cmp);
        let mut all = overheads.clone();
        all.sort_by(f64::total_cmp);
        println!(
            "overhead per job, all {} runs: median {:.3} s, p90 {:.3} s, max {:.3} s",
            all.len(),
            percentile(&all, 0.5),
            percentile(&all, 0.9),
            all[all.len() - 1]
        );
        if !warm.is_empty() {
            println!(
                "overhead per job, warm cache ({} runs): median {:.3} s, p90 {:.3} s",
                warm.len(),
                percentile(&warm, 0.5),
                percentile(&warm, 0.9)
            );
        }
        drop(worker);
    });
}
