//! The lifecycle routes: one run, one model, a dataset's download, deletes refused with 409
//! `in_use` naming what still uses the resource (and audited when done), idempotent uploads
//! and registrations.

use kiln_store::{ArtifactStore, Team};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::serving::{deploy, setup};
use crate::{TestApp, TestTeam, assert_error, example, spawn_app};

impl TestApp {
    async fn delete(&self, path: &str, token: &str) -> Response {
        self.request(Method::DELETE, path, Some(token)).send().await.unwrap()
    }

    /// Submits an Iris job on `dataset` (asserting 201) and returns its id.
    async fn submit(&self, team: &TestTeam, dataset: &str) -> String {
        let res = self
            .post(
                "/v1/jobs",
                &team.member,
                json!({"dataset_id": dataset, "task": "classification", "target": "species",
                       "model": {"type": "mlp", "hidden": [8]}, "hyperparameters": {"epochs": 3}}),
            )
            .await;
        assert_eq!(res.status(), 201);
        res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    }

    /// Ends job `id` as a worker would: a bundle in the store, the job succeeded with the
    /// result a worker writes.
    async fn succeed(&self, team: &TestTeam, id: &str) {
        let store = self.s3.store("kiln").await;
        let bundle = format!("a bundle of job {id}").into_bytes();
        let info = store
            .put_stream(&Team::parse(team.id.to_string()).unwrap(), &mut bundle.as_slice())
            .await
            .unwrap();
        let result = json!({
            "model_bundle": info.key.as_str(), "bundle_sha256": info.sha256.to_hex(),
            "metrics": {"val_accuracy": 0.9, "train_loss": 0.3, "val_loss": 0.35,
                        "best_epoch": 3, "stopped_early": false},
            "device": "cpu", "training_seconds": 1.5, "epochs_completed": 3,
            "resumed_from_epoch": null,
        });
        let done = sqlx::query(
            // A result as the worker writes it: the training data's digest comes from the
            // job's own inputs.
            "UPDATE jobs SET state = 'succeeded', \
                 result = jsonb_set($2, '{dataset_sha256}', inputs->'dataset'->'sha256'), started_at = now(), \
                 finished_at = now(), ran_on_device = 'cpu' WHERE id = $1::uuid",
        )
        .bind(id)
        .bind(result)
        .execute(self.test.db.get_postgres_connection_pool())
        .await
        .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }

    async fn cancel(&self, team: &TestTeam, id: &str) {
        let path = format!("/v1/jobs/{id}/cancel");
        let res = self.request(Method::POST, &path, Some(&team.member)).send().await.unwrap();
        assert_eq!(res.status(), 202);
    }

    /// The team's audit actions, oldest first.
    async fn audit_actions(&self, team: &TestTeam) -> Vec<(String, String)> {
        let page: Value =
            self.get("/v1/audit?limit=500", &team.maintainer).await.json().await.unwrap();
        let mut actions: Vec<(String, String)> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let id = e["resource_id"].as_str().unwrap_or_default().to_owned();
                (e["action"].as_str().unwrap().to_owned(), id)
            })
            .collect();
        actions.reverse();
        actions
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn a_dataset_downloads_byte_for_byte_with_its_type_length_and_name() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let other = app.team("beta").await;
    let iris = example("iris.csv");
    let csv = app.upload(&team.member, "iris", "text/csv", iris.clone()).await;
    let digits = example("digits.npz");
    let npz = app.upload(&team.member, "digits", "application/octet-stream", digits.clone()).await;

    for (dataset, bytes, media, filename) in [
        (&csv, &iris, "text/csv", "iris-v1.csv"),
        (&npz, &digits, "application/octet-stream", "digits-v1.npz"),
    ] {
        let path = format!("/v1/datasets/{}/content", dataset["id"].as_str().unwrap());
        let res = app.get(&path, &team.viewer).await;
        assert_eq!(res.status(), 200);
        let headers = res.headers().clone();
        assert_eq!(headers["content-type"], media);
        assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
        assert_eq!(
            headers["content-disposition"],
            format!("attachment; filename=\"{filename}\"").as_str()
        );
        assert_eq!(headers["x-kiln-sha256"], dataset["sha256"].as_str().unwrap());
        let body = res.bytes().await.unwrap();
        assert_eq!(sha256_hex(&body), sha256_hex(bytes), "{filename}: the bytes uploaded");
        assert_eq!(sha256_hex(&body), dataset["sha256"].as_str().unwrap());
        assert_error(app.get(&path, &other.viewer).await, 404, "not_found").await;
    }
    let missing = format!("/v1/datasets/{}/content", uuid::Uuid::now_v7());
    assert_error(app.get(&missing, &team.viewer).await, 404, "not_found").await;
}

