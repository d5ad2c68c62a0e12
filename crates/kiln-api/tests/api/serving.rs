//! Serving: deployments, predictions that equal the offline bundle's, 422s for bad input,
//! canary splits, hot swaps under load, overload, drift, and a serving-only replica.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kiln_api::serving::ServingArgs;
use kiln_db::repo::models::{self, NewVersion};
use kiln_ml::ModelBundle;
use kiln_store::{ArtifactStore, Team};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::{TestApp, TestTeam, assert_error, example, spawn_app, spawn_app_with};

/// Two Iris classifiers that differ (hidden width and seed), trained once per test binary.
fn bundles() -> &'static [Vec<u8>; 2] {
    static BUNDLES: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    BUNDLES.get_or_init(|| {
        kiln_ml::set_num_threads(1);
        let csv = example("iris.csv");
        [(16, 7), (8, 11)].map(|(hidden, seed)| {
            kiln_ml::testing::train_csv_bundle(&csv, "species", &[hidden], 40, seed)
        })
    })
}

/// Iris rows as prediction instances (without the label).
pub(crate) fn iris_rows() -> Vec<Map<String, Value>> {
    kiln_ml::testing::csv_instances(&example("iris.csv"), "species")
}

impl TestApp {
    /// Registers bundle `which` as the next version of `model` (via a real job of the team)
    /// and returns its number.
    pub(crate) async fn register(&self, team: &TestTeam, model: &str, which: usize) -> i32 {
        let dataset = self.upload(&team.member, "iris", "text/csv", example("iris.csv")).await;
        let job: Value = self
            .post(
                "/v1/jobs",
                &team.member,
                json!({"dataset_id": dataset["id"], "task": "classification", "target": "species",
                       "model": {"type": "mlp", "hidden": [8]}}),
            )
            .await
            .json()
            .await
            .unwrap();
        let store = self.s3.store("kiln").await;
        let bytes = &bundles()[which];
        let info = store
            .put_stream(&Team::parse(team.id.to_string()).unwrap(), &mut bytes.as_slice())
            .await
            .unwrap();
        let version = models::register_version(
            &self.test.db,
            team.id,
            model,
            NewVersion {
                job_id: job["id"].as_str().unwrap().parse().unwrap(),
                bundle_key: info.key.as_str(),
                bundle_sha256: &info.sha256.to_hex(),
                dataset_sha256: None,
                spec: json!({}),
                metrics: json!({}),
                created_by: None,
            },
        )
        .await
        .unwrap();
        version.version
    }

    pub(crate) async fn put(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.request(Method::PUT, path, Some(token)).json(&body).send().await.unwrap()
    }

    pub(crate) async fn patch(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.request(Method::PATCH, path, Some(token)).json(&body).send().await.unwrap()
    }

    pub(crate) async fn predict(
        &self,
        name: &str,
        token: &str,
        rows: &[Map<String, Value>],
    ) -> reqwest::Response {
        self.post(&format!("/v1/deployments/{name}/predict"), token, json!({"instances": rows}))
            .await
    }

    async fn metric(&self, line_prefix: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    }
}

/// A team with model `iris` v1 (and v2) and `production` → v1.
pub(crate) async fn setup(app: &TestApp) -> TestTeam {
    let team = app.team("alpha").await;
    assert_eq!(app.register(&team, "iris", 0).await, 1);
    assert_eq!(app.register(&team, "iris", 1).await, 2);
    let res = app
        .put("/v1/models/iris/aliases/production", &team.maintainer, json!({"version": 1}))
        .await;
    assert_eq!(res.status(), 200);
    team
}

/// An app that samples every predicted row (at most `per_second` a second per deployment,
/// 0: no cap), with the team of [`setup`].
async fn sampling_every_row(per_second: f64) -> (TestApp, TestTeam) {
    let app = spawn_app_with(ServingArgs {
        sample_rate: 1.0,
        samples_per_second: per_second,
        ..ServingArgs::defaults()
    })
    .await;
    let team = setup(&app).await;
    (app, team)
}

/// The drift report of deployment `name` over its last `window` samples.
async fn drift(app: &TestApp, team: &TestTeam, name: &str, window: u32) -> Value {
    let path = format!("/v1/deployments/{name}/drift?window={window}");
    app.get(&path, &team.viewer).await.json().await.unwrap()
}

