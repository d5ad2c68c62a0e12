//! The Open Inference Protocol v2 on deployments: health and metadata, inference that
//! equals the native predict route (JSON and binary tensors, both input forms, binary
//! outputs), every bad request answered 400 with the protocol's `{"error": "..."}`, team
//! isolation, roles, and `versions/{v}` on a canary split.

use std::sync::OnceLock;

use kiln_api::serving::ServingArgs;
use kiln_db::repo::models::{self, NewVersion};
use kiln_store::{ArtifactStore, Team};
use reqwest::{Method, Response};
use serde_json::{Map, Value, json};

use crate::serving::{deploy, iris_rows, setup};
use crate::{TestApp, TestTeam, example, spawn_app, spawn_app_with};

const IRIS: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

/// A regressor of wine's `alcohol` from the other measures and the categorical `cultivar`
/// (missing inputs imputed), trained once per test binary.
fn wine_regressor() -> &'static [u8] {
    static BUNDLE: OnceLock<Vec<u8>> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        kiln_ml::set_num_threads(1);
        let dataset = kiln_ml::Dataset::from_csv_bytes(&example("wine.csv")).unwrap();
        let spec = kiln_types::JobSpec::parse(&json!({
            "dataset_id": "0190a9c1-8f6e-7b3a-9c2d-1e2f3a4b5c6d",
            "task": "regression", "target": "alcohol",
            "model": {"type": "mlp", "hidden": [16]},
            "preprocessing": {"missing": "impute"},
            "hyperparameters": {"epochs": 20, "batch_size": 16, "learning_rate": 0.01, "seed": 5},
            "device": "cpu",
        }))
        .unwrap();
        let prepared = kiln_ml::prepare(&spec, &dataset).unwrap();
        let options =
            kiln_ml::TrainOptions { device: kiln_ml::DeviceChoice::Cpu, ..Default::default() };
        match kiln_ml::train(&spec, &prepared, &options, &mut kiln_ml::NoObserver, None).unwrap() {
            kiln_ml::TrainOutcome::Completed(model) => model.bundle.to_bytes().unwrap(),
            kiln_ml::TrainOutcome::Stopped { reason, .. } => panic!("stopped: {reason:?}"),
        }
    })
}

/// Wine's rows as native instances (`alcohol` left out; `cultivar` is text).
fn wine_rows() -> Vec<Map<String, Value>> {
    let text = String::from_utf8(example("wine.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|line| {
            header
                .iter()
                .zip(line.split(','))
                .filter(|(name, _)| **name != "alcohol")
                .map(|(name, cell)| {
                    let value = cell.parse::<f64>().map_or_else(|_| json!(cell), |x| json!(x));
                    (name.to_string(), value)
                })
                .collect()
        })
        .collect()
}

impl TestApp {
    /// Registers `bundle` as the next version of `model` (lineage from a job of the team).
    async fn register_bundle(&self, team: &TestTeam, model: &str, bundle: &[u8]) -> i32 {
        let dataset = self.upload(&team.member, "wine", "text/csv", example("wine.csv")).await;
        let job: Value = self
            .post(
                "/v1/jobs",
                &team.member,
                json!({"dataset_id": dataset["id"], "task": "regression", "target": "alcohol",
                       "model": {"type": "mlp", "hidden": [8]}}),
            )
            .await
            .json()
            .await
            .unwrap();
        let store = self.s3.store("kiln").await;
        let info = store
            .put_stream(&Team::parse(team.id.to_string()).unwrap(), &mut &bundle[..])
            .await
            .unwrap();
        let new = NewVersion {
            job_id: job["id"].as_str().unwrap().parse().unwrap(),
            bundle_key: info.key.as_str(),
            bundle_sha256: &info.sha256.to_hex(),
            dataset_sha256: None,
            spec: json!({}),
            metrics: json!({}),
            created_by: None,
        };
        models::register_version(&self.test.db, team.id, model, new).await.unwrap().version
    }

    /// A Prometheus sample's value from `/metrics` (0 when absent).
    async fn oip_metric(&self, line_prefix: &str) -> f64 {
        let text = self.get("/metrics", &self.admin).await.text().await.unwrap();
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    }

    async fn infer(&self, path: &str, token: &str, body: &Value) -> Response {
        self.post(path, token, body.clone()).await
    }

