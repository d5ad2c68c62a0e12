//! Job submission: field-by-field validation against the spec and the dataset,
//! idempotency, isolation, cancel and retry.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{TestApp, TestTeam, assert_error, example, spawn_app};

async fn iris(app: &TestApp, team: &TestTeam) -> String {
    app.upload(&team.member, "iris", "text/csv", example("iris.csv")).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn spec(dataset: &str) -> Value {
    json!({
        "dataset_id": dataset,
        "task": "classification",
        "target": "species",
        "model": {"type": "mlp", "hidden": [16]},
        "hyperparameters": {"epochs": 3, "learning_rate": 0.01}
    })
}

#[tokio::test]
async fn submit_queues_a_job_with_its_resolved_inputs() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let dataset = iris(&app, &team).await;
    let res = app.post("/v1/jobs", &team.member, spec(&dataset)).await;
    assert_eq!(res.status(), 201);
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["state"], "queued");
    assert_eq!(job["attempt"], 0);
    assert_eq!(job["max_attempts"], 3);
    assert_eq!(job["spec"]["hyperparameters"]["epochs"], 3);
    assert_eq!(job["spec"]["hyperparameters"]["batch_size"], 32, "defaults filled in");
    let id = job["id"].as_str().unwrap();

    let got: Value = app.get(&format!("/v1/jobs/{id}"), &team.viewer).await.json().await.unwrap();
    assert_eq!(got["id"], job["id"]);
    let listed: Value = app.get("/v1/jobs?state=queued", &team.viewer).await.json().await.unwrap();
    assert_eq!(listed["items"][0]["id"], job["id"]);
    // A job is a run: its metrics series exist (empty until a worker writes them).
    let metrics: Value =
        app.get(&format!("/v1/runs/{id}/metrics"), &team.viewer).await.json().await.unwrap();
    assert_eq!(metrics["series"], json!({}));
    // The worker finds the dataset through the job's inputs.
    let pool = app.test.db.get_postgres_connection_pool();
    let (inputs,): (Value,) = sqlx::query_as("SELECT inputs FROM jobs WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(inputs["dataset"]["format"], "csv");
    assert!(inputs["dataset"]["key"].as_str().unwrap().contains("/blobs/sha256/"));
}

#[tokio::test]
async fn every_bad_field_is_listed() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let dataset = iris(&app, &team).await;
    let body = json!({
        "dataset_id": dataset,
        "task": "classification",
        "target": "colour",
        "features": ["sepal_length", "petal_size"],
        "model": {"type": "xgb"},
        "hyperparameters": {"learning_rate": -1, "epochs": 0, "learning_rte": 0.1}
    });
    let res = app.post("/v1/jobs", &team.member, body).await;
    let err = assert_error(res, 422, "validation_failed").await;
    let fields = err["error"]["details"]["fields"].as_object().unwrap();
    for path in [
        "model.type",
        "hyperparameters.learning_rate",
        "hyperparameters.epochs",
        "hyperparameters.learning_rte",
    ] {
        assert!(fields.contains_key(path), "{path} missing from {fields:?}");
    }
    // Dataset-dependent checks run once the spec itself is valid.
    let mut body = spec(&dataset);
    body["target"] = json!("colour");
    body["features"] = json!(["sepal_length", "petal_size"]);
    let err =
        assert_error(app.post("/v1/jobs", &team.member, body).await, 422, "validation_failed")
            .await;
    let fields = err["error"]["details"]["fields"].as_object().unwrap();
    assert!(fields["target"].as_str().unwrap().contains("no column `colour`"), "{fields:?}");
    assert!(fields.contains_key("features[1]"), "{fields:?}");
    // A CNN on tabular data.
    let mut body = spec(&dataset);
    body["model"] = json!({"type": "cnn", "channels": [8]});
    let err =
        assert_error(app.post("/v1/jobs", &team.member, body).await, 422, "validation_failed")
            .await;
    assert!(err["error"]["details"]["fields"]["model.type"].as_str().unwrap().contains("images"));
    // Bodies that are not specs at all.
    for bad in [json!([]), json!("x"), json!({})] {
        assert_error(app.post("/v1/jobs", &team.member, bad).await, 422, "validation_failed").await;
    }
}

