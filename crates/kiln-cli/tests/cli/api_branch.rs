//! Verbs over the routes the `api` branch adds (API.md, "Additions"): `GET /v1/runs/{id}`,
//! `GET /v1/models/{name}`, `GET /v1/datasets/{id}/content` and the deletes of datasets,
//! model versions and runs (204, or 409 `in_use` naming what still refers to them).
//! These pass once that branch is merged: `cargo test -p kiln-cli --test cli api_branch::`.

use serde_json::json;

use crate::{IRIS, start, team_with_a_model};

/// Files in `dir`, hidden ones included, sorted.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_show_and_delete() {
    let env = start().await;
    let t = env.team_tokens("runs").await;
    let run = env.json(Some(&t.member), &["runs", "create", "nb", "--param", "k=3"]).await;
    let id = run["id"].as_str().unwrap().to_owned();
    assert_eq!(env.json(Some(&t.viewer), &["runs", "show", &id]).await, run);
    let table = env.ok(Some(&t.viewer), &["runs", "show", &id]).await;
    assert!(table.contains("nb") && table.contains(r#"{"k":3}"#), "{table}");

    let err = env.fails(Some(&t.member), &["runs", "delete", &id]).await;
    assert!(err.contains("forbidden"), "{err}");
    let out = env.ok(Some(&t.maintainer), &["runs", "delete", &id]).await;
    assert_eq!(out.trim(), format!("run {id} deleted"));
    let err = env.fails(Some(&t.viewer), &["runs", "show", &id]).await;
    assert!(err.contains("not_found"), "{err}");
    let err = env.fails(Some(&t.maintainer), &["runs", "delete", &id]).await;
    assert!(err.contains("not_found") && err.contains(&format!("run {id} not deleted")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_download_to_a_file_or_stdout_and_leave_nothing_half_written() {
    let env = start().await;
    let t = env.team_tokens("dl").await;
    let d = env.json(Some(&t.member), &["datasets", "upload", IRIS, "--name", "iris"]).await;
    let id = d["id"].as_str().unwrap().to_owned();
    let iris = std::fs::read(IRIS).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The default name, in the current directory.
    let mut cmd = env.kiln(Some(&t.viewer));
    cmd.current_dir(dir.path()).args(["datasets", "download", &id]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(files_in(dir.path()), ["iris-v1.csv"]);
    assert_eq!(std::fs::read(dir.path().join("iris-v1.csv")).unwrap(), iris);

    // An existing file is kept unless --force.
    let dest = dir.path().join("mine.csv");
    std::fs::write(&dest, "keep me").unwrap();
    let dest_s = dest.to_str().unwrap();
    let err = env.fails(Some(&t.viewer), &["datasets", "download", &id, dest_s]).await;
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"keep me");
    let out = env.json(Some(&t.viewer), &["datasets", "download", &id, dest_s, "--force"]).await;
    assert_eq!(out["sha256"], d["sha256"]);
    assert_eq!(std::fs::read(&dest).unwrap(), iris);

    // To stdout.
    let (ok, stdout, stderr) = env.run(Some(&t.viewer), &["datasets", "download", &id, "-"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.as_bytes(), iris);

    // Failures leave no file, partial or not.
    let missing = uuid::Uuid::now_v7().to_string();
    let target = dir.path().join("missing.csv");
    let err = env
        .fails(Some(&t.viewer), &["datasets", "download", &missing, target.to_str().unwrap()])
        .await;
    assert!(err.contains("not_found"), "{err}");
    let err =
        env.fails(Some(&t.viewer), &["datasets", "download", &id, "/nonexistent-dir/x.csv"]).await;
    assert!(err.contains("cannot write into /nonexistent-dir"), "{err}");
    assert_eq!(files_in(dir.path()), ["iris-v1.csv", "mine.csv"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_are_refused_while_in_use_with_what_uses_them() {
    let env = start().await;
    let (_, maintainer) = team_with_a_model(&env).await;
    let token = Some(maintainer.as_str());

    // A dataset a job used is in use.
    let datasets = env.json(token, &["datasets", "list", "--name", "iris"]).await;
    let used = datasets[0]["id"].as_str().unwrap().to_owned();
    let err = env.fails(token, &["datasets", "delete", &used]).await;
    assert!(
        err.contains("in_use") && err.contains(&format!("dataset {used} not deleted")),
        "{err}"
    );
    assert!(err.contains("details"), "what refers to it is named: {err}");
    env.ok(token, &["datasets", "show", &used]).await;

    // An unused one goes.
    let spare = env.json(token, &["datasets", "upload", IRIS, "--name", "spare"]).await;
    let spare = spare["id"].as_str().unwrap().to_owned();
    let out = env.json(token, &["datasets", "delete", &spare]).await;
    assert_eq!(out, json!({ "deleted": spare }));
    let err = env.fails(token, &["datasets", "show", &spare]).await;
    assert!(err.contains("not_found"), "{err}");

    // The model: show, then a deployed version is in use.
    let model = env.json(token, &["models", "show", "iris"]).await;
    assert_eq!(model["model"]["name"], "iris");
    assert_eq!(model["model"]["aliases"], json!({"production": 1}));
    assert_eq!(model["versions"][0]["version"], 1);
    let table = env.ok(token, &["models", "show", "iris"]).await;
    assert!(table.contains("production=1"), "{table}");
    let err = env.fails(token, &["models", "show", "nope"]).await;
    assert!(err.contains("not_found"), "{err}");
    env.ok(token, &["deployments", "create", "iris", "--model", "iris", "--version", "1"]).await;
    let err = env.fails(token, &["models", "delete", "iris", "1"]).await;
    assert!(err.contains("in_use") && err.contains("model iris version 1 not deleted"), "{err}");
    let err = env.fails(token, &["models", "delete", "iris", "7"]).await;
    assert!(err.contains("not_found"), "{err}");
    assert_eq!(env.json(token, &["models", "versions", "iris"]).await[0]["version"], 1);
}