    /// POSTs a binary-framed request: the JSON header, then `tail`.
    async fn infer_binary(&self, path: &str, token: &str, header: &Value, tail: &[u8]) -> Response {
        let mut body = serde_json::to_vec(header).unwrap();
        let n = body.len();
        body.extend_from_slice(tail);
        self.request(Method::POST, path, Some(token))
            .header("Inference-Header-Content-Length", n.to_string())
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

/// Asserts the protocol's error body (exactly `{"error": "<non-empty>"}`, JSON) with
/// `status`; returns the message.
async fn assert_oip_error(res: Response, status: u16) -> String {
    assert_eq!(res.status().as_u16(), status, "status");
    assert_eq!(res.headers()["content-type"], "application/json");
    let body: Value = res.json().await.unwrap();
    let object = body.as_object().unwrap_or_else(|| panic!("not an object: {body}"));
    assert_eq!(object.len(), 1, "only `error`: {body}");
    let message = body["error"].as_str().unwrap_or_else(|| panic!("error is a string: {body}"));
    assert!(!message.is_empty());
    message.to_owned()
}

fn output<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {body}"))
}

/// The native route's predictions for `rows`.
async fn native(app: &TestApp, name: &str, token: &str, rows: &[Map<String, Value>]) -> Vec<Value> {
    let res = app.predict(name, token, rows).await;
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["predictions"].as_array().unwrap().clone()
}

/// Rows with every number rounded to single precision, as an FP32 tensor carries them.
fn rounded(rows: &[Map<String, Value>]) -> Vec<Map<String, Value>> {
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|(k, v)| {
                    let v = v.as_f64().map_or_else(|| v.clone(), |x| json!(f64::from(x as f32)));
                    (k.clone(), v)
                })
                .collect()
        })
        .collect()
}

/// Iris rows as an `[N, 4]` matrix, row-major, in the bundle's feature order.
fn iris_matrix(rows: &[Map<String, Value>]) -> Vec<f64> {
    rows.iter().flat_map(|r| IRIS.map(|f| r[f].as_f64().unwrap())).collect()
}

/// Asserts the OIP answer equals the native one: labels and every class's probability.
fn assert_same_classes(
    labels: &[String],
    probabilities: &[f64],
    native: &[Value],
    classes: &[&str],
) {
    assert_eq!(labels.len(), native.len());
    assert_eq!(probabilities.len(), native.len() * classes.len());
    for (i, want) in native.iter().enumerate() {
        assert_eq!(want["label"], labels[i].as_str(), "row {i}");
        for (c, class) in classes.iter().enumerate() {
            // FP32 on the wire: the native route's f64 is that f32 widened.
            assert_eq!(
                want["probabilities"][class].as_f64().unwrap() as f32,
                probabilities[i * classes.len() + c] as f32,
                "row {i} {class}"
            );
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

const CLASSES: [&str; 3] = ["setosa", "versicolor", "virginica"];

#[tokio::test]
async fn health_and_server_metadata_answer_without_a_token_and_unknown_routes_answer_oip_404s() {
    let app = spawn_app().await;
    let get = |path: &str| app.request(Method::GET, path, None).send();
    let res = get("/v2/health/live").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"live": true}));
    let res = get("/v2/health/ready").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"ready": true}));
    let res = get("/v2").await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], "kiln");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["extensions"].as_array().unwrap().contains(&json!("binary_tensor_data")));

    // Never Kiln's native error body under /v2.
    let message = assert_oip_error(get("/v2/repository/index").await.unwrap(), 404).await;
    assert!(message.contains("/v2/repository/index"), "{message}");
    assert_oip_error(get("/v2/models/iris/config").await.unwrap(), 404).await;
    let res = app.request(Method::DELETE, "/v2/health/live", None).send().await.unwrap();
    assert_oip_error(res, 405).await;
    // Model routes need a token, and answer its absence in the protocol's shape.
    let message = assert_oip_error(get("/v2/models/iris").await.unwrap(), 401).await;
    assert!(message.contains("Authorization"), "{message}");
}