#[tokio::test]
async fn the_same_bytes_under_the_same_name_answer_the_existing_version() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let iris = example("iris.csv");
    let upload = |name: &'static str, bytes: Vec<u8>| {
        app.request(Method::POST, &format!("/v1/datasets?name={name}"), Some(&team.member))
            .header("content-type", "text/csv")
            .body(bytes)
            .send()
    };
    let first = upload("iris", iris.clone()).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = upload("iris", iris.clone()).await.unwrap();
    assert_eq!(again.status(), 200, "the same bytes again");
    assert_eq!(again.json::<Value>().await.unwrap(), first, "the same version, the same body");
    // Other bytes make version 2; the same bytes under another name are that name's v1.
    let mut changed = iris.clone();
    changed.extend_from_slice(b"5.0,3.0,1.5,0.2,setosa\n");
    let second = upload("iris", changed).await.unwrap();
    assert_eq!(second.status(), 201);
    assert_eq!(second.json::<Value>().await.unwrap()["version"], 2);
    let renamed = upload("flowers", iris).await.unwrap();
    assert_eq!(renamed.status(), 201);
    assert_eq!(renamed.json::<Value>().await.unwrap()["version"], 1);
    let listed: Value = app.get("/v1/datasets?name=iris", &team.viewer).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    // Only the first upload and the two new versions are audited.
    let uploads = app.audit_actions(&team).await.into_iter().filter(|(a, _)| a == "dataset.upload");
    assert_eq!(uploads.count(), 3);
}

#[tokio::test]
async fn a_dataset_in_use_is_not_deleted_and_the_users_are_named() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let other = app.team("beta").await;
    let dataset = app.upload(&team.member, "iris", "text/csv", example("iris.csv")).await;
    let id = dataset["id"].as_str().unwrap();
    let path = format!("/v1/datasets/{id}");
    let queued = app.submit(&team, id).await;
    let trained = app.submit(&team, id).await;
    app.succeed(&team, &trained).await;
    let res = app.post("/v1/models/iris/versions", &team.maintainer, json!({"job_id": trained}));
    assert_eq!(res.await.status(), 201);

    // Roles and teams first: another team's dataset is unknown, a member may not delete.
    assert_error(app.delete(&path, &other.maintainer).await, 404, "not_found").await;
    assert_error(app.delete(&path, &team.member).await, 403, "forbidden").await;
    assert_error(app.delete(&path, &team.viewer).await, 403, "forbidden").await;

    let body = assert_error(app.delete(&path, &team.maintainer).await, 409, "in_use").await;
    assert_eq!(
        body["error"]["details"],
        json!({"jobs": [queued], "model_versions": [{"model": "iris", "version": 1}]}),
        "the queued job (not the succeeded one) and the version trained on it"
    );
    // The queued job cancelled: the model version still holds it.
    app.cancel(&team, &queued).await;
    let body = assert_error(app.delete(&path, &team.maintainer).await, 409, "in_use").await;
    assert_eq!(
        body["error"]["details"],
        json!({"jobs": [], "model_versions": [{"model": "iris", "version": 1}]})
    );
    let res = app.delete("/v1/models/iris/versions/1", &team.maintainer).await;
    assert_eq!(res.status(), 204);

    let res = app.delete(&path, &team.maintainer).await;
    assert_eq!(res.status(), 204);
    assert_error(app.get(&path, &team.viewer).await, 404, "not_found").await;
    assert_error(app.get(&format!("{path}/content"), &team.viewer).await, 404, "not_found").await;
    assert_error(app.delete(&path, &team.maintainer).await, 404, "not_found").await;
    let listed: Value = app.get("/v1/datasets", &team.viewer).await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));
    // A job that trained on it stays readable.
    assert_eq!(app.get(&format!("/v1/jobs/{trained}"), &team.viewer).await.status(), 200);
    let audited = app.audit_actions(&team).await;
    assert!(audited.contains(&("dataset.delete".to_owned(), id.to_owned())), "{audited:?}");
    assert!(audited.contains(&("model.version.delete".to_owned(), "iris/1".to_owned())));
}

