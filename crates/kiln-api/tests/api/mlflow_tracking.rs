//! The MLflow tracking REST API at HTTP level: MLflow's error body and codes, the search
//! grammar (and bad filters), log-batch limits, param immutability, team isolation, and a
//! tracked run being the same Kiln run (its series in /v1/runs/{id}/metrics).

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::{TestApp, TestTeam, example, spawn_app};

const API: &str = "/api/2.0/mlflow";

/// Asserts MLflow's error body `{"error_code", "message"}` with that status; returns it.
async fn assert_mlflow_error(res: Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error_code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    body
}

async fn ok(res: Response) -> Value {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

impl TestApp {
    async fn ml_post(&self, path: &str, token: &str, body: Value) -> Response {
        self.post(&format!("{API}{path}"), token, body).await
    }

    async fn ml_get(&self, path: &str, token: &str) -> Response {
        self.get(&format!("{API}{path}"), token).await
    }

    async fn ml_experiment(&self, team: &TestTeam, name: &str) -> String {
        let body =
            ok(self.ml_post("/experiments/create", &team.member, json!({"name": name})).await)
                .await;
        body["experiment_id"].as_str().unwrap().to_owned()
    }

    async fn ml_run(&self, team: &TestTeam, experiment: &str, name: &str) -> String {
        let body = ok(self
            .ml_post(
                "/runs/create",
                &team.member,
                json!({"experiment_id": experiment, "run_name": name, "start_time": 1_700_000_000_000i64,
                       "user_id": "ana", "tags": [{"key": "mlflow.user", "value": "ana"}]}),
            )
            .await)
        .await;
        body["run"]["info"]["run_id"].as_str().unwrap().to_owned()
    }

    async fn ml_search(&self, team: &TestTeam, body: Value) -> Response {
        self.ml_post("/runs/search", &team.viewer, body).await
    }
}

fn metric(key: &str, value: f64, step: i64) -> Value {
    json!({"key": key, "value": value, "timestamp": 1_700_000_000_000i64 + step, "step": step})
}

#[tokio::test]
async fn a_run_logged_through_mlflow_is_the_same_kiln_run() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let exp = app.ml_experiment(&team, "exp").await;
    let run_id = app.ml_run(&team, &exp, "first").await;
    assert_eq!(run_id.len(), 32);

    let got = ok(app.ml_get(&format!("/runs/get?run_id={run_id}"), &team.viewer).await).await;
    let info = &got["run"]["info"];
    assert_eq!(info["status"], "RUNNING");
    assert_eq!(info["experiment_id"], exp);
    assert_eq!(info["run_name"], "first");
    assert_eq!(info["user_id"], "ana");
    assert_eq!(info["start_time"], 1_700_000_000_000i64);
    assert_eq!(info["artifact_uri"], format!("mlflow-artifacts:/{exp}/{run_id}/artifacts"));
    assert_eq!(info["lifecycle_stage"], "active");

    let metrics: Vec<Value> =
        (0..1000).map(|i| metric("loss", 1.0 / (1.0 + i as f64), i)).collect();
    ok(app
        .ml_post("/runs/log-batch", &team.member, json!({"run_id": run_id, "metrics": metrics}))
        .await)
    .await;
    let body = json!({"run_id": run_id, "params": [{"key": "lr", "value": "0.1"}], "tags": [{"key": "t", "value": "1"}]});
    ok(app.ml_post("/runs/log-batch", &team.member, body).await).await;

    let uuid = uuid::Uuid::try_parse(&run_id).unwrap();
    let native = app.get(&format!("/v1/runs/{uuid}"), &team.viewer).await;
    assert_eq!(native.status(), 200);
    let native: Value = native.json().await.unwrap();
    assert_eq!(native["name"], "first");
    assert_eq!(native["params"], json!({"lr": "0.1"}));
    assert_eq!(native["status"], "running");
    let series: Value =
        app.get(&format!("/v1/runs/{uuid}/metrics"), &team.viewer).await.json().await.unwrap();
    let loss = series["series"]["loss"].as_array().unwrap();
    assert_eq!(loss.len(), 1000);
    assert_eq!(loss[999], json!([999, 0.001]));
    let listed: Value = app.get("/v1/runs", &team.viewer).await.json().await.unwrap();
    assert!(listed["items"].as_array().unwrap().iter().any(|r| r["id"] == uuid.to_string()));

    // data.metrics is the latest value (highest step); the history pages.
    let got = ok(app.ml_get(&format!("/runs/get?run_id={uuid}"), &team.viewer).await).await;
    assert_eq!(
        got["run"]["data"]["metrics"],
        json!([{"key": "loss", "value": 0.001, "timestamp": 1_700_000_000_999i64, "step": 999}])
    );
    let page = ok(app
        .ml_get(
            &format!("/metrics/get-history?run_id={run_id}&metric_key=loss&max_results=600"),
            &team.viewer,
        )
        .await)
    .await;
    assert_eq!(page["metrics"].as_array().unwrap().len(), 600);
    let token = page["next_page_token"].as_str().unwrap().to_owned();
    let rest = ok(app
        .ml_get(
            &format!("/metrics/get-history?run_id={run_id}&metric_key=loss&max_results=600&page_token={token}"),
            &team.viewer,
        )
        .await)
    .await;
    assert_eq!(rest["metrics"].as_array().unwrap().len(), 400);
    assert!(rest.get("next_page_token").is_none());

    // KILLED maps onto the native `failed`, and reads back as KILLED.
    let upd = ok(app
        .ml_post(
            "/runs/update",
            &team.member,
            json!({"run_id": run_id, "status": "KILLED", "end_time": 1_700_000_100_000i64}),
        )
        .await)
    .await;
    assert_eq!(upd["run_info"]["status"], "KILLED");
    assert_eq!(upd["run_info"]["end_time"], 1_700_000_100_000i64);
    let native: Value =
        app.get(&format!("/v1/runs/{uuid}"), &team.viewer).await.json().await.unwrap();
    assert_eq!(native["status"], "failed");
    assert!(native["finished_at"].is_string());
}