pub(crate) async fn deploy(app: &TestApp, team: &TestTeam, body: Value) -> Value {
    let res = app.post("/v1/deployments", &team.maintainer, body).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

#[tokio::test]
async fn predictions_equal_the_offline_bundle_and_a_second_load_downloads_nothing() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    let created =
        deploy(&app, &team, json!({"name": "iris-prod", "model": "iris", "alias": "production"}))
            .await;
    assert_eq!(created["status"], "ready");
    assert_eq!(created["traffic"], json!([{"version": 1, "weight": 100}]));
    assert_eq!(created["versions_loaded"][0]["version"], 1);
    assert_eq!(created["versions_loaded"][0]["device"], "cpu");
    assert_eq!(created["batching"], json!({"max_batch_size": 64, "max_wait_ms": 2}));

    let rows = iris_rows();
    let res = app.predict("iris-prod", &team.member, &rows).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-kiln-model-version"], "1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["model_version"], 1);
    assert_eq!(body["deployment"], "iris-prod");

    let offline =
        ModelBundle::from_bytes(&bundles()[0]).unwrap().load(kiln_ml::DeviceChoice::Cpu).unwrap();
    let expected = offline.predict(&rows).unwrap();
    let served = body["predictions"].as_array().unwrap();
    assert_eq!(served.len(), expected.len());
    let mut correct = 0;
    for (i, (got, want)) in served.iter().zip(&expected).enumerate() {
        let kiln_ml::Prediction::Class { label, probabilities } = want else { panic!("a class") };
        assert_eq!(got["label"], json!(label), "row {i}");
        for (class, p) in probabilities {
            let served_p = got["probabilities"][class].as_f64().unwrap();
            assert!((served_p - p).abs() < 1e-6, "row {i} {class}: {served_p} vs {p}");
        }
        correct += usize::from(*label == ["setosa", "versicolor", "virginica"][i / 50]);
    }
    assert!(correct >= 130, "only {correct}/150 right: a model that learned nothing?");

    // The same bundle under a second deployment comes from the local cache (memory while a
    // load holds it, else disk): nothing is downloaded again.
    let store = "kiln_serving_bundle_loads_total{source=\"store\"}";
    let cached = || async {
        app.metric("kiln_serving_bundle_loads_total{source=\"memory\"}").await
            + app.metric("kiln_serving_bundle_loads_total{source=\"disk\"}").await
    };
    assert_eq!(app.metric(store).await, 1.0);
    let before = cached().await;
    deploy(&app, &team, json!({"name": "iris-pinned", "model": "iris", "version": 1})).await;
    assert_eq!(app.metric(store).await, 1.0);
    assert!(cached().await >= before + 2.0, "the check and the load both hit the cache");

    // Per-deployment metrics.
    let ok = app
        .metric("kiln_predictions_total{deployment=\"iris-prod\",outcome=\"ok\",team=\"alpha\",version=\"1\"}")
        .await;
    assert_eq!(ok, 1.0);
    let rows_hist = app
        .metric("kiln_prediction_batch_rows_count{deployment=\"iris-prod\",team=\"alpha\",version=\"1\"}")
        .await;
    assert_eq!(rows_hist, 1.0);

    // Listing, reading and deleting.
    let list: Value = app.get("/v1/deployments", &team.viewer).await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let res = app
        .request(Method::DELETE, "/v1/deployments/iris-pinned", Some(&team.maintainer))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_error(app.predict("iris-pinned", &team.member, &rows[..1]).await, 404, "not_found")
        .await;
    assert_error(app.get("/v1/deployments/iris-pinned", &team.viewer).await, 404, "not_found")
        .await;
}

