//! Training throughput (samples/s) of kiln-ml against PyTorch eager and a bare tch loop,
//! measured in one run on the same machine, data, model, batch size, optimiser and threads.
//!
//! - kiln-ml: `kiln_ml::train` on data/digits.npz (its 80% training split, 1,438 rows), the
//!   whole loop as the worker runs it: per-step loss check and observer, per-epoch
//!   validation and metrics.
//! - bare tch: the leanest loop tch allows on the same libtorch: the same rows pre-loaded,
//!   `index_select` shuffle, tch's C++ Adam, no loss read-back, no validation.
//! - PyTorch: scripts/bench/train_pytorch.py with the virtualenv's Python (torch 2.13).
//!
//! Models: MLP 64→128→10 and CNN (conv 16, conv 32, 3×3, max-pool, linear), batch 32, Adam
//! lr 1e-3. The first epoch of every run is a warm-up. Each measure is the best of
//! `KILN_BENCH_ROUNDS` (7) short runs, interleaved, so that
//! a shared machine's busy moments do not decide the figures. Threads: `KILN_BENCH_THREADS` (2).
//! Run it with scripts/bench-ml.sh.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use kiln_ml::{
    Dataset, DeviceChoice, EpochMetrics, StepProgress, TrainObserver, TrainOptions, TrainOutcome,
    prepare, train,
};
use kiln_types::JobSpec;
use serde_json::json;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

/// kiln-ml's stratified 80% split of the 1,797 digits; the baselines train on as many.
const TRAIN_ROWS: i64 = 1438;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn data_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/digits.npz")
}

/// Times from the end of epoch 1 to the last step of the last epoch.
struct Timer {
    start: Option<Instant>,
    end: Option<Instant>,
    epochs: u32,
}

impl TrainObserver for Timer {
    fn on_epoch(&mut self, metrics: &EpochMetrics) {
        if metrics.epoch == 1 {
            self.start = Some(Instant::now());
        }
    }
    fn on_step(&mut self, p: &StepProgress) {
        if p.epoch == self.epochs && p.step == p.steps_per_epoch {
            self.end = Some(Instant::now());
        }
    }
}

fn kiln_ml_run(model: serde_json::Value, epochs: u32) -> f64 {
    let spec = JobSpec::parse(&json!({
        "dataset_id": "0190a9c1-8f6e-7b3a-9c2d-1e2f3a4b5c6d", "task": "classification",
        "model": model, "device": "cpu",
        "hyperparameters": {"epochs": epochs, "batch_size": 32, "learning_rate": 0.001,
                            "optimizer": "adam", "checkpoint_every_epochs": 100000}
    }))
    .expect("valid spec");
    let data = Dataset::from_path(data_path()).expect("digits.npz");
    let prepared = prepare(&spec, &data).expect("prepare");
    assert_eq!(prepared.train_len() as i64, TRAIN_ROWS);
    let options = TrainOptions { device: DeviceChoice::Cpu, ..Default::default() };
    let mut timer = Timer { start: None, end: None, epochs };
    match train(&spec, &prepared, &options, &mut timer, None).expect("train") {
        TrainOutcome::Completed(_) => {}
        TrainOutcome::Stopped { .. } => panic!("stopped"),
    }
    let seconds = (timer.end.unwrap() - timer.start.unwrap()).as_secs_f64();
    (TRAIN_ROWS * i64::from(epochs - 1)) as f64 / seconds
}

fn bare_tch_mlp(epochs: u32) -> f64 {
    tch::manual_seed(0);
    let arrays = Tensor::read_npz(data_path()).expect("digits.npz");
    let get = |name: &str| arrays.iter().find(|(n, _)| n == name).unwrap().1.shallow_clone();
    let x = get("x").to_kind(Kind::Float).narrow(0, 0, TRAIN_ROWS).reshape([TRAIN_ROWS, 64]);
    let x = (&x - x.mean(Kind::Float)) / x.std(true);
    let y = get("y").to_kind(Kind::Int64).narrow(0, 0, TRAIN_ROWS);
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let net = nn::seq()
        .add(nn::linear(&root / "fc0", 64, 128, Default::default()))
        .add_fn(|xs| xs.relu())
        .add(nn::linear(&root / "fc1", 128, 10, Default::default()));
    let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
    let batch = 32;
    let mut run_epoch = || {
        let perm = Tensor::randperm(TRAIN_ROWS, (Kind::Int64, Device::Cpu));
        let (xs, ys) = (x.index_select(0, &perm), y.index_select(0, &perm));
        for start in (0..TRAIN_ROWS).step_by(batch) {
            let len = (batch as i64).min(TRAIN_ROWS - start);
            let loss = net.forward(&xs.narrow(0, start, len)).cross_entropy_loss::<Tensor>(
                &ys.narrow(0, start, len),
                None,
                Reduction::Mean,
                -100,
                0.0,
            );
            opt.backward_step(&loss);
        }
    };
    run_epoch();
    let start = Instant::now();
    for _ in 1..epochs {
        run_epoch();
    }
    (TRAIN_ROWS * i64::from(epochs - 1)) as f64 / start.elapsed().as_secs_f64()
}

fn pytorch_run(model: &str, epochs: u32, threads: usize) -> f64 {
    let python = std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".into());
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench/train_pytorch.py");
    let output = Command::new(&python)
        .arg(script)
        .args(["--model", model, "--data"])
        .arg(data_path())
        .args(["--threads", &threads.to_string(), "--epochs", &epochs.to_string()])
        .args(["--batch", "32", "--rows", &TRAIN_ROWS.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} (source scripts/env.sh): {e}"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let line = String::from_utf8(output.stdout).unwrap();
    let result: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    result["samples_per_s"].as_f64().unwrap()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then only smoke-run.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let threads = env_or("KILN_BENCH_THREADS", 2);
    let rounds = if benchmarking { env_or("KILN_BENCH_ROUNDS", 7) } else { 1 };
    let (mlp_epochs, cnn_epochs) = if benchmarking { (16, 4) } else { (2, 2) };
    kiln_ml::set_num_threads(threads);

    let mlp = json!({"type": "mlp", "hidden": [128]});
    let cnn = json!({"type": "cnn", "channels": [16, 32], "kernel_size": 3});
    let mut best = [0f64; 5];
    for round in 0..rounds {
        let results = [
            kiln_ml_run(mlp.clone(), mlp_epochs),
            bare_tch_mlp(mlp_epochs),
            pytorch_run("mlp", mlp_epochs, threads),
            kiln_ml_run(cnn.clone(), cnn_epochs),
            pytorch_run("cnn", cnn_epochs, threads),
        ];
        println!("round {}: {:?}", round + 1, results.map(|r| r.round()));
        for (b, r) in best.iter_mut().zip(results) {
            *b = b.max(r);
        }
    }
    let [kiln_mlp, tch_mlp, torch_mlp, kiln_cnn, torch_cnn] = best;
    println!("\ntraining samples/s, best of {rounds}, {threads} threads, batch 32, Adam, digits");
    println!(
        "| model | kiln-ml | PyTorch eager | bare tch | kiln-ml / PyTorch | kiln-ml / bare tch |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| MLP 64→128→10 | {kiln_mlp:.0} | {torch_mlp:.0} | {tch_mlp:.0} | {:.2}× | {:.0}% |",
        kiln_mlp / torch_mlp,
        100.0 * kiln_mlp / tch_mlp
    );
    println!(
        "| CNN 16-32 | {kiln_cnn:.0} | {torch_cnn:.0} | – | {:.2}× | – |",
        kiln_cnn / torch_cnn
    );
}
