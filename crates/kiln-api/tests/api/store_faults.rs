//! Issue 22: the artifact store on a real, small file system (a tmpfs) that fills up or
//! goes read-only. Uploads fail with a clear code and the OS's reason (never a server
//! path), record nothing, and succeed in full once there is room; `/readyz` tells.

use std::sync::Arc;

use kiln_api::serving::ServingArgs;
use kiln_store::testing::SmallFs;
use kiln_store::{Key, LocalStore, Sha256Digest, Team};
use reqwest::{Method, Response};
use serde_json::Value;

use crate::{TestApp, TestTeam, assert_error, spawn_app_on};

/// A CSV of at least `len` bytes with a header and a label column.
fn csv(len: usize) -> Vec<u8> {
    let mut out = b"x1,x2,label\n".to_vec();
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("{}.25,{},{}\n", i % 997, i % 31, i % 3).as_bytes());
        i += 1;
    }
    out
}

async fn app_on(fs: &SmallFs) -> (TestApp, LocalStore) {
    let store = LocalStore::open(fs.path.join("store")).await.unwrap().with_min_free(1 << 20);
    let app = spawn_app_on(ServingArgs::defaults(), Some(Arc::new(store.clone())), 8 << 20).await;
    (app, store)
}

async fn post_csv(app: &TestApp, team: &TestTeam, bytes: &[u8]) -> Response {
    app.request(Method::POST, "/v1/datasets?name=full", Some(&team.member))
        .header("content-type", "text/csv")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

async fn readiness(app: &TestApp) -> (u16, Value) {
    let res = app.request(Method::GET, "/readyz", None).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

fn stored_files(fs: &SmallFs) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![fs.path.join("store")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                out.push(entry.path().display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_upload_to_a_full_store_answers_507_and_stores_nothing() {
    let fs = SmallFs::mount(20);
    let (app, store) = app_on(&fs).await;
    let team = app.team("full").await;
    assert_eq!(readiness(&app).await.0, 200);

    fs.fill_leaving(0);
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["artifact_store"], "no_space", "{ready}");

    let data = csv(810_588);
    let body = assert_error(post_csv(&app, &team, &data).await, 507, "insufficient_storage").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("No space left on device (os error 28)"), "{message}");
    assert!(!body.to_string().contains('/'), "no server path in the answer: {body}");
    let listed: Value = app.get("/v1/datasets", &team.viewer).await.json().await.unwrap();
    assert_eq!(listed["items"], serde_json::json!([]), "nothing recorded");
    assert_eq!(stored_files(&fs), Vec::<String>::new(), "nothing stored");

    // Room again: the same bytes are stored whole.
    fs.free_filler();
    assert_eq!(readiness(&app).await.0, 200);
    let res = post_csv(&app, &team, &data).await;
    assert_eq!(res.status(), 201);
    let dataset: Value = res.json().await.unwrap();
    assert_eq!(dataset["size_bytes"], data.len());
    let key = Key::blob(&Team::parse(team.id.to_string()).unwrap(), &Sha256Digest::of(&data));
    assert!(std::fs::read(store.path_of(&key)).unwrap() == data, "exactly the bytes uploaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_is_not_ready_and_uploads_answer_503_with_the_reason() {
    let fs = SmallFs::mount(20);
    let (app, _store) = app_on(&fs).await;
    let team = app.team("ro").await;
    fs.set_read_only(true);
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["artifact_store"], "read_only", "{ready}");
    assert_eq!(ready["checks"]["postgres"], "ok", "{ready}");
    let body = assert_error(post_csv(&app, &team, &csv(10_000)).await, 503, "unavailable").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Read-only file system (os error 30)"), "{message}");
    assert!(!body.to_string().contains('/'), "no server path in the answer: {body}");
    fs.set_read_only(false);
    assert_eq!(readiness(&app).await.0, 200);
    assert_eq!(post_csv(&app, &team, &csv(10_000)).await.status(), 201);
}
