//! `jobs submit --wait` against a real worker (kiln-worker's library, in process): one
//! plain line per epoch off a terminal, from the metrics the worker writes as each epoch
//! ends; then `jobs metrics` and `jobs logs`, including into a closed pipe.

use clap::Parser;
use serde_json::{Value, json};

use crate::{Env, IRIS, start};

/// Runs `kiln ARGS` with stdout a pipe whose reader is already gone (`| head -1` after its
/// line): (exit code, stderr).
async fn into_closed_pipe(env: &Env, token: &str, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.env_clear()
        .env("KILN_API_URL", &env.api_url)
        .env("KILN_TOKEN", token)
        .env("XDG_CONFIG_HOME", "/nonexistent-kiln-test-config")
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_follows_each_epoch_then_metrics_and_logs_show_them() {
    let env = start().await;
    let t = env.team_tokens("train").await;
    let member = Some(t.member.as_str());
    let viewer = Some(t.viewer.as_str());
    let dataset = env.json(member, &["datasets", "upload", IRIS, "--name", "iris"]).await;
    let spec = env.artifacts.path().join("spec.json");
    std::fs::write(
        &spec,
        json!({"dataset_id": dataset["id"], "task": "classification", "target": "species",
               "model": {"type": "mlp", "hidden": [8]},
               "hyperparameters": {"epochs": 4, "seed": 3}})
        .to_string(),
    )
    .unwrap();

    // A real worker for one job, with the default 10 s heartbeat: the progress shown must
    // not wait for it.
    let cache = env.artifacts.path().join("worker-cache");
    let store = format!("file://{}", env.artifacts.path().display());
    let settings = kiln_worker::Settings::parse_from([
        "kiln-worker",
        "--database-url",
        env.test.url.as_str(),
        "--artifact-store",
        &store,
        "--device",
        "cpu",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--torch-threads",
        "1",
        "--poll-seconds",
        "0.2",
        "--max-jobs",
        "2",
    ]);
    let worker = tokio::spawn(kiln_worker::run(settings, kiln_worker::Shutdown::new()));

    let (ok, stdout, stderr) =
        env.run(member, &["jobs", "submit", spec.to_str().unwrap(), "--wait"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.is_empty(), "progress goes to stderr: {stdout}");
    let id =
        stderr.lines().find_map(|l| l.strip_prefix("submitted job ")).expect(&stderr).to_owned();
    // (Whether a poll saw it queued or running depends on how fast the worker was.)
    let last_lines: Vec<&str> = stderr.lines().rev().take(2).collect();
    assert_eq!(last_lines[1], format!("job {id} succeeded"), "{stderr}");
    assert!(last_lines[0].starts_with("final metrics: "), "{stderr}");
    let epochs: Vec<&str> = stderr.lines().filter(|l| l.starts_with("epoch ")).collect();
    assert_eq!(epochs.len(), 4, "one line per epoch: {stderr}");

    let series = env.json(viewer, &["jobs", "metrics", &id]).await;
    let loss = series["series"]["train_loss"].as_array().unwrap();
    assert_eq!(loss.len(), 4, "{series}");
    for (i, line) in epochs.iter().enumerate() {
        let epoch = i + 1;
        assert!(line.starts_with(&format!("epoch {epoch}/4: ")), "{line}");
        // The values shown are the worker's for that epoch.
        let value = loss[i][1].as_f64().unwrap();
        assert!(line.contains(&format!("train_loss {value:.4}")), "{line} vs {value}");
        assert!(line.contains("val_accuracy"), "{line}");
    }
    let table = env.ok(viewer, &["jobs", "metrics", &id]).await;
    assert!(table.contains("train_loss (4 points)") && table.contains("EPOCH  VALUE"), "{table}");
    let one = env.json(viewer, &["jobs", "metrics", &id, "--name", "val_accuracy"]).await;
    assert_eq!(one["series"].as_object().unwrap().keys().collect::<Vec<_>>(), ["val_accuracy"]);
    let err = env.fails(viewer, &["jobs", "metrics", &uuid::Uuid::now_v7().to_string()]).await;
    assert!(err.contains("not_found"), "{err}");

    let logs = env.ok(viewer, &["jobs", "logs", &id]).await;
    assert!(logs.contains("epoch 4/4"), "{logs}");
    let lines: Vec<Value> = env
        .ok(viewer, &["--json", "jobs", "logs", &id])
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), logs.lines().count());

    // On a terminal (util-linux `script` gives kiln a pty, sized by stty): a progress bar instead of a line
    // per epoch, then the last epoch's values and the outcome.
    let command = format!(
        "stty cols 120 rows 40; {} jobs submit {} --wait",
        env!("CARGO_BIN_EXE_kiln"),
        spec.to_str().unwrap()
    );
    let mut cmd = std::process::Command::new("script");
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TERM", "xterm")
        .env("KILN_API_URL", &env.api_url)
        .env("KILN_TOKEN", &t.member)
        .env("XDG_CONFIG_HOME", "/nonexistent-kiln-test-config")
        .args(["-qefc", &command, "/dev/null"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("] epoch "), "the bar was drawn: {screen:?}");
    assert!(screen.contains("epoch 4/4: train_loss"), "{screen:?}");
    assert!(!screen.contains("epoch 1/4: "), "no line per epoch on a terminal: {screen:?}");
    assert!(screen.contains(" succeeded"), "{screen:?}");
    worker.await.unwrap().unwrap();

    // `kiln jobs logs ID | head -1`, with and without --follow: quiet, status 0.
    for args in [&["jobs", "logs", &id][..], &["jobs", "logs", &id, "--follow"]] {
        let (code, stderr) = into_closed_pipe(&env, &t.viewer, args).await;
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}