#[tokio::test]
async fn bad_requests_answer_specific_errors() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    let other = app.team("beta").await;

    // Creation.
    let err = assert_error(
        app.post(
            "/v1/deployments",
            &team.maintainer,
            json!({"name": "Bad Name", "model": "iris", "alias": "production", "version": 1}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    let fields = &err["error"]["details"]["fields"];
    assert!(fields["name"].is_string() && fields["alias"].is_string(), "{err}");
    let err = assert_error(
        app.post(
            "/v1/deployments",
            &team.maintainer,
            json!({"name": "x", "model": "nope", "alias": "production"}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert!(err["error"]["details"]["fields"]["model"].as_str().unwrap().contains("nope"));
    let err = assert_error(
        app.post(
            "/v1/deployments",
            &team.maintainer,
            json!({"name": "x", "model": "iris", "alias": "staging"}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert!(err["error"]["details"]["fields"]["alias"].as_str().unwrap().contains("staging"));
    assert_error(
        app.post(
            "/v1/deployments",
            &team.maintainer,
            json!({"name": "x", "model": "iris", "version": 9}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    let err = assert_error(
        app.post("/v1/deployments", &team.maintainer,
            json!({"name": "x", "model": "iris", "version": 1, "batching": {"max_batch_size": 0, "max_wait_ms": 5000}})).await,
        422, "validation_failed").await;
    assert_eq!(err["error"]["details"]["fields"].as_object().unwrap().len(), 2, "{err}");
    assert_error(
        app.post(
            "/v1/deployments",
            &team.member,
            json!({"name": "x", "model": "iris", "version": 1}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    deploy(&app, &team, json!({"name": "iris", "model": "iris", "version": 1})).await;
    assert_error(
        app.post(
            "/v1/deployments",
            &team.maintainer,
            json!({"name": "iris", "model": "iris", "version": 2}),
        )
        .await,
        409,
        "already_exists",
    )
    .await;

    // Prediction: every bad field of every instance is named.
    let err = assert_error(
        app.predict("iris", &team.member, &[
            json!({"sepal_length": 5.1, "sepal_width": "wide", "petal_length": 1.4, "petal_width": 0.2}).as_object().unwrap().clone(),
            json!({"sepal_length": 5.1, "petal_length": [1], "petal_width": 0.2}).as_object().unwrap().clone(),
        ]).await,
        422, "validation_failed").await;
    let fields = err["error"]["details"]["fields"].as_object().unwrap();
    assert!(fields["instances[0].sepal_width"].as_str().unwrap().contains("not a number"), "{err}");
    assert!(fields["instances[1].sepal_width"].as_str().unwrap().contains("missing"), "{err}");
    assert!(fields.contains_key("instances[1].petal_length"), "{err}");
    assert_eq!(fields.len(), 3, "{err}");
    assert_error(app.predict("iris", &team.member, &[]).await, 422, "validation_failed").await;
    let res = app
        .request(Method::POST, "/v1/deployments/iris/predict", Some(&team.member))
        .header("content-type", "application/json")
        .body("{\"instances\": 3}")
        .send()
        .await
        .unwrap();
    assert!(res.status() == 400 || res.status() == 422, "{}", res.status());
    assert_error(app.predict("iris", &team.viewer, &iris_rows()[..1]).await, 403, "forbidden")
        .await;
    assert_error(app.predict("iris", &other.member, &iris_rows()[..1]).await, 404, "not_found")
        .await;
    assert_error(app.predict("iris", "kiln_nope", &iris_rows()[..1]).await, 401, "unauthenticated")
        .await;

    // Traffic changes.
    let err = assert_error(
        app.patch("/v1/deployments/iris", &team.maintainer,
            json!({"traffic": [{"version": 1, "weight": 50}, {"version": 1, "weight": 50}, {"version": 7, "weight": 1}]})).await,
        422, "validation_failed").await;
    let fields = err["error"]["details"]["fields"].as_object().unwrap();
    assert!(
        fields.contains_key("traffic[1].version") && fields.contains_key("traffic[2].version"),
        "{err}"
    );
    assert_error(
        app.patch(
            "/v1/deployments/iris",
            &team.maintainer,
            json!({"traffic": [{"version": 1, "weight": 0}]}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_error(
        app.patch("/v1/deployments/iris", &team.maintainer, json!({})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_error(
        app.patch("/v1/deployments/iris", &other.maintainer, json!({"traffic": []})).await,
        404,
        "not_found",
    )
    .await;

    // Nothing above changed what is served.
    let res = app.predict("iris", &team.member, &iris_rows()[..3]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["model_version"], 1);
}

#[tokio::test]
async fn a_canary_split_sends_each_version_its_share() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    deploy(&app, &team, json!({"name": "iris", "model": "iris", "alias": "production"})).await;
    let res = app
        .patch(
            "/v1/deployments/iris",
            &team.maintainer,
            json!({"traffic": [{"version": 1, "weight": 80}, {"version": 2, "weight": 20}]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["versions_loaded"].as_array().unwrap().len(), 2);

    let row = iris_rows()[..1].to_vec();
    let mut to_v2 = 0;
    let total = 2000;
    for chunk in 0..(total / 50) {
        let answers =
            futures::future::join_all((0..50).map(|_| app.predict("iris", &team.member, &row)))
                .await;
        for res in answers {
            assert_eq!(res.status(), 200, "chunk {chunk}");
            let v = res.json::<Value>().await.unwrap()["model_version"].as_i64().unwrap();
            to_v2 += usize::from(v == 2);
        }
    }
    let share = to_v2 as f64 / total as f64;
    // Binomial(2000, 0.2): sd 0.009; 0.04 is more than four of them.
    assert!((share - 0.2).abs() < 0.04, "v2 got {share}");

    // Rollback: everything to v1 again (an empty split follows the alias).
    let res = app.patch("/v1/deployments/iris", &team.maintainer, json!({"traffic": []})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["traffic"], json!([{"version": 1, "weight": 100}]));
    for _ in 0..20 {
        let res = app.predict("iris", &team.member, &row).await;
        assert_eq!(res.json::<Value>().await.unwrap()["model_version"], 1);
    }
    let audit: Value = app.get("/v1/audit?limit=100", &team.maintainer).await.json().await.unwrap();
    let actions: Vec<&str> =
        audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "deployment.update").count(), 2, "{actions:?}");
    assert!(actions.contains(&"deployment.create"), "{actions:?}");
}

#[tokio::test]
async fn moving_the_alias_hot_swaps_under_load_without_a_failed_request() {
    let app = Arc::new(spawn_app().await);
    let team = setup(&app).await;
    deploy(&app, &team, json!({"name": "iris", "model": "iris", "alias": "production"})).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (app, token, stop) = (app.clone(), team.member.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let rows = iris_rows()[..4].to_vec();
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = app.predict("iris", &token, &rows).await;
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap();
                assert_eq!(status, 200, "a request failed during the swap: {body}");
                seen.push(body["model_version"].as_i64().unwrap());
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = app
        .put("/v1/models/iris/aliases/production", &team.maintainer, json!({"version": 2}))
        .await;
    assert_eq!(res.status(), 200);
    // Once the move has answered, this process serves v2 only.
    for _ in 0..10 {
        let res = app.predict("iris", &team.member, &iris_rows()[..1]).await;
        assert_eq!(res.json::<Value>().await.unwrap()["model_version"], 2);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Rollback is the same move backwards.
    let res = app
        .put("/v1/models/iris/aliases/production", &team.maintainer, json!({"version": 1}))
        .await;
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for client in clients {
        let seen = client.await.expect("no client saw a failure");
        total += seen.len();
        // Each client sees v1, then v2, then v1 again: never a step back to an old version.
        let changes = seen.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(changes <= 2, "{seen:?}");
        assert_eq!(seen.last(), Some(&1));
    }
    assert!(total > 50, "only {total} requests ran during the swaps");

    let audit: Value = app.get("/v1/audit?limit=100", &team.maintainer).await.json().await.unwrap();
    let rollouts: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "deployment.rollout")
        .collect();
    assert_eq!(rollouts.len(), 2, "{audit}");
    assert_eq!(rollouts[0]["details"]["version"], 1);
    assert_eq!(rollouts[0]["details"]["previous_version"], 2);
    assert_eq!(rollouts[0]["details"]["serving"], json!([1]));
}

#[tokio::test]
async fn overload_answers_503_with_retry_after() {
    let app = spawn_app_with(ServingArgs { queue_capacity: 1, ..ServingArgs::defaults() }).await;
    let team = setup(&app).await;
    deploy(
        &app,
        &team,
        json!({"name": "iris", "model": "iris", "version": 1,
                               "batching": {"max_batch_size": 1, "max_wait_ms": 0}}),
    )
    .await;
    // Big requests, many at once, against a queue of one: some must be refused.
    let rows: Vec<_> = iris_rows().into_iter().cycle().take(5000).collect();
    let answers =
        futures::future::join_all((0..40).map(|_| app.predict("iris", &team.member, &rows))).await;
    let mut ok = 0;
    let mut overloaded = 0;
    for res in answers {
        match res.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(res.headers()["retry-after"], "1");
                assert_error(res, 503, "overloaded").await;
                overloaded += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 1 && overloaded >= 1, "ok {ok}, overloaded {overloaded}");
    let refused = app
        .metric("kiln_predictions_total{deployment=\"iris\",outcome=\"overloaded\",team=\"alpha\",version=\"1\"}")
        .await;
    assert_eq!(refused, overloaded as f64);
}

#[tokio::test]
async fn drift_flags_a_shifted_feature_and_not_the_others() {
    let (app, team) = sampling_every_row(0.0).await;
    deploy(&app, &team, json!({"name": "steady", "model": "iris", "version": 1})).await;
    deploy(&app, &team, json!({"name": "shifted", "model": "iris", "version": 1})).await;
    let rows: Vec<_> = iris_rows().into_iter().cycle().take(450).collect();
    let shifted: Vec<_> = rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let x = r["petal_length"].as_f64().unwrap();
            r.insert("petal_length".into(), json!(x + 3.0));
            r
        })
        .collect();
    for chunk in rows.chunks(50) {
        assert_eq!(app.predict("steady", &team.member, chunk).await.status(), 200);
    }
    for chunk in shifted.chunks(50) {
        assert_eq!(app.predict("shifted", &team.member, chunk).await.status(), 200);
    }
    // Samples are written in the background.
    let mut report = Value::Null;
    for _ in 0..50 {
        report = drift(&app, &team, "shifted", 450).await;
        if report["window"] == 450 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(report["window"], 450, "{report}");
    assert_eq!(report["drifted"], true);
    let features = report["features"].as_array().unwrap();
    assert_eq!(features.len(), 4);
    for f in features {
        let drifted = f["feature"] == "petal_length";
        assert_eq!(f["drifted"], drifted, "{f}");
        if !drifted {
            assert!(f["psi"].as_f64().unwrap() < 0.1, "{f}");
        }
    }
    let steady: Value = drift(&app, &team, "steady", 450).await;
    assert_eq!(steady["window"], 450, "{steady}");
    assert_eq!(steady["drifted"], false, "{steady}");
    assert_error(
        app.get("/v1/deployments/steady/drift?window=0", &team.viewer).await,
        422,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn samples_are_capped_per_deployment_per_second() {
    let (app, team) = sampling_every_row(30.0).await;
    deploy(&app, &team, json!({"name": "busy", "model": "iris", "version": 1})).await;
    let rows: Vec<_> = iris_rows().into_iter().cycle().take(300).collect();
    let started = std::time::Instant::now();
    for chunk in rows.chunks(50) {
        assert_eq!(app.predict("busy", &team.member, chunk).await.status(), 200);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Every row is picked (rate 1.0); the bucket lets one second's worth through, then 30
    // a second. Samples are written in the background: wait for the first ones.
    let mut window = 0;
    for _ in 0..50 {
        let report: Value = drift(&app, &team, "busy", 1000).await;
        window = report["window"].as_u64().unwrap_or(0);
        if window >= 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let most = 30 + (elapsed * 30.0).ceil() as u64;
    assert!((30..=most).contains(&window), "{window} samples of 300 rows in {elapsed:.2} s");
}

#[tokio::test]
async fn a_serving_only_replica_serves_the_same_registry() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    deploy(&app, &team, json!({"name": "iris", "model": "iris", "alias": "production"})).await;

    let (base, _cache) = app
        .replica(ServingArgs { serving_only: true, sync_seconds: 0.2, ..ServingArgs::defaults() })
        .await;

    let http = reqwest::Client::new();
    let predict = |version_rows: Vec<Map<String, Value>>| {
        http.post(format!("{base}/v1/deployments/iris/predict"))
            .bearer_auth(&team.member)
            .json(&json!({"instances": version_rows}))
            .send()
    };
    let res = predict(iris_rows()[..2].to_vec()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["model_version"], 1);
    // Management routes are not mounted on a serving-only replica.
    let res = http.get(format!("{base}/v1/jobs")).bearer_auth(&team.viewer).send().await.unwrap();
    assert_error(res, 404, "not_found").await;
    let res = http
        .post(format!("{base}/v1/deployments"))
        .bearer_auth(&team.maintainer)
        .json(&json!({"name": "x", "model": "iris", "version": 1}))
        .send()
        .await
        .unwrap();
    assert!(res.status() == 404 || res.status() == 405, "{}", res.status());

    // An alias moved through the main API reaches the replica within its sync period.
    let res = app
        .put("/v1/models/iris/aliases/production", &team.maintainer, json!({"version": 2}))
        .await;
    assert_eq!(res.status(), 200);
    let mut version = 0;
    for _ in 0..50 {
        let res = predict(iris_rows()[..1].to_vec()).await.unwrap();
        assert_eq!(res.status(), 200);
        version = res.json::<Value>().await.unwrap()["model_version"].as_i64().unwrap();
        if version == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(version, 2);
}

#[tokio::test]
async fn an_extra_feature_in_a_predict_instance_is_refused_unless_the_deployment_allows_extras() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    let strict =
        deploy(&app, &team, json!({"name": "strict", "model": "iris", "version": 1})).await;
    assert_eq!(strict["allow_extra_features"], false);
    let mut rows = iris_rows()[..2].to_vec();
    rows[1].insert("sepal_lenght".to_owned(), json!(5.0)); // a misspelt feature
    rows[1].insert("colour".to_owned(), json!("blue"));
    let err =
        assert_error(app.predict("strict", &team.member, &rows).await, 422, "validation_failed")
            .await;
    let fields = err["error"]["details"]["fields"].as_object().unwrap();
    assert_eq!(fields.len(), 2, "{err}");
    for field in ["instances[1].sepal_lenght", "instances[1].colour"] {
        let message = fields[field].as_str().unwrap_or_default();
        assert!(message.contains("not an input of this model"), "{field}: {err}");
        assert!(message.contains("`sepal_length`"), "names what the model takes: {err}");
    }

    // A deployment created to allow extras ignores them and answers what the clean rows get.
    let lenient = deploy(
        &app,
        &team,
        json!({"name": "lenient", "model": "iris", "version": 1, "allow_extra_features": true}),
    )
    .await;
    assert_eq!(lenient["allow_extra_features"], true);
    let res = app.predict("lenient", &team.member, &rows).await;
    assert_eq!(res.status(), 200);
    let with_extras: Value = res.json().await.unwrap();
    let clean: Value =
        app.predict("strict", &team.member, &iris_rows()[..2]).await.json().await.unwrap();
    assert_eq!(with_extras["predictions"], clean["predictions"]);

    // PATCH turns it off again (and on): the next request sees it.
    let res = app
        .patch("/v1/deployments/lenient", &team.maintainer, json!({"allow_extra_features": false}))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["allow_extra_features"], false);
    assert_error(app.predict("lenient", &team.member, &rows).await, 422, "validation_failed").await;
    let shown: Value = app.get("/v1/deployments/lenient", &team.viewer).await.json().await.unwrap();
    assert_eq!(shown["allow_extra_features"], false);
    assert_error(
        app.patch("/v1/deployments/lenient", &team.maintainer, json!({"allow_extra_features": 1}))
            .await,
        422,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn a_lone_client_is_not_held_for_max_wait_ms() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    deploy(
        &app,
        &team,
        json!({"name": "iris", "model": "iris", "version": 1,
               "batching": {"max_batch_size": 64, "max_wait_ms": 500}}),
    )
    .await;
    let row = iris_rows()[..1].to_vec();
    for _ in 0..20 {
        assert_eq!(app.predict("iris", &team.member, &row).await.status(), 200);
    }
    // The engine's own record of how long each batch was held open: a batch holding every
    // request submitted runs at once, so 20 sequential requests are never held for the
    // 500 ms bound (held for it, they would sum to 10 s).
    let labels = "{deployment=\"iris\",team=\"alpha\",version=\"1\"}";
    let batches = app.metric(&format!("kiln_prediction_batch_wait_seconds_count{labels}")).await;
    let held = app.metric(&format!("kiln_prediction_batch_wait_seconds_sum{labels}")).await;
    assert_eq!(batches, 20.0, "one batch per sequential request");
    assert!(held < 0.5, "20 lone requests were held {held} s in all");
    let rows = app.metric(&format!("kiln_prediction_batch_rows_sum{labels}")).await;
    assert_eq!(rows, 20.0);
}

#[tokio::test]
async fn canary_weights_must_sum_to_100() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    deploy(&app, &team, json!({"name": "iris", "model": "iris", "alias": "production"})).await;
    for traffic in [
        json!([{"version": 1, "weight": 80}, {"version": 2, "weight": 30}]),
        json!([{"version": 1, "weight": 9}, {"version": 2, "weight": 1}]),
        json!([{"version": 2, "weight": 50}]),
    ] {
        let err = assert_error(
            app.patch("/v1/deployments/iris", &team.maintainer, json!({"traffic": traffic})).await,
            422,
            "validation_failed",
        )
        .await;
        let fields = err["error"]["details"]["fields"].as_object().unwrap();
        assert!(fields["traffic"].as_str().unwrap().contains("sum to 100"), "{err}");
    }
    // Nothing was changed by the refusals; a split that sums to 100 is taken.
    let d: Value = app.get("/v1/deployments/iris", &team.viewer).await.json().await.unwrap();
    assert_eq!(d["traffic"], json!([{"version": 1, "weight": 100}]));
    let res = app
        .patch(
            "/v1/deployments/iris",
            &team.maintainer,
            json!({"traffic": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]}),
        )
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn drift_from_a_handful_of_rows_is_insufficient_not_drifted() {
    let (app, team) = sampling_every_row(0.0).await;
    deploy(&app, &team, json!({"name": "few", "model": "iris", "version": 1})).await;
    // Three rows far from the training split: a PSI judged from them would flag everything.
    let rows: Vec<_> = iris_rows()[..3]
        .iter()
        .map(|r| r.iter().map(|(k, v)| (k.clone(), json!(v.as_f64().unwrap() + 50.0))).collect())
        .collect();
    assert_eq!(app.predict("few", &team.member, &rows).await.status(), 200);
    let mut report = Value::Null;
    for _ in 0..50 {
        report = drift(&app, &team, "few", 1000).await;
        if report["window"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(report["window"], 3, "{report}");
    assert_eq!(report["insufficient_samples"], true, "{report}");
    assert_eq!(report["min_samples"], 100, "{report}");
    assert_eq!(report["drifted"], false, "{report}");
    for f in report["features"].as_array().unwrap() {
        assert_eq!(f["drifted"], false, "{f}");
        assert_eq!(f["insufficient_samples"], true, "{f}");
        assert_eq!(f["rows"], 3, "{f}");
    }
}

#[tokio::test]
async fn metrics_show_model_load_time_and_the_active_version() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    deploy(&app, &team, json!({"name": "iris", "model": "iris", "alias": "production"})).await;
    let active = "kiln_deployment_active_version{deployment=\"iris\",team=\"alpha\"}";
    assert_eq!(app.metric(active).await, 1.0);
    let loads = |v: u32| {
        format!(
            "kiln_serving_model_load_seconds_count{{deployment=\"iris\",team=\"alpha\",version=\"{v}\"}}"
        )
    };
    assert_eq!(app.metric(&loads(1)).await, 1.0);
    let res = app
        .patch(
            "/v1/deployments/iris",
            &team.maintainer,
            json!({"traffic": [{"version": 1, "weight": 10}, {"version": 2, "weight": 90}]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.metric(active).await, 2.0, "the version taking most traffic");
    assert_eq!(app.metric(&loads(2)).await, 1.0);
    assert_eq!(app.metric(&loads(1)).await, 1.0, "v1's engine was kept, not reloaded");
    // Request counts by outcome and latency stay.
    assert_eq!(app.predict("iris", &team.member, &iris_rows()[..1]).await.status(), 200);
    let ok: f64 = app
        .metric("kiln_predictions_total{deployment=\"iris\",outcome=\"ok\",team=\"alpha\",version=\"1\"}")
        .await
        + app
            .metric("kiln_predictions_total{deployment=\"iris\",outcome=\"ok\",team=\"alpha\",version=\"2\"}")
            .await;
    assert_eq!(ok, 1.0);
    let res = app.request(Method::DELETE, "/v1/deployments/iris", Some(&team.maintainer)).send();
    assert_eq!(res.await.unwrap().status(), 204);
    let text = app.http.get(format!("{}/metrics", app.base)).bearer_auth(&app.admin).send();
    let text = text.await.unwrap().text().await.unwrap();
    assert!(!text.contains(active), "a deleted deployment has no active version");
}
