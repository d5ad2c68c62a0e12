//! The real `kiln` binary against a running API and a fresh database.

use std::net::TcpListener;

use assert_cmd::Command;
use kiln_api::Application;
use kiln_api::metrics::Metrics;
use kiln_api::state::{AppState, Limits};
use kiln_db::testing::{TestDatabase, fresh_database};
use kiln_queue::{Queue, QueueConfig};
use serde_json::Value;

struct Env {
    test: TestDatabase,
    _artifacts: tempfile::TempDir,
    api_url: String,
}

async fn start() -> Env {
    let test = fresh_database(8).await.unwrap();
    let artifacts = tempfile::tempdir().unwrap();
    let state = AppState {
        store: kiln_store::open_local(artifacts.path()).await.unwrap(),
        queue: Queue::new(&test.db, QueueConfig::default()),
        db: test.db.clone(),
        metrics: Metrics::new(),
        limits: Limits { json_bytes: 1 << 20, upload_bytes: 1 << 20 },
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let app = Application::from_state(state, listener, Some(1)).unwrap();
    let api_url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    Env { test, _artifacts: artifacts, api_url }
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

    async fn fails(&self, token: Option<&str>, args: &[&str]) -> String {
        let (ok, _, stderr) = self.run(token, args).await;
        assert!(!ok, "kiln {args:?} should fail");
        assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }
}

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
    env.ok(Some(&maintainer), &["datasets", "upload", iris, "--name", "iris"]).await;
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