#[tokio::test]
async fn params_are_immutable_tags_overwrite_and_non_finite_metrics_are_kept() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let run_id = app.ml_run(&team, "0", "r").await;
    let log_param = |value: &str| {
        app.ml_post(
            "/runs/log-parameter",
            &team.member,
            json!({"run_id": run_id, "key": "p", "value": value}),
        )
    };
    ok(log_param("a").await).await;
    ok(log_param("a").await).await;
    let err = assert_mlflow_error(log_param("b").await, 400, "INVALID_PARAMETER_VALUE").await;
    assert!(err["message"].as_str().unwrap().contains("key='p'"), "{err}");
    // A batch with a changed param writes nothing at all.
    let res = app
        .ml_post(
            "/runs/log-batch",
            &team.member,
            json!({"run_id": run_id, "metrics": [metric("m", 1.0, 0)], "params": [{"key": "p", "value": "c"}]}),
        )
        .await;
    assert_mlflow_error(res, 400, "INVALID_PARAMETER_VALUE").await;
    let res = app
        .ml_post(
            "/runs/log-batch",
            &team.member,
            json!({"run_id": run_id, "params": [{"key": "q", "value": "1"}, {"key": "q", "value": "2"}]}),
        )
        .await;
    let err = assert_mlflow_error(res, 400, "INVALID_PARAMETER_VALUE").await;
    assert!(err["message"].as_str().unwrap().contains("Duplicate parameter keys"));

    for value in ["x", "y"] {
        ok(app
            .ml_post(
                "/runs/set-tag",
                &team.member,
                json!({"run_id": run_id, "key": "t", "value": value}),
            )
            .await)
        .await;
    }
    for (step, value) in
        [(0, json!("NaN")), (1, json!("Infinity")), (2, json!("-Infinity")), (3, json!(2.5))]
    {
        ok(app
            .ml_post(
                "/runs/log-metric",
                &team.member,
                json!({"run_id": run_id, "key": "odd", "value": value, "timestamp": 1, "step": step}),
            )
            .await)
        .await;
    }
    let got = ok(app.ml_get(&format!("/runs/get?run_id={run_id}"), &team.viewer).await).await;
    let data = &got["run"]["data"];
    assert_eq!(data["params"], json!([{"key": "p", "value": "a"}]));
    assert!(data["tags"].as_array().unwrap().contains(&json!({"key": "t", "value": "y"})));
    assert!(
        data["tags"].as_array().unwrap().contains(&json!({"key": "mlflow.runName", "value": "r"}))
    );
    assert!(
        data["tags"].as_array().unwrap().contains(&json!({"key": "mlflow.user", "value": "ana"}))
    );
    assert!(data["metrics"].as_array().unwrap().iter().all(|m| m["key"] == "odd"));
    let history = ok(app
        .ml_get(&format!("/metrics/get-history?run_id={run_id}&metric_key=odd"), &team.viewer)
        .await)
    .await;
    let values: Vec<Value> =
        history["metrics"].as_array().unwrap().iter().map(|m| m["value"].clone()).collect();
    assert_eq!(values, vec![json!("NaN"), json!("Infinity"), json!("-Infinity"), json!(2.5)]);

    // delete-tag, and of a tag that is not there
    ok(app.ml_post("/runs/delete-tag", &team.member, json!({"run_id": run_id, "key": "t"})).await)
        .await;
    let res =
        app.ml_post("/runs/delete-tag", &team.member, json!({"run_id": run_id, "key": "t"})).await;
    assert_mlflow_error(res, 404, "RESOURCE_DOES_NOT_EXIST").await;
}

