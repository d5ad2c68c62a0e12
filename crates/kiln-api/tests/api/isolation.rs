//! Team isolation against role checks: another team's resource answers 404 exactly like a
//! missing one, whatever the caller's role; the caller's own resource answers 403 when the
//! role is too low.

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::serving::{deploy, iris_rows, setup};
use crate::{TestApp, assert_error, spawn_app};

/// Each write route that takes a team resource, as (method, path, body).
fn writes(job: &str, name: &str) -> Vec<(Method, String, Value)> {
    vec![
        (Method::POST, format!("/v1/jobs/{job}/cancel"), json!({})),
        (Method::POST, format!("/v1/jobs/{job}/retry"), json!({})),
        (
            Method::POST,
            format!("/v1/runs/{job}/metrics"),
            json!({"points": [{"name": "x", "step": 0, "value": 1.0}]}),
        ),
        (Method::POST, format!("/v1/runs/{job}/finish"), json!({"status": "failed"})),
        (Method::PUT, format!("/v1/models/{name}/aliases/staging"), json!({"version": 1})),
        (Method::PATCH, format!("/v1/deployments/{name}"), json!({"traffic": []})),
        (
            Method::POST,
            format!("/v1/deployments/{name}/predict"),
            json!({"instances": [iris_rows()[0]]}),
        ),
        (Method::DELETE, format!("/v1/deployments/{name}"), json!({})),
    ]
}

async fn send(
    app: &TestApp,
    token: &str,
    (method, path, body): &(Method, String, Value),
) -> Response {
    app.request(method.clone(), path, Some(token)).json(body).send().await.unwrap()
}

async fn newest_job(app: &TestApp, token: &str) -> String {
    let page: Value = app.get("/v1/jobs", token).await.json().await.unwrap();
    page["items"][0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_team_a_viewer_gets_404_not_403_on_a_team_b_resource_that_needs_a_higher_role() {
    let app = spawn_app().await;
    // Team B (`alpha`) owns a job (its run), model `iris` and deployment `iris`; team A
    // (`beta`) has a resource of each kind under other names.
    let b = setup(&app).await;
    deploy(&app, &b, json!({"name": "iris", "model": "iris", "version": 1})).await;
    let a = app.team("beta").await;
    assert_eq!(app.register(&a, "iris-a", 0).await, 1);
    deploy(&app, &a, json!({"name": "iris-a", "model": "iris-a", "version": 1})).await;
    let b_job = newest_job(&app, &b.viewer).await;
    let a_job = newest_job(&app, &a.viewer).await;

    for route in writes(&b_job, "iris") {
        // Team B's resource: no role of team A learns that it exists.
        for token in [&a.viewer, &a.member] {
            let res = send(&app, token, &route).await;
            let body = assert_error(res, 404, "not_found").await;
            assert!(!body.to_string().contains("role"), "{} {}: {body}", route.0, route.1);
        }
    }
    // Team A's own resources under the same routes: the viewer's role is too low.
    for route in writes(&a_job, "iris-a") {
        let res = send(&app, &a.viewer, &route).await;
        let body = assert_error(res, 403, "forbidden").await;
        assert!(body.to_string().contains("role"), "{} {}: {body}", route.0, route.1);
    }
    // Nothing of team B changed.
    let job: Value = app.get(&format!("/v1/jobs/{b_job}"), &b.viewer).await.json().await.unwrap();
    assert_eq!(job["state"], "queued");
    let deployment: Value = app.get("/v1/deployments/iris", &b.viewer).await.json().await.unwrap();
    assert_eq!(deployment["status"], "ready");
}