#[tokio::test]
async fn registering_the_same_job_twice_answers_the_existing_version() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let dataset = app.upload(&team.member, "iris", "text/csv", example("iris.csv")).await;
    let job = app.submit(&team, dataset["id"].as_str().unwrap()).await;
    app.succeed(&team, &job).await;
    let (app, team) = (&app, &team);
    let register = |model: &'static str| {
        let (path, body) = (format!("/v1/models/{model}/versions"), json!({"job_id": job}));
        async move { app.post(&path, &team.maintainer, body).await }
    };
    let first = register("iris").await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["version"], 1);
    assert_eq!(first["metrics"]["val_accuracy"], 0.9);
    let again = register("iris").await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let versions: Value =
        app.get("/v1/models/iris/versions", &team.viewer).await.json().await.unwrap();
    assert_eq!(versions["items"].as_array().unwrap().len(), 1);
    // Another model may be made from the same job.
    let elsewhere = register("iris-copy").await;
    assert_eq!(elsewhere.status(), 201);
    let registered =
        app.audit_actions(team).await.into_iter().filter(|(a, _)| a == "model.register");
    assert_eq!(registered.count(), 2);
}

#[tokio::test]
async fn a_model_is_read_with_its_versions_count_latest_and_aliases() {
    let app = spawn_app().await;
    let team = setup(&app).await; // iris v1 and v2, production → v1
    let other = app.team("beta").await;
    let model: Value = app.get("/v1/models/iris", &team.viewer).await.json().await.unwrap();
    assert_eq!(model["name"], "iris");
    assert_eq!(model["versions"], 2);
    assert_eq!(model["latest_version"], 2);
    assert_eq!(model["aliases"], json!({"production": 1}));
    assert!(model["created_at"].is_string());
    assert_error(app.get("/v1/models/iris", &other.viewer).await, 404, "not_found").await;
    assert_error(app.get("/v1/models/nope", &team.viewer).await, 404, "not_found").await;
}

#[tokio::test]
async fn a_model_version_in_use_is_not_deleted_and_the_users_are_named() {
    let app = spawn_app().await;
    let team = setup(&app).await; // iris v1 and v2, production → v1
    let other = app.team("beta").await;
    assert_eq!(app.register(&team, "iris", 1).await, 3);
    deploy(&app, &team, json!({"name": "follows", "model": "iris", "alias": "production"})).await;
    deploy(&app, &team, json!({"name": "pinned", "model": "iris", "version": 2})).await;
    let res = app
        .patch(
            "/v1/deployments/follows",
            &team.maintainer,
            json!({"traffic": [{"version": 1, "weight": 90}, {"version": 3, "weight": 10}]}),
        )
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    let v1 = "/v1/models/iris/versions/1";
    assert_error(app.delete(v1, &other.maintainer).await, 404, "not_found").await;
    assert_error(app.delete(v1, &team.member).await, 403, "forbidden").await;
    let body = assert_error(app.delete(v1, &team.maintainer).await, 409, "in_use").await;
    assert_eq!(
        body["error"]["details"],
        json!({"aliases": ["production"], "deployments": ["follows"], "jobs": []})
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("1 aliases") && message.contains("1 deployments"), "{message}");
    let body = assert_error(
        app.delete("/v1/models/iris/versions/2", &team.maintainer).await,
        409,
        "in_use",
    )
    .await;
    assert_eq!(
        body["error"]["details"],
        json!({"aliases": [], "deployments": ["pinned"], "jobs": []})
    );
    let body = assert_error(
        app.delete("/v1/models/iris/versions/3", &team.maintainer).await,
        409,
        "in_use",
    )
    .await;
    assert_eq!(
        body["error"]["details"],
        json!({"aliases": [], "deployments": ["follows"], "jobs": []}),
        "a canary share"
    );

    // Free version 3 (the split dropped), then delete it.
    let res = app.patch("/v1/deployments/follows", &team.maintainer, json!({"traffic": []})).await;
    assert_eq!(res.status(), 200);
    let res = app.delete("/v1/models/iris/versions/3", &team.maintainer).await;
    assert_eq!(res.status(), 204);
    assert_error(
        app.delete("/v1/models/iris/versions/3", &team.maintainer).await,
        404,
        "not_found",
    )
    .await;
    let bundle = app.get("/v1/models/iris/versions/3/bundle", &team.viewer).await;
    assert_error(bundle, 404, "not_found").await;
    let model: Value = app.get("/v1/models/iris", &team.viewer).await.json().await.unwrap();
    assert_eq!((model["versions"].clone(), model["latest_version"].clone()), (json!(2), json!(2)));

    // Unpin and delete the pinned deployment: version 2 goes.
    let res = app.delete("/v1/deployments/pinned", &team.maintainer).await;
    assert_eq!(res.status(), 204);
    assert_eq!(app.delete("/v1/models/iris/versions/2", &team.maintainer).await.status(), 204);
    let versions: Value =
        app.get("/v1/models/iris/versions", &team.viewer).await.json().await.unwrap();
    let numbers: Vec<i64> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [1]);
    let audited = app.audit_actions(&team).await;
    let deletes: Vec<&str> = audited
        .iter()
        .filter(|(a, _)| a == "model.version.delete")
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!(deletes, ["iris/3", "iris/2"]);
}