#[tokio::test]
async fn metadata_and_readiness_come_from_the_served_bundle() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    deploy(&app, &team, json!({"name": "iris", "model": "iris", "alias": "production"})).await;
    assert_eq!(app.register_bundle(&team, "wine", wine_regressor()).await, 1);
    deploy(&app, &team, json!({"name": "alcohol", "model": "wine", "version": 1})).await;

    let res = app.get("/v2/models/iris", &team.viewer).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let inputs: Vec<Value> =
        IRIS.iter().map(|f| json!({"name": f, "datatype": "FP32", "shape": [-1]})).collect();
    assert_eq!(
        body,
        json!({
            "name": "iris", "versions": ["1"], "platform": "kiln", "inputs": inputs,
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3],
                 "parameters": {"classes": CLASSES}},
            ],
        })
    );
    let res = app.get("/v2/models/iris/versions/1", &team.viewer).await;
    assert_eq!(res.json::<Value>().await.unwrap(), body);

    let body: Value = app.get("/v2/models/alcohol", &team.viewer).await.json().await.unwrap();
    let inputs = body["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 13, "{body}");
    let cultivar = inputs.iter().find(|i| i["name"] == "cultivar").unwrap();
    assert_eq!(
        *cultivar,
        json!({"name": "cultivar", "datatype": "BYTES", "shape": [-1],
               "parameters": {"categories": ["class_0", "class_1", "class_2"]}})
    );
    assert!(inputs.iter().filter(|i| i["name"] != "cultivar").all(|i| i["datatype"] == "FP32"));
    assert_eq!(body["outputs"], json!([{"name": "value", "datatype": "FP64", "shape": [-1]}]));

    for path in ["/v2/models/iris/ready", "/v2/models/iris/versions/1/ready"] {
        let res = app.get(path, &team.viewer).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.json::<Value>().await.unwrap(), json!({"name": "iris", "ready": true}));
    }
    let message =
        assert_oip_error(app.get("/v2/models/iris/versions/2/ready", &team.viewer).await, 404)
            .await;
    assert!(message.contains("does not serve version 2"), "{message}");
    let message = assert_oip_error(app.get("/v2/models/nope", &team.viewer).await, 404).await;
    assert!(message.contains("`nope`"), "{message}");
}

#[tokio::test]
async fn json_inference_equals_the_native_route_for_both_input_forms() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    deploy(&app, &team, json!({"name": "iris", "model": "iris", "alias": "production"})).await;
    let rows = iris_rows();
    let want = native(&app, "iris", &team.member, &rows).await;

    // One [N, 4] FP64 matrix under any name: the very same numbers as the native JSON.
    let body = json!({"id": "batch-1", "inputs": [{"name": "input-0", "shape": [rows.len(), 4],
        "datatype": "FP64", "data": iris_matrix(&rows)}]});
    let res = app.infer("/v2/models/iris/infer", &team.member, &body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["x-kiln-model-version"], "1");
    let got: Value = res.json().await.unwrap();
    assert_eq!(got["model_name"], "iris");
    assert_eq!(got["model_version"], "1");
    assert_eq!(got["id"], "batch-1");
    let label = output(&got, "label");
    assert_eq!((&label["datatype"], &label["shape"]), (&json!("BYTES"), &json!([150])));
    let probabilities = output(&got, "probabilities");
    assert_eq!(probabilities["datatype"], "FP32");
    assert_eq!(probabilities["shape"], json!([150, 3]));
    assert_same_classes(
        &strings(&label["data"]),
        &numbers(&probabilities["data"]),
        &want,
        &CLASSES,
    );

    // One FP32 tensor per feature, [N, 1] and [N], in any order; only `label` asked for.
    let rounded_rows = rounded(&rows);
    let want32 = native(&app, "iris", &team.member, &rounded_rows).await;
    let inputs: Vec<Value> = IRIS
        .iter()
        .rev()
        .enumerate()
        .map(|(k, f)| {
            let column: Vec<f64> = rows.iter().map(|r| r[*f].as_f64().unwrap()).collect();
            let shape = if k % 2 == 0 { json!([rows.len(), 1]) } else { json!([rows.len()]) };
            json!({"name": f, "shape": shape, "datatype": "FP32", "data": column})
        })
        .collect();
    let body = json!({"inputs": inputs, "outputs": [{"name": "label"}]});
    let got: Value =
        app.infer("/v2/models/iris/infer", &team.member, &body).await.json().await.unwrap();
    assert_eq!(got["outputs"].as_array().unwrap().len(), 1, "{got}");
    assert!(got.get("id").is_none());
    let labels = strings(&output(&got, "label")["data"]);
    let want_labels: Vec<&str> = want32.iter().map(|p| p["label"].as_str().unwrap()).collect();
    assert_eq!(labels, want_labels);

    // INT64 and INT32 numbers are numbers too.
    let ints: Vec<i64> = vec![5, 3, 1, 0, 7, 3, 6, 2];
    let int_rows: Vec<Map<String, Value>> = ints
        .chunks(4)
        .map(|r| IRIS.iter().zip(r).map(|(f, x)| (f.to_string(), json!(*x as f64))).collect())
        .collect();
    let want_ints = native(&app, "iris", &team.member, &int_rows).await;
    for datatype in ["INT64", "INT32"] {
        let body =
            json!({"inputs": [{"name": "x", "shape": [2, 4], "datatype": datatype, "data": ints}]});
        let got: Value =
            app.infer("/v2/models/iris/infer", &team.member, &body).await.json().await.unwrap();
        assert_same_classes(
            &strings(&output(&got, "label")["data"]),
            &numbers(&output(&got, "probabilities")["data"]),
            &want_ints,
            &CLASSES,
        );
    }

    // Triton's classification extension: the top two as `score:index:label`.
    let body = json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
        "data": iris_matrix(&rows[..1])}], "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]});
    let got: Value =
        app.infer("/v2/models/iris/infer", &team.member, &body).await.json().await.unwrap();
    let top = output(&got, "probabilities");
    assert_eq!((&top["datatype"], &top["shape"]), (&json!("BYTES"), &json!([1, 2])));
    let first = top["data"][0].as_str().unwrap();
    let p = want[0]["probabilities"]["setosa"].as_f64().unwrap() as f32;
    assert_eq!(first, format!("{p}:0:setosa"));
}

