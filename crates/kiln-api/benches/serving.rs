//! In-process serving benchmark (the API inside this process, no tracing subscriber: every
//! span is a no-op). What users run is measured by `scripts/bench-serving.sh`, against the
//! released binaries with their default settings; this one isolates the serving path.
//!
//! Throughput and p50/p99 latency of Kiln's predict endpoint, with
//! dynamic batching on and off, against Flask under gunicorn serving the same bundle with
//! PyTorch from the same virtualenv (scripts/bench/flask_serve.py), in the same run, with
//! the same load generator (wrk) at the same concurrency on loopback.
//!
//! Two Flask baselines run in the same run: the one TARGETS.md names (gunicorn with 2 sync
//! workers, PyTorch's default threads) and a tuned one ((2 × cores) + 1 workers, as
//! gunicorn's docs advise, one libtorch thread each).
//!
//! Run: `scripts/bench-serving.sh` (installs wrk, Flask and gunicorn, then
//! `cargo bench -p kiln-api --bench serving`). Prints a Markdown table.
//! Settings: `BENCH_SECONDS` (default 10), `BENCH_CONNECTIONS` (default 32),
//! `BENCH_WRK_THREADS` (default 2), `BENCH_DATA` (`wine`, 13 features and 3 classes, the
//! default; or `digits`, 64 features and 10 classes), `BENCH_HIDDEN` (the MLP's hidden
//! widths, default `32`: TARGETS.md's MLP 13→32→3), `BENCH_MAX_BATCH` and
//! `BENCH_BATCH_WAIT_MS` of the batched deployment (default: the API's, 64 and 2),
//! and Kiln's settings `BENCH_KILN_THREADS` (`KILN_SERVING_TORCH_THREADS`),
//! `BENCH_SAMPLE_RATE` (`KILN_SERVING_SAMPLE_RATE`), `BENCH_KILN_WORKERS` (HTTP workers,
//! default one per core).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kiln_api::Application;
use kiln_api::serving::ServingArgs;
use kiln_api::state::{AppState, Limits};
use kiln_db::repo::{models, teams, tokens};
use kiln_db::testing::fresh_database;
use kiln_store::Team;
use kiln_types::Role;
use serde_json::{Value, json};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn repo_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

#[derive(Debug)]
struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx: u64,
}