#[tokio::test]
async fn a_run_is_read_and_deleted_unless_its_job_still_runs() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let other = app.team("beta").await;
    let res =
        app.post("/v1/runs", &team.member, json!({"name": "notebook", "params": {"lr": 0.1}}));
    let run: Value = res.await.json().await.unwrap();
    let id = run["id"].as_str().unwrap();
    let path = format!("/v1/runs/{id}");
    let got: Value = app.get(&path, &team.viewer).await.json().await.unwrap();
    assert_eq!(got, run);
    assert_eq!(got["is_job"], false);
    assert_eq!(got["params"], json!({"lr": 0.1}));
    assert_error(app.get(&path, &other.viewer).await, 404, "not_found").await;
    let points = json!({"points": [{"name": "loss", "step": 0, "value": 1.0}]});
    assert_eq!(app.post(&format!("{path}/metrics"), &team.member, points).await.status(), 202);

    assert_error(app.delete(&path, &other.maintainer).await, 404, "not_found").await;
    assert_error(app.delete(&path, &team.member).await, 403, "forbidden").await;
    assert_eq!(app.delete(&path, &team.maintainer).await.status(), 204);
    assert_error(app.get(&path, &team.viewer).await, 404, "not_found").await;
    assert_error(app.get(&format!("{path}/metrics"), &team.viewer).await, 404, "not_found").await;
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM metrics WHERE run_id = $1::uuid")
        .bind(id)
        .fetch_one(app.test.db.get_postgres_connection_pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "its metric points went with it");

    // A job's run: refused while the job is queued, deleted once it ended; the job stays.
    let dataset = app.upload(&team.member, "iris", "text/csv", example("iris.csv")).await;
    let job = app.submit(&team, dataset["id"].as_str().unwrap()).await;
    let job_run = format!("/v1/runs/{job}");
    let got: Value = app.get(&job_run, &team.viewer).await.json().await.unwrap();
    assert_eq!((got["is_job"].clone(), got["job_id"].clone()), (json!(true), json!(job)));
    let body = assert_error(app.delete(&job_run, &team.maintainer).await, 409, "in_use").await;
    assert_eq!(body["error"]["details"], json!({"jobs": [job]}));
    app.cancel(&team, &job).await;
    assert_eq!(app.delete(&job_run, &team.maintainer).await.status(), 204);
    assert_error(app.get(&job_run, &team.viewer).await, 404, "not_found").await;
    assert_eq!(app.get(&format!("/v1/jobs/{job}"), &team.viewer).await.status(), 200);
    let audited = app.audit_actions(&team).await;
    let deletes: Vec<&str> =
        audited.iter().filter(|(a, _)| a == "run.delete").map(|(_, id)| id.as_str()).collect();
    assert_eq!(deletes, [id, job.as_str()]);
}
