//! A whole Kiln on one machine for a test: a fresh database, a real s3s-fs, and the real
//! `kiln-api` and `kiln-worker` binaries as child processes (killed on drop).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_db::testing::{TestDatabase, fresh_database};
use kiln_store::testing::S3sServer;
use serde_json::Value;

/// A binary of the workspace, next to this test's own executable in the target directory
/// (`cargo test --workspace` builds every binary first).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap(); // target/<profile>/deps/.. 
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --bins`)",
        path.display()
    );
    path
}

pub struct Platform {
    pub test: TestDatabase,
    pub s3: S3sServer,
    pub api: String,
    pub http: reqwest::Client,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Drop for Platform {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Platform {
    pub async fn start() -> Self {
        Self::start_with(&[], &[]).await
    }

    /// Starts the platform with extra environment variables for `kiln-api` and for
    /// `kiln-worker` (OpenTelemetry settings, `KILN_WORKER_MAX_JOBS`…).
    pub async fn start_with(api_env: &[(&str, &str)], worker_env: &[(&str, &str)]) -> Self {
        let mut platform = Self::start_api(api_env).await;
        platform.spawn_worker("kiln-worker", worker_env);
        platform
    }

    /// Starts PostgreSQL's database, s3s-fs and `kiln-api`, without a worker.
    pub async fn start_api(api_env: &[(&str, &str)]) -> Self {
        let test = fresh_database(4).await.expect("database");
        let s3 = S3sServer::start();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let api = format!("http://127.0.0.1:{port}");
        let mut platform =
            Platform { test, s3, api, http: reqwest::Client::new(), dir, children: Vec::new() };
        let bind = format!("127.0.0.1:{port}");
        let mut env = vec![("KILN_API_BIND", bind.as_str())];
        env.extend_from_slice(api_env);
        platform.spawn("kiln-api", &env);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !platform.ready().await {
            assert!(
                Instant::now() < deadline,
                "kiln-api did not become ready:\n{}",
                platform.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        platform
    }

    /// `kill -9` of `kiln-api`, then a new one on the same address (its log replaces the
    /// first one's); returns once it is ready.
    pub async fn restart_api(&mut self, api_env: &[(&str, &str)]) {
        let _ = self.children[0].kill();
        let _ = self.children[0].wait();
        let bind = self.api.trim_start_matches("http://").to_owned();
        let mut env = vec![("KILN_API_BIND", bind.as_str())];
        env.extend_from_slice(api_env);
        self.spawn("kiln-api", &env);
        let new = self.children.pop().expect("just spawned");
        self.children[0] = new;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ready().await {
            assert!(Instant::now() < deadline, "kiln-api did not come back:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a `kiln-worker` (its log is `{log}.log`) with `extra` on top of the test
    /// settings; returns its process id.
    pub fn spawn_worker(&mut self, log: &str, extra: &[(&str, &str)]) -> u32 {
        let cache = self.dir.path().join("worker-cache").to_string_lossy().into_owned();
        let mut env = vec![
            ("KILN_WORKER_DEVICE", "cpu"),
            ("KILN_HEARTBEAT_SECONDS", "1"),
            ("KILN_WORKER_CACHE_DIR", cache.as_str()),
        ];
        env.extend_from_slice(extra);
        self.spawn_as("kiln-worker", log, &env)
    }

    async fn ready(&self) -> bool {
        let res = self.http.get(format!("{}/readyz", self.api)).send().await;
        res.is_ok_and(|r| r.status().is_success())
    }

    fn spawn(&mut self, name: &str, extra: &[(&str, &str)]) {
        self.spawn_as(name, name, extra);
    }

    fn spawn_as(&mut self, name: &str, log: &str, extra: &[(&str, &str)]) -> u32 {
        let log = std::fs::File::create(self.dir.path().join(format!("{log}.log"))).unwrap();
        let mut command = Command::new(binary(name));
        // OpenTelemetry is off unless a test turns it on: no collector of the machine's
        // environment receives a test's spans.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OTEL_") {
                command.env_remove(&key);
            }
        }
        command
            .env("KILN_DATABASE_URL", &self.test.url)
            // A short prefix: s3s-fs names a multipart upload's metadata file after the
            // base64 of bucket and key, and a blob key under a longer prefix (teams/{id}/
            // blobs/sha256/..., 123 bytes) makes that name longer than NAME_MAX (255), which
            // s3s-fs answers with a 500. Real S3 has no such limit.
            .envs(self.s3.child_env("e"))
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// One child's log so far (`kiln-api` or `kiln-worker`).
    pub fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits for a child to exit by itself (`KILN_WORKER_MAX_JOBS`, a signal); returns
    /// whether it exited successfully.
    pub async fn wait_for_exit(&mut self, name: &str, deadline: Duration) -> bool {
        let index = ["kiln-api", "kiln-worker"].iter().position(|n| *n == name).unwrap();
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.children[index].try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < until, "{name} did not exit:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A child's process id (`kiln-api` or `kiln-worker`).
    pub fn pid(&self, name: &str) -> u32 {
        let index = ["kiln-api", "kiln-worker"].iter().position(|n| *n == name).unwrap();
        self.children[index].id()
    }

    /// Every child's log, for failure messages.
    pub fn logs(&self) -> String {
        ["kiln-api", "kiln-worker"]
            .iter()
            .map(|n| {
                format!(
                    "--- {n}\n{}",
                    std::fs::read_to_string(self.dir.path().join(format!("{n}.log")))
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    /// Runs the real `kiln` CLI against this platform; returns stdout, panicking on failure.
    pub fn kiln(&self, args: &[&str]) -> String {
        self.run_kiln(None, args)
    }

    pub fn kiln_as(&self, token: &str, args: &[&str]) -> String {
        self.run_kiln(Some(token), args)
    }

    fn run_kiln(&self, token: Option<&str>, args: &[&str]) -> String {
        let mut command = Command::new(binary("kiln"));
        command.args(args).env("KILN_DATABASE_URL", &self.test.url).env("KILN_API_URL", &self.api);
        if let Some(token) = token {
            command.env("KILN_TOKEN", token);
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "kiln {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Value {
        let res = req.send().await.unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{status}: {body}");
        body
    }

    pub async fn get(&self, token: &str, path: &str) -> Value {
        self.send(self.http.get(format!("{}{path}", self.api)).bearer_auth(token)).await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> Value {
        self.send(self.http.post(format!("{}{path}", self.api)).bearer_auth(token).json(&body))
            .await
    }

    pub async fn put(&self, token: &str, path: &str, body: Value) -> Value {
        self.send(self.http.put(format!("{}{path}", self.api)).bearer_auth(token).json(&body)).await
    }

    /// Bootstraps an admin, creates team `demo` with a maintainer token and uploads the
    /// bundled Iris data as dataset `iris`.
    pub async fn team_with_iris(&self) -> DemoTeam {
        let admin = self.kiln(&["admin", "bootstrap"]).trim().to_owned();
        let team: Value = self.post(&admin, "/v1/teams", serde_json::json!({"name": "demo"})).await;
        let team_id = team["id"].as_str().unwrap();
        let token: Value = self
            .post(
                &admin,
                &format!("/v1/teams/{team_id}/tokens"),
                serde_json::json!({"name": "ds", "role": "maintainer"}),
            )
            .await;
        let token = token["token"].as_str().unwrap().to_owned();
        let dataset: Value = self
            .http
            .post(format!("{}/v1/datasets?name=iris", self.api))
            .bearer_auth(&token)
            .header("content-type", "text/csv")
            .body(iris_csv())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        DemoTeam { admin, token, dataset }
    }
}

/// What [`Platform::team_with_iris`] made: the admin token, team `demo`'s maintainer token,
/// and the uploaded dataset's answer.
#[derive(Debug)]
pub struct DemoTeam {
    pub admin: String,
    pub token: String,
    pub dataset: Value,
}

/// The bundled Iris CSV.
pub fn iris_csv() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/iris.csv")).unwrap()
}
