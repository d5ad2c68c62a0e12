//! Dataset uploads: streamed into the real S3-compatible server, schema inferred, versions
//! per name, limits and bad files.

use reqwest::Method;
use serde_json::Value;

use crate::{assert_error, example, spawn_app};

#[tokio::test]
async fn upload_csv_infers_schema_and_counts_versions() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let iris = example("iris.csv");
    let first = app.upload(&team.member, "iris", "text/csv", iris.clone()).await;
    assert_eq!(first["version"], 1);
    assert_eq!(first["format"], "csv");
    assert_eq!(first["size_bytes"], iris.len());
    assert_eq!(
        first["sha256"].as_str().unwrap(),
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&iris))
    );
    assert_eq!(first["schema"]["rows"], 150);
    let columns = first["schema"]["columns"].as_array().unwrap();
    assert_eq!(columns.len(), 5);
    assert_eq!(first["schema"]["label_candidates"], serde_json::json!(["species"]));

    // Same bytes under another name: its own version 1, stored once.
    let second = app.upload(&team.member, "flowers", "text/csv", iris.clone()).await;
    assert_eq!(second["version"], 1);
    assert_eq!(second["sha256"], first["sha256"]);
    let blobs: Vec<_> = kiln_store::list_all(&app.s3.store("kiln").await, "").await.unwrap();
    assert_eq!(blobs.len(), 1, "content-addressed: one object for two uploads: {blobs:?}");
    // Other bytes under the same name: version 2.
    let mut more = iris;
    more.extend_from_slice(b"5.0,3.0,1.5,0.2,setosa\n");
    let third = app.upload(&team.member, "iris", "text/csv", more).await;
    assert_eq!(third["version"], 2);

    let got: Value = app
        .get(&format!("/v1/datasets/{}", first["id"].as_str().unwrap()), &team.viewer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got, first);
    let listed: Value = app.get("/v1/datasets?name=iris", &team.viewer).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert_eq!(listed["items"][0]["version"], 2, "newest first");
}

#[tokio::test]
async fn upload_npz_describes_arrays() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let digits =
        app.upload(&team.member, "digits", "application/octet-stream", example("digits.npz")).await;
    assert_eq!(digits["format"], "npz");
    assert_eq!(digits["schema"]["x"]["shape"][0], 1797);
}

#[tokio::test]
async fn malformed_csv_is_422_naming_row_and_column_and_nothing_is_stored() {
    let app = spawn_app().await;
    let team = app.team("alpha").await;
    let res = app
        .request(Method::POST, "/v1/datasets?name=bad", Some(&team.member))
        .header("content-type", "text/csv")
        .body("a,b,label\n1,2,x\n3,4\n")
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 422, "validation_failed").await;
    let message = body["error"]["details"]["fields"]["body"].as_str().unwrap();
    assert!(message.contains("line 3") || message.contains("row 2"), "{message}");
    let listed: Value = app.get("/v1/datasets", &team.viewer).await.json().await.unwrap();
    assert_eq!(listed["items"], serde_json::json!([]));
    assert!(kiln_store::list_all(&app.s3.store("kiln").await, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn upload_limits_types_names_and_roles() {
    let app = spawn_app().await; // upload limit: 1 MiB in tests
    let team = app.team("alpha").await;
    let big = vec![b'1'; 2 * 1024 * 1024];
    let res = app
        .request(Method::POST, "/v1/datasets?name=big", Some(&team.member))
        .header("content-type", "text/csv")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_error(res, 413, "payload_too_large").await;
    let res = app
        .request(Method::POST, "/v1/datasets?name=x", Some(&team.member))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(res, 415, "unsupported_media_type").await;
    let res = app
        .request(Method::POST, "/v1/datasets?name=../etc", Some(&team.member))
        .header("content-type", "text/csv")
        .body("a\n1\n")
        .send()
        .await
        .unwrap();
    assert_error(res, 422, "validation_failed").await;
    let res = app
        .request(Method::POST, "/v1/datasets", Some(&team.member))
        .header("content-type", "text/csv")
        .body("a\n1\n")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "bad_request").await;
    let res = app
        .request(Method::POST, "/v1/datasets?name=x", Some(&team.viewer))
        .header("content-type", "text/csv")
        .body("a\n1\n")
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "forbidden").await;
}

#[tokio::test]
async fn another_teams_dataset_is_404() {
    let app = spawn_app().await;
    let a = app.team("alpha").await;
    let b = app.team("beta").await;
    let ds = app.upload(&a.member, "iris", "text/csv", example("iris.csv")).await;
    let res = app.get(&format!("/v1/datasets/{}", ds["id"].as_str().unwrap()), &b.viewer).await;
    assert_error(res, 404, "not_found").await;
    let listed: Value = app.get("/v1/datasets", &b.viewer).await.json().await.unwrap();
    assert_eq!(listed["items"], serde_json::json!([]));
}
