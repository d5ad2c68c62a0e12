//! PostgreSQL goes away under a running API (a TCP proxy between the API's pool and the
//! server is cut: every connection closes, new ones are refused): predictions go on from
//! memory, calls that need the database answer 503 `unavailable` with `Retry-After` within
//! the pool's acquire timeout instead of hanging, and once PostgreSQL is back revocations
//! hold again.

use std::time::{Duration, Instant};

use kiln_db::repo::tokens;
use kiln_types::Role;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::serving::{deploy, iris_rows, setup};
use crate::{TestApp, TestTeam, assert_error, example, spawn_app_behind_proxy};

/// Far above the bound of a database call (an acquire timeout of 2 s, plus a second), far
/// below the 30 s that every authenticated request hung for before.
const FAIL_FAST: Duration = Duration::from_secs(15);

/// How long the test waits for the API to notice that PostgreSQL is back.
const RECOVERY: Duration = Duration::from_secs(60);

async fn ok_json(res: Response) -> Value {
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A team with deployment `iris` serving, predicted through once (so the API has seen the
/// member's token), and a dataset to submit jobs on.
async fn serving(app: &TestApp) -> (TestTeam, Value, Value) {
    let team = setup(app).await;
    deploy(app, &team, json!({"name": "iris", "model": "iris", "alias": "production"})).await;
    let before = ok_json(app.predict("iris", &team.member, &iris_rows()[..5]).await).await;
    let dataset = app.upload(&team.member, "iris", "text/csv", example("iris.csv")).await;
    let spec = json!({"dataset_id": dataset["id"], "task": "classification",
                      "target": "species", "model": {"type": "mlp", "hidden": [8]}});
    (team, before, spec)
}

#[tokio::test]
async fn predict_answers_from_memory_while_postgres_is_down_and_a_submit_answers_503_fast() {
    let (app, proxy) = spawn_app_behind_proxy().await;
    let (team, before, spec) = serving(&app).await;

    proxy.cut();
    for _ in 0..10 {
        let during = ok_json(app.predict("iris", &team.member, &iris_rows()[..5]).await).await;
        assert_eq!(during["predictions"], before["predictions"]);
    }

    // A call that needs PostgreSQL: 503 with Retry-After, within the bound.
    let started = Instant::now();
    let res = app.post("/v1/jobs", &team.member, spec.clone()).await;
    let took = started.elapsed();
    let retry_after = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let body = assert_error(res, 503, "unavailable").await;
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok()), "no Retry-After: {body}");
    assert!(took < FAIL_FAST, "a submit during the outage took {took:?}");

    // A token this process never saw cannot be checked: 503, not a 401 that would lie.
    let unseen = tokens::issue(&app.test.db, Some(team.id), Role::Member, "unseen", None)
        .await
        .unwrap()
        .secret;
    let started = Instant::now();
    let res = app.predict("iris", &unseen, &iris_rows()[..1]).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_error(res, 503, "unavailable").await;
    assert!(started.elapsed() < FAIL_FAST, "took {:?}", started.elapsed());

    // Readiness says so, within the bound too.
    let started = Instant::now();
    let res = app.request(Method::GET, "/readyz", None).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let ready: Value = res.json().await.unwrap();
    assert_eq!(ready["checks"]["postgres"], "unavailable", "{ready}");
    assert!(started.elapsed() < FAIL_FAST, "/readyz took {:?}", started.elapsed());

    // Back: the same submission goes through, and the unseen token works.
    proxy.restore();
    let started = Instant::now();
    loop {
        let res = app.post("/v1/jobs", &team.member, spec.clone()).await;
        if res.status() != 503 {
            assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
            break;
        }
        assert!(started.elapsed() < RECOVERY, "still 503 after PostgreSQL came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ok_json(app.predict("iris", &unseen, &iris_rows()[..1]).await).await;
}

#[tokio::test]
async fn a_token_revoked_while_this_replica_was_cut_off_is_refused_once_postgres_is_back() {
    let (app, proxy) = spawn_app_behind_proxy().await;
    let (team, _, _) = serving(&app).await;
    ok_json(app.predict("iris", &team.maintainer, &iris_rows()[..1]).await).await;
    let member = tokens::authenticate(&app.test.db, &team.member).await.unwrap().unwrap();

    proxy.cut();
    ok_json(app.predict("iris", &team.member, &iris_rows()[..1]).await).await;
    // Revoked by another replica while this one cannot hear about it: the notice is lost.
    assert!(tokens::revoke(&app.test.db, member.token_id).await.unwrap());
    // This replica cannot know yet: it keeps serving the token it confirmed before.
    ok_json(app.predict("iris", &team.member, &iris_rows()[..1]).await).await;

    proxy.restore();
    let started = Instant::now();
    loop {
        let res = app.predict("iris", &team.member, &iris_rows()[..1]).await;
        if res.status() == 401 {
            assert_error(res, 401, "unauthenticated").await;
            break;
        }
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        assert!(started.elapsed() < RECOVERY, "the revoked token is still accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // For good, and only that token.
    for _ in 0..5 {
        let res = app.predict("iris", &team.member, &iris_rows()[..1]).await;
        assert_error(res, 401, "unauthenticated").await;
    }
    ok_json(app.predict("iris", &team.maintainer, &iris_rows()[..1]).await).await;
}