#[tokio::test]
async fn log_batch_keeps_mlflow_limits() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let run_id = app.ml_run(&team, "0", "r").await;
    let batch = |body: Value| app.ml_post("/runs/log-batch", &team.member, body);
    let many: Vec<Value> = (0..1001).map(|i| metric("m", 1.0, i)).collect();
    let err = assert_mlflow_error(
        batch(json!({"run_id": run_id, "metrics": many})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("at most 1000 metrics"), "{err}");
    let params: Vec<Value> =
        (0..101).map(|i| json!({"key": format!("p{i}"), "value": "v"})).collect();
    assert_mlflow_error(
        batch(json!({"run_id": run_id, "params": params})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    let tags: Vec<Value> =
        (0..101).map(|i| json!({"key": format!("t{i}"), "value": "v"})).collect();
    assert_mlflow_error(
        batch(json!({"run_id": run_id, "tags": tags})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    let metrics: Vec<Value> = (0..950).map(|i| metric("m", 1.0, i)).collect();
    let tags: Vec<Value> = (0..51).map(|i| json!({"key": format!("t{i}"), "value": "v"})).collect();
    let err = assert_mlflow_error(
        batch(json!({"run_id": run_id, "metrics": metrics, "tags": tags})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("in total"), "{err}");
    let long_key = "k".repeat(251);
    assert_mlflow_error(
        batch(json!({"run_id": run_id, "metrics": [metric(&long_key, 1.0, 0)]})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    assert_mlflow_error(
        batch(json!({"run_id": run_id, "params": [{"key": "big", "value": "x".repeat(6001)}]}))
            .await,
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    let huge_tags: Vec<Value> =
        (0..100).map(|i| json!({"key": format!("t{i}"), "value": "x".repeat(7999)})).collect();
    let huge_params: Vec<Value> =
        (0..100).map(|i| json!({"key": format!("p{i}"), "value": "y".repeat(5999)})).collect();
    let body = json!({"run_id": run_id, "tags": huge_tags, "params": huge_params});
    let err = assert_mlflow_error(batch(body).await, 400, "INVALID_PARAMETER_VALUE").await;
    assert!(err["message"].as_str().unwrap().contains("at most 1000000 bytes"), "{err}");
    let res = app
        .request(Method::POST, &format!("{API}/runs/log-batch"), Some(&team.member))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_mlflow_error(res, 400, "MALFORMED_REQUEST").await;
    // Nothing of the refused batches was stored.
    let got = ok(app.ml_get(&format!("/runs/get?run_id={run_id}"), &team.viewer).await).await;
    assert_eq!(got["run"]["data"]["metrics"], json!([]));
    assert_eq!(got["run"]["data"]["params"], json!([]));
}

#[tokio::test]
async fn search_runs_grammar_order_and_paging() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let exp = app.ml_experiment(&team, "grammar").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let id = app.ml_run(&team, &exp, &format!("run-{i}")).await;
        ok(app
            .ml_post(
                "/runs/log-batch",
                &team.member,
                json!({"run_id": id, "metrics": [metric("rmse", 1.0 - i as f64 / 10.0, 0)],
                       "params": [{"key": "model", "value": if i % 2 == 0 { "linear" } else { "tree" }}],
                       "tags": [{"key": "group", "value": format!("g{}", i % 3)}]}),
            )
            .await)
        .await;
        ids.push(id);
    }
    ok(app
        .ml_post("/runs/update", &team.member, json!({"run_id": ids[0], "status": "FINISHED"}))
        .await)
    .await;
    let count = |filter: &str| {
        let body = json!({"experiment_ids": [exp], "filter": filter});
        let app = &app;
        let team = &team;
        async move {
            let found = ok(app.ml_search(team, body).await).await;
            found["runs"].as_array().map(Vec::len).unwrap_or(0)
        }
    };
    assert_eq!(count("").await, 6);
    assert_eq!(count("metrics.rmse < 0.75").await, 3);
    assert_eq!(count("metrics.rmse >= 0.8 and params.model = 'tree'").await, 1);
    assert_eq!(count("params.model != 'tree'").await, 3);
    assert_eq!(count("params.model LIKE 'lin%'").await, 3);
    assert_eq!(count("params.model ILIKE 'LIN%'").await, 3);
    assert_eq!(count("params.missing IS NULL").await, 6);
    assert_eq!(count("tags.group = 'g1'").await, 2);
    assert_eq!(count("tags.`mlflow.runName` = 'run-2'").await, 1);
    assert_eq!(count("attributes.status = 'FINISHED'").await, 1);
    assert_eq!(count("attributes.status != 'FINISHED'").await, 5);
    assert_eq!(count("attributes.run_name IN ('run-1', 'run-2')").await, 2);
    assert_eq!(count(&format!("attributes.run_id = '{}'", ids[3])).await, 1);
    assert_eq!(count(&format!("run_id NOT IN ('{}')", ids[3])).await, 5);
    assert_eq!(count("attributes.user_id = 'ana'").await, 6);
    assert_eq!(count("attributes.start_time >= 1700000000000").await, 6);
    assert_eq!(count("attributes.end_time > 0").await, 1);
    // A value that looks like SQL is only ever a bound value.
    assert_eq!(count("params.model = 'x'' OR 1=1 --'").await, 0);

    let body = json!({"experiment_ids": [exp], "order_by": ["metrics.rmse ASC"], "max_results": 4});
    let first = ok(app.ml_search(&team, body).await).await;
    let names: Vec<&str> = first["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["info"]["run_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["run-5", "run-4", "run-3", "run-2"]);
    let token = first["next_page_token"].as_str().unwrap();
    let body = json!({"experiment_ids": [exp], "order_by": ["metrics.rmse ASC"], "max_results": 4, "page_token": token});
    let rest = ok(app.ml_search(&team, body).await).await;
    let names: Vec<&str> = rest["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["info"]["run_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["run-1", "run-0"]);
    assert!(rest.get("next_page_token").is_none());
    let body =
        json!({"experiment_ids": [exp], "order_by": ["params.model DESC", "attributes.run_name"]});
    let found = ok(app.ml_search(&team, body).await).await;
    assert_eq!(found["runs"][0]["info"]["run_name"], "run-1");

    for (filter, needle) in [
        ("metrics.rmse < 'x'", "compares with a number"),
        ("params.model < 'a'", "not <"),
        ("attributes.colour = 'red'", "invalid attribute key `colour`"),
        ("nonsense.key = 'a'", "invalid entity type `nonsense`"),
        ("metrics.a > 1 or metrics.b < 2", "OR is not supported"),
        ("params.model = 'unterminated", "unterminated quote"),
        ("params.model = linear", "must be quoted"),
    ] {
        let res = app.ml_search(&team, json!({"experiment_ids": [exp], "filter": filter})).await;
        let err = assert_mlflow_error(res, 400, "INVALID_PARAMETER_VALUE").await;
        assert!(err["message"].as_str().unwrap().contains(needle), "{filter}: {err}");
    }
    let res = app
        .ml_search(&team, json!({"experiment_ids": [exp], "order_by": ["metrics.rmse UP"]}))
        .await;
    assert_mlflow_error(res, 400, "INVALID_PARAMETER_VALUE").await;
    let res = app.ml_search(&team, json!({"experiment_ids": [exp], "max_results": 50001})).await;
    assert_mlflow_error(res, 400, "INVALID_PARAMETER_VALUE").await;
    let res = app.ml_search(&team, json!({"experiment_ids": [exp], "page_token": "garbage"})).await;
    assert_mlflow_error(res, 400, "INVALID_PARAMETER_VALUE").await;

    // Deleted runs leave the default view.
    ok(app.ml_post("/runs/delete", &team.member, json!({"run_id": ids[0]})).await).await;
    assert_eq!(count("").await, 5);
    let body = json!({"experiment_ids": [exp], "run_view_type": "DELETED_ONLY"});
    let found = ok(app.ml_search(&team, body).await).await;
    assert_eq!(found["runs"][0]["info"]["run_id"], ids[0]);
    let res = app
        .ml_post(
            "/runs/log-metric",
            &team.member,
            json!({"run_id": ids[0], "key": "m", "value": 1, "timestamp": 1}),
        )
        .await;
    assert_mlflow_error(res, 400, "INVALID_PARAMETER_VALUE").await;
    ok(app.ml_post("/runs/restore", &team.member, json!({"run_id": ids[0]})).await).await;
    assert_eq!(count("").await, 6);
}

#[tokio::test]
async fn experiments_crud_default_and_names() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    // Experiment 0 exists for a team made after the migration.
    let zero = ok(app.ml_get("/experiments/get?experiment_id=0", &team.viewer).await).await;
    assert_eq!(zero["experiment"]["name"], "Default");
    assert_eq!(zero["experiment"]["lifecycle_stage"], "active");
    let by_name =
        ok(app.ml_get("/experiments/get-by-name?experiment_name=Default", &team.viewer).await)
            .await;
    assert_eq!(by_name["experiment"]["experiment_id"], "0");
    let res = app.ml_get("/experiments/get-by-name?experiment_name=nope", &team.viewer).await;
    assert_mlflow_error(res, 404, "RESOURCE_DOES_NOT_EXIST").await;

    let id = ok(app
        .ml_post(
            "/experiments/create",
            &team.member,
            json!({"name": "e1", "tags": [{"key": "k", "value": "v"}]}),
        )
        .await)
    .await["experiment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app.ml_post("/experiments/create", &team.member, json!({"name": "e1"})).await;
    assert_mlflow_error(res, 400, "RESOURCE_ALREADY_EXISTS").await;
    let res = app.ml_post("/experiments/create", &team.member, json!({"name": ""})).await;
    assert_mlflow_error(res, 400, "INVALID_PARAMETER_VALUE").await;
    ok(app
        .ml_post(
            "/experiments/update",
            &team.member,
            json!({"experiment_id": id, "new_name": "e2"}),
        )
        .await)
    .await;
    ok(app
        .ml_post(
            "/experiments/set-experiment-tag",
            &team.member,
            json!({"experiment_id": id, "key": "k2", "value": "v2"}),
        )
        .await)
    .await;
    let got =
        ok(app.ml_get(&format!("/experiments/get?experiment_id={id}"), &team.viewer).await).await;
    assert_eq!(got["experiment"]["name"], "e2");
    assert_eq!(
        got["experiment"]["tags"],
        json!([{"key": "k", "value": "v"}, {"key": "k2", "value": "v2"}])
    );
    let found = ok(app
        .ml_post("/experiments/search", &team.viewer, json!({"filter": "tags.k2 = 'v2'"}))
        .await)
    .await;
    assert_eq!(found["experiments"].as_array().unwrap().len(), 1);
    let found = ok(app
        .ml_post("/experiments/search", &team.viewer, json!({"order_by": ["name ASC"]}))
        .await)
    .await;
    let names: Vec<&str> = found["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Default", "e2"]);
    let res =
        app.ml_post("/experiments/search", &team.viewer, json!({"filter": "name > 'a'"})).await;
    assert_mlflow_error(res, 400, "INVALID_PARAMETER_VALUE").await;

    let run = app.ml_run(&team, &id, "in-e2").await;
    ok(app.ml_post("/experiments/delete", &team.member, json!({"experiment_id": id})).await).await;
    let got = ok(app.ml_get(&format!("/runs/get?run_id={run}"), &team.viewer).await).await;
    assert_eq!(got["run"]["info"]["lifecycle_stage"], "deleted");
    let res = app.ml_post("/runs/create", &team.member, json!({"experiment_id": id})).await;
    assert_mlflow_error(res, 400, "INVALID_PARAMETER_VALUE").await;
    let res = app.ml_post("/experiments/delete", &team.member, json!({"experiment_id": "0"})).await;
    assert_mlflow_error(res, 400, "INVALID_PARAMETER_VALUE").await;
    ok(app.ml_post("/experiments/restore", &team.member, json!({"experiment_id": id})).await).await;
    let got = ok(app.ml_get(&format!("/runs/get?run_id={run}"), &team.viewer).await).await;
    assert_eq!(got["run"]["info"]["lifecycle_stage"], "active");
}

#[tokio::test]
async fn teams_are_isolated_and_roles_apply() {
    let app = spawn_app().await;
    let alpha = app.team("alpha").await;
    let beta = app.team("beta").await;
    let exp = app.ml_experiment(&alpha, "shared-name").await;
    let run = app.ml_run(&alpha, &exp, "mine").await;
    // The same name is free in another team; its experiment 0 is its own.
    app.ml_experiment(&beta, "shared-name").await;

    for token in [&beta.maintainer, &beta.viewer] {
        let res = app.ml_get(&format!("/runs/get?run_id={run}"), token).await;
        assert_mlflow_error(res, 404, "RESOURCE_DOES_NOT_EXIST").await;
        let res = app.ml_get(&format!("/experiments/get?experiment_id={exp}"), token).await;
        assert_mlflow_error(res, 404, "RESOURCE_DOES_NOT_EXIST").await;
        let res =
            app.ml_get(&format!("/metrics/get-history?run_id={run}&metric_key=x"), token).await;
        assert_mlflow_error(res, 404, "RESOURCE_DOES_NOT_EXIST").await;
    }
    let res = app
        .ml_post(
            "/runs/log-metric",
            &beta.member,
            json!({"run_id": run, "key": "x", "value": 1, "timestamp": 1}),
        )
        .await;
    assert_mlflow_error(res, 404, "RESOURCE_DOES_NOT_EXIST").await;
    let res = app.ml_post("/runs/create", &beta.member, json!({"experiment_id": exp})).await;
    assert_mlflow_error(res, 404, "RESOURCE_DOES_NOT_EXIST").await;
    let found = ok(app.ml_search(&beta, json!({"experiment_ids": [exp, "0"]})).await).await;
    assert!(found.get("runs").is_none() || found["runs"] == json!([]), "{found}");

    // A viewer reads, a member writes.
    let res = app
        .ml_post(
            "/runs/log-metric",
            &alpha.viewer,
            json!({"run_id": run, "key": "x", "value": 1, "timestamp": 1}),
        )
        .await;
    assert_mlflow_error(res, 403, "PERMISSION_DENIED").await;
    let res = app.ml_post("/experiments/create", &alpha.viewer, json!({"name": "v"})).await;
    assert_mlflow_error(res, 403, "PERMISSION_DENIED").await;
    let res = app.ml_post("/runs/create", &alpha.viewer, json!({"experiment_id": "0"})).await;
    assert_mlflow_error(res, 403, "PERMISSION_DENIED").await;
    ok(app.ml_get(&format!("/runs/get?run_id={run}"), &alpha.viewer).await).await;
    // No token, a bad token, an unknown route.
    let res = app
        .request(Method::GET, &format!("{API}/runs/get?run_id={run}"), None)
        .send()
        .await
        .unwrap();
    assert_mlflow_error(res, 401, "UNAUTHENTICATED").await;
    let res = app.ml_get("/runs/nope", &alpha.viewer).await;
    assert_mlflow_error(res, 404, "ENDPOINT_NOT_FOUND").await;
    let res = app.ml_get("/runs/get?run_id=not-a-run", &alpha.viewer).await;
    assert_mlflow_error(res, 404, "RESOURCE_DOES_NOT_EXIST").await;
}

#[tokio::test]
async fn a_kiln_job_reads_as_an_mlflow_run_of_experiment_zero() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let dataset = app.upload(&team.member, "iris", "text/csv", example("iris.csv")).await;
    let spec = json!({
        "dataset_id": dataset["id"], "task": "classification", "target": "species",
        "model": {"type": "mlp", "hidden": [16]},
        "hyperparameters": {"epochs": 3, "learning_rate": 0.01}
    });
    let res = app.post("/v1/jobs", &team.member, spec).await;
    assert_eq!(res.status(), 201);
    let job: Value = res.json().await.unwrap();
    let job_id = job["id"].as_str().unwrap();
    let run_id = job_id.replace('-', "");
    let got = ok(app.ml_get(&format!("/runs/get?run_id={run_id}"), &team.viewer).await).await;
    let run = &got["run"];
    assert_eq!(run["info"]["experiment_id"], "0");
    assert_eq!(run["info"]["status"], "SCHEDULED");
    let params = run["data"]["params"].as_array().unwrap();
    assert!(params.contains(&json!({"key": "epochs", "value": "3"})), "{params:?}");
    assert!(params.contains(&json!({"key": "learning_rate", "value": "0.01"})));
    let tags = run["data"]["tags"].as_array().unwrap();
    assert!(tags.contains(&json!({"key": "kiln.job_id", "value": job_id})), "{tags:?}");
    assert!(tags.contains(&json!({"key": "kiln.model_type", "value": "mlp"})));
    let found = ok(app
        .ml_search(
            &team,
            json!({"experiment_ids": ["0"], "filter": format!("tags.`kiln.job_id` = '{job_id}'")}),
        )
        .await)
    .await;
    assert_eq!(found["runs"][0]["info"]["run_id"], run_id);
    let found = ok(app.ml_search(&team, json!({"experiment_ids": ["0"], "filter": "attributes.status = 'SCHEDULED' and params.epochs = '3'"})).await).await;
    assert_eq!(found["runs"].as_array().unwrap().len(), 1);
    // A job's run ends with its job; params it has keep their values.
    let res = app
        .ml_post("/runs/update", &team.member, json!({"run_id": run_id, "status": "FINISHED"}))
        .await;
    assert_mlflow_error(res, 400, "INVALID_STATE").await;
    ok(app
        .ml_post(
            "/runs/log-parameter",
            &team.member,
            json!({"run_id": run_id, "key": "epochs", "value": "3"}),
        )
        .await)
    .await;
    let res = app
        .ml_post(
            "/runs/log-parameter",
            &team.member,
            json!({"run_id": run_id, "key": "epochs", "value": "4"}),
        )
        .await;
    assert_mlflow_error(res, 400, "INVALID_PARAMETER_VALUE").await;
}

#[tokio::test]
async fn bulk_interval_samples_and_inputs_are_stored() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let a = app.ml_run(&team, "0", "a").await;
    let b = app.ml_run(&team, "0", "b").await;
    for run in [&a, &b] {
        let metrics: Vec<Value> = (0..500).map(|i| metric("loss", i as f64, i)).collect();
        ok(app
            .ml_post("/runs/log-batch", &team.member, json!({"run_id": run, "metrics": metrics}))
            .await)
        .await;
    }
    let got = ok(app
        .ml_get(&format!("/metrics/get-history-bulk-interval?run_ids={a}&run_ids={b}&metric_key=loss&max_results=5"), &team.viewer)
        .await)
    .await;
    let points = got["metrics"].as_array().unwrap();
    assert_eq!(points.len(), 10);
    let steps: Vec<i64> = points.iter().take(5).map(|p| p["step"].as_i64().unwrap()).collect();
    assert_eq!(steps, [0, 124, 249, 374, 499]);
    assert_eq!(points[0]["run_id"], a.as_str());
    assert_eq!(points[5]["run_id"], b.as_str());
    let got = ok(app
        .ml_get(&format!("/metrics/get-history-bulk-interval?run_ids={a}&metric_key=loss&start_step=10&end_step=12"), &team.viewer)
        .await)
    .await;
    assert_eq!(got["metrics"].as_array().unwrap().len(), 3);
    let res = app
        .ml_get(
            &format!(
                "/metrics/get-history-bulk-interval?run_ids={a}&metric_key=loss&start_step=10"
            ),
            &team.viewer,
        )
        .await;
    assert_mlflow_error(res, 400, "INVALID_PARAMETER_VALUE").await;

    let dataset = json!({"name": "iris", "digest": "abc123", "source_type": "local", "source": "{\"uri\": \"data/iris.csv\"}"});
    let body = json!({"run_id": a, "datasets": [{"tags": [{"key": "mlflow.data.context", "value": "train"}], "dataset": dataset}],
                      "models": [{"model_id": "m-1"}]});
    ok(app.ml_post("/runs/log-inputs", &team.member, body.clone()).await).await;
    ok(app.ml_post("/runs/log-inputs", &team.member, body).await).await;
    ok(app
        .ml_post(
            "/runs/outputs",
            &team.member,
            json!({"run_id": a, "models": [{"model_id": "m-2", "step": 3}]}),
        )
        .await)
    .await;
    let got = ok(app.ml_get(&format!("/runs/get?run_id={a}"), &team.viewer).await).await;
    let inputs = &got["run"]["inputs"];
    assert_eq!(inputs["dataset_inputs"].as_array().unwrap().len(), 1);
    assert_eq!(inputs["dataset_inputs"][0]["dataset"]["name"], "iris");
    assert_eq!(inputs["model_inputs"], json!([{"model_id": "m-1"}]));
    assert_eq!(got["run"]["outputs"]["model_outputs"], json!([{"model_id": "m-2", "step": 3}]));
    let found = ok(app
        .ml_search(&team, json!({"experiment_ids": ["0"], "filter": "datasets.context = 'train'"}))
        .await)
    .await;
    assert_eq!(found["runs"].as_array().unwrap().len(), 1);
}
