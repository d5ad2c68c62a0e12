//! Tokens, roles and revocation.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{assert_error, spawn_app};

#[tokio::test]
async fn missing_malformed_and_unknown_tokens_are_401() {
    let app = spawn_app().await;
    let res = app.request(Method::GET, "/v1/jobs", None).send().await.unwrap();
    assert_error(res, 401, "unauthenticated").await;
    let res = app
        .request(Method::GET, "/v1/jobs", None)
        .header("Authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "unauthenticated").await;
    let res = app.get("/v1/jobs", "kiln_notarealtoken").await;
    assert_error(res, 401, "unauthenticated").await;
}

#[tokio::test]
async fn tokens_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let pool = app.test.db.get_postgres_connection_pool();
    let rows: Vec<(Vec<u8>, String)> =
        sqlx_rows(pool, "SELECT token_hash, prefix FROM api_tokens").await;
    for (hash, prefix) in rows {
        assert_eq!(hash.len(), 32, "sha256");
        assert!(prefix.len() < 20);
        assert_ne!(String::from_utf8_lossy(&hash), team.member);
    }
    // The listing never shows a secret.
    let res = app.get(&format!("/v1/teams/{}/tokens", team.id), &team.maintainer).await;
    let body = res.text().await.unwrap();
    assert!(!body.contains(&team.member) && !body.contains(&team.viewer));
}

async fn sqlx_rows(pool: &sqlx::PgPool, sql: &str) -> Vec<(Vec<u8>, String)> {
    sqlx::query_as(sql).fetch_all(pool).await.unwrap()
}

#[tokio::test]
async fn revoked_token_stops_working_on_the_next_request() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let res = app
        .post(
            &format!("/v1/teams/{}/tokens", team.id),
            &team.maintainer,
            json!({"name": "ci", "role": "member"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let issued: Value = res.json().await.unwrap();
    let token = issued["token"].as_str().unwrap();
    assert!(token.starts_with("kiln_"));
    assert_eq!(app.get("/v1/jobs", token).await.status(), 200);

    let res = app
        .request(
            Method::DELETE,
            &format!("/v1/tokens/{}", issued["id"].as_str().unwrap()),
            Some(&team.maintainer),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_error(app.get("/v1/jobs", token).await, 401, "unauthenticated").await;

    // Revocations are audited.
    let audit: Value = app.get("/v1/audit", &team.maintainer).await.json().await.unwrap();
    let actions: Vec<&str> =
        audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"token.revoke") && actions.contains(&"token.issue"), "{actions:?}");
}

#[tokio::test]
async fn a_token_revoked_through_one_replica_stops_working_on_another() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let (other, _cache) = app.replica(kiln_api::serving::ServingArgs::defaults()).await;
    let http = reqwest::Client::new();
    let jobs = |token: &str| http.get(format!("{other}/v1/jobs")).bearer_auth(token).send();
    // The other replica has authenticated (and cached) the token, many times over.
    for _ in 0..20 {
        assert_eq!(jobs(&team.member).await.unwrap().status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let tokens: Value = app
        .get(&format!("/v1/teams/{}/tokens", team.id), &team.maintainer)
        .await
        .json()
        .await
        .unwrap();
    let member =
        tokens["items"].as_array().unwrap().iter().find(|t| t["role"] == "member").unwrap();
    let res = app
        .request(
            Method::DELETE,
            &format!("/v1/tokens/{}", member["id"].as_str().unwrap()),
            Some(&team.maintainer),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    // The revocation notice reaches the other replica long before its cache would expire.
    let started = std::time::Instant::now();
    while jobs(&team.member).await.unwrap().status() == 200 {
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "still accepted after 3 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_error(jobs(&team.member).await.unwrap(), 401, "unauthenticated").await;
    // Other tokens still work there.
    assert_eq!(jobs(&team.viewer).await.unwrap().status(), 200);
}

#[tokio::test]
async fn role_matrix_for_teams_tokens_and_audit() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let tokens_path = format!("/v1/teams/{}/tokens", team.id);
    let new_token = json!({"name": "x", "role": "viewer"});
    // (token, may create teams, may issue team tokens, may read audit)
    let matrix = [
        (&app.admin, true, true, true),
        (&team.maintainer, false, true, true),
        (&team.member, false, false, false),
        (&team.viewer, false, false, false),
    ];
    for (i, (token, teams, issue, audit)) in matrix.into_iter().enumerate() {
        let res = app.post("/v1/teams", token, json!({"name": format!("t{i}")})).await;
        assert_eq!(res.status().as_u16(), if teams { 201 } else { 403 }, "create team, row {i}");
        let res = app.post(&tokens_path, token, new_token.clone()).await;
        assert_eq!(res.status().as_u16(), if issue { 201 } else { 403 }, "issue token, row {i}");
        let res = app.get("/v1/audit", token).await;
        assert_eq!(res.status().as_u16(), if audit { 200 } else { 403 }, "audit, row {i}");
    }
    // Team tokens can never be admins.
    let res = app.post(&tokens_path, &app.admin, json!({"name": "x", "role": "admin"})).await;
    let body = assert_error(res, 422, "validation_failed").await;
    assert!(body["error"]["details"]["fields"]["role"].is_string());
}

#[tokio::test]
async fn another_teams_tokens_answer_404() {
    let app = spawn_app().await;
    let a = app.team("alpha").await;
    let b = app.team("beta").await;
    let res = app
        .post(
            &format!("/v1/teams/{}/tokens", b.id),
            &a.maintainer,
            json!({"name": "x", "role": "member"}),
        )
        .await;
    assert_error(res, 404, "not_found").await;
    let listed: Value =
        app.get(&format!("/v1/teams/{}/tokens", b.id), &b.maintainer).await.json().await.unwrap();
    let b_token_id = listed["items"][0]["id"].as_str().unwrap().to_owned();
    let res = app
        .request(Method::DELETE, &format!("/v1/tokens/{b_token_id}"), Some(&a.maintainer))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "not_found").await;
    // Audit: each maintainer sees only their team's entries.
    let audit: Value = app.get("/v1/audit", &a.maintainer).await.json().await.unwrap();
    assert!(audit["items"].as_array().unwrap().iter().all(|e| e["team_id"] == a.id.to_string()));
}