#[tokio::test]
async fn regression_inference_with_categorical_inputs_equals_the_native_route() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    app.register_bundle(&team, "wine", wine_regressor()).await;
    deploy(&app, &team, json!({"name": "alcohol", "model": "wine", "version": 1})).await;
    let rows = wine_rows();
    let want = native(&app, "alcohol", &team.member, &rows).await;
    let names: Vec<String> = rows[0].keys().cloned().collect();
    let inputs: Vec<Value> = names
        .iter()
        .map(|f| {
            let column: Vec<Value> = rows.iter().map(|r| r[f].clone()).collect();
            let datatype = if f == "cultivar" { "BYTES" } else { "FP64" };
            json!({"name": f, "shape": [rows.len()], "datatype": datatype, "data": column})
        })
        .collect();
    let got: Value = app
        .infer("/v2/models/alcohol/infer", &team.member, &json!({"inputs": inputs}))
        .await
        .json()
        .await
        .unwrap();
    let value = output(&got, "value");
    assert_eq!((&value["datatype"], &value["shape"]), (&json!("FP64"), &json!([178])));
    let want_values: Vec<f64> = want.iter().map(|p| p["value"].as_f64().unwrap()).collect();
    assert_eq!(numbers(&value["data"]), want_values);

    // A missing feature is imputed (the model was trained so), as a missing field is.
    let without: Vec<Map<String, Value>> = rows[..5]
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.remove("hue");
            r
        })
        .collect();
    let want = native(&app, "alcohol", &team.member, &without).await;
    let inputs: Vec<Value> = names
        .iter()
        .filter(|f| *f != "hue")
        .map(|f| {
            let column: Vec<Value> = without.iter().map(|r| r[f].clone()).collect();
            let datatype = if f == "cultivar" { "BYTES" } else { "FP64" };
            json!({"name": f, "shape": [5, 1], "datatype": datatype, "data": column})
        })
        .collect();
    let got: Value = app
        .infer("/v2/models/alcohol/infer", &team.member, &json!({"inputs": inputs}))
        .await
        .json()
        .await
        .unwrap();
    let want_values: Vec<f64> = want.iter().map(|p| p["value"].as_f64().unwrap()).collect();
    assert_eq!(numbers(&output(&got, "value")["data"]), want_values);

    // An unknown category is refused as the native route refuses it.
    let mut bad = inputs.clone();
    let k = bad.iter().position(|i| i["name"] == "cultivar").unwrap();
    bad[k]["data"][2] = json!("class_9");
    let message = assert_oip_error(
        app.infer("/v2/models/alcohol/infer", &team.member, &json!({"inputs": bad})).await,
        400,
    )
    .await;
    assert!(message.contains("row 2, feature `cultivar`: unknown category `class_9`"), "{message}");
}

