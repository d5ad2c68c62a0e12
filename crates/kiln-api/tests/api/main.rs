//! Black-box tests of the API: each starts the real server on port 0 against a fresh
//! database and talks HTTP to it. One test binary; each feature is a module.

mod auth;
mod batch;
mod datasets;
mod errors;
mod isolation;
mod jobs;
mod lifecycle;
mod mlflow_registry;
mod mlflow_tracking;
mod oip;
mod openapi;
mod outage;
mod runs;
mod secrets;
mod serving;
mod store_faults;
mod studies;
mod teams;
mod ui;

use std::net::TcpListener;
use std::sync::Arc;

use kiln_api::Application;
use kiln_api::serving::ServingArgs;
use kiln_api::state::{AppState, Limits};
use kiln_db::repo::tokens;
use kiln_db::testing::{DbProxy, TestDatabase, db_addr, fresh_database};
use kiln_store::S3Store;
use kiln_store::testing::S3sServer;
use kiln_types::Role;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use uuid::Uuid;

/// A running server, its database and an admin token.
#[derive(Debug)]
pub struct TestApp {
    pub base: String,
    /// The metrics-only address (`KILN_METRICS_BIND`), serving `/metrics` without a token.
    pub metrics_base: String,
    /// The real S3-compatible server the app stores artifacts in.
    pub s3: S3sServer,
    pub test: TestDatabase,
    pub admin: String,
    pub http: reqwest::Client,
    _cache: tempfile::TempDir,
}

/// A team with a token for each role.
#[derive(Debug, Clone)]
pub struct TestTeam {
    pub id: Uuid,
    pub name: String,
    pub maintainer: String,
    pub member: String,
    pub viewer: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(ServingArgs::defaults()).await
}

/// A server with its own serving settings (a private bundle cache unless one is given).
pub async fn spawn_app_with(serving: ServingArgs) -> TestApp {
    spawn(serving, None, 1024 * 1024, false).await.0
}

/// A server whose connection pool reaches PostgreSQL through a TCP proxy the test can cut
/// (a real outage, as the API sees it), with the production acquire timeout. `test.db`
/// stays a direct connection, for the test's own set-up and checks.
pub async fn spawn_app_behind_proxy() -> (TestApp, DbProxy) {
    let (app, proxy) = spawn(ServingArgs::defaults(), None, 1024 * 1024, true).await;
    (app, proxy.expect("a proxy"))
}

/// A server storing artifacts in `store` instead of its s3s-fs (which still runs), taking
/// uploads up to `upload_bytes`.
pub async fn spawn_app_on(
    serving: ServingArgs,
    store: Option<Arc<dyn kiln_store::ArtifactStore>>,
    upload_bytes: u64,
) -> TestApp {
    spawn(serving, store, upload_bytes, false).await.0
}

async fn spawn(
    mut serving: ServingArgs,
    store: Option<Arc<dyn kiln_store::ArtifactStore>>,
    upload_bytes: u64,
    behind_proxy: bool,
) -> (TestApp, Option<DbProxy>) {
    let cache = tempfile::tempdir().unwrap();
    serving.cache_dir.get_or_insert_with(|| cache.path().to_owned());
    let test = fresh_database(10).await.expect("fresh database");
    let admin =
        tokens::issue(&test.db, None, Role::Admin, "test-admin", None).await.unwrap().secret;
    let s3 = S3sServer::start();
    let store = match store {
        Some(store) => store,
        None => Arc::new(S3Store::connect(s3.settings("kiln")).await.expect("connect to s3s-fs")),
    };
    let (db, proxy) = match behind_proxy {
        false => (test.db.clone(), None),
        true => {
            let proxy = DbProxy::start(db_addr(&test.url)).await;
            let args = kiln_db::DbArgs::new(proxy.url_for(&test.url), 10);
            assert_eq!(args.acquire_timeout_seconds, kiln_db::DEFAULT_ACQUIRE_TIMEOUT_SECONDS);
            (kiln_db::connect(&args).await.expect("connect through the proxy"), Some(proxy))
        }
    };
    let state = AppState::new(
        db,
        store,
        Limits {
            json_bytes: 1024 * 1024,
            upload_bytes,
            model_memory_bytes: kiln_api::state::DEFAULT_MAX_MODEL_MEMORY_MIB << 20,
        },
        serving,
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let app = Application::from_state(state, listener, Some(2))
        .unwrap()
        .serve_metrics_on(TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let metrics_base = format!("http://127.0.0.1:{}", app.metrics_port().unwrap());
    tokio::spawn(app.run_until_stopped());
    let app = TestApp {
        base,
        metrics_base,
        s3,
        test,
        admin,
        http: reqwest::Client::new(),
        _cache: cache,
    };
    (app, proxy)
}

impl TestApp {
    /// A second API process on the same database and artifact store (another replica), with
    /// its own serving settings and bundle cache; returns its base URL.
    pub async fn replica(&self, mut serving: ServingArgs) -> (String, tempfile::TempDir) {
        let cache = tempfile::tempdir().unwrap();
        serving.cache_dir.get_or_insert_with(|| cache.path().to_owned());
        let store = S3Store::connect(self.s3.settings("kiln")).await.expect("connect to s3s-fs");
        let state = AppState::new(
            self.test.db.clone(),
            Arc::new(store),
            Limits {
                json_bytes: 1024 * 1024,
                upload_bytes: 1024 * 1024,
                model_memory_bytes: kiln_api::state::DEFAULT_MAX_MODEL_MEMORY_MIB << 20,
            },
            serving,
        );
        let app =
            Application::from_state(state, TcpListener::bind("127.0.0.1:0").unwrap(), Some(1))
                .unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        (base, cache)
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{}", self.base, path));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token)).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.request(Method::POST, path, Some(token)).json(&body).send().await.unwrap()
    }

    /// Creates a team and a maintainer, member and viewer token through the API.
    pub async fn team(&self, name: &str) -> TestTeam {
        let res = self.post("/v1/teams", &self.admin, json!({"name": name})).await;
        assert_eq!(res.status(), 201, "create team {name}");
        let id: Uuid = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
        let mut tokens = Vec::new();
        for role in ["maintainer", "member", "viewer"] {
            let res = self
                .post(
                    &format!("/v1/teams/{id}/tokens"),
                    &self.admin,
                    json!({"name": role, "role": role}),
                )
                .await;
            assert_eq!(res.status(), 201);
            tokens.push(res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned());
        }
        let [maintainer, member, viewer] = <[String; 3]>::try_from(tokens).unwrap();
        TestTeam { id, name: name.to_owned(), maintainer, member, viewer }
    }
}

/// Asserts the API.md error shape and code; returns the body.
pub async fn assert_error(res: Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert!(
        ct.as_deref().is_some_and(|c| c.starts_with("application/json")),
        "content-type {ct:?}"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body["error"]["details"].is_object(), "{body}");
    body
}

impl TestApp {
    /// Uploads bytes as a dataset and returns the answer's JSON (asserting 201, or 200 when
    /// the name already holds these bytes).
    pub async fn upload(
        &self,
        token: &str,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Value {
        let res = self
            .request(Method::POST, &format!("/v1/datasets?name={name}"), Some(token))
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert!(matches!(res.status().as_u16(), 200 | 201), "upload {name}: {}", res.status());
        res.json().await.unwrap()
    }
}

/// A file of the repository's example data.
pub fn example(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}
