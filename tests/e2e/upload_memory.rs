//! Issue 22, item 3: kiln-api's memory grew with the size of an uploaded dataset (a 200 MB
//! CSV took it from 449 MB to 1,142 MB), because the schema was inferred from the whole file
//! read into memory. The upload now streams to a temporary file, the schema is read from it
//! in one streaming pass, and it streams on to the artifact store.
//!
//! Measured from the outside, on the real binary: the kernel's peak resident set of the
//! kiln-api process (`VmHWM`, reset just before the upload through `/proc/PID/clear_refs`)
//! against its resident set at that moment.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use crate::platform::{DemoTeam, Platform};

const MIB: u64 = 1 << 20;

/// A field of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Writes a CSV of at least `bytes` bytes: an integer id, two floats (one with an empty
/// cell every 1000 rows), a five-valued category, a three-valued integer label and a text
/// column of distinct values. Returns its row count and size.
fn write_csv(path: &Path, bytes: u64) -> (u64, u64) {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let header = "id,x1,x2,colour,label,note\n";
    out.write_all(header.as_bytes()).unwrap();
    let mut size = header.len() as u64;
    let mut rows = 0u64;
    let colours = ["red", "green", "blue", "amber", "violet"];
    let mut line = String::new();
    while size < bytes {
        let i = rows;
        line.clear();
        let x2 =
            if i % 1000 == 999 { String::new() } else { format!("{:.4}", (i % 977) as f64 / 7.0) };
        use std::fmt::Write as _;
        writeln!(
            line,
            "{i},{}.{:03},{x2},{},{},note {}",
            i % 1013,
            i % 997,
            colours[(i % 5) as usize],
            i % 3,
            i * 7919
        )
        .unwrap();
        out.write_all(line.as_bytes()).unwrap();
        size += line.len() as u64;
        rows += 1;
    }
    out.flush().unwrap();
    (rows, size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_csv_upload_grows_the_api_peak_rss_by_at_most_64_mib() {
    let p = Platform::start().await;
    // Iris goes first: the upload path, its thread pools and connections are warm.
    let DemoTeam { token, dataset, .. } = p.team_with_iris().await;
    assert_eq!(dataset["schema"]["rows"], 150, "{dataset}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    let (rows, size) = write_csv(&path, 200 * MIB);

    let api = p.pid("kiln-api");
    std::fs::write(format!("/proc/{api}/clear_refs"), "5").expect("reset kiln-api's peak RSS");
    let before = status_kib(api, "VmRSS") * 1024;
    let file = tokio::fs::File::open(&path).await.unwrap();
    let body =
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 16));
    let res = p
        .http
        .post(format!("{}/v1/datasets?name=big", p.api))
        .bearer_auth(&token)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let dataset: Value = res.json().await.unwrap();
    let peak = status_kib(api, "VmHWM") * 1024;
    assert_eq!(status, 201, "{dataset}\n{}", p.logs());

    let growth = peak.saturating_sub(before);
    eprintln!(
        "kiln-api: RSS {} MiB before a {} MiB upload, peak {} MiB (+{} MiB)",
        before / MIB,
        size / MIB,
        peak / MIB,
        growth / MIB
    );
    assert!(
        growth <= 64 * MIB,
        "uploading {size} bytes grew kiln-api's peak RSS by {growth} bytes (from {before})"
    );

    // The schema is the one a whole-file parse gives.
    assert_eq!(dataset["size_bytes"], size);
    let schema = &dataset["schema"];
    assert_eq!(schema["format"], "csv");
    assert_eq!(schema["rows"], rows);
    let column = |name: &str, kind: &str, missing: u64, distinct: Value, candidate: bool| json!({"name": name, "type": kind, "missing": missing, "distinct": distinct, "label_candidate": candidate});
    assert_eq!(
        schema["columns"],
        json!([
            column("id", "number", 0, Value::Null, false),
            column("x1", "number", 0, Value::Null, false),
            column("x2", "number", rows / 1000, Value::Null, false),
            column("colour", "category", 0, json!(5), true),
            column("label", "number", 0, json!(3), true),
            column("note", "category", 0, Value::Null, false),
        ]),
        "{schema}"
    );
    assert_eq!(schema["label_candidates"], json!(["colour", "label"]));
}