/// `strings` as BYTES binary data: each a 4-byte little-endian length, then the bytes.
fn bytes_tensor(strings: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in strings {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// `data` as a gzip stream of stored (uncompressed) deflate blocks: what any gzip decoder
/// reads, without a compression library.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let blocks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// A binary response's JSON header and the bytes after it.
async fn binary_response(res: Response) -> (Value, Vec<u8>) {
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    let n: usize =
        res.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let body = res.bytes().await.unwrap();
    (serde_json::from_slice(&body[..n]).unwrap(), body[n..].to_vec())
}

fn read_bytes_tensor(mut bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let n = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        out.push(String::from_utf8(bytes[4..4 + n].to_vec()).unwrap());
        bytes = &bytes[4 + n..];
    }
    out
}

#[tokio::test]
async fn binary_inputs_and_outputs_are_framed_as_tritonclient_frames_them() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    deploy(&app, &team, json!({"name": "iris", "model": "iris", "alias": "production"})).await;
    let rows = iris_rows();
    let want = native(&app, "iris", &team.member, &rounded(&rows)).await;

    // FP32 matrix in binary; every output in binary (what tritonclient asks by default).
    let matrix: Vec<u8> =
        iris_matrix(&rows).iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
    let header = json!({"id": "7", "inputs": [{"name": "INPUT0", "shape": [rows.len(), 4], "datatype": "FP32",
        "parameters": {"binary_data_size": matrix.len()}}], "parameters": {"binary_data_output": true}});
    let (got, tail) = binary_response(
        app.infer_binary("/v2/models/iris/infer", &team.member, &header, &matrix).await,
    )
    .await;
    assert_eq!(got["id"], "7");
    let label = output(&got, "label");
    let label_size = label["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
    assert!(label.get("data").is_none());
    let probabilities = output(&got, "probabilities");
    let probability_size =
        probabilities["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
    assert_eq!(probability_size, 150 * 3 * 4);
    assert_eq!(tail.len(), label_size + probability_size);
    let labels = read_bytes_tensor(&tail[..label_size]);
    let probs: Vec<f64> = tail[label_size..]
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
        .collect();
    assert_same_classes(&labels, &probs, &want, &CLASSES);

    // Mixed: two features in binary (FP32, FP64), two in JSON; one output in binary, one not.
    let column = |f: &str| rows.iter().map(|r| r[f].as_f64().unwrap()).collect::<Vec<f64>>();
    let a: Vec<u8> =
        column("sepal_length").iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
    let b: Vec<u8> = column("petal_width").iter().flat_map(|x| x.to_le_bytes()).collect();
    let n = rows.len();
    let header = json!({"inputs": [
        {"name": "sepal_length", "shape": [n], "datatype": "FP32", "parameters": {"binary_data_size": a.len()}},
        {"name": "sepal_width", "shape": [n], "datatype": "FP32", "data": column("sepal_width")},
        {"name": "petal_width", "shape": [n, 1], "datatype": "FP64", "parameters": {"binary_data_size": b.len()}},
        {"name": "petal_length", "shape": [n], "datatype": "FP32", "data": column("petal_length")},
    ], "outputs": [{"name": "probabilities", "parameters": {"binary_data": false}},
                   {"name": "label", "parameters": {"binary_data": true}}]});
    let mut tail = a.clone();
    tail.extend(&b);
    let mixed_rows: Vec<Map<String, Value>> = rounded(&rows)
        .into_iter()
        .zip(&rows)
        .map(|(mut r, exact)| {
            r.insert("petal_width".into(), exact["petal_width"].clone());
            r
        })
        .collect();
    let want = native(&app, "iris", &team.member, &mixed_rows).await;
    let (got, tail) = binary_response(
        app.infer_binary("/v2/models/iris/infer", &team.member, &header, &tail).await,
    )
    .await;
    assert_eq!(got["outputs"][0]["name"], "probabilities", "in the order asked");
    assert_same_classes(
        &read_bytes_tensor(&tail),
        &numbers(&output(&got, "probabilities")["data"]),
        &want,
        &CLASSES,
    );

    // BYTES inputs in binary, for a categorical feature; gzip-compressed body.
    app.register_bundle(&team, "wine", wine_regressor()).await;
    deploy(&app, &team, json!({"name": "alcohol", "model": "wine", "version": 1})).await;
    let wine = wine_rows();
    let want = native(&app, "alcohol", &team.member, &wine).await;
    let mut inputs = Vec::new();
    let mut tail = Vec::new();
    for f in wine[0].keys() {
        let part = if f == "cultivar" {
            let labels: Vec<&str> = wine.iter().map(|r| r[f].as_str().unwrap()).collect();
            bytes_tensor(&labels)
        } else {
            wine.iter().flat_map(|r| r[f].as_f64().unwrap().to_le_bytes()).collect()
        };
        let datatype = if f == "cultivar" { "BYTES" } else { "FP64" };
        inputs.push(json!({"name": f, "shape": [wine.len()], "datatype": datatype,
            "parameters": {"binary_data_size": part.len()}}));
        tail.extend(part);
    }
    let header =
        serde_json::to_vec(&json!({"inputs": inputs, "outputs": [{"name": "value"}]})).unwrap();
    let mut body = header.clone();
    body.extend(&tail);
    let res = app
        .request(Method::POST, "/v2/models/alcohol/infer", Some(&team.member))
        .header("Inference-Header-Content-Length", header.len().to_string())
        .header("Content-Encoding", "gzip")
        .body(gzip_stored(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got: Value = res.json().await.unwrap();
    let want_values: Vec<f64> = want.iter().map(|p| p["value"].as_f64().unwrap()).collect();
    assert_eq!(numbers(&output(&got, "value")["data"]), want_values);
}

#[tokio::test]
async fn bad_requests_answer_400_with_the_oip_body_naming_the_problem() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    deploy(&app, &team, json!({"name": "iris", "model": "iris", "alias": "production"})).await;
    let infer = "/v2/models/iris/infer";
    let feature = |name: &str, shape: Value, datatype: &str, data: Value| json!({"name": name, "shape": shape, "datatype": datatype, "data": data});
    let all = |skip: &str| -> Vec<Value> {
        IRIS.iter()
            .filter(|f| **f != skip)
            .map(|f| feature(f, json!([1]), "FP32", json!([1.0])))
            .collect()
    };
    let cases: Vec<(Value, &str)> = vec![
        // Shapes.
        (
            json!({"inputs": [feature("x", json!([1, 3]), "FP32", json!([1, 2, 3]))]}),
            "neither a feature of this model nor an [N, 4] matrix",
        ),
        (
            json!({"inputs": [feature("x", json!([2, 4]), "FP32", json!([1, 2, 3, 4, 5, 6, 7]))]}),
            "has 7 elements but its shape [2, 4] holds 8",
        ),
        (
            json!({"inputs": [feature("x", json!([0, 4]), "FP32", json!([]))]}),
            "must hold 1 to 10000 rows, got 0",
        ),
        (
            json!({"inputs": ([vec![feature("sepal_length", json!([1, 2]), "FP32", json!([1, 2]))],
                all("sepal_length")].concat())}),
            "input `sepal_length` has shape [1, 2]; a feature's tensor has shape [N] or [N, 1]",
        ),
        // Datatypes.
        (
            json!({"inputs": [feature("x", json!([1, 4]), "BYTES", json!([1, 2, 3, 4]))]}),
            "datatype BYTES but `data` holds numbers",
        ),
        (
            json!({"inputs": [feature("x", json!([1, 4]), "FP32", json!(["a", "b", "c", "d"]))]}),
            "datatype FP32 but `data` holds strings",
        ),
        (
            json!({"inputs": [feature("x", json!([1, 4]), "COMPLEX", json!([1, 2, 3, 4]))]}),
            "unknown datatype `COMPLEX`",
        ),
        (
            json!({"inputs": [feature("x", json!([1, 4]), "BYTES", json!(["a", "2", "3", "4"]))]}),
            "row 0, feature `sepal_length`: `a` is not a number",
        ),
        // Unknown and missing inputs, unknown outputs.
        (
            json!({"inputs": ([all(""), vec![feature("colour", json!([1]), "FP32", json!([1]))]].concat())}),
            "unknown input `colour`",
        ),
        (json!({"inputs": all("petal_width")}), "missing input for feature `petal_width`"),
        (
            json!({"inputs": [feature("x", json!([1, 4]), "FP32", json!([1, 2, 3, 4]))], "outputs": [{"name": "value"}]}),
            "unknown output `value`: this model's outputs are `label`, `probabilities`",
        ),
        (
            json!({"inputs": [feature("x", json!([1, 4]), "FP32", json!([1, 2, 3, 4]))], "outputs": [{"name": "label", "parameters": {"classification": 1}}]}),
            "`classification` applies to output `probabilities` only",
        ),
        // Protocol features Kiln does not implement are refused, not ignored.
        (
            json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 16}}]}),
            "shared memory is not supported",
        ),
        (json!({"inputs": [feature("x", json!([1, 4]), "FP32", json!([1, 2, 3, 4]))]}), ""),
    ];
    for (body, want) in cases {
        let res = app.infer(infer, &team.member, &body).await;
        if want.is_empty() {
            assert_eq!(res.status(), 200, "the control request");
            continue;
        }
        let message = assert_oip_error(res, 400).await;
        assert!(message.contains(want), "{body}\n→ {message}");
    }
    let invalid = app
        .oip_metric("kiln_predictions_total{deployment=\"iris\",outcome=\"invalid\",team=\"alpha\",version=\"1\"}")
        .await;
    assert!(invalid >= 8.0, "model-level problems count as invalid predictions: {invalid}");

    // Malformed bodies and framing.
    let post = |body: Vec<u8>, headers: Vec<(&'static str, String)>| {
        let mut req = app.request(Method::POST, infer, Some(&team.member)).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let message = assert_oip_error(post(b"{not json".to_vec(), vec![]).await.unwrap(), 400).await;
    assert!(message.contains("malformed inference request"), "{message}");
    let message = assert_oip_error(
        post(b"{}".to_vec(), vec![("Inference-Header-Content-Length", "99".into())]).await.unwrap(),
        400,
    )
    .await;
    assert!(message.contains("Inference-Header-Content-Length is 99"), "{message}");
    let message = assert_oip_error(
        post(b"{}".to_vec(), vec![("Inference-Header-Content-Length", "two".into())])
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(message.contains("must be a byte count"), "{message}");
    let header = json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 12}}]});
    let message =
        assert_oip_error(app.infer_binary(infer, &team.member, &header, &[0u8; 12]).await, 400)
            .await;
    assert!(
        message.contains("binary_data_size is 12 bytes but its shape holds 4 FP32 elements"),
        "{message}"
    );
    let header = json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]});
    let message =
        assert_oip_error(app.infer_binary(infer, &team.member, &header, &[0u8; 24]).await, 400)
            .await;
    assert!(message.contains("8 bytes of binary data follow"), "{message}");
    let message = assert_oip_error(
        post(b"{}".to_vec(), vec![("Content-Encoding", "br".into())]).await.unwrap(),
        400,
    )
    .await;
    assert!(message.contains("Content-Encoding `br` is not supported"), "{message}");
    let message = assert_oip_error(
        post(b"not gzip".to_vec(), vec![("Content-Encoding", "gzip".into())]).await.unwrap(),
        400,
    )
    .await;
    assert!(message.contains("could not be read"), "{message}");
    // Bigger than KILN_MAX_JSON_BYTES (1 MiB in these tests).
    let message = assert_oip_error(post(vec![b' '; 2 << 20], vec![]).await.unwrap(), 413).await;
    assert!(message.contains("larger than"), "{message}");
}

