//! Secrets in telemetry: the real worker at `RUST_LOG=trace`, through a whole job with an
//! S3 store, never prints its database password nor its S3 secret key.

use kiln_store::testing::SECRET_KEY;
use kiln_types::JobState;

use crate::support::{Bench, StoreKind, data_file, iris_spec};

/// `url` with `password` as its user's password.
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    format!("{scheme}://{user}:{password}@{host}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_password_never_reaches_kiln_worker_trace_logs() {
    let bench = Bench::new(StoreKind::S3).await;
    let iris = bench.upload(&data_file("iris.csv"), "csv").await;
    let id = bench.submit(&iris, iris_spec(2, 32)).await;
    // The test server trusts local connections: any password is accepted, and must be kept.
    let password = format!("pw{}", uuid::Uuid::new_v4().simple());
    let url = with_password(&bench.test.url, &password);
    let mut worker = bench.spawn_worker(
        "worker",
        &[("KILN_DATABASE_URL", &url), ("RUST_LOG", "trace"), ("KILN_WORKER_MAX_JOBS", "1")],
    );
    let job = bench.wait_for(id, "the job to end", |j| j.state.is_terminal()).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{}", bench.logs());
    assert!(worker.wait_exit().await.success());
    let log = worker.log();
    assert!(log.contains("TRACE"), "not a trace-level log:\n{log}");
    assert!(!log.contains(&password), "the database password in the log:\n{log}");
    assert!(!log.contains(SECRET_KEY), "the S3 secret key in the log");
}
