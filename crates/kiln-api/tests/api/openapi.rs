//! The committed OpenAPI document matches the generated one, and the server serves it.

use serde_json::Value;

use crate::spawn_app;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api/openapi.json");

#[test]
fn committed_openapi_document_is_current() {
    let generated = kiln_api::openapi::document_json();
    if std::env::var_os("KILN_UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(std::path::Path::new(COMMITTED).parent().unwrap()).unwrap();
        std::fs::write(COMMITTED, format!("{generated}\n")).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed.trim_end() == generated,
        "docs/api/openapi.json is stale: run `KILN_UPDATE_OPENAPI=1 cargo test -p kiln-api --test api openapi` and commit it"
    );
}

#[tokio::test]
async fn served_document_lists_every_contract_route() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for route in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/v1/teams",
        "/v1/teams/{team_id}/tokens",
        "/v1/tokens/{token_id}",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/{id}/retry",
        "/v1/jobs/{id}/metrics",
        "/v1/jobs/{id}/logs",
        "/v1/runs",
        "/v1/runs/{id}/metrics",
        "/v1/runs/{id}/finish",
        "/v1/audit",
    ] {
        assert!(paths.contains_key(route), "{route} missing from the OpenAPI document");
    }
}