#[tokio::test]
async fn deployments_are_team_scoped_and_infer_needs_the_member_role() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    let other = app.team("beta").await;
    deploy(&app, &team, json!({"name": "iris", "model": "iris", "alias": "production"})).await;
    let body = json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    for path in ["/v2/models/iris", "/v2/models/iris/ready", "/v2/models/iris/versions/1"] {
        let message = assert_oip_error(app.get(path, &other.maintainer).await, 404).await;
        assert!(message.contains("not a deployment of your team"), "{path}: {message}");
    }
    assert_oip_error(app.infer("/v2/models/iris/infer", &other.maintainer, &body).await, 404).await;
    // Same answer as a deployment that does not exist at all.
    assert_oip_error(app.infer("/v2/models/ghost/infer", &team.member, &body).await, 404).await;

    let message =
        assert_oip_error(app.infer("/v2/models/iris/infer", &team.viewer, &body).await, 403).await;
    assert!(message.contains("`member` role"), "{message}");
    assert_eq!(app.get("/v2/models/iris", &team.viewer).await.status(), 200);
    assert_eq!(app.infer("/v2/models/iris/infer", &team.member, &body).await.status(), 200);
    let message =
        assert_oip_error(app.infer("/v2/models/iris/infer", &app.admin, &body).await, 403).await;
    assert!(message.contains("admin tokens belong to no team"), "{message}");
    let res = app
        .request(Method::POST, "/v2/models/iris/infer", Some("kiln_nope"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_oip_error(res, 401).await;
}

#[tokio::test]
async fn versions_answer_from_that_version_when_the_split_serves_it() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    deploy(&app, &team, json!({"name": "iris", "model": "iris", "alias": "production"})).await;
    let res = app
        .patch(
            "/v1/deployments/iris",
            &team.maintainer,
            json!({"traffic": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let meta: Value = app.get("/v2/models/iris", &team.viewer).await.json().await.unwrap();
    assert_eq!(meta["versions"], json!(["1", "2"]));

    let rows = iris_rows();
    let body = json!({"inputs": [{"name": "x", "shape": [150, 4], "datatype": "FP64", "data": iris_matrix(&rows)}]});
    let mut answers = Vec::new();
    for v in [1, 2] {
        let res =
            app.infer(&format!("/v2/models/iris/versions/{v}/infer"), &team.member, &body).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-kiln-model-version"], v.to_string().as_str());
        let got: Value = res.json().await.unwrap();
        assert_eq!(got["model_version"], v.to_string());
        answers.push(numbers(&output(&got, "probabilities")["data"]));
        let res = app.get(&format!("/v2/models/iris/versions/{v}/ready"), &team.viewer).await;
        assert_eq!(res.status(), 200);
    }
    assert_ne!(answers[0], answers[1], "two different models answered");
    // Each version's answer is what the native route answers when it picks that version.
    let mut seen = [false, false];
    for _ in 0..200 {
        let res = app.predict("iris", &team.member, &rows).await;
        let v = res.headers()["x-kiln-model-version"].to_str().unwrap().parse::<usize>().unwrap();
        if seen[v - 1] {
            continue;
        }
        seen[v - 1] = true;
        let predictions: Value = res.json().await.unwrap();
        for (i, p) in predictions["predictions"].as_array().unwrap().iter().enumerate() {
            for (c, class) in CLASSES.iter().enumerate() {
                assert_eq!(
                    p["probabilities"][class].as_f64().unwrap() as f32,
                    answers[v - 1][i * 3 + c] as f32
                );
            }
        }
        if seen == [true, true] {
            break;
        }
    }
    assert_eq!(seen, [true, true], "the split routed to both versions");

    let message = assert_oip_error(
        app.infer("/v2/models/iris/versions/3/infer", &team.member, &body).await,
        404,
    )
    .await;
    assert!(
        message.contains("deployment `iris` does not serve version 3 (it serves 1, 2)"),
        "{message}"
    );
    let message = assert_oip_error(
        app.infer("/v2/models/iris/versions/latest/infer", &team.member, &body).await,
        404,
    )
    .await;
    assert!(message.contains("versions are positive integers"), "{message}");
    assert_oip_error(app.get("/v2/models/iris/versions/3", &team.viewer).await, 404).await;
}

#[tokio::test]
async fn oip_requests_share_the_native_engines_metrics_sample_and_overload() {
    let app = spawn_app_with(ServingArgs {
        sample_rate: 1.0,
        samples_per_second: 0.0,
        queue_capacity: 1,
        ..ServingArgs::defaults()
    })
    .await;
    let team = setup(&app).await;
    let created = deploy(
        &app,
        &team,
        json!({"name": "iris", "model": "iris", "version": 1,
               "batching": {"max_batch_size": 1, "max_wait_ms": 0}}),
    )
    .await;
    let id: uuid::Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let rows = iris_rows();
    let body = json!({"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": iris_matrix(&rows[..3])}]});
    assert_eq!(app.infer("/v2/models/iris/infer", &team.member, &body).await.status(), 200);
    let ok = app
        .oip_metric("kiln_predictions_total{deployment=\"iris\",outcome=\"ok\",team=\"alpha\",version=\"1\"}")
        .await;
    assert_eq!(ok, 1.0);

    // The drift sample holds the OIP rows as the native instances they are.
    let mut stored = Vec::new();
    for _ in 0..50 {
        stored =
            kiln_db::repo::deployments::recent_inputs(&app.test.db, id, Some(1), 10).await.unwrap();
        stored.reverse();
        if stored.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let want: Vec<Value> = rows[..3].iter().map(|r| Value::Object(r.clone())).collect();
    assert_eq!(stored, want);

    // Overload: big requests at a queue of one; refusals are 503 in the OIP shape.
    let big: Vec<_> = rows.iter().cycle().take(5000).cloned().collect();
    let body = json!({"inputs": [{"name": "x", "shape": [5000, 4], "datatype": "FP64", "data": iris_matrix(&big)}]});
    let answers = futures::future::join_all(
        (0..40).map(|_| app.infer("/v2/models/iris/infer", &team.member, &body)),
    )
    .await;
    let (mut ok, mut overloaded) = (0, 0);
    for res in answers {
        match res.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(res.headers()["retry-after"], "1");
                let message = assert_oip_error(res, 503).await;
                assert!(message.contains("too many requests queued"), "{message}");
                overloaded += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 1 && overloaded >= 1, "ok {ok}, overloaded {overloaded}");
}
