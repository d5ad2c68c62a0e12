//! Teams: creation, validation, conflicts and pagination.

use serde_json::{Value, json};

use crate::{assert_error, spawn_app};

#[tokio::test]
async fn create_team_then_the_same_name_conflicts() {
    let app = spawn_app().await;
    let res = app.post("/v1/teams", &app.admin, json!({"name": "vision"})).await;
    assert_eq!(res.status(), 201);
    let team: Value = res.json().await.unwrap();
    assert_eq!(team["name"], "vision");
    assert_eq!(team["max_running_jobs"], 4);
    assert!(team["created_at"].as_str().unwrap().ends_with('Z'));
    let res = app.post("/v1/teams", &app.admin, json!({"name": "vision"})).await;
    assert_error(res, 409, "already_exists").await;
}

#[tokio::test]
async fn invalid_team_fields_are_all_listed() {
    let app = spawn_app().await;
    let res = app
        .post("/v1/teams", &app.admin, json!({"name": "Not A Slug", "max_running_jobs": 0}))
        .await;
    let body = assert_error(res, 422, "validation_failed").await;
    let fields = body["error"]["details"]["fields"].as_object().unwrap();
    assert!(fields.contains_key("name") && fields.contains_key("max_running_jobs"), "{fields:?}");
}

#[tokio::test]
async fn teams_paginate_with_a_cursor() {
    let app = spawn_app().await;
    for i in 0..7 {
        assert_eq!(
            app.post("/v1/teams", &app.admin, json!({"name": format!("team-{i}")})).await.status(),
            201
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/teams?limit=3&cursor={c}"),
            None => "/v1/teams?limit=3".to_owned(),
        };
        let page: Value = app.get(&path, &app.admin).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|t| t["name"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).rev().map(|i| format!("team-{i}")).collect();
    assert_eq!(seen, expected, "newest first, each once");
}
