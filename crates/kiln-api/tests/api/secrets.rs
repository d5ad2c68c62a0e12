//! Secrets and tenants in telemetry: the real `kiln-api` at `RUST_LOG=trace` never prints
//! its database password, and `/metrics` (every team's names, deployments and traffic)
//! needs an admin token on the API's address while the metrics address serves Prometheus.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_db::repo::tokens;
use kiln_db::testing::fresh_database;
use kiln_types::Role;
use reqwest::Method;

use crate::{assert_error, spawn_app};

#[tokio::test]
async fn metrics_are_refused_without_an_admin_token_and_served_on_the_metrics_address() {
    let app = spawn_app().await;
    let team = app.team("team-b").await;
    assert_eq!(app.get("/v1/jobs", &team.viewer).await.status(), 200);

    let res = app.request(Method::GET, "/metrics", None).send().await.unwrap();
    assert_error(res, 401, "unauthenticated").await;
    for token in [&team.maintainer, &team.member, &team.viewer] {
        assert_error(app.get("/metrics", token).await, 403, "forbidden").await;
    }
    let res = app.get("/metrics", &app.admin).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("kiln_http_requests_total{"), "{text}");

    // The metrics address: no token, only /metrics.
    let res = app.http.get(format!("{}/metrics", app.metrics_base)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = res.text().await.unwrap();
    assert!(text.contains("kiln_http_requests_total{"), "{text}");
    let res = app.http.get(format!("{}/v1/jobs", app.metrics_base)).send().await.unwrap();
    assert_error(res, 404, "not_found").await;
}

/// `url` with `password` as its user's password.
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    format!("{scheme}://{user}:{password}@{host}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The real binary, with only the environment given (nothing of the test's own).
fn kiln_api(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln-api"));
    command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command.envs(env.iter().copied()).stdin(Stdio::null());
    command
}

#[tokio::test]
async fn the_database_password_never_reaches_kiln_api_trace_logs_or_help() {
    let test = fresh_database(2).await.unwrap();
    let admin = tokens::issue(&test.db, None, Role::Admin, "admin", None).await.unwrap().secret;
    // The test server trusts local connections: any password is accepted, and must be kept.
    let password = format!("pw{}", uuid::Uuid::new_v4().simple());
    let url = with_password(&test.url, &password);
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let bind = format!("127.0.0.1:{port}");
    let metrics_bind = format!("127.0.0.1:{metrics_port}");
    let store = format!("file://{}", dir.path().join("artifacts").display());
    let cache = dir.path().join("serving").display().to_string();
    let env = [
        ("KILN_DATABASE_URL", url.as_str()),
        ("KILN_API_BIND", &bind),
        ("KILN_METRICS_BIND", &metrics_bind),
        ("KILN_ARTIFACT_STORE", &store),
        ("KILN_SERVING_CACHE_DIR", &cache),
        ("KILN_API_WORKERS", "1"),
        ("RUST_LOG", "trace"),
    ];

    // `--help` shows where the URL comes from, never its value.
    let help = kiln_api(&env).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("KILN_DATABASE_URL"), "{help}");
    assert!(!help.contains(&password), "the password in --help:\n{help}");

    let log_path = dir.path().join("kiln-api.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = kiln_api(&env)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start kiln-api");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let http = reqwest::Client::new();
    let base = format!("http://{bind}");
    let started = Instant::now();
    loop {
        if let Ok(res) = http.get(format!("{base}/readyz")).send().await
            && res.status() == 200
        {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "kiln-api exited:\n{}", read_log());
        assert!(started.elapsed() < Duration::from_secs(60), "never ready:\n{}", read_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Authenticated calls that query PostgreSQL, and both metrics addresses.
    let res = http.get(format!("{base}/v1/admin/queue")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = http.get(format!("http://{metrics_bind}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("kiln_queue_oldest_queued_age_seconds"));
    child.kill().unwrap();
    child.wait().unwrap();

    let log = read_log();
    assert!(log.contains("TRACE"), "not a trace-level log:\n{log}");
    assert!(!log.contains(&password), "the database password in the log:\n{log}");
    assert!(!log.contains(&admin), "a token in the log");
}
