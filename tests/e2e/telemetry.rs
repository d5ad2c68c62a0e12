//! OpenTelemetry end to end: a job submitted with a known `traceparent` yields one trace
//! from the API request through the queue to the worker, received by a real OTLP/HTTP
//! endpoint on 127.0.0.1; and without an endpoint nothing is exported and nothing
//! complains.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kiln_telemetry::testing::{OtlpReceiver, ReceivedSpan};
use serde_json::{Value, json};

use crate::platform::Platform;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const REMOTE_SPAN_ID: &str = "b7ad6b7169203331";
const EPOCHS: u64 = 3;

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{REMOTE_SPAN_ID}-01")
}

/// Submits a small MLP job with our `traceparent` and waits until it succeeded.
/// The trace id a test's prediction continues (its `traceparent` names it).
const PREDICT_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4736";

/// One Iris row predicted by deployment `iris`, continuing trace [`PREDICT_TRACE`]
/// (asserted 200).
async fn predict_in_trace(p: &Platform, token: &str) -> reqwest::Response {
    let res = p
        .http
        .post(format!("{}/v1/deployments/iris/predict", p.api))
        .bearer_auth(token)
        .header("traceparent", format!("00-{PREDICT_TRACE}-{REMOTE_SPAN_ID}-01"))
        .json(&json!({"instances": [{"sepal_length": 5.1, "sepal_width": 3.5,
                                     "petal_length": 1.4, "petal_width": 0.2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res
}

async fn submit_and_wait(p: &Platform, token: &str, dataset: &str) -> Value {
    let spec = json!({
        "dataset_id": dataset, "task": "classification", "target": "species",
        "model": {"type": "mlp", "hidden": [16]},
        "hyperparameters": {
            "epochs": EPOCHS, "batch_size": 16, "learning_rate": 0.01, "seed": 7,
            "checkpoint_every_epochs": 1
        }
    });
    let res = p
        .http
        .post(format!("{}/v1/jobs", p.api))
        .bearer_auth(token)
        .header("traceparent", traceparent())
        .json(&spec)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let job: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let job: Value = p.get(token, &format!("/v1/jobs/{job_id}")).await;
        match job["state"].as_str().unwrap() {
            "succeeded" => return job,
            "failed" | "cancelled" => panic!("job ended {job}\n{}", p.logs()),
            _ => {}
        }
        assert!(Instant::now() < deadline, "job did not finish: {job}\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Spans of the worker's job, once every stage has arrived.
async fn wait_for_worker_spans(receiver: &OtlpReceiver, p: &Platform) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let spans = receiver.spans();
        let has = |name: &str| spans.iter().any(|s| s.service == "kiln-worker" && s.name == name);
        if has("kiln.job") && has("kiln.job.complete") && has("kiln.job.claim") {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "the worker's spans did not arrive: {:?}\n{}",
            spans.iter().map(|s| (&s.service, &s.name)).collect::<Vec<_>>(),
            p.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn one<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> =
        spans.iter().filter(|s| s.service == service && s.name == name).collect();
    assert_eq!(found.len(), 1, "exactly one {service} span {name}: {found:#?}");
    found[0]
}

/// The span tree as indented lines, for failure messages and the docs' sample trace.
fn render_tree(spans: &[ReceivedSpan]) -> String {
    let mut children: BTreeMap<&str, Vec<&ReceivedSpan>> = BTreeMap::new();
    for span in spans {
        children.entry(span.parent_span_id.as_str()).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_unix_nano);
    }
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut roots: Vec<&ReceivedSpan> =
        spans.iter().filter(|s| !ids.contains(s.parent_span_id.as_str())).collect();
    roots.sort_by_key(|s| s.start_unix_nano);
    let t0 = roots.first().map_or(0, |s| s.start_unix_nano);
    let mut out = String::new();
    fn walk(
        span: &ReceivedSpan,
        depth: usize,
        t0: u64,
        children: &BTreeMap<&str, Vec<&ReceivedSpan>>,
        out: &mut String,
    ) {
        let ms = |ns: u64| ns.saturating_sub(t0) as f64 / 1e6;
        let shown: Vec<String> = span
            .attributes
            .iter()
            .filter(|(k, _)| !k.starts_with("otel.") && *k != "trace_id")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!(
            "{:indent$}{} [{}] +{:.1}ms {:.1}ms {}\n",
            "",
            span.name,
            span.service,
            ms(span.start_unix_nano),
            (span.end_unix_nano.saturating_sub(span.start_unix_nano)) as f64 / 1e6,
            shown.join(" "),
            indent = depth * 2
        ));
        for child in children.get(span.span_id.as_str()).into_iter().flatten() {
            walk(child, depth + 1, t0, children, out);
        }
    }
    for root in roots {
        walk(root, 0, t0, &children, &mut out);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_request_through_the_queue_to_the_worker() {
    let receiver = OtlpReceiver::start();
    let endpoint = receiver.endpoint();
    // The API exports within 200 ms. The worker would wait ten minutes: it runs one job and
    // exits, so its spans and metrics arrive only through the final flush of its guard.
    let mut p = Platform::start_with(
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "600000"),
            ("KILN_WORKER_MAX_JOBS", "1"),
        ],
    )
    .await;
    let demo = p.team_with_iris().await;
    let (admin, token) = (demo.admin, demo.token);
    let dataset = demo.dataset["id"].as_str().unwrap().to_owned();
    let job = submit_and_wait(&p, &token, &dataset).await;
    let job_id = job["id"].as_str().unwrap();
    assert!(p.wait_for_exit("kiln-worker", Duration::from_secs(60)).await, "{}", p.logs());

    let spans = wait_for_worker_spans(&receiver, &p).await;
    let trace: Vec<ReceivedSpan> =
        spans.iter().filter(|s| s.trace_id == TRACE_ID).cloned().collect();
    let tree = render_tree(&trace);
    println!("{tree}");

    // The API: a server span continuing our traceparent, the submission under it.
    let server = trace
        .iter()
        .find(|s| s.service == "kiln-api" && s.name == "POST /v1/jobs")
        .unwrap_or_else(|| panic!("no server span for the submission:\n{tree}"));
    assert_eq!(server.parent_span_id, REMOTE_SPAN_ID);
    assert_eq!(server.kind, 2, "a server span");
    assert_eq!(server.attribute("http.route"), Some("/v1/jobs"));
    assert_eq!(server.attribute("http.response.status_code"), Some("201"));
    let submit = one(&trace, "kiln-api", "kiln.job.submit");
    assert_eq!(submit.parent_span_id, server.span_id);
    assert_eq!(submit.attribute("job.id"), Some(job_id));

    // The worker continues the trace the job row carried.
    let job_span = one(&trace, "kiln-worker", "kiln.job");
    assert_eq!(job_span.parent_span_id, submit.span_id, "{tree}");
    assert_eq!(job_span.attribute("job.id"), Some(job_id));
    assert_eq!(job_span.attribute("team.id"), job["team_id"].as_str());
    assert_eq!(job_span.attribute("model.type"), Some("mlp"));
    assert_eq!(job_span.attribute("device"), Some("cpu"));
    assert_eq!(job_span.attribute("job.attempt"), Some("1"));
    assert_eq!(job_span.attribute("job.outcome"), Some("succeeded"));
    for stage in [
        "kiln.job.claim",
        "kiln.job.dataset.download",
        "kiln.job.train",
        "kiln.job.bundle.upload",
        "kiln.job.complete",
    ] {
        let span = one(&trace, "kiln-worker", stage);
        assert_eq!(span.parent_span_id, job_span.span_id, "{stage} under kiln.job:\n{tree}");
        assert_eq!(span.attribute("job.id"), Some(job_id), "{stage}");
    }
    let download = one(&trace, "kiln-worker", "kiln.job.dataset.download");
    assert_eq!(download.attribute("cache.hit"), Some("false"));
    let checkpoints: Vec<&ReceivedSpan> =
        trace.iter().filter(|s| s.name == "kiln.job.checkpoint.upload").collect();
    assert!(!checkpoints.is_empty(), "{tree}");
    assert!(checkpoints.iter().all(|s| s.parent_span_id == job_span.span_id), "{tree}");
    let train = one(&trace, "kiln-worker", "kiln.job.train");
    let mut epochs: Vec<String> = trace
        .iter()
        .filter(|s| s.name == "kiln.job.epoch")
        .inspect(|s| assert_eq!(s.parent_span_id, train.span_id, "{tree}"))
        .map(|s| s.attribute("epoch").unwrap().to_owned())
        .collect();
    epochs.sort();
    assert_eq!(epochs, ["1", "2", "3"], "{tree}");

    // Serving: the job's model, deployed and asked with another known traceparent. The
    // request's spans continue that trace; the batch span that ran it links to it.
    let res = p
        .http
        .post(format!("{}/v1/models/iris/versions", p.api))
        .bearer_auth(&token)
        .json(&json!({"job_id": job_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = p
        .http
        .post(format!("{}/v1/deployments", p.api))
        .bearer_auth(&token)
        .json(&json!({"name": "iris", "model": "iris", "version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let predict_trace = PREDICT_TRACE;
    predict_in_trace(&p, &token).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (predict, batch) = loop {
        let spans = receiver.spans();
        let predict = spans.iter().find(|s| s.name == "kiln.serving.predict").cloned();
        let batch = spans.iter().find(|s| s.name == "kiln.serving.batch").cloned();
        if let (Some(predict), Some(batch)) = (predict, batch) {
            break (predict, batch);
        }
        assert!(Instant::now() < deadline, "no serving spans arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let server = receiver
        .spans()
        .into_iter()
        .find(|s| s.name == "POST /v1/deployments/{name}/predict")
        .expect("a server span for the prediction");
    assert_eq!(server.trace_id, predict_trace);
    assert_eq!(server.parent_span_id, REMOTE_SPAN_ID);
    assert_eq!(
        (predict.trace_id.as_str(), predict.parent_span_id.as_str()),
        (predict_trace, server.span_id.as_str())
    );
    assert_eq!(predict.attribute("deployment"), Some("iris"));
    assert_eq!(predict.attribute("model.version"), Some("1"));
    assert_eq!(batch.attribute("rows"), Some("1"));
    assert!(
        batch.links.contains(&(predict_trace.to_owned(), predict.span_id.clone())),
        "the batch span links the request it served: {batch:?}"
    );
    let spans = receiver.spans();

    // No secret and no dataset content in any span.
    let iris_labels = ["setosa", "versicolor", "virginica"];
    for span in &spans {
        for (key, value) in &span.attributes {
            assert!(!value.contains(&token) && !value.contains(&admin), "a token in {key}");
            assert!(!key.to_lowercase().contains("authorization"), "{key}");
            for label in iris_labels {
                assert!(!value.contains(label), "dataset content in {}: {key}={value}", span.name);
            }
        }
    }

    // Log lines carry the trace id.
    assert!(p.log_of("kiln-worker").contains(TRACE_ID), "{}", p.log_of("kiln-worker"));

    // The worker's metrics, flushed at exit; the API's queue depth in Prometheus.
    let names: Vec<String> = receiver
        .metrics()
        .into_iter()
        .filter(|m| m.service == "kiln-worker")
        .map(|m| m.name)
        .collect();
    for name in kiln_telemetry::metrics::ALL {
        assert!(names.iter().any(|n| n == name), "{name} not exported: {names:?}");
    }
    let prometheus =
        p.http.get(format!("{}/metrics", p.api)).bearer_auth(&admin).send().await.unwrap();
    let prometheus = prometheus.text().await.unwrap();
    assert!(
        prometheus.contains(r#"kiln_queue_jobs{state="succeeded",team="demo"} 1"#),
        "{prometheus}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_nothing_complains() {
    // Where an exporter would go by default, were one built: nothing may arrive there.
    let default_endpoint = OtlpReceiver::start_on("127.0.0.1:4318").ok();
    let mut p = Platform::start_with(
        &[("RUST_LOG", "info,kiln_api=debug")],
        &[("KILN_WORKER_MAX_JOBS", "1")],
    )
    .await;
    let demo = p.team_with_iris().await;
    let (token, dataset) = (demo.token, demo.dataset["id"].as_str().unwrap().to_owned());
    let job = submit_and_wait(&p, &token, &dataset).await;
    // The worker ends by itself: its telemetry guard shuts down with nothing to flush.
    assert!(p.wait_for_exit("kiln-worker", Duration::from_secs(60)).await, "{}", p.logs());

    // Serving without an exporter: no `kiln.serving.*` span is made (nothing could see
    // it), yet the prediction is answered and its request's log line has the trace id.
    let version = p.post(&token, "/v1/models/iris/versions", json!({"job_id": job["id"]})).await;
    assert_eq!(version["version"], 1, "{version}");
    let deployment = p
        .post(&token, "/v1/deployments", json!({"name": "iris", "model": "iris", "version": 1}))
        .await;
    assert_eq!(deployment["status"], "ready", "{deployment}");
    let predict_trace = PREDICT_TRACE;
    let res = predict_in_trace(&p, &token).await;
    let answer: Value = res.json().await.unwrap();
    let labels = ["setosa", "versicolor", "virginica"];
    let label = answer["predictions"][0]["label"].as_str().unwrap_or_default();
    assert!(labels.contains(&label), "{answer}");
    let api_log = p.log_of("kiln-api");
    // (Field names and values are separated by colour codes: match the values alone.)
    let predict_line = api_log
        .lines()
        .find(|l| l.contains("/v1/deployments/iris/predict") && l.contains("request finished"))
        .unwrap_or_else(|| panic!("no line for the predict request:\n{api_log}"));
    assert!(predict_line.contains(predict_trace), "{predict_line}");
    // The span's trace-view name is built only for an exporter.
    assert!(!api_log.contains("otel.name"), "{api_log}");

    for name in ["kiln-api", "kiln-worker"] {
        let log = p.log_of(name);
        let complaints: Vec<&str> = log
            .lines()
            .filter(|l| {
                let l = l.to_lowercase();
                l.contains("opentelemetry") || l.contains("otlp") || l.contains("export")
            })
            .collect();
        assert!(complaints.is_empty(), "{name} complains: {complaints:#?}");
        // Tracing still works without an exporter: the request's trace id is in both logs.
        assert!(log.contains(TRACE_ID), "{name}'s log lines lack the trace id:\n{log}");
    }
    if let Some(receiver) = default_endpoint {
        assert_eq!(receiver.requests(), Vec::<String>::new());
    }
}