fn parse_ms(value: &str) -> f64 {
    let split = value.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

struct Load {
    wrk: String,
    threads: usize,
    connections: usize,
}

fn wrk(load: &Load, url: &str, script: &std::path::Path, seconds: u64) -> WrkResult {
    let out = Command::new(&load.wrk)
        .args([
            &format!("-t{}", load.threads),
            &format!("-c{}", load.connections),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let mut result = WrkResult {
        rps: 0.0,
        p50_ms: f64::NAN,
        p90_ms: f64::NAN,
        p99_ms: f64::NAN,
        requests: 0,
        non_2xx: 0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => result.p50_ms = parse_ms(v),
            ["90%", v] => result.p90_ms = parse_ms(v),
            ["99%", v] => result.p99_ms = parse_ms(v),
            ["Requests/sec:", v] => result.rps = v.parse().unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => result.non_2xx = n.parse().unwrap_or(0),
            [n, "requests", "in", ..] => result.requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    result
}

fn lua(dir: &std::path::Path, name: &str, body: &Value, token: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.lua"));
    let body = body.to_string().replace('\\', "\\\\").replace('\'', "\\'");
    std::fs::write(
        &path,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{body}'\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = env_or("BENCH_SECONDS", "10").parse().unwrap();
    let load = Load {
        wrk: env_or("KILN_WRK", "wrk"),
        threads: env_or("BENCH_WRK_THREADS", "2").parse().unwrap(),
        connections: env_or("BENCH_CONNECTIONS", "32").parse().unwrap(),
    };
    let connections = load.connections;
    let hidden: Vec<u32> =
        env_or("BENCH_HIDDEN", "32").split(',').map(|h| h.trim().parse().unwrap()).collect();
    let data = env_or("BENCH_DATA", "wine");
    let (csv_path, target, data_label) = match data.as_str() {
        "wine" => ("data/wine.csv", "cultivar", "wine (13 features, 3 classes)"),
        "digits" => ("data/digits.csv", "digit", "digits (64 features, 10 classes)"),
        other => panic!("BENCH_DATA={other}: use wine or digits"),
    };
    let csv = std::fs::read(repo_path(csv_path)).unwrap();
    let api_default = kiln_types::api::Batching::default();
    let batch_wait_ms: u32 =
        env_or("BENCH_BATCH_WAIT_MS", &api_default.max_wait_ms.to_string()).parse().unwrap();
    let max_batch: u32 =
        env_or("BENCH_MAX_BATCH", &api_default.max_batch_size.to_string()).parse().unwrap();
    let gunicorn = env_or(
        "KILN_GUNICORN",
        &format!("{}/.cache/kiln/venv/bin/gunicorn", env_or("HOME", "/root")),
    );
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());

    // The model: an MLP on the chosen data.
    kiln_ml::set_num_threads(1);
    let bundle = kiln_ml::testing::train_csv_bundle(&csv, target, &hidden, 3, 1);

    // Kiln's serving settings: its defaults unless overridden.
    let defaults = ServingArgs::defaults();
    let kiln_threads: u16 =
        env_or("BENCH_KILN_THREADS", &defaults.torch_threads.to_string()).parse().unwrap();
    let sample_rate: f64 =
        env_or("BENCH_SAMPLE_RATE", &defaults.sample_rate.to_string()).parse().unwrap();
    let kiln_workers: Option<usize> =
        std::env::var("BENCH_KILN_WORKERS").ok().map(|w| w.parse().unwrap());

    // Kiln, in process, on a fresh database and a local artifact directory.
    let test = fresh_database(16).await.expect("database");
    let team = teams::create(&test.db, "bench", 4).await.unwrap();
    let member =
        tokens::issue(&test.db, Some(team.id), Role::Member, "bench", None).await.unwrap().secret;
    let maintainer = tokens::issue(&test.db, Some(team.id), Role::Maintainer, "bench", None)
        .await
        .unwrap()
        .secret;
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::open_local(&dir.path().join("artifacts")).await.unwrap();
    let info = store
        .put_stream(&Team::parse(team.id.to_string()).unwrap(), &mut bundle.as_slice())
        .await
        .unwrap();
    let serving = ServingArgs {
        cache_dir: Some(dir.path().join("cache")),
        torch_threads: kiln_threads,
        sample_rate,
        ..defaults
    };
    let state = AppState::new(
        test.db.clone(),
        store,
        Limits {
            json_bytes: 8 << 20,
            upload_bytes: 64 << 20,
            model_memory_bytes: kiln_api::state::DEFAULT_MAX_MODEL_MEMORY_MIB << 20,
        },
        serving,
    );
    let app =
        Application::from_state(state, TcpListener::bind("127.0.0.1:0").unwrap(), kiln_workers)
            .unwrap();
    let kiln = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();

    // A job to register the version from (the registry records lineage).
    let upload = http
        .post(format!("{kiln}/v1/datasets?name=digits"))
        .bearer_auth(&member)
        .header("content-type", "text/csv")
        .body(std::fs::read(repo_path("data/iris.csv")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201);
    let dataset_id = upload.json::<Value>().await.unwrap()["id"].clone();
    let job: Value = http
        .post(format!("{kiln}/v1/jobs"))
        .bearer_auth(&member)
        .json(&json!({"dataset_id": dataset_id, "task": "classification", "target": "species",
                      "model": {"type": "mlp", "hidden": [8]}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    models::register_version(
        &test.db,
        team.id,
        "digits",
        models::NewVersion {
            job_id: job["id"].as_str().unwrap().parse().unwrap(),
            bundle_key: info.key.as_str(),
            bundle_sha256: &info.sha256.to_hex(),
            dataset_sha256: None,
            spec: json!({}),
            metrics: json!({}),
            created_by: None,
        },
    )
    .await
    .unwrap();
    for (name, batching) in [
        ("batched", json!({"max_batch_size": max_batch, "max_wait_ms": batch_wait_ms})),
        ("unbatched", json!({"max_batch_size": 1, "max_wait_ms": 0})),
    ] {
        let res = http
            .post(format!("{kiln}/v1/deployments"))
            .bearer_auth(&maintainer)
            .json(&json!({"name": name, "model": "digits", "version": 1, "batching": batching}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }

    // Flask under gunicorn, twice: TARGETS.md's baseline (2 sync workers, PyTorch's own
    // thread default, as an article's reader would run it) and a tuned one ((2 × cores) + 1
    // sync workers as gunicorn's docs advise, one libtorch thread each, so the workers do
    // not oversubscribe the cores).
    let bundle_path = dir.path().join("bundle.zip");
    std::fs::write(&bundle_path, &bundle).unwrap();
    let tuned_workers = 2 * cores + 1;
    let flask_configs = [
        ("Flask + gunicorn, 2 workers (TARGETS.md baseline)".to_owned(), 2, None),
        (
            format!("Flask + gunicorn, {tuned_workers} workers × 1 thread (tuned)"),
            tuned_workers,
            Some(1),
        ),
    ];
    let mut flasks = Vec::new();
    for (label, workers, torch_threads) in flask_configs {
        let port = free_port();
        let mut command = Command::new(&gunicorn);
        command
            .args(["-w", &workers.to_string(), "-b", &format!("127.0.0.1:{port}")])
            .args([
                "--chdir",
                repo_path("scripts/bench").to_str().unwrap(),
                "--log-level",
                "warning",
            ])
            .arg("flask_serve:app")
            .env("KILN_BUNDLE", &bundle_path)
            .env_remove("BENCH_TORCH_THREADS")
            .stdout(Stdio::null());
        if let Some(threads) = torch_threads {
            command.env("BENCH_TORCH_THREADS", threads.to_string());
        }
        let child = Killed(command.spawn().expect("start gunicorn"));
        flasks.push((label, format!("http://127.0.0.1:{port}"), child));
    }

    // One instance per request; the servers must agree on every answer.
    let rows = kiln_ml::testing::csv_instances(&csv, target);
    for row in rows.iter().take(50) {
        let body = json!({"instances": [row]});
        let kiln_answer: Value = http
            .post(format!("{kiln}/v1/deployments/batched/predict"))
            .bearer_auth(&member)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for (_, flask, _) in &flasks {
            let mut flask_answer = None;
            for _ in 0..200 {
                match http
                    .post(format!("{flask}/v1/deployments/batched/predict"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(res) if res.status().is_success() => {
                        flask_answer = Some(res.json::<Value>().await.unwrap());
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            let flask_answer = flask_answer.expect("Flask answers");
            assert_eq!(
                kiln_answer["predictions"][0]["label"], flask_answer["predictions"][0]["label"],
                "Kiln and Flask disagree"
            );
        }
    }

    let body = json!({"instances": [rows[0]]});
    let script = lua(dir.path(), "predict", &body, &member);
    let load = std::sync::Arc::new(load);
    let mut targets: Vec<(String, String)> = flasks
        .iter()
        .map(|(label, flask, _)| (label.clone(), format!("{flask}/v1/deployments/x/predict")))
        .collect();
    targets.push(("Kiln, batching off".into(), format!("{kiln}/v1/deployments/unbatched/predict")));
    targets.push(("Kiln, batching on".into(), format!("{kiln}/v1/deployments/batched/predict")));
    let mut results = Vec::new();
    for (label, url) in targets {
        let (load, script) = (load.clone(), script.clone());
        // Warm-up, then the measured run.
        let measured = tokio::task::spawn_blocking(move || {
            wrk(&load, &url, &script, 2);
            wrk(&load, &url, &script, seconds)
        })
        .await
        .unwrap();
        eprintln!("{label}: {measured:?}");
        results.push((label, measured));
    }

    let (baseline, tuned) = (&results[0].1, &results[1].1);
    let unbatched = &results[2].1;
    println!(
        "\nServing: MLP {hidden:?} on {data_label}, one instance per request, \
         wrk -t{} -c{connections} -d{seconds}s, {cores} cores; batching on = max_batch_size {max_batch}, \
         max_wait_ms {batch_wait_ms}; off = max_batch_size 1; Kiln: {} HTTP workers, \
         {kiln_threads} libtorch thread(s) per inference thread, sample rate {sample_rate}\n",
        load.threads,
        kiln_workers.unwrap_or(cores),
    );
    println!(
        "| server | requests/s | p50 | p99 | non-2xx | vs baseline Flask | p99 vs baseline | \
         vs tuned Flask | p99 vs tuned |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, r) in &results {
        println!(
            "| {label} | {:.0} | {:.2} ms | {:.2} ms | {} of {} | {:.1}× | {:.2}× | {:.1}× | {:.2}× |",
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.non_2xx,
            r.requests,
            r.rps / baseline.rps,
            r.p99_ms / baseline.p99_ms,
            r.rps / tuned.rps,
            r.p99_ms / tuned.p99_ms,
        );
    }
    let batched = &results[3].1;
    println!(
        "\nbatching on vs off: {:.2}× throughput, p99 {:.2} ms vs {:.2} ms",
        batched.rps / unbatched.rps,
        batched.p99_ms,
        unbatched.p99_ms
    );
}