#[tokio::test]
async fn an_oversize_model_is_refused_at_submit_naming_the_field_and_its_memory_estimate() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let dataset = iris(&app, &team).await;
    let submit = |model: Value, hyperparameters: Value| {
        let mut body = spec(&dataset);
        body["model"] = model;
        body["hyperparameters"] = hyperparameters;
        app.post("/v1/jobs", &team.member, body)
    };

    // The model: refused by the spec's own check, before any estimate.
    let res = submit(json!({"type": "mlp", "hidden": [65536, 65536]}), json!({})).await;
    let err = assert_error(res, 422, "validation_failed").await;
    let message = err["error"]["details"]["fields"]["model.hidden"].as_str().unwrap();
    assert!(message.contains("4294967296 weights between them (16.0 GiB"), "{message}");

    // Within the spec's ceiling, but with Adam about 4.0 GiB to train: over the 4 GiB limit.
    let res = submit(json!({"type": "mlp", "hidden": [16384, 16384]}), json!({})).await;
    let err = assert_error(res, 422, "validation_failed").await;
    let details = &err["error"]["details"];
    let fields = details["fields"].as_object().unwrap();
    assert_eq!(fields.keys().collect::<Vec<_>>(), ["model.hidden"], "{err}");
    let message = fields["model.hidden"].as_str().unwrap();
    assert!(message.starts_with("training this model needs about 4.0 GiB ("), "{message}");
    assert!(message.contains("optimizer state 2.0 GiB"), "{message}");
    assert!(message.contains("more than the limit of 4.0 GiB per job"), "{message}");
    let estimate = &details["memory_estimate"];
    let parameters: u64 = (4 * 16384 + 16384) + (16384 * 16384 + 16384) + (16384 * 3 + 3);
    assert_eq!(estimate["parameters"], parameters);
    assert_eq!(estimate["weight_bytes"], parameters * 4);
    assert_eq!(estimate["optimizer_bytes"], parameters * 8, "Adam's two moments");
    assert!(estimate["total_bytes"].as_u64().unwrap() > 4 << 30, "{estimate}");
    assert_eq!(details["memory_limit_bytes"], 4u64 << 30);
    assert!(err["error"]["message"].as_str().unwrap().starts_with("invalid field `model.hidden`"));

    // The same layers with plain SGD need about 2 GiB: accepted.
    let res = submit(
        json!({"type": "mlp", "hidden": [16384, 16384]}),
        json!({"optimizer": "sgd", "epochs": 1}),
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let count: Value = app.get("/v1/jobs", &team.viewer).await.json().await.unwrap();
    assert_eq!(count["items"].as_array().unwrap().len(), 1, "only the accepted job is queued");
}

#[tokio::test]
async fn a_dataset_of_another_team_is_refused_like_a_missing_one() {
    let app = spawn_app().await;
    let a = app.team("alpha").await;
    let b = app.team("beta").await;
    let theirs = iris(&app, &a).await;
    let err = assert_error(
        app.post("/v1/jobs", &b.member, spec(&theirs)).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(
        err["error"]["details"]["fields"]["dataset_id"],
        "no dataset with this id in your team"
    );
}

#[tokio::test]
async fn idempotency_key_same_body_same_job_other_body_conflict() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let dataset = iris(&app, &team).await;
    let send = |body: Value| {
        app.request(Method::POST, "/v1/jobs", Some(&team.member))
            .header("Idempotency-Key", "nightly-42")
            .json(&body)
            .send()
    };
    let first = send(spec(&dataset)).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send(spec(&dataset)).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"]);
    let mut other = spec(&dataset);
    other["hyperparameters"]["epochs"] = json!(4);
    assert_error(send(other).await.unwrap(), 409, "idempotency_conflict").await;
    let listed: Value = app.get("/v1/jobs", &team.viewer).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn cancel_retry_and_roles() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let other = app.team("beta").await;
    let dataset = iris(&app, &team).await;
    assert_error(app.post("/v1/jobs", &team.viewer, spec(&dataset)).await, 403, "forbidden").await;
    let job: Value = app.post("/v1/jobs", &team.member, spec(&dataset)).await.json().await.unwrap();
    let id = job["id"].as_str().unwrap();

    let res = app
        .request(Method::POST, &format!("/v1/jobs/{id}/cancel"), Some(&other.member))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "not_found").await;
    let res = app
        .request(Method::POST, &format!("/v1/jobs/{id}/retry"), Some(&team.member))
        .send()
        .await
        .unwrap();
    assert_error(res, 409, "invalid_state").await;
    let res = app
        .request(Method::POST, &format!("/v1/jobs/{id}/cancel"), Some(&team.member))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["state"], "cancelled");
    let res = app
        .request(Method::POST, &format!("/v1/jobs/{id}/cancel"), Some(&team.member))
        .send()
        .await
        .unwrap();
    assert_error(res, 409, "invalid_state").await;
    let res = app
        .request(Method::POST, &format!("/v1/jobs/{id}/retry"), Some(&team.member))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["state"], "queued");

    // Registering an unfinished job is refused; another team's job is unknown.
    let res =
        app.post("/v1/models/iris-mlp/versions", &team.maintainer, json!({"job_id": id})).await;
    assert_error(res, 409, "invalid_state").await;
    let res =
        app.post("/v1/models/iris-mlp/versions", &other.maintainer, json!({"job_id": id})).await;
    assert_error(res, 422, "validation_failed").await;
    let res = app.post("/v1/models/iris-mlp/versions", &team.member, json!({"job_id": id})).await;
    assert_error(res, 403, "forbidden").await;
}

#[tokio::test]
async fn logs_follow_with_a_cursor() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let dataset = iris(&app, &team).await;
    let job: Value = app.post("/v1/jobs", &team.member, spec(&dataset)).await.json().await.unwrap();
    let id = job["id"].as_str().unwrap();
    let page: Value =
        app.get(&format!("/v1/jobs/{id}/logs"), &team.viewer).await.json().await.unwrap();
    assert_eq!(page["items"], json!([]));
    assert_eq!(page["done"], false);
    // Long-poll answers after its wait when nothing arrives.
    let page: Value =
        app.get(&format!("/v1/jobs/{id}/logs?wait=1"), &team.viewer).await.json().await.unwrap();
    assert_eq!(page["items"], json!([]));
}
