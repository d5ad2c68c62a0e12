//! Tracked runs: params and metric batches from training outside Kiln.

use serde_json::{Value, json};

use crate::{assert_error, spawn_app};

#[tokio::test]
async fn log_metrics_in_batches_and_read_them_as_series() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let res = app
        .post("/v1/runs", &team.member, json!({"name": "notebook", "params": {"lr": 0.01}}))
        .await;
    assert_eq!(res.status(), 201);
    let run: Value = res.json().await.unwrap();
    let id = run["id"].as_str().unwrap();
    assert_eq!(run["params"]["lr"], 0.01);
    assert_eq!(run["status"], "running");

    let points: Vec<Value> = (0..10_000)
        .map(|i| json!({"name": if i % 2 == 0 { "train_loss" } else { "val_accuracy" }, "step": i / 2, "value": 1.0 / (1.0 + i as f64)}))
        .collect();
    let res =
        app.post(&format!("/v1/runs/{id}/metrics"), &team.member, json!({"points": points})).await;
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["accepted"], 10_000);

    let series: Value =
        app.get(&format!("/v1/runs/{id}/metrics"), &team.viewer).await.json().await.unwrap();
    let loss = series["series"]["train_loss"].as_array().unwrap();
    assert_eq!(loss.len(), 5_000);
    assert_eq!(loss[0], json!([0, 1.0]));
    assert_eq!(loss[4_999][0], 4_999);
    let only: Value = app
        .get(&format!("/v1/runs/{id}/metrics?name=val_accuracy"), &team.viewer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(only["series"].as_object().unwrap().len(), 1);

    let res = app
        .post(&format!("/v1/runs/{id}/finish"), &team.member, json!({"status": "succeeded"}))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "succeeded");
    let res =
        app.post(&format!("/v1/runs/{id}/finish"), &team.member, json!({"status": "failed"})).await;
    assert_error(res, 409, "invalid_state").await;
}

#[tokio::test]
async fn bad_points_are_named_and_nothing_is_stored() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let run: Value =
        app.post("/v1/runs", &team.member, json!({"name": "r"})).await.json().await.unwrap();
    let id = run["id"].as_str().unwrap();
    let too_many: Vec<Value> =
        (0..10_001).map(|i| json!({"name": "x", "step": i, "value": 1.0})).collect();
    let res = app
        .post(&format!("/v1/runs/{id}/metrics"), &team.member, json!({"points": too_many}))
        .await;
    let body = assert_error(res, 422, "validation_failed").await;
    assert!(body["error"]["details"]["fields"]["points"].is_string());
    let res = app
        .post(
            &format!("/v1/runs/{id}/metrics"),
            &team.member,
            json!({"points": [
                {"name": "ok", "step": 1, "value": 1.0},
                {"name": "", "step": -1, "value": 2.0}
            ]}),
        )
        .await;
    let body = assert_error(res, 422, "validation_failed").await;
    let fields = body["error"]["details"]["fields"].as_object().unwrap();
    assert!(
        fields.contains_key("points[1].name") && fields.contains_key("points[1].step"),
        "{fields:?}"
    );
    let series: Value =
        app.get(&format!("/v1/runs/{id}/metrics"), &team.viewer).await.json().await.unwrap();
    assert_eq!(series["series"], json!({}), "a rejected batch stores nothing");
}

#[tokio::test]
async fn runs_are_isolated_between_teams_and_viewers_cannot_write() {
    let app = spawn_app().await;
    let a = app.team("alpha").await;
    let b = app.team("beta").await;
    let run: Value =
        app.post("/v1/runs", &a.member, json!({"name": "r"})).await.json().await.unwrap();
    let id = run["id"].as_str().unwrap();
    assert_error(app.get(&format!("/v1/runs/{id}/metrics"), &b.viewer).await, 404, "not_found")
        .await;
    let res = app
        .post(
            &format!("/v1/runs/{id}/metrics"),
            &b.member,
            json!({"points": [{"name": "x", "step": 0, "value": 1.0}]}),
        )
        .await;
    assert_error(res, 404, "not_found").await;
    let res = app
        .post(
            &format!("/v1/runs/{id}/metrics"),
            &a.viewer,
            json!({"points": [{"name": "x", "step": 0, "value": 1.0}]}),
        )
        .await;
    assert_error(res, 403, "forbidden").await;
    let listed: Value = app.get("/v1/runs", &b.viewer).await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));
}

#[tokio::test]
async fn duplicate_metric_points_a_resent_step_is_stored_once_with_the_latest_value() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let run: Value =
        app.post("/v1/runs", &team.member, json!({"name": "r"})).await.json().await.unwrap();
    let path = format!("/v1/runs/{}/metrics", run["id"].as_str().unwrap());
    let points: Vec<Value> =
        (0..5).map(|s| json!({"name": "loss", "step": s, "value": s as f64})).collect();
    let batch = json!({ "points": points });
    // The same call twice (a client retrying after a lost answer), then steps 3 and 4 again
    // with new values (training resumed from a checkpoint at step 3), and within one call a
    // step given twice: the last one wins.
    for body in [
        batch.clone(),
        batch,
        json!({"points": [
            {"name": "loss", "step": 3, "value": 30.0},
            {"name": "loss", "step": 4, "value": 40.0},
            {"name": "loss", "step": 4, "value": 41.0},
        ]}),
    ] {
        assert_eq!(app.post(&path, &team.member, body).await.status(), 202);
    }
    let series: Value = app.get(&path, &team.viewer).await.json().await.unwrap();
    assert_eq!(
        series["series"]["loss"],
        json!([[0, 0.0], [1, 1.0], [2, 2.0], [3, 30.0], [4, 41.0]]),
        "one point per step, the latest"
    );
}
