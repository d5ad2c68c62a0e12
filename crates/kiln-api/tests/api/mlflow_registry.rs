//! The MLflow registry, artifact proxy and logged models over HTTP, as the stock client
//! calls them: CRUD on Kiln's registry with MLflow's error codes and shapes, team
//! isolation, artifact round trips (bytes compared), traversal refused, the artifacts GC
//! keeping MLflow's artifacts, and serving: a bundle-less version refused by a deployment
//! with the reason, a Kiln job's run registered through MLflow served.

use std::time::{Duration, SystemTime};

use kiln_store::{ArtifactStore, Team};
use rand::RngCore;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::{TestApp, TestTeam, example, spawn_app};

const ML: &str = "/api/2.0/mlflow";
const ARTIFACTS: &str = "/api/2.0/mlflow-artifacts/artifacts";

impl TestApp {
    async fn ml(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Response {
        let mut req = self.request(method, &format!("{ML}{path}"), Some(token));
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    /// A tracked run made through Kiln's native API; its MLflow id (32 hex digits).
    async fn native_run(&self, team: &TestTeam) -> String {
        let res = self.post("/v1/runs", &team.member, json!({"name": "notebook"})).await;
        assert_eq!(res.status(), 201);
        let id: uuid::Uuid =
            res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
        id.simple().to_string()
    }
}

/// Asserts MLflow's error body and status; returns the message.
async fn ml_error(res: Response, status: u16, code: &str) -> String {
    assert_eq!(res.status().as_u16(), status, "status");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error_code"], code, "{body}");
    let message = body["message"].as_str().unwrap().to_owned();
    assert!(!message.is_empty());
    message
}

async fn ok(res: Response) -> Value {
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn registered_models_versions_and_aliases_live_in_kilns_registry() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let t = &team.maintainer;

    // Create, with Kiln's name rule and MLflow's duplicate code.
    let created = ok(app
        .ml(
            Method::POST,
            "/registered-models/create",
            t,
            Some(
                json!({"name": "churn", "description": "d0", "tags": [{"key": "k", "value": "v"}]}),
            ),
        )
        .await)
    .await;
    assert_eq!(created["registered_model"]["name"], "churn");
    assert_eq!(created["registered_model"]["tags"], json!([{"key": "k", "value": "v"}]));
    let again =
        app.ml(Method::POST, "/registered-models/create", t, Some(json!({"name": "churn"}))).await;
    ml_error(again, 400, "RESOURCE_ALREADY_EXISTS").await;
    let bad = app
        .ml(Method::POST, "/registered-models/create", t, Some(json!({"name": "bad name!"})))
        .await;
    let message = ml_error(bad, 400, "INVALID_PARAMETER_VALUE").await;
    assert!(message.contains("letters, digits"), "{message}");
    let viewer = app
        .ml(Method::POST, "/registered-models/create", &team.viewer, Some(json!({"name": "x"})))
        .await;
    ml_error(viewer, 403, "PERMISSION_DENIED").await;
    let missing = app.ml(Method::GET, "/registered-models/get?name=nope", t, None).await;
    ml_error(missing, 404, "RESOURCE_DOES_NOT_EXIST").await;

    // Search: LIKE, order and pages.
    for name in ["churn-b", "churn-a", "other"] {
        ok(app.ml(Method::POST, "/registered-models/create", t, Some(json!({"name": name}))).await)
            .await;
    }
    let page = ok(app
        .ml(Method::GET, "/registered-models/search?filter=name%20LIKE%20%27churn%25%27&max_results=2&order_by=name%20DESC", t, None)
        .await)
    .await;
    let names: Vec<&str> = page["registered_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["churn-b", "churn-a"]);
    let token = page["next_page_token"].as_str().unwrap();
    let rest = ok(app
        .ml(Method::GET, &format!("/registered-models/search?filter=name%20LIKE%20%27churn%25%27&max_results=2&order_by=name%20DESC&page_token={token}"), t, None)
        .await)
    .await;
    assert_eq!(rest["registered_models"][0]["name"], "churn");
    assert!(rest.get("next_page_token").is_none(), "{rest}");
    let bad_filter = app
        .ml(Method::GET, "/registered-models/search?filter=owner%20%3D%20%27x%27", t, None)
        .await;
    ml_error(bad_filter, 400, "INVALID_PARAMETER_VALUE").await;

    // Rename, description, tags.
    ok(app
        .ml(
            Method::POST,
            "/registered-models/rename",
            t,
            Some(json!({"name": "other", "new_name": "renamed"})),
        )
        .await)
    .await;
    let clash = app
        .ml(
            Method::POST,
            "/registered-models/rename",
            t,
            Some(json!({"name": "renamed", "new_name": "churn"})),
        )
        .await;
    ml_error(clash, 400, "RESOURCE_ALREADY_EXISTS").await;
    let updated = ok(app
        .ml(
            Method::PATCH,
            "/registered-models/update",
            t,
            Some(json!({"name": "churn", "description": "d1"})),
        )
        .await)
    .await;
    assert_eq!(updated["registered_model"]["description"], "d1");
    ok(app
        .ml(
            Method::POST,
            "/registered-models/set-tag",
            t,
            Some(json!({"name": "churn", "key": "team", "value": "risk"})),
        )
        .await)
    .await;
    ok(app
        .ml(
            Method::DELETE,
            "/registered-models/delete-tag",
            t,
            Some(json!({"name": "churn", "key": "k"})),
        )
        .await)
    .await;
    let got = ok(app.ml(Method::GET, "/registered-models/get?name=churn", t, None).await).await;
    assert_eq!(got["registered_model"]["tags"], json!([{"key": "team", "value": "risk"}]));
    let by_tag = ok(app
        .ml(Method::GET, "/registered-models/search?filter=tags.team%20%3D%20%27risk%27", t, None)
        .await)
    .await;
    assert_eq!(by_tag["registered_models"].as_array().unwrap().len(), 1);
    // `!=` keeps models without the tag, as the client's own prompt filter needs.
    let not_prompt = "/registered-models/search?filter=name%20LIKE%20%27churn%25%27%20AND%20\
                      tag.%60mlflow.prompt.is_prompt%60%20!%3D%20%27true%27";
    let not_prompt = ok(app.ml(Method::GET, not_prompt, t, None).await).await;
    assert_eq!(not_prompt["registered_models"].as_array().unwrap().len(), 3, "{not_prompt}");

    // Versions from a run: READY at once, version as a string, run and source kept.
    let run = app.native_run(&team).await;
    let source = format!("mlflow-artifacts:/0/{run}/artifacts/model");
    let v1 = ok(app
        .ml(
            Method::POST,
            "/model-versions/create",
            t,
            Some(json!({"name": "churn", "source": source, "run_id": run, "description": "first",
                        "tags": [{"key": "stage", "value": "dev"}], "run_link": "http://x"})),
        )
        .await)
    .await;
    let mv = &v1["model_version"];
    assert_eq!((mv["version"].as_str(), mv["status"].as_str()), (Some("1"), Some("READY")));
    assert_eq!(
        (mv["run_id"].as_str(), mv["source"].as_str()),
        (Some(run.as_str()), Some(source.as_str()))
    );
    ok(app
        .ml(
            Method::POST,
            "/model-versions/create",
            t,
            Some(json!({"name": "churn", "source": format!("runs:/{run}/model")})),
        )
        .await)
    .await;
    let unknown_model = app
        .ml(
            Method::POST,
            "/model-versions/create",
            t,
            Some(json!({"name": "ghost", "source": "x"})),
        )
        .await;
    ml_error(unknown_model, 404, "RESOURCE_DOES_NOT_EXIST").await;
    let got =
        ok(app.ml(Method::GET, "/model-versions/get?name=churn&version=2", t, None).await).await;
    assert_eq!(got["model_version"]["run_id"], run.as_str(), "the run of a runs:/ source");
    let bad_version =
        app.ml(Method::GET, "/model-versions/get?name=churn&version=abc", t, None).await;
    ml_error(bad_version, 400, "INVALID_PARAMETER_VALUE").await;
    let found = ok(app
        .ml(Method::GET, &format!("/model-versions/search?filter=run_id%3D%27{run}%27"), t, None)
        .await)
    .await;
    assert_eq!(found["model_versions"].as_array().unwrap().len(), 2);
    let found = ok(app
        .ml(Method::GET, "/model-versions/search?filter=name%3D%27churn%27&max_results=1", t, None)
        .await)
    .await;
    assert_eq!(found["model_versions"][0]["version"], "2", "newest first");
    assert!(found["next_page_token"].is_string());
    let updated = ok(app
        .ml(
            Method::PATCH,
            "/model-versions/update",
            t,
            Some(json!({"name": "churn", "version": "1", "description": "best"})),
        )
        .await)
    .await;
    assert_eq!(updated["model_version"]["description"], "best");
    ok(app
        .ml(
            Method::POST,
            "/model-versions/set-tag",
            t,
            Some(json!({"name": "churn", "version": "1", "key": "q", "value": "ok"})),
        )
        .await)
    .await;
    ok(app
        .ml(
            Method::DELETE,
            "/model-versions/delete-tag",
            t,
            Some(json!({"name": "churn", "version": "1", "key": "stage"})),
        )
        .await)
    .await;
    let got =
        ok(app.ml(Method::GET, "/model-versions/get?name=churn&version=1", t, None).await).await;
    assert_eq!(got["model_version"]["tags"], json!([{"key": "q", "value": "ok"}]));
    let latest = ok(app
        .ml(
            Method::POST,
            "/registered-models/get-latest-versions",
            t,
            Some(json!({"name": "churn"})),
        )
        .await)
    .await;
    assert_eq!(latest["model_versions"][0]["version"], "2");
    let uri = ok(app
        .ml(Method::GET, "/model-versions/get-download-uri?name=churn&version=1", t, None)
        .await)
    .await;
    assert_eq!(uri["artifact_uri"], source.as_str());

    // Aliases: Kiln's aliases (native views show them), audited as moves.
    ok(app
        .ml(
            Method::POST,
            "/registered-models/alias",
            t,
            Some(json!({"name": "churn", "alias": "champion", "version": "1"})),
        )
        .await)
    .await;
    let member = app
        .ml(
            Method::POST,
            "/registered-models/alias",
            &team.member,
            Some(json!({"name": "churn", "alias": "x", "version": "1"})),
        )
        .await;
    ml_error(member, 403, "PERMISSION_DENIED").await;
    let reserved = app
        .ml(
            Method::POST,
            "/registered-models/alias",
            t,
            Some(json!({"name": "churn", "alias": "latest", "version": "1"})),
        )
        .await;
    ml_error(reserved, 400, "INVALID_PARAMETER_VALUE").await;
    let by_alias = ok(app
        .ml(Method::GET, "/registered-models/alias?name=churn&alias=champion", t, None)
        .await)
    .await;
    assert_eq!(by_alias["model_version"]["version"], "1");
    assert_eq!(by_alias["model_version"]["aliases"], json!(["champion"]));
    ok(app
        .ml(
            Method::POST,
            "/registered-models/alias",
            t,
            Some(json!({"name": "churn", "alias": "champion", "version": "2"})),
        )
        .await)
    .await;
    let native: Value = app.get("/v1/models/churn", &team.viewer).await.json().await.unwrap();
    assert_eq!(
        (native["versions"].as_i64(), native["aliases"]["champion"].as_i64()),
        (Some(2), Some(2)),
        "{native}"
    );
    let versions: Value =
        app.get("/v1/models/churn/versions", &team.viewer).await.json().await.unwrap();
    assert_eq!(versions["items"].as_array().unwrap().len(), 2, "{versions}");
    let audit: Value = app.get("/v1/audit?limit=100", t).await.json().await.unwrap();
    let moves: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "model.alias.move")
        .collect();
    assert_eq!(moves.len(), 2, "{audit}");
    assert_eq!(moves[0]["details"]["previous_version"], 1, "newest first: {audit}");
    let in_use = app
        .ml(
            Method::DELETE,
            "/model-versions/delete",
            t,
            Some(json!({"name": "churn", "version": "2"})),
        )
        .await;
    let message = ml_error(in_use, 400, "INVALID_STATE").await;
    assert!(message.contains("champion"), "{message}");
    ok(app
        .ml(
            Method::DELETE,
            "/registered-models/alias",
            t,
            Some(json!({"name": "churn", "alias": "champion"})),
        )
        .await)
    .await;
    let gone =
        app.ml(Method::GET, "/registered-models/alias?name=churn&alias=champion", t, None).await;
    ml_error(gone, 404, "RESOURCE_DOES_NOT_EXIST").await;
    ok(app
        .ml(
            Method::DELETE,
            "/model-versions/delete",
            t,
            Some(json!({"name": "churn", "version": "2"})),
        )
        .await)
    .await;
    let gone = app.ml(Method::GET, "/model-versions/get?name=churn&version=2", t, None).await;
    ml_error(gone, 404, "RESOURCE_DOES_NOT_EXIST").await;
    ok(app
        .ml(Method::DELETE, "/registered-models/delete", t, Some(json!({"name": "churn"})))
        .await)
    .await;
    assert_eq!(app.get("/v1/models/churn", t).await.status(), 404);
    let stage = app
        .ml(
            Method::POST,
            "/model-versions/transition-stage",
            t,
            Some(json!({"name": "renamed", "version": "1", "stage": "Production"})),
        )
        .await;
    ml_error(stage, 400, "INVALID_PARAMETER_VALUE").await;
}

#[tokio::test]
async fn another_teams_models_versions_aliases_and_artifacts_do_not_exist() {
    let app = spawn_app().await;
    let alpha = app.team("alpha").await;
    let beta = app.team("beta").await;
    let run = app.native_run(&alpha).await;
    let a = &alpha.maintainer;
    ok(app.ml(Method::POST, "/registered-models/create", a, Some(json!({"name": "secret"}))).await)
        .await;
    ok(app
        .ml(
            Method::POST,
            "/model-versions/create",
            a,
            Some(json!({"name": "secret", "source": "s3://x", "run_id": run})),
        )
        .await)
    .await;
    ok(app
        .ml(
            Method::POST,
            "/registered-models/alias",
            a,
            Some(json!({"name": "secret", "alias": "prod", "version": "1"})),
        )
        .await)
    .await;
    let put = app
        .request(Method::PUT, &format!("{ARTIFACTS}/0/{run}/artifacts/a.txt"), Some(&alpha.member))
        .body("alpha's")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    let b = &beta.maintainer;
    ml_error(
        app.ml(Method::GET, "/registered-models/get?name=secret", b, None).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    ml_error(
        app.ml(Method::GET, "/model-versions/get?name=secret&version=1", b, None).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    ml_error(
        app.ml(Method::GET, "/registered-models/alias?name=secret&alias=prod", b, None).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    ml_error(
        app.ml(Method::DELETE, "/registered-models/delete", b, Some(json!({"name": "secret"})))
            .await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    let found = ok(app.ml(Method::GET, "/registered-models/search", b, None).await).await;
    assert_eq!(found["registered_models"], json!([]));
    let found = ok(app.ml(Method::GET, "/model-versions/search", b, None).await).await;
    assert_eq!(found["model_versions"], json!([]));
    // Beta may hold its own model of the same name, and alpha's run is not beta's.
    ok(app.ml(Method::POST, "/registered-models/create", b, Some(json!({"name": "secret"}))).await)
        .await;
    let stolen = app
        .ml(
            Method::POST,
            "/model-versions/create",
            b,
            Some(json!({"name": "secret", "source": "x", "run_id": run})),
        )
        .await;
    ml_error(stolen, 404, "RESOURCE_DOES_NOT_EXIST").await;
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let res = app
            .request(
                method,
                &format!("{ARTIFACTS}/0/{run}/artifacts/a.txt"),
                Some(&beta.maintainer),
            )
            .send()
            .await
            .unwrap();
        ml_error(res, 404, "RESOURCE_DOES_NOT_EXIST").await;
    }
    let list = app
        .request(Method::GET, &format!("{ARTIFACTS}?path=0/{run}/artifacts"), Some(&beta.viewer))
        .send()
        .await
        .unwrap();
    ml_error(list, 404, "RESOURCE_DOES_NOT_EXIST").await;
    let logged = ok(app
        .ml(
            Method::POST,
            "/logged-models",
            &alpha.member,
            Some(json!({"experiment_id": "0", "name": "m", "source_run_id": run})),
        )
        .await)
    .await;
    let model_id = logged["model"]["info"]["model_id"].as_str().unwrap();
    ml_error(
        app.ml(Method::GET, &format!("/logged-models/{model_id}"), b, None).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    let search = ok(app
        .ml(Method::POST, "/logged-models/search", b, Some(json!({"experiment_ids": ["0"]})))
        .await)
    .await;
    assert_eq!(search["models"], json!([]));
}

#[tokio::test]
async fn artifacts_round_trip_through_the_store_with_listing_and_delete() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let run = app.native_run(&team).await;
    let root = format!("0/{run}/artifacts");
    let mut bytes = vec![0u8; 600 * 1024 + 17];
    rand::rng().fill_bytes(&mut bytes);
    let put = |path: String, token: String, body: Vec<u8>| {
        let app = &app;
        async move {
            app.request(Method::PUT, &format!("{ARTIFACTS}/{path}"), Some(&token))
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        put(format!("{root}/dir/a.bin"), team.member.clone(), bytes.clone()).await.status(),
        200
    );
    assert_eq!(
        put(format!("{root}/dir/sub/b.txt"), team.member.clone(), b"bee".to_vec()).await.status(),
        200
    );
    assert_eq!(
        put(format!("{root}/top.json"), team.member.clone(), b"{}".to_vec()).await.status(),
        200
    );
    // Logging the same path again replaces it.
    assert_eq!(
        put(format!("{root}/top.json"), team.member.clone(), b"{\"v\": 2}".to_vec()).await.status(),
        200
    );
    ml_error(
        put(format!("{root}/v.txt"), team.viewer.clone(), b"x".to_vec()).await,
        403,
        "PERMISSION_DENIED",
    )
    .await;

    let got = app
        .request(Method::GET, &format!("{ARTIFACTS}/{root}/dir/a.bin"), Some(&team.viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.content_length(), Some(bytes.len() as u64));
    assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice(), "bytes round-trip");
    let got = app
        .request(Method::GET, &format!("{ARTIFACTS}/{root}/top.json"), Some(&team.viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(got.text().await.unwrap(), "{\"v\": 2}");

    let list = |path: String| {
        let app = &app;
        let token = team.viewer.clone();
        async move {
            ok(app
                .request(Method::GET, &format!("{ARTIFACTS}?path={path}"), Some(&token))
                .send()
                .await
                .unwrap())
            .await
        }
    };
    assert_eq!(
        list(root.clone()).await["files"],
        json!([{"path": "dir", "is_dir": true}, {"path": "top.json", "is_dir": false, "file_size": 8}])
    );
    assert_eq!(
        list(format!("{root}/dir")).await["files"],
        json!([{"path": "a.bin", "is_dir": false, "file_size": bytes.len()}, {"path": "sub", "is_dir": true}])
    );
    assert_eq!(
        list(format!("{root}/top.json")).await["files"],
        json!([]),
        "a file lists as nothing"
    );

    // Traversal and odd paths are refused before the store is touched.
    for bad in [
        format!("{ARTIFACTS}/{root}/%2e%2e/%2e%2e/other"),
        format!("{ARTIFACTS}/{root}/a%5cb"),
        format!("{ARTIFACTS}/{root}//x"),
        format!("{ARTIFACTS}?path=%2Fetc%2Fpasswd"),
        format!("{ARTIFACTS}?path=0%2F{run}%2Fartifacts%2F..%2F..%2Fx"),
        format!("{ARTIFACTS}/0/{run}/elsewhere/x"),
    ] {
        let res = app.request(Method::GET, &bad, Some(&team.member)).send().await.unwrap();
        ml_error(res, 400, "INVALID_PARAMETER_VALUE").await;
    }
    // A NUL in the URL is refused by the server before any route (in Kiln's shape).
    let nul = app
        .request(Method::GET, &format!("{ARTIFACTS}/{root}/a%00b"), Some(&team.member))
        .send()
        .await
        .unwrap();
    assert_eq!(nul.status(), 400);
    let bad_put = app
        .request(Method::PUT, &format!("{ARTIFACTS}/{root}/%2e%2e/x"), Some(&team.member))
        .body("x")
        .send()
        .await
        .unwrap();
    ml_error(bad_put, 400, "INVALID_PARAMETER_VALUE").await;

    // Delete a file, then a directory.
    let del = app
        .request(Method::DELETE, &format!("{ARTIFACTS}/{root}/top.json"), Some(&team.viewer))
        .send()
        .await
        .unwrap();
    ml_error(del, 403, "PERMISSION_DENIED").await;
    let del = app
        .request(Method::DELETE, &format!("{ARTIFACTS}/{root}/top.json"), Some(&team.member))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let gone = app
        .request(Method::GET, &format!("{ARTIFACTS}/{root}/top.json"), Some(&team.member))
        .send()
        .await
        .unwrap();
    ml_error(gone, 404, "RESOURCE_DOES_NOT_EXIST").await;
    let del = app
        .request(Method::DELETE, &format!("{ARTIFACTS}/{root}/dir"), Some(&team.member))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    assert_eq!(list(root.clone()).await["files"], json!([]));
    // Unknown runs are not the caller's.
    let other = uuid::Uuid::now_v7().simple().to_string();
    ml_error(
        put(format!("0/{other}/artifacts/x"), team.member.clone(), b"x".to_vec()).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
}

/// Every file of the s3s-fs bucket, made two hours old.
fn age_everything(dir: &std::path::Path) {
    let old = SystemTime::now() - Duration::from_secs(7200);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            age_everything(&path);
        } else {
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        }
    }
}

#[tokio::test]
async fn the_artifacts_gc_keeps_mlflow_artifacts_and_takes_orphans() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let run = app.native_run(&team).await;
    let path = format!("{ARTIFACTS}/0/{run}/artifacts/model/MLmodel");
    let res = app
        .request(Method::PUT, &path, Some(&team.member))
        .body("flavors: {}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // An orphan blob nothing refers to: the control that the GC does collect.
    let store = app.s3.store("kiln").await;
    let orphan = store
        .put_stream(&Team::parse(team.id.to_string()).unwrap(), &mut b"orphan".as_slice())
        .await
        .unwrap();
    age_everything(&app.s3.bucket_dir());

    let report = ok(app
        .post("/v1/admin/artifacts/gc", &app.admin, json!({"apply": true, "grace_seconds": 60}))
        .await)
    .await;
    assert_eq!(report["deleted"], 1, "{report}");
    assert_eq!(report["sample"], json!([orphan.key.as_str()]), "{report}");
    let got = app.request(Method::GET, &path, Some(&team.viewer)).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), "flavors: {}");
}

/// A real bundle (a trained Iris classifier) as the result of a real job of the team, as a
/// worker leaves it; returns the job id (its run's id too).
async fn succeeded_job(app: &TestApp, team: &TestTeam) -> uuid::Uuid {
    let dataset = app.upload(&team.member, "iris", "text/csv", example("iris.csv")).await;
    let job: Value = app
        .post(
            "/v1/jobs",
            &team.member,
            json!({"dataset_id": dataset["id"], "task": "classification", "target": "species",
                     "model": {"type": "mlp", "hidden": [8]}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id: uuid::Uuid = job["id"].as_str().unwrap().parse().unwrap();
    kiln_ml::set_num_threads(1);
    let bundle = kiln_ml::testing::train_csv_bundle(&example("iris.csv"), "species", &[8], 20, 3);
    let store = app.s3.store("kiln").await;
    let info = store
        .put_stream(&Team::parse(team.id.to_string()).unwrap(), &mut bundle.as_slice())
        .await
        .unwrap();
    let result = json!({
        "model_bundle": info.key.as_str(), "bundle_sha256": info.sha256.to_hex(),
        "metrics": {"val_accuracy": 0.9, "train_loss": 0.3, "val_loss": 0.35, "best_epoch": 3, "stopped_early": false},
        "device": "cpu", "training_seconds": 1.5, "epochs_completed": 3, "resumed_from_epoch": null,
    });
    let done = sqlx::query(
        "UPDATE jobs SET state = 'succeeded', \
             result = jsonb_set($2, '{dataset_sha256}', inputs->'dataset'->'sha256'), started_at = now(), \
             finished_at = now(), ran_on_device = 'cpu' WHERE id = $1",
    )
    .bind(id)
    .bind(result)
    .execute(app.test.db.get_postgres_connection_pool())
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1);
    id
}

#[tokio::test]
async fn a_job_runs_version_is_served_and_an_artifacts_only_version_is_refused_with_the_reason() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let t = &team.maintainer;
    ok(app.ml(Method::POST, "/registered-models/create", t, Some(json!({"name": "iris"}))).await)
        .await;

    // v1: an MLflow-only run (its model exists only as MLflow artifacts).
    let run = app.native_run(&team).await;
    ok(app
        .ml(
            Method::POST,
            "/model-versions/create",
            t,
            Some(json!({"name": "iris", "source": format!("runs:/{run}/model"), "run_id": run})),
        )
        .await)
    .await;
    // v2: a Kiln job's run: the job's bundle backs it.
    let job = succeeded_job(&app, &team).await;
    let v2 = ok(app.ml(Method::POST, "/model-versions/create", t, Some(json!({"name": "iris", "source": "runs:/x/model", "run_id": job.simple().to_string()}))).await).await;
    assert_eq!(v2["model_version"]["version"], "2");

    let refused = app
        .post("/v1/deployments", t, json!({"name": "iris-mlflow", "model": "iris", "version": 1}))
        .await;
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_state", "{body}");
    assert_eq!(
        body["error"]["message"],
        "version 1 of model iris has only MLflow artifacts, no Kiln bundle; register a Kiln job's run to serve it"
    );
    // Native views still work with the bundle-less version; its bundle is a clear 409.
    let versions: Value =
        app.get("/v1/models/iris/versions", &team.viewer).await.json().await.unwrap();
    let items = versions["items"].as_array().unwrap();
    assert_eq!(
        (items.len(), items[0]["job_id"].as_str()),
        (2, Some(job.to_string().as_str())),
        "{versions}"
    );
    assert_eq!(items[1]["bundle_sha256"], "", "{versions}");
    let bundle = app.get("/v1/models/iris/versions/1/bundle", &team.viewer).await;
    assert_eq!(bundle.status(), 409);
    assert!(bundle.text().await.unwrap().contains("no Kiln bundle"));

    // An alias followed by a deployment cannot move to the bundle-less version.
    ok(app
        .ml(
            Method::POST,
            "/registered-models/alias",
            t,
            Some(json!({"name": "iris", "alias": "production", "version": "2"})),
        )
        .await)
    .await;
    let created = app
        .post(
            "/v1/deployments",
            t,
            json!({"name": "iris-prod", "model": "iris", "alias": "production"}),
        )
        .await;
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let rows = crate::serving::iris_rows();
    let predicted =
        app.post("/v1/deployments/iris-prod/predict", t, json!({"instances": &rows[..3]})).await;
    assert_eq!(predicted.status(), 200, "{}", predicted.text().await.unwrap());
    assert_eq!(predicted.headers()["x-kiln-model-version"], "2");
    let moved = app
        .ml(
            Method::POST,
            "/registered-models/alias",
            t,
            Some(json!({"name": "iris", "alias": "production", "version": "1"})),
        )
        .await;
    let message = ml_error(moved, 400, "INVALID_STATE").await;
    assert!(message.contains("iris-prod") && message.contains("no Kiln bundle"), "{message}");
    // The native alias route refuses it the same way, and the deployment keeps serving v2.
    let native = app.put("/v1/models/iris/aliases/production", t, json!({"version": 1})).await;
    assert_eq!(native.status(), 409);
    let body: Value = native.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_state", "{body}");
    assert_eq!(body["error"]["details"]["deployments"], json!(["iris-prod"]), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("no Kiln bundle"), "{body}");
    let alias = app.get("/v1/models/iris", t).await.json::<Value>().await.unwrap();
    assert_eq!(alias["aliases"]["production"], 2, "{alias}");
    let predicted =
        app.post("/v1/deployments/iris-prod/predict", t, json!({"instances": &rows[..3]})).await;
    assert_eq!(predicted.headers()["x-kiln-model-version"], "2");
    // An alias no deployment follows may point at it (registering is not serving).
    let staging = app.put("/v1/models/iris/aliases/staging", t, json!({"version": 1})).await;
    assert_eq!(staging.status(), 200, "{}", staging.text().await.unwrap());
    let delete = app
        .ml(
            Method::DELETE,
            "/registered-models/alias",
            t,
            Some(json!({"name": "iris", "alias": "production"})),
        )
        .await;
    ml_error(delete, 400, "INVALID_STATE").await;
}

#[tokio::test]
async fn logged_models_are_created_finalized_searched_and_registered() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let run = app.native_run(&team).await;
    let m = &team.member;
    let created = ok(app
        .ml(Method::POST, "/logged-models", m,
            Some(json!({"experiment_id": "0", "name": "model", "model_type": "", "source_run_id": run,
                        "params": [{"key": "lr", "value": "0.1"}], "tags": [{"key": "mlflow.source.type", "value": "LOCAL"}]})))
        .await)
    .await;
    let info = &created["model"]["info"];
    let id = info["model_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("m-") && id.len() == 34, "{id}");
    assert_eq!(info["status"], "LOGGED_MODEL_PENDING");
    assert_eq!(info["artifact_uri"], format!("mlflow-artifacts:/0/models/{id}/artifacts"));
    assert_eq!(created["model"]["data"]["params"], json!([{"key": "lr", "value": "0.1"}]));

    // Its artifacts go through the proxy under its own location.
    let put = app
        .request(Method::PUT, &format!("{ARTIFACTS}/0/models/{id}/artifacts/MLmodel"), Some(m))
        .body("flavors: {}")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let listed = ok(app
        .ml(Method::GET, &format!("/logged-models/{id}/artifacts/directories"), m, None)
        .await)
    .await;
    assert_eq!(listed["files"], json!([{"path": "MLmodel", "is_dir": false, "file_size": 11}]));

    ok(app
        .ml(
            Method::PATCH,
            &format!("/logged-models/{id}/tags"),
            m,
            Some(json!({"tags": [{"key": "a", "value": "b"}]})),
        )
        .await)
    .await;
    ok(app
        .ml(Method::DELETE, &format!("/logged-models/{id}/tags/mlflow.source.type"), m, None)
        .await)
    .await;
    let done = ok(app
        .ml(
            Method::PATCH,
            &format!("/logged-models/{id}"),
            m,
            Some(json!({"model_id": id, "status": "LOGGED_MODEL_READY"})),
        )
        .await)
    .await;
    assert_eq!(done["model"]["info"]["status"], "LOGGED_MODEL_READY");
    assert_eq!(done["model"]["info"]["tags"], json!([{"key": "a", "value": "b"}]));
    let bad = app
        .ml(Method::PATCH, &format!("/logged-models/{id}"), m, Some(json!({"status": "NOPE"})))
        .await;
    ml_error(bad, 400, "INVALID_PARAMETER_VALUE").await;
    let found = ok(app
        .ml(
            Method::POST,
            "/logged-models/search",
            m,
            Some(json!({"experiment_ids": ["0"], "filter": "name = 'model'"})),
        )
        .await)
    .await;
    assert_eq!(found["models"].as_array().unwrap().len(), 1);
    let none = ok(app
        .ml(
            Method::POST,
            "/logged-models/search",
            m,
            Some(json!({"experiment_ids": ["0"], "filter": "name = 'other'"})),
        )
        .await)
    .await;
    assert_eq!(none["models"], json!([]));

    // Registered from `models:/m-...`: the run comes from the logged model, the download
    // URI is its artifact location.
    let t = &team.maintainer;
    ok(app
        .ml(Method::POST, "/registered-models/create", t, Some(json!({"name": "from-logged"})))
        .await)
    .await;
    let v = ok(app
        .ml(
            Method::POST,
            "/model-versions/create",
            t,
            Some(json!({"name": "from-logged", "source": format!("models:/{id}"), "model_id": id})),
        )
        .await)
    .await;
    assert_eq!(
        (v["model_version"]["run_id"].as_str(), v["model_version"]["model_id"].as_str()),
        (Some(run.as_str()), Some(id.as_str()))
    );
    let uri = ok(app
        .ml(Method::GET, "/model-versions/get-download-uri?name=from-logged&version=1", t, None)
        .await)
    .await;
    assert_eq!(uri["artifact_uri"], format!("mlflow-artifacts:/0/models/{id}/artifacts"));
    let bad_id = app.ml(Method::GET, "/logged-models/not-an-id", m, None).await;
    ml_error(bad_id, 400, "INVALID_PARAMETER_VALUE").await;
    ok(app.ml(Method::DELETE, &format!("/logged-models/{id}"), m, None).await).await;
    ml_error(
        app.ml(Method::GET, &format!("/logged-models/{id}"), m, None).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
}
