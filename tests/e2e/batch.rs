//! Batch predictions through the real binaries: a trained and registered Iris model scores
//! a CSV with an id column and two bad rows; the output equals what a deployment of the
//! same version answers for the same rows, the bad rows are reported and left out, and the
//! CLI creates, follows and downloads it. Then a worker is `kill -9`ed mid-way through a
//! 200,000-row input: the next worker resumes after the last stored part, and every row
//! appears in the output exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::platform::{self, Platform};

/// Trains Iris (a few epochs) and registers it as `iris` v1; returns the maintainer token.
async fn registered_iris(p: &Platform) -> String {
    let platform::DemoTeam { token, dataset, .. } = p.team_with_iris().await;
    let spec = json!({
        "dataset_id": dataset["id"], "task": "classification", "target": "species",
        "model": {"type": "mlp", "hidden": [16]},
        "hyperparameters": {"epochs": 15, "batch_size": 16, "learning_rate": 0.02, "seed": 7}
    });
    let job: Value = p.post(&token, "/v1/jobs", spec).await;
    let job_id = job["id"].as_str().unwrap().to_owned();
    wait_state(p, &token, &format!("/v1/jobs/{job_id}"), "succeeded", 600).await;
    let version: Value =
        p.post(&token, "/v1/models/iris/versions", json!({"job_id": job_id})).await;
    assert_eq!(version["version"], 1);
    token
}

