//! Peak memory of a 200 MiB streamed upload, measured in a separate process (the
//! `kiln-store-tool` binary), so other tests running in this one cannot disturb the figure.
//! The tool opens the store from `KILN_ARTIFACT_STORE` and the AWS SDK's variables, exactly
//! as Kiln's services do, and reports `VmHWM` (peak resident set) from /proc.

use std::process::Command;

use kiln_store::{ArtifactStore, ErrorKind};

use crate::{ACCESS_KEY, BUCKET, MIB, S3sServer, SECRET_KEY, drain, key};

const UPLOAD_MIB: u64 = 200;
/// The S3 backend holds at most (4 in flight + 1 being read) × 8 MiB of parts; the local
/// one a 1 MiB buffer. The rest is the runtime, the SDK and the allocator.
const MAX_GROWTH_MIB: u64 = 96;

struct Report {
    key: String,
    size: u64,
    rss_before_kib: u64,
    peak_rss_kib: u64,
}

fn run_tool(envs: &[(&str, String)]) -> Report {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln-store-tool"));
    // Only what we set: no profile or credentials from the machine running the tests.
    for var in
        ["AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_SESSION_TOKEN"]
    {
        command.env_remove(var);
    }
    command.env("AWS_EC2_METADATA_DISABLED", "true");
    for (name, value) in envs {
        command.env(name, value);
    }
    command.args(["put-generated", "--team", "acme", "--mib", &UPLOAD_MIB.to_string()]);
    let output = command.output().expect("run kiln-store-tool");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kiln-store-tool failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let field = |name: &str| line[name].as_u64().unwrap_or_else(|| panic!("{name} in {line}"));
    Report {
        key: line["key"].as_str().expect("key").to_owned(),
        size: field("size"),
        rss_before_kib: field("rss_before_kib"),
        peak_rss_kib: field("peak_rss_kib"),
    }
}

fn assert_bounded(report: &Report, backend: &str) {
    assert_eq!(report.size, UPLOAD_MIB * MIB);
    let growth_mib = report.peak_rss_kib.saturating_sub(report.rss_before_kib) / 1024;
    eprintln!(
        "{backend}: {UPLOAD_MIB} MiB upload, RSS before {} MiB, peak {} MiB (+{growth_mib} MiB)",
        report.rss_before_kib / 1024,
        report.peak_rss_kib / 1024
    );
    assert!(report.rss_before_kib > 0, "VmRSS was measured");
    assert!(
        growth_mib <= MAX_GROWTH_MIB,
        "{backend}: peak RSS grew by {growth_mib} MiB for a {UPLOAD_MIB} MiB upload"
    );
    assert!(report.peak_rss_kib / 1024 < 128, "{backend}: peak RSS {} KiB", report.peak_rss_kib);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_upload_to_s3_streams_in_bounded_memory() {
    let server = S3sServer::start();
    let report = run_tool(&[
        ("KILN_ARTIFACT_STORE", format!("s3://{BUCKET}/mem")),
        ("KILN_S3_FORCE_PATH_STYLE", "true".into()),
        ("AWS_ENDPOINT_URL", server.endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
    ]);
    assert_bounded(&report, "s3");
    // The object is there, whole and verified (a full read of a blob checks its sha256).
    let store = server.store("mem").await;
    let (_, size) = drain(store.get(&key(&report.key), None).await.unwrap()).await.unwrap();
    assert_eq!(size, UPLOAD_MIB * MIB);
    assert!(server.open_multipart_uploads().is_empty());
    // Only the final object remains: the staging copy is gone.
    assert_eq!(crate::files_under(&server.bucket_dir()), vec![format!("mem/{}", report.key)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_upload_to_a_local_directory_streams_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_tool(&[("KILN_ARTIFACT_STORE", format!("file://{}", dir.path().display()))]);
    assert_bounded(&report, "local");
    let store = kiln_store::open_local(dir.path()).await.unwrap();
    let result = drain(store.get(&key(&report.key), None).await.unwrap()).await;
    assert_eq!(
        result.map(|(_, size)| size).map_err(|e| e.kind()),
        Ok::<_, ErrorKind>(UPLOAD_MIB * MIB)
    );
}
