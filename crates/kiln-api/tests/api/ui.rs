//! The web UI over HTTP: sign-in sessions, CSRF on every form, the API's team scoping on
//! every page (another team's job, model or deployment is a 404 page), forms that act
//! through the REST routes (promote a version, change a traffic split, cancel a job), and
//! chart data downsampled in PostgreSQL.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, Response, redirect};
use serde_json::{Value, json};

use crate::serving::{deploy, setup};
use crate::{TestApp, spawn_app};

/// A browser without a cookie jar: the test carries the session cookie itself.
fn browser() -> Client {
    Client::builder().redirect(redirect::Policy::none()).build().unwrap()
}

fn cookie_value(res: &Response, name: &str) -> Option<String> {
    res.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let (pair, _) = v.split_once(';')?;
        let (k, value) = pair.split_once('=')?;
        (k == name).then(|| value.to_owned())
    })
}

/// The first form's CSRF token in a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
    html[at..at + 64].to_owned()
}

/// Signs in with `token`; returns the `Cookie` header of the session.
async fn sign_in(app: &TestApp, token: &str) -> String {
    let http = browser();
    let form = http.get(format!("{}/ui/sign-in", app.base)).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let nonce = cookie_value(&form, "kiln_ui_sign_in").expect("the sign-in nonce cookie");
    let page = form.text().await.unwrap();
    assert!(!page.contains(token));
    let res = http
        .post(format!("{}/ui/sign-in", app.base))
        .header(COOKIE, format!("kiln_ui_sign_in={nonce}"))
        .form(&[("token", token), ("csrf", &nonce), ("next", "/ui/jobs")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    assert_eq!(res.headers()[LOCATION], "/ui/jobs");
    let set = res
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("kiln_ui_session="))
        .expect("a session cookie");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    assert!(!set.contains(token), "the cookie is not the token");
    let secret = cookie_value(&res, "kiln_ui_session").unwrap();
    format!("kiln_ui_session={secret}")
}

async fn get(app: &TestApp, path: &str, cookie: &str) -> Response {
    browser().get(format!("{}{path}", app.base)).header(COOKIE, cookie).send().await.unwrap()
}

async fn post(app: &TestApp, path: &str, cookie: &str, form: &[(&str, &str)]) -> Response {
    browser()
        .post(format!("{}{path}", app.base))
        .header(COOKIE, cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn ui_pages_have_the_apis_scoping_sessions_and_csrf() {
    let app = spawn_app().await;
    // Team `alpha`: model iris v1, v2 (production → v1), deployment `iris`, a queued job.
    let alpha = setup(&app).await;
    deploy(&app, &alpha, json!({"name": "iris", "model": "iris", "alias": "production"})).await;
    let jobs: Value = app.get("/v1/jobs", &alpha.viewer).await.json().await.unwrap();
    let job = jobs["items"][0]["id"].as_str().unwrap().to_owned();
    let beta = app.team("beta").await;

    // No session: pages redirect to the sign-in page (and come back after it); data 401s.
    let res = get(&app, &format!("/ui/jobs/{job}"), "").await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()[LOCATION].to_str().unwrap(),
        format!("/ui/sign-in?next=/ui/jobs/{job}")
    );
    let res = get(&app, &format!("/ui/runs/{job}/series.json"), "kiln_ui_session=nonsense").await;
    assert_eq!(res.status(), 401);
    let res = get(&app, "/", "").await;
    assert_eq!((res.status().as_u16(), res.headers()[LOCATION].to_str().unwrap()), (303, "/ui"));

    // A bad token is refused on the page, with what to do.
    let http = browser();
    let form = http.get(format!("{}/ui/sign-in", app.base)).send().await.unwrap();
    let nonce = cookie_value(&form, "kiln_ui_sign_in").unwrap();
    let res = http
        .post(format!("{}/ui/sign-in", app.base))
        .header(COOKIE, format!("kiln_ui_sign_in={nonce}"))
        .form(&[("token", "kiln_not-a-token"), ("csrf", &nonce)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("not valid"));
    // A sign-in without the double-submitted nonce (a cross-site form) is refused.
    let res = http
        .post(format!("{}/ui/sign-in", app.base))
        .form(&[("token", alpha.viewer.as_str()), ("csrf", &nonce)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    // Team beta's maintainer sees none of alpha's objects: each is a 404 page that says
    // what to do, and the chart data too.
    let beta_session = sign_in(&app, &beta.maintainer).await;
    for path in [
        format!("/ui/jobs/{job}"),
        format!("/ui/jobs/{job}/summary"),
        format!("/ui/runs/{job}"),
        format!("/ui/runs/{job}/series.json"),
        format!("/ui/compare?id={job}"),
        "/ui/models/iris".to_owned(),
        "/ui/deployments/iris".to_owned(),
    ] {
        let res = get(&app, &path, &beta_session).await;
        assert_eq!(res.status(), 404, "{path}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(res.text().await.unwrap().contains("another team"), "{path}");
    }
    let page = get(&app, "/ui/jobs", &beta_session).await.text().await.unwrap();
    assert!(!page.contains(&job[28..]), "beta's jobs list shows none of alpha's");
    // Even with a valid CSRF token of its own, beta cannot act on alpha's job.
    let csrf = csrf_of(&page);
    let res =
        post(&app, &format!("/ui/jobs/{job}/cancel"), &beta_session, &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 404);

    // Alpha's maintainer: the pages show its objects.
    let session = sign_in(&app, &alpha.maintainer).await;
    let page = get(&app, &format!("/ui/jobs/{job}"), &session).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains(&job) && page.contains("queued"));
    let csrf = csrf_of(&page);
    assert_ne!(csrf, csrf_of(&get(&app, "/ui/jobs", &beta_session).await.text().await.unwrap()));

    // A POST without the CSRF token, or with another session's, changes nothing: 403.
    for form in [vec![], vec![("csrf", "0".repeat(64))]] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = post(&app, &format!("/ui/jobs/{job}/cancel"), &session, &form).await;
        assert_eq!(res.status(), 403);
    }
    let state: Value =
        app.get(&format!("/v1/jobs/{job}"), &alpha.viewer).await.json().await.unwrap();
    assert_eq!(state["state"], "queued");

    // Promote v2 to production through the form: the REST route's move (and audit).
    let res = post(
        &app,
        "/ui/models/iris/aliases",
        &session,
        &[("csrf", &csrf), ("alias", "production"), ("version", "2")],
    )
    .await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("now points at v2 (was v1)"), "{page}");
    assert!(page.contains("alias-history"), "the audit log's history is shown");
    let model: Value = app.get("/v1/models/iris", &alpha.viewer).await.json().await.unwrap();
    assert_eq!(model["aliases"]["production"], 2);

    // Change the traffic split through the form.
    let res = post(
        &app,
        "/ui/deployments/iris/traffic",
        &session,
        &[("csrf", &csrf), ("split", "2=90 1=10")],
    )
    .await;
    assert_eq!(res.status(), 200);
    let d: Value = app.get("/v1/deployments/iris", &alpha.viewer).await.json().await.unwrap();
    assert_eq!(d["traffic"], json!([{"version": 2, "weight": 90}, {"version": 1, "weight": 10}]));
    // A split that does not sum to 100 is the API's 422, as a page.
    let res =
        post(&app, "/ui/deployments/iris/traffic", &session, &[("csrf", &csrf), ("split", "2=50")])
            .await;
    assert_eq!(res.status(), 422);

    // A viewer sees no forms, and the handler refuses one all the same (403, not done).
    let viewer = sign_in(&app, &alpha.viewer).await;
    let page = get(&app, "/ui/models/iris", &viewer).await.text().await.unwrap();
    assert!(!page.contains("Move alias"));
    let vcsrf = csrf_of(&page);
    let res = post(
        &app,
        "/ui/models/iris/aliases",
        &viewer,
        &[("csrf", &vcsrf), ("alias", "production"), ("version", "1")],
    )
    .await;
    assert_eq!(res.status(), 403);

    // Cancel with the token: the job ends.
    let res = post(&app, &format!("/ui/jobs/{job}/cancel"), &session, &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    let state: Value =
        app.get(&format!("/v1/jobs/{job}"), &alpha.viewer).await.json().await.unwrap();
    assert_eq!(state["state"], "cancelled");

    // Static files: content-hashed names, cached for a year.
    let at = page.find("/ui/static/uPlot.iife.min.").unwrap();
    let path = &page[at..at + page[at..].find('"').unwrap()];
    let res = get(&app, path, "").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "public, max-age=31536000, immutable");

    // Signing out ends the session on the server, not only in the browser.
    let res = post(&app, "/ui/sign-out", &session, &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(get(&app, "/ui/jobs", &session).await.status(), 303);
    // Revoking a token ends its sessions too.
    let tokens: Value =
        app.get(&format!("/v1/teams/{}/tokens", beta.id), &app.admin).await.json().await.unwrap();
    let id = tokens["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "maintainer")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .request(reqwest::Method::DELETE, &format!("/v1/tokens/{id}"), Some(&app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(get(&app, "/ui/jobs", &beta_session).await.status(), 303);
}

#[tokio::test]
async fn chart_data_is_downsampled_in_postgresql_keeping_extremes_and_ends() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let run: Value =
        app.post("/v1/runs", &team.member, json!({"name": "long"})).await.json().await.unwrap();
    let id = run["id"].as_str().unwrap();
    // 100,000 points of a sine with one spike and one dip.
    let value = |s: i64| match s {
        31_337 => 40.0,
        77_777 => -40.0,
        s => (s as f64 / 500.0).sin(),
    };
    for chunk in 0..10 {
        let points: Vec<Value> = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|s| json!({"name": "loss", "step": s, "value": value(s)}))
            .collect();
        let res = app
            .post(&format!("/v1/runs/{id}/metrics"), &team.member, json!({"points": points}))
            .await;
        assert_eq!(res.status(), 202);
    }
    let session = sign_in(&app, &team.viewer).await;
    let data: Value = get(&app, &format!("/ui/runs/{id}/series.json?names=loss"), &session)
        .await
        .json()
        .await
        .unwrap();
    let s = &data["series"][0];
    let steps: Vec<i64> =
        s["steps"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let values: Vec<f64> =
        s["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(
        steps.len() <= kiln_ui::downsample::MAX_POINTS && steps.len() > 1000,
        "{}",
        steps.len()
    );
    assert_eq!(s["downsampled"], true);
    assert_eq!((steps[0], *steps.last().unwrap()), (0, 99_999), "both ends");
    assert!(steps.contains(&31_337) && steps.contains(&77_777), "the spike and the dip");
    assert_eq!(values.iter().cloned().fold(f64::MIN, f64::max), 40.0);
    // The same reduction as kiln-ui's in-memory M4 of the same points.
    let points: Vec<kiln_ui::downsample::Point> = (0..100_000)
        .map(|s| kiln_ui::downsample::Point { step: s, value: value(s), t: 0.0 })
        .collect();
    let expected: Vec<i64> =
        kiln_ui::downsample::downsample(&points, kiln_ui::downsample::MAX_POINTS)
            .iter()
            .map(|p| p.step)
            .collect();
    assert_eq!(steps, expected);
    // A zoom re-fetches its range at full resolution.
    let data: Value = get(
        &app,
        &format!("/ui/runs/{id}/series.json?names=loss&x_min=5000&x_max=5999&x=time"),
        &session,
    )
    .await
    .json()
    .await
    .unwrap();
    let s = &data["series"][0];
    assert_eq!(s["steps"].as_array().unwrap().len(), 1000);
    assert_eq!(s["downsampled"], false);
    assert_eq!(s["times"].as_array().unwrap().len(), 1000, "wall time when asked for");
    // The run page lazy-loads its chart from that endpoint.
    let page = get(&app, &format!("/ui/runs/{id}"), &session).await.text().await.unwrap();
    assert!(page.contains(&format!("data-src=\"/ui/runs/{id}/series.json?names=loss\"")));
}

#[tokio::test]
async fn a_study_page_shows_its_trials_and_a_member_can_stop_it() {
    let app = spawn_app().await;
    let team = app.team("ui-study").await;
    let other = app.team("ui-study-other").await;
    let data = app.upload(&team.member, "iris", "text/csv", crate::example("iris.csv")).await;
    let res = app
        .post(
            "/v1/studies",
            &team.member,
            json!({"name": "ui-search",
                   "base": {"dataset_id": data["id"], "task": "classification", "target": "species",
                            "model": {"type": "mlp", "hidden": [8]}, "hyperparameters": {"epochs": 3}},
                   "parameters": {"hyperparameters.learning_rate": {"type": "float", "min": 0.001, "max": 0.1, "log": true}},
                   "objective": {"metric": "val_accuracy"}, "max_trials": 4, "parallel_trials": 2}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    // The scheduler queues the first two trials.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s: Value =
            app.get(&format!("/v1/studies/{id}"), &team.viewer).await.json().await.unwrap();
        if s["trials"].as_array().unwrap().len() == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let member = sign_in(&app, &team.member).await;
    let list = get(&app, "/ui/studies", &member).await.text().await.unwrap();
    assert!(list.contains("ui-search") && list.contains(&format!("/ui/studies/{id}")), "{list}");
    let res = get(&app, &format!("/ui/studies/{id}"), &member).await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("Study ui-search") && page.contains("hyperparameters.learning_rate"),
        "{page}"
    );
    assert_eq!(page.matches("state-queued").count(), 2, "both queued trials are listed");
    assert!(page.contains("No trial has reported its objective yet"));
    assert!(page.contains("class=\"parallel\""), "parallel coordinates of the numeric parameter");

    // Another team's study is a 404 page.
    let outsider = sign_in(&app, &other.member).await;
    assert_eq!(get(&app, &format!("/ui/studies/{id}"), &outsider).await.status(), 404);
    // Stopping needs the session's CSRF token; with it, the study stops.
    let res = post(&app, &format!("/ui/studies/{id}/stop"), &member, &[("csrf", "forged")]).await;
    assert_eq!(res.status(), 403);
    let csrf = csrf_of(&page);
    let res = post(&app, &format!("/ui/studies/{id}/stop"), &member, &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    let s: Value = app.get(&format!("/v1/studies/{id}"), &team.viewer).await.json().await.unwrap();
    assert_eq!(s["state"], "stopped");
    assert_eq!(s["counts"]["cancelled"], 2);
}