async fn wait_state(p: &Platform, token: &str, path: &str, want: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v: Value = p.get(token, path).await;
        let state = v["state"].as_str().unwrap_or_default().to_owned();
        if state == want {
            return v;
        }
        assert!(
            !matches!(state.as_str(), "succeeded" | "failed" | "cancelled"),
            "{path} ended {state}, not {want}: {v}\n{}",
            p.logs()
        );
        assert!(Instant::now() < deadline, "{path} is still {state}: {v}\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn upload(p: &Platform, token: &str, name: &str, csv: String) -> String {
    let res = p
        .http
        .post(format!("{}/v1/datasets?name={name}", p.api))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Iris's feature rows (no label), as `(id, [4 values as text])`.
fn iris_rows() -> Vec<Vec<String>> {
    let text = String::from_utf8(platform::iris_csv()).unwrap();
    text.lines().skip(1).map(|l| l.split(',').take(4).map(str::to_owned).collect()).collect()
}

async fn output(p: &Platform, token: &str, id: &str, query: &str) -> String {
    let res = p
        .http
        .get(format!("{}/v1/batch-predictions/{id}/output{query}", p.api))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    res.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_prediction_equals_the_deployments_answers_and_reports_bad_rows() {
    let p = Platform::start().await;
    let token = registered_iris(&p).await;
    let rows = iris_rows();
    let mut csv = String::from("sepal_length,sepal_width,petal_length,petal_width,id\n");
    for (i, r) in rows.iter().enumerate() {
        match i {
            7 => csv.push_str(&format!("{},oops,{},{},row-{i}\n", r[0], r[2], r[3])),
            // (An upload refuses lines of the wrong length, so a missing value is the other.)
            11 => csv.push_str(&format!("{},{},,{},row-{i}\n", r[0], r[1], r[3])),
            _ => csv.push_str(&format!("{},row-{i}\n", r.join(","))),
        }
    }
    let dataset = upload(&p, &token, "to-score", csv).await;

    // Created, followed and shown through the CLI.
    let done = p.kiln_as(
        &token,
        &[
            "--json",
            "batch-predictions",
            "create",
            "--model",
            "iris",
            "--version",
            "1",
            "--dataset",
            &dataset,
            "--rows-per-part",
            "100",
            "--wait",
        ],
    );
    let done: Value = serde_json::from_str(&done).unwrap();
    assert_eq!(done["state"], "succeeded", "{done}");
    let id = done["id"].as_str().unwrap().to_owned();
    assert_eq!(done["progress"], json!({"rows_done": 150, "rows": 150}));
    assert_eq!(done["bad_rows"], 2);
    let bad = done["bad_row_samples"].as_array().unwrap();
    assert_eq!((bad[0]["row"].as_u64(), bad[0]["field"].as_str()), (Some(7), Some("sepal_width")));
    assert!(bad[0]["error"].as_str().unwrap().contains("`oops` is not a number"), "{bad:?}");
    assert_eq!(
        (bad[1]["row"].as_u64(), bad[1]["field"].as_str()),
        (Some(11), Some("petal_length"))
    );
    assert!(bad[1]["error"].as_str().unwrap().contains("missing value"), "{bad:?}");
    let parts = done["output"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!((parts[0]["first_row"].as_u64(), parts[0]["rows"].as_u64()), (Some(0), Some(100)));
    assert_eq!((parts[1]["first_row"].as_u64(), parts[1]["rows"].as_u64()), (Some(100), Some(50)));
    assert_eq!(done["output"]["predictions"], 148);

    let joined = output(&p, &token, &id, "").await;
    let mut lines = joined.lines();
    let header = lines.next().unwrap();
    assert_eq!(header, "row,id,label,p_setosa,p_versicolor,p_virginica");
    let lines: Vec<&str> = lines.collect();
    assert_eq!(lines.len(), 148, "one line per good row, one header");
    // The parts are the joined output's halves, each with its own header.
    let second = output(&p, &token, &id, "?part=1").await;
    assert!(second.starts_with(header));
    assert_eq!(second.lines().count(), 1 + 50);

    // The same rows through a deployment of the same version: same labels, same
    // probabilities (printed at f32 precision).
    let res = p
        .http
        .post(format!("{}/v1/deployments", p.api))
        .bearer_auth(&token)
        .json(&json!({"name": "iris", "model": "iris", "version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let good: Vec<(usize, &Vec<String>)> =
        rows.iter().enumerate().filter(|(i, _)| *i != 7 && *i != 11).collect();
    let instances: Vec<Value> = good
        .iter()
        .map(|(_, r)| {
            let n: Vec<f64> = r.iter().map(|v| v.parse().unwrap()).collect();
            json!({"sepal_length": n[0], "sepal_width": n[1], "petal_length": n[2],
                   "petal_width": n[3]})
        })
        .collect();
    let answer: Value =
        p.post(&token, "/v1/deployments/iris/predict", json!({"instances": instances})).await;
    let predictions = answer["predictions"].as_array().unwrap();
    for ((i, _), (line, online)) in good.iter().zip(lines.iter().zip(predictions)) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[0], i.to_string());
        assert_eq!(fields[1], format!("row-{i}"));
        assert_eq!(fields[2], online["label"], "row {i}");
        for (k, label) in ["setosa", "versicolor", "virginica"].iter().enumerate() {
            let offline: f64 = fields[3 + k].parse().unwrap();
            let online = online["probabilities"][label].as_f64().unwrap();
            assert!((offline - online).abs() < 1e-6, "row {i} {label}: {offline} vs {online}");
        }
    }

    // Downloaded through the CLI: the same bytes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.csv");
    let said =
        p.kiln_as(&token, &["batch-predictions", "download", &id, "--to", path.to_str().unwrap()]);
    assert!(said.contains("148 predictions"), "{said}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), joined);
    let listed = p.kiln_as(&token, &["batch-predictions", "list"]);
    assert!(listed.contains(&id) && listed.contains("succeeded"), "{listed}");

    // The job is an ordinary job of the team's queue, with its log.
    let job: Value = p.get(&token, &format!("/v1/jobs/{id}")).await;
    assert_eq!(
        (job["kind"].as_str(), job["state"].as_str()),
        (Some("batch_prediction"), Some("succeeded"))
    );
    let logs: Value = p.get(&token, &format!("/v1/jobs/{id}/logs")).await;
    let text: Vec<&str> =
        logs["items"].as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap()).collect();
    assert!(text.iter().any(|l| l.starts_with("completed: 150 rows scored")), "{text:?}");
    let audit: Value = p.get(&token, "/v1/audit").await;
    assert!(
        audit["items"].as_array().unwrap().iter().any(|e| e["action"] == "batch_prediction.create")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_resumes_after_the_last_stored_part() {
    const ROWS: usize = 200_000;
    let worker_env = [
        ("KILN_LEASE_SECONDS", "2"),
        ("KILN_HEARTBEAT_SECONDS", "0.3"),
        ("KILN_POLL_SECONDS", "0.2"),
        ("KILN_RETRY_BACKOFF_SECONDS", "0"),
        ("KILN_RETRY_BACKOFF_CAP_SECONDS", "0"),
    ];
    let mut p = Platform::start_with(&[], &worker_env).await;
    let token = registered_iris(&p).await;
    let rows = iris_rows();
    let mut csv = String::from("id,sepal_length,sepal_width,petal_length,petal_width\n");
    for i in 0..ROWS {
        csv.push_str(&format!("{i},{}\n", rows[i % rows.len()].join(",")));
    }
    let dataset = upload(&p, &token, "big", csv).await;
    let created: Value = p
        .post(
            &token,
            "/v1/batch-predictions",
            json!({"model": "iris", "version": 1, "dataset_id": dataset, "rows_per_part": 200}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/batch-predictions/{id}");

    // Kill the worker once some parts are stored, well before the end.
    let deadline = Instant::now() + Duration::from_secs(300);
    let at_kill = loop {
        let b: Value = p.get(&token, &path).await;
        let done = b["progress"]["rows_done"].as_u64().unwrap();
        if done >= 1_000 {
            assert_eq!(b["state"], "running", "it ended before the kill: {b}");
            break done;
        }
        assert!(Instant::now() < deadline, "no part stored: {b}\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pid = p.pid("kiln-worker");
    let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    assert!(status.unwrap().success());
    assert!(at_kill < ROWS as u64, "{at_kill}");
    p.spawn_worker("kiln-worker-2", &worker_env);

    let done = wait_state(&p, &token, &path, "succeeded", 600).await;
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(done["progress"], json!({"rows_done": ROWS, "rows": ROWS}));
    assert_eq!(done["bad_rows"], 0);
    // The parts tile the input: contiguous, in order, no overlap.
    let parts = done["output"]["parts"].as_array().unwrap();
    let mut next = 0;
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(part["index"], i);
        assert_eq!(part["first_row"], next, "part {i}");
        next += part["rows"].as_u64().unwrap();
    }
    assert_eq!(next, ROWS as u64);
    let logs: Value = p.get(&token, &format!("/v1/jobs/{id}/logs")).await;
    let resumed =
        logs["items"].as_array().unwrap().iter().any(|l| {
            l["attempt"] == 2 && l["message"].as_str().unwrap().contains("resuming at row")
        });
    assert!(resumed, "the second attempt did not resume: {logs}");

    // Every input row exactly once, with its own id.
    let joined = output(&p, &token, &id, "").await;
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for line in joined.lines().skip(1) {
        let mut fields = line.split(',');
        let row: u64 = fields.next().unwrap().parse().unwrap();
        assert_eq!(fields.next().unwrap(), row.to_string(), "the id column is the row here");
        *seen.entry(row).or_default() += 1;
    }
    assert_eq!(seen.len(), ROWS);
    assert!(seen.values().all(|n| *n == 1), "a row appears twice");
}
