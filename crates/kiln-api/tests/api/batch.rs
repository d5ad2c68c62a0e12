//! Batch predictions at the API (no worker runs here; tests/e2e/batch.rs scores them
//! through the real binaries): a request is resolved and queued as a job of the team, every
//! bad field is named in one 422, roles and teams are enforced, the output is refused until
//! it exists, and a queued batch prediction keeps its model version from being deleted.

use reqwest::Method;
use serde_json::{Value, json};

use crate::serving::setup;
use crate::{assert_error, example, spawn_app};

#[tokio::test]
async fn a_request_is_resolved_and_queued_as_a_job_of_the_team() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    let data = app.upload(&team.member, "to-score", "text/csv", example("iris.csv")).await;
    let res = app
        .post(
            "/v1/batch-predictions",
            &team.member,
            json!({"model": "iris", "alias": "production", "dataset_id": data["id"]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["state"], "queued");
    // The alias is resolved now: moving it later does not change what this job scores with.
    assert_eq!(
        (created["version"].as_i64(), created["alias"].as_str()),
        (Some(1), Some("production"))
    );
    assert_eq!(created["progress"], json!({"rows_done": 0, "rows": null}));
    assert_eq!(created["rows_per_part"], 100_000);
    assert_eq!(created["output"], Value::Null);
    let id = created["id"].as_str().unwrap();

    let job: Value = app.get(&format!("/v1/jobs/{id}"), &team.viewer).await.json().await.unwrap();
    assert_eq!(
        (job["kind"].as_str(), job["state"].as_str()),
        (Some("batch_prediction"), Some("queued"))
    );
    let got: Value =
        app.get(&format!("/v1/batch-predictions/{id}"), &team.viewer).await.json().await.unwrap();
    assert_eq!(got, created);
    let page: Value = app.get("/v1/batch-predictions", &team.viewer).await.json().await.unwrap();
    assert_eq!(page["items"][0]["id"], id);

    // No output before it has succeeded.
    let res = app.get(&format!("/v1/batch-predictions/{id}/output"), &team.viewer).await;
    let body = assert_error(res, 409, "invalid_state").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("queued"), "{body}");

    // Its version cannot be deleted while it is queued; once cancelled, it can.
    let res = app
        .request(Method::PUT, "/v1/models/iris/aliases/production", Some(&team.maintainer))
        .json(&json!({"version": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app.request(Method::DELETE, "/v1/models/iris/versions/1", Some(&team.maintainer));
    let body = assert_error(res.send().await.unwrap(), 409, "in_use").await;
    assert_eq!(body["error"]["details"]["jobs"], json!([id]), "{body}");
    let res = app.post(&format!("/v1/jobs/{id}/cancel"), &team.member, json!({})).await;
    assert_eq!(res.status(), 202);
    let res = app.request(Method::DELETE, "/v1/models/iris/versions/1", Some(&team.maintainer));
    assert_eq!(res.send().await.unwrap().status(), 204);
    // The record keeps its lineage after the version is gone.
    let got: Value =
        app.get(&format!("/v1/batch-predictions/{id}"), &team.viewer).await.json().await.unwrap();
    assert_eq!((got["state"].as_str(), got["version"].as_i64()), (Some("cancelled"), Some(1)));

    let audit: Value = app.get("/v1/audit", &team.maintainer).await.json().await.unwrap();
    let entry = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "batch_prediction.create")
        .expect("audited");
    assert_eq!(entry["resource_id"], id);
}

#[tokio::test]
async fn bad_requests_name_every_bad_field() {
    let app = spawn_app().await;
    let team = setup(&app).await;
    let data = app.upload(&team.member, "to-score", "text/csv", example("iris.csv")).await;
    let post = |body: Value| app.post("/v1/batch-predictions", &team.member, body);

    let body = assert_error(
        post(json!({"model": 3, "version": "one", "rows_per_part": 5, "extra": true,
                    "dataset_id": "nope"}))
        .await,
        422,
        "validation_failed",
    )
    .await;
    let fields = body["error"]["details"]["fields"].as_object().unwrap();
    let names: Vec<&str> = fields.keys().map(String::as_str).collect();
    assert_eq!(names, ["dataset_id", "extra", "model", "rows_per_part", "version"], "{body}");

    let body = assert_error(
        post(
            json!({"model": "iris", "version": 1, "alias": "production", "dataset_id": data["id"],
                    "rows_per_part": 5}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    let fields = &body["error"]["details"]["fields"];
    assert!(fields["alias"].is_string() && fields["rows_per_part"].is_string(), "{body}");

    // Another team's dataset and an unknown model: both named at once.
    let other = app.team("beta").await;
    let theirs = app.upload(&other.member, "theirs", "text/csv", example("iris.csv")).await;
    let body = assert_error(
        post(json!({"model": "nope", "version": 1, "dataset_id": theirs["id"]})).await,
        422,
        "validation_failed",
    )
    .await;
    let fields = &body["error"]["details"]["fields"];
    assert!(fields["model"].as_str().unwrap().contains("`nope`"), "{body}");
    assert!(fields["dataset_id"].as_str().unwrap().contains("no dataset"), "{body}");

    // A dataset that cannot fit the model: told at submission, from the schemas, not by a
    // job that fails.
    let narrow = app
        .upload(&team.member, "narrow", "text/csv", b"sepal_length,sepal_width\n1,2\n".to_vec())
        .await;
    let body = assert_error(
        post(json!({"model": "iris", "version": 1, "dataset_id": narrow["id"]})).await,
        422,
        "validation_failed",
    )
    .await;
    let message = body["error"]["details"]["fields"]["dataset_id"].as_str().unwrap();
    assert!(message.contains("petal_length, petal_width"), "{body}");
    let body = assert_error(
        post(
            json!({"model": "iris", "version": 1, "dataset_id": data["id"], "id_column": "order"}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert!(body["error"]["details"]["fields"]["id_column"].as_str().unwrap().contains("`order`"));
    let digits =
        app.upload(&team.member, "digits", "application/octet-stream", example("digits.npz")).await;
    let body = assert_error(
        post(json!({"model": "iris", "version": 1, "dataset_id": digits["id"]})).await,
        422,
        "validation_failed",
    )
    .await;
    assert!(body["error"]["details"]["fields"]["dataset_id"].as_str().unwrap().contains("CSV"));

    let res = post(json!({"model": "iris", "version": 9, "dataset_id": data["id"]})).await;
    let body = assert_error(res, 404, "not_found").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("no version 9"), "{body}");
    let res = post(json!({"model": "iris", "alias": "staging", "dataset_id": data["id"]})).await;
    assert_error(res, 404, "not_found").await;

    // Roles and teams.
    let res = app
        .post(
            "/v1/batch-predictions",
            &team.viewer,
            json!({"model": "iris", "version": 1, "dataset_id": data["id"]}),
        )
        .await;
    assert_error(res, 403, "forbidden").await;
    let created: Value = post(json!({"model": "iris", "version": 2, "dataset_id": data["id"]}))
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let res = app.get(&format!("/v1/batch-predictions/{id}"), &other.viewer).await;
    assert_error(res, 404, "not_found").await;
    let page: Value = app.get("/v1/batch-predictions", &other.viewer).await.json().await.unwrap();
    assert_eq!(page["items"], json!([]));
    let res = app.get(&format!("/v1/batch-predictions/{id}/output?part=x"), &team.viewer).await;
    assert_eq!(res.status(), 400);
}
