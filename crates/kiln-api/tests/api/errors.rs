//! Every 4xx is the JSON body of API.md, including actix's own extractor failures.

use reqwest::Method;

use crate::{assert_error, spawn_app};

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let res = app
        .request(Method::POST, "/v1/teams", Some(&app.admin))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "bad_request").await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = spawn_app().await;
    let res = app
        .request(Method::POST, "/v1/teams", Some(&app.admin))
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_error(res, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn wrong_field_types_and_unknown_fields_are_422() {
    let app = spawn_app().await;
    for body in [
        serde_json::json!({"name": 5}),
        serde_json::json!({"name": "x", "colour": "red"}),
        serde_json::json!([]),
    ] {
        let res = app.post("/v1/teams", &app.admin, body).await;
        assert_error(res, 422, "validation_failed").await;
    }
}

#[tokio::test]
async fn oversize_json_is_413() {
    let app = spawn_app().await; // JSON limit 1 MiB in tests
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let res = app
        .request(Method::POST, "/v1/teams", Some(&app.admin))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_error(res, 413, "payload_too_large").await;
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405() {
    let app = spawn_app().await;
    assert_error(app.get("/v1/nothing-here", &app.admin).await, 404, "not_found").await;
    let res = app.request(Method::DELETE, "/v1/teams", Some(&app.admin)).send().await.unwrap();
    assert_error(res, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn malformed_ids_answer_like_missing_ones() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    assert_error(app.get("/v1/jobs/not-a-uuid", &team.viewer).await, 404, "not_found").await;
    assert_error(
        app.get(&format!("/v1/jobs/{}", uuid::Uuid::now_v7()), &team.viewer).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn bad_query_values_are_reported() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    assert_error(app.get("/v1/jobs?limit=0", &team.viewer).await, 422, "validation_failed").await;
    assert_error(app.get("/v1/jobs?limit=501", &team.viewer).await, 422, "validation_failed").await;
    assert_error(app.get("/v1/jobs?limit=abc", &team.viewer).await, 400, "bad_request").await;
    assert_error(app.get("/v1/jobs?state=done", &team.viewer).await, 422, "validation_failed")
        .await;
    assert_error(app.get("/v1/jobs?cursor=zzz", &team.viewer).await, 400, "bad_request").await;
}

#[tokio::test]
async fn health_and_readiness_and_metrics() {
    let app = spawn_app().await;
    let res = app.request(Method::GET, "/healthz", None).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    let res = app.request(Method::GET, "/readyz", None).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let ready: serde_json::Value = res.json().await.unwrap();
    assert_eq!(ready["checks"]["postgres"], "ok");
    assert_eq!(ready["checks"]["artifact_store"], "ok");
    let text = app.get("/metrics", &app.admin).await.text().await.unwrap();
    assert!(
        text.contains(
            "kiln_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("kiln_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn nul_characters_are_refused_not_crashed_on() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let res = app
        .post(
            "/v1/runs",
            &team.member,
            serde_json::json!({"name": "r", "params": {"k": "a\u{0}b"}}),
        )
        .await;
    let body = assert_error(res, 422, "validation_failed").await;
    assert!(body["error"]["details"]["fields"]["params.k"].is_string(), "{body}");
    let res = app.post("/v1/jobs", &team.member, serde_json::json!({"target": "x\u{0}"})).await;
    assert_error(res, 422, "validation_failed").await;
    assert_error(app.get("/v1/datasets?name=a%00b", &team.viewer).await, 400, "bad_request").await;
    assert_error(app.get("/v1/models/a%00/versions", &team.viewer).await, 400, "bad_request").await;
}

#[tokio::test]
async fn readiness_fails_when_the_artifact_store_is_down() {
    let mut app = spawn_app().await;
    app.s3.stop();
    let res = app.request(Method::GET, "/readyz", None).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let ready: serde_json::Value = res.json().await.unwrap();
    assert_eq!(ready["checks"]["artifact_store"], "unavailable");
    assert_eq!(ready["checks"]["postgres"], "ok");
}
