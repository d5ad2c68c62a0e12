//! The real `kiln` binary against a running API and a fresh database.
//!
//! `api_branch` holds the tests of verbs whose routes (`GET /v1/runs/{id}`,
//! `GET /v1/models/{name}`, dataset download and the deletes) arrive with the `api` branch;
//! run them alone with `cargo test -p kiln-cli --test cli api_branch::`.

mod api_branch;
mod linking;
mod progress;
mod verbs;

use std::net::TcpListener;

use assert_cmd::Command;
use kiln_api::Application;
use kiln_api::serving::ServingArgs;
use kiln_api::state::{AppState, Limits};
use kiln_db::testing::{TestDatabase, fresh_database};
use serde_json::Value;

struct Env {
    test: TestDatabase,
    artifacts: tempfile::TempDir,
    api_url: String,
}

async fn start() -> Env {
    let test = fresh_database(8).await.unwrap();
    let artifacts = tempfile::tempdir().unwrap();
    let state = AppState::new(
        test.db.clone(),
        kiln_store::open_local(artifacts.path()).await.unwrap(),
        Limits {
            json_bytes: 1 << 20,
            upload_bytes: 1 << 20,
            model_memory_bytes: kiln_api::state::DEFAULT_MAX_MODEL_MEMORY_MIB << 20,
        },
        ServingArgs {
            cache_dir: Some(artifacts.path().join("serving-cache")),
            ..ServingArgs::defaults()
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let app = Application::from_state(state, listener, Some(1)).unwrap();
    let api_url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    Env { test, artifacts, api_url }
}

impl Env {
    /// `kiln` with this environment's database and API, and no ambient configuration.
    fn kiln(&self, token: Option<&str>) -> Command {
        let mut cmd = Command::cargo_bin("kiln").unwrap();
        cmd.env_clear()
            .env("KILN_DATABASE_URL", &self.test.url)
            .env("KILN_API_URL", &self.api_url)
            .env("XDG_CONFIG_HOME", "/nonexistent-kiln-test-config");
        if let Some(token) = token {
            cmd.env("KILN_TOKEN", token);
        }
        cmd
    }

    /// Runs `kiln` off the async runtime and returns (success, stdout, stderr).
    async fn run(&self, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
        let mut cmd = self.kiln(token);
        cmd.args(args);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    async fn ok(&self, token: Option<&str>, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(token, args).await;
        assert!(ok, "kiln {args:?} failed: {stderr}");
        stdout
    }

    /// `kiln --json ARGS` as JSON.
    async fn json(&self, token: Option<&str>, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(token, &all).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kiln {args:?}: {e}: {out}"))
    }

    /// A team `name` with a token of each role: (admin, maintainer, member, viewer).
    async fn team_tokens(&self, name: &str) -> Tokens {
        let admin = self.ok(None, &["admin", "bootstrap", "--name", name]).await.trim().to_owned();
        self.ok(Some(&admin), &["admin", "teams", "create", name]).await;
        let mut tokens = vec![admin.clone()];
        for role in ["maintainer", "member", "viewer"] {
            let args = ["admin", "tokens", "create", "--team", name, "--role", role];
            tokens.push(self.ok(Some(&admin), &args).await.trim().to_owned());
        }
        Tokens {
            admin,
            maintainer: tokens[1].clone(),
            member: tokens[2].clone(),
            viewer: tokens[3].clone(),
        }
    }

    async fn fails(&self, token: Option<&str>, args: &[&str]) -> String {
        let (ok, _, stderr) = self.run(token, args).await;
        assert!(!ok, "kiln {args:?} should fail");
        assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }
}

#[derive(Debug, Clone)]
struct Tokens {
    admin: String,
    maintainer: String,
    member: String,
    viewer: String,
}

/// The repository's iris.csv.
const IRIS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/iris.csv");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_bootstrap_teams_and_tokens() {
    let env = start().await;
    assert_eq!(env.ok(None, &["admin", "migrate"]).await.trim(), "database is up to date");

    let admin = env.ok(None, &["admin", "bootstrap"]).await.trim().to_owned();
    assert!(admin.starts_with("kiln_"), "{admin}");
    let err = env.fails(None, &["admin", "bootstrap"]).await;
    assert!(err.contains("already exists"), "{err}");
    let second = env.ok(None, &["admin", "bootstrap", "--force", "--name", "second"]).await;
    assert_ne!(second.trim(), admin);

    let out = env.ok(Some(&admin), &["admin", "teams", "create", "vision"]).await;
    assert!(out.contains("vision"));
    let listed: Value = serde_json::from_str(
        &env.ok(Some(&admin), &["--output", "json", "admin", "teams", "list"]).await,
    )
    .unwrap();
    assert_eq!(listed[0]["name"], "vision");
    let err = env.fails(Some(&admin), &["admin", "teams", "create", "vision"]).await;
    assert!(err.contains("already_exists"), "{err}");

    let member = env
        .ok(Some(&admin), &["admin", "tokens", "create", "--team", "vision", "--role", "member"])
        .await
        .trim()
        .to_owned();
    assert!(member.starts_with("kiln_"));
    let jobs = env.ok(Some(&member), &["jobs", "list"]).await;
    assert!(jobs.starts_with("ID"), "{jobs}");

    let tokens: Value = serde_json::from_str(
        &env.ok(Some(&admin), &["--output", "json", "admin", "tokens", "list", "--team", "vision"])
            .await,
    )
    .unwrap();
    let id = tokens[0]["id"].as_str().unwrap().to_owned();
    env.ok(Some(&admin), &["admin", "tokens", "revoke", &id]).await;
    let err = env.fails(Some(&member), &["jobs", "list"]).await;
    assert!(err.contains("unauthenticated"), "{err}");
    let err = env
        .fails(Some(&admin), &["admin", "tokens", "create", "--team", "nope", "--role", "member"])
        .await;
    assert!(err.contains("no team named `nope`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_views_and_clear_errors() {
    let env = start().await;
    let admin = env.ok(None, &["admin", "bootstrap"]).await.trim().to_owned();
    let stats: Value =
        serde_json::from_str(&env.ok(Some(&admin), &["--output", "json", "queue", "stats"]).await)
            .unwrap();
    assert_eq!(stats["counts"], serde_json::json!([]));
    let workers: Value =
        serde_json::from_str(&env.ok(Some(&admin), &["--output", "json", "workers", "list"]).await)
            .unwrap();
    assert_eq!(workers, serde_json::json!([]));

    let err = env.fails(None, &["queue", "stats"]).await;
    assert!(err.contains("no API token"), "{err}");
    let err = env.fails(Some("kiln_wrong"), &["queue", "stats"]).await;
    assert!(err.contains("unauthenticated"), "{err}");
    let err = env.fails(Some(&admin), &["--api-url", "http://127.0.0.1:9", "queue", "stats"]).await;
    assert!(err.contains("cannot reach the Kiln API"), "{err}");
    let err = env.fails(Some(&admin), &["jobs", "show", "not-a-uuid"]).await;
    assert!(err.contains("invalid value"), "{err}");

    // doctor: database, migrations and API are fine; no worker is running.
    let (ok, stdout, _) = env.run(Some(&admin), &["doctor"]).await;
    assert!(!ok);
    assert!(
        stdout.contains("ok   postgres")
            && stdout.contains("ok   migrations")
            && stdout.contains("ok   api"),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL workers"), "{stdout}");

    let completions = env.ok(None, &["completions", "bash"]).await;
    assert!(completions.contains("kiln"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_upload_and_list_and_registry_errors() {
    let env = start().await;
    let admin = env.ok(None, &["admin", "bootstrap"]).await.trim().to_owned();
    env.ok(Some(&admin), &["admin", "teams", "create", "vision"]).await;
    let maintainer = env
        .ok(
            Some(&admin),
            &["admin", "tokens", "create", "--team", "vision", "--role", "maintainer"],
        )
        .await
        .trim()
        .to_owned();
    let iris = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/iris.csv");
    let uploaded: Value = serde_json::from_str(
        &env.ok(
            Some(&maintainer),
            &["--output", "json", "datasets", "upload", iris, "--name", "iris"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(uploaded["version"], 1);
    assert_eq!(uploaded["format"], "csv");
    assert_eq!(uploaded["size_bytes"], std::fs::metadata(iris).unwrap().len());
    // Other bytes make the next version (the same bytes again answer the existing one).
    let wine = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/wine.csv");
    env.ok(Some(&maintainer), &["datasets", "upload", wine, "--name", "iris"]).await;
    let listed = env.ok(Some(&maintainer), &["datasets", "list", "--name", "iris"]).await;
    assert_eq!(listed.lines().count(), 3, "header and two versions: {listed}");

    let err = env
        .fails(Some(&maintainer), &["datasets", "upload", "/nonexistent.csv", "--name", "x"])
        .await;
    assert!(err.contains("cannot open /nonexistent.csv"), "{err}");
    let err = env.fails(Some(&maintainer), &["datasets", "upload", iris, "--name", "../x"]).await;
    assert!(err.contains("validation_failed"), "{err}");
    let err = env
        .fails(
            Some(&maintainer),
            &["models", "register", "iris", "--job", &uuid::Uuid::now_v7().to_string()],
        )
        .await;
    assert!(err.contains("validation_failed"), "{err}");
    let err = env.fails(Some(&maintainer), &["models", "alias", "iris", "production", "1"]).await;
    assert!(err.contains("not_found"), "{err}");
    let models: Value = serde_json::from_str(
        &env.ok(Some(&maintainer), &["--output", "json", "models", "list"]).await,
    )
    .unwrap();
    assert_eq!(models, serde_json::json!([]));
}

/// A team with a maintainer token and model `iris` version 1 (a real bundle, registered from
/// a real job), `production` → 1. Returns (admin, maintainer).
async fn team_with_a_model(env: &Env) -> (String, String) {
    let admin = env.ok(None, &["admin", "bootstrap"]).await.trim().to_owned();
    env.ok(Some(&admin), &["admin", "teams", "create", "serve"]).await;
    let maintainer = env
        .ok(Some(&admin), &["admin", "tokens", "create", "--team", "serve", "--role", "maintainer"])
        .await
        .trim()
        .to_owned();
    let iris = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/iris.csv");
    let dataset: Value = serde_json::from_str(
        &env.ok(
            Some(&maintainer),
            &["--output", "json", "datasets", "upload", iris, "--name", "iris"],
        )
        .await,
    )
    .unwrap();
    let spec = env.artifacts.path().join("spec.json");
    std::fs::write(
        &spec,
        serde_json::json!({"dataset_id": dataset["id"], "task": "classification",
                           "target": "species", "model": {"type": "mlp"}})
        .to_string(),
    )
    .unwrap();
    let job: Value = serde_json::from_str(
        &env.ok(Some(&maintainer), &["--output", "json", "jobs", "submit", spec.to_str().unwrap()])
            .await,
    )
    .unwrap();
    let team = kiln_db::repo::teams::find_by_name(&env.test.db, "serve").await.unwrap().unwrap();
    let bundle =
        kiln_ml::testing::train_csv_bundle(&std::fs::read(iris).unwrap(), "species", &[16], 40, 7);
    let store = kiln_store::open_local(env.artifacts.path()).await.unwrap();
    let info = store
        .put_stream(&kiln_store::Team::parse(team.id.to_string()).unwrap(), &mut bundle.as_slice())
        .await
        .unwrap();
    kiln_db::repo::models::register_version(
        &env.test.db,
        team.id,
        "iris",
        kiln_db::repo::models::NewVersion {
            job_id: job["id"].as_str().unwrap().parse().unwrap(),
            bundle_key: info.key.as_str(),
            bundle_sha256: &info.sha256.to_hex(),
            dataset_sha256: None,
            spec: serde_json::json!({}),
            metrics: serde_json::json!({}),
            created_by: None,
        },
    )
    .await
    .unwrap();
    env.ok(Some(&maintainer), &["models", "alias", "iris", "production", "1"]).await;
    (admin, maintainer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_and_predictions() {
    let env = start().await;
    let (_, maintainer) = team_with_a_model(&env).await;
    let token = Some(maintainer.as_str());
    let created = env
        .ok(token, &["deployments", "create", "iris", "--model", "iris", "--alias", "production"])
        .await;
    assert!(created.contains("@production") && created.contains("ready"), "{created}");
    let shown: Value = serde_json::from_str(
        &env.ok(token, &["--output", "json", "deployments", "show", "iris"]).await,
    )
    .unwrap();
    assert_eq!(shown["status"], "ready");
    assert_eq!(shown["versions_loaded"][0]["version"], 1);

    let instances = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/iris-instances.json");
    let table = env.ok(token, &["predict", "iris", "--instances", instances]).await;
    for label in ["setosa", "versicolor", "virginica"] {
        assert!(table.contains(label), "{table}");
    }
    assert!(table.contains("answered by iris version 1"), "{table}");
    let answer: Value = serde_json::from_str(
        &env.ok(token, &["--output", "json", "predict", "iris", "--instances", instances]).await,
    )
    .unwrap();
    assert_eq!(answer["predictions"].as_array().unwrap().len(), 3);

    let traffic = env.ok(token, &["deployments", "traffic", "iris", "1=100"]).await;
    assert!(traffic.contains("v1=100"), "{traffic}");
    let err = env.fails(token, &["deployments", "traffic", "iris", "1:100"]).await;
    assert!(err.contains("VERSION=WEIGHT"), "{err}");
    let err = env.fails(token, &["deployments", "traffic", "iris", "3=10"]).await;
    assert!(err.contains("validation_failed") && err.contains("no version 3"), "{err}");

    let bad = env.artifacts.path().join("bad.json");
    std::fs::write(&bad, r#"[{"sepal_length": "long"}]"#).unwrap();
    let err = env.fails(token, &["predict", "iris", "--instances", bad.to_str().unwrap()]).await;
    assert!(
        err.contains("validation_failed") && err.contains("instances[0].sepal_length"),
        "{err}"
    );
    std::fs::write(&bad, r#"{"rows": []}"#).unwrap();
    let err = env.fails(token, &["predict", "iris", "--instances", bad.to_str().unwrap()]).await;
    assert!(err.contains("instances"), "{err}");
    let err = env.fails(token, &["predict", "nope", "--instances", instances]).await;
    assert!(err.contains("not_found"), "{err}");

    let drift = env.ok(token, &["deployments", "drift", "iris"]).await;
    assert!(drift.contains("petal_length"), "{drift}");
    let listed = env.ok(token, &["deployments", "list"]).await;
    assert_eq!(listed.lines().count(), 2, "{listed}");
    env.ok(token, &["deployments", "delete", "iris"]).await;
    let err = env.fails(token, &["deployments", "show", "iris"]).await;
    assert!(err.contains("not_found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_gc_deletes_only_old_unreferenced_blobs() {
    let env = start().await;
    let (admin, maintainer) = team_with_a_model(&env).await;
    let store = kiln_store::open_local(env.artifacts.path()).await.unwrap();
    let team = kiln_store::Team::parse("orphans").unwrap();
    let old = store.put_stream(&team, &mut &b"an abandoned checkpoint"[..]).await.unwrap();
    let young = store.put_stream(&team, &mut &b"an upload in progress"[..]).await.unwrap();
    let old_path = env.artifacts.path().join("objects").join(old.key.as_str());
    assert!(old_path.is_file(), "{}", old_path.display());
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&old_path)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    let before = kiln_store::list_all(store.as_ref(), "teams/").await.unwrap().len();

    let err = env.fails(Some(&maintainer), &["artifacts", "gc"]).await;
    assert!(err.contains("forbidden"), "{err}");
    let dry = env.ok(Some(&admin), &["artifacts", "gc"]).await;
    assert!(dry.contains(&format!("would delete {}", old.key.as_str())), "{dry}");
    assert!(!dry.contains(young.key.as_str()), "{dry}");
    assert!(dry.contains("dry run"), "{dry}");
    assert!(old_path.is_file(), "a dry run deleted something");

    let report: Value = serde_json::from_str(
        &env.ok(Some(&admin), &["--output", "json", "artifacts", "gc", "--apply"]).await,
    )
    .unwrap();
    assert_eq!(report["scanned"], before as u64);
    assert_eq!(report["candidates"], 1, "{report}");
    assert_eq!(report["deleted"], 1, "{report}");
    assert_eq!(report["too_young"], 1, "{report}");
    assert_eq!(report["referenced"], (before - 2) as u64, "{report}");
    assert!(!old_path.exists());
    // What rows refer to is intact: the dataset and the bundle are still there.
    let after = kiln_store::list_all(store.as_ref(), "teams/").await.unwrap();
    assert_eq!(after.len(), before - 1);
    assert!(after.iter().any(|o| o.key == young.key));
    let err = env.fails(Some(&admin), &["artifacts", "gc", "--grace-hours", "0"]).await;
    assert!(err.contains("grace_seconds"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_file_supplies_url_and_token_and_flags_override_it() {
    let env = start().await;
    let admin = env.ok(None, &["admin", "bootstrap"]).await.trim().to_owned();
    let config = env.artifacts.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[profiles.ops]\napi_url = \"{}\"\ntoken = \"{admin}\"\n\n[profiles.broken]\napi_url = \"http://127.0.0.1:9\"\n",
            env.api_url
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    // Neither KILN_API_URL nor KILN_TOKEN: everything comes from the profile.
    let run = |args: Vec<&str>| {
        let mut cmd = Command::cargo_bin("kiln").unwrap();
        cmd.env_clear().env("XDG_CONFIG_HOME", "/nonexistent-kiln-test-config").args(args);
        cmd
    };
    let out = run(vec!["--config", config, "--profile", "ops", "admin", "teams", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A flag beats the profile: the broken profile's URL is overridden.
    let out = run(vec![
        "--config",
        config,
        "--profile",
        "broken",
        "--api-url",
        &env.api_url,
        "--token",
        &admin,
        "queue",
        "stats",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Without the override, the profile's URL is used, and fails with one clear line.
    let out =
        run(vec!["--config", config, "--profile", "broken", "--token", &admin, "queue", "stats"])
            .output()
            .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(stderr.contains("cannot reach the Kiln API at http://127.0.0.1:9"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // An unknown profile and a missing file are named.
    let out =
        run(vec!["--config", config, "--profile", "nope", "queue", "stats"]).output().unwrap();
    assert!(String::from_utf8(out.stderr).unwrap().contains("profile `nope` not found"));
    let out = run(vec!["--config", "/nonexistent/kiln.toml", "queue", "stats"]).output().unwrap();
    assert!(String::from_utf8(out.stderr).unwrap().contains("does not exist"));
}

/// `kiln ... | head -1` or `| grep -q` closes the pipe early; the CLI used to panic there
/// (status 101), failing every `set -o pipefail` script that did so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_pipe_ends_kiln_quietly_instead_of_panicking() {
    let env = start().await;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("kiln"));
    cmd.env_clear()
        .env("KILN_DATABASE_URL", &env.test.url)
        .env("XDG_CONFIG_HOME", "/nonexistent-kiln-test-config")
        .args(["admin", "bootstrap", "--name", "pipe"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
