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

/// What a client generator needs of the document: query parameters in the query, real
/// bodies (the job spec's schema, bytes as binary rather than integer arrays), named
/// `oneOf` variants, unique operation ids, an error body on every failure answer.
#[test]
fn the_document_is_complete_for_client_generators() {
    let doc: Value = serde_json::from_str(kiln_api::openapi::document_json()).unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let query_names = [
        "limit",
        "cursor",
        "state",
        "name",
        "format",
        "wait",
        "window",
        "threshold",
        "version",
        "part",
    ];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            assert!(
                ids.insert(op["operationId"].as_str().unwrap().to_owned()),
                "{what}: duplicate id"
            );
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let expected = if path.contains(&format!("{{{name}}}")) {
                    "path"
                } else if name == "Idempotency-Key" {
                    "header"
                } else {
                    "query"
                };
                assert_eq!(p["in"], expected, "{what}: parameter {name}");
                if expected == "query" {
                    assert!(
                        query_names.contains(&name),
                        "{what}: unexpected query parameter {name}"
                    );
                }
            }
            let mut bodies: Vec<&Value> = Vec::new();
            if let Some(content) = op["requestBody"]["content"].as_object() {
                bodies.extend(content.values());
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let text = response.to_string();
                    assert!(
                        text.contains("ErrorBody") || path == "/readyz",
                        "{what} {status}: {text}"
                    );
                }
                if let Some(content) = response["content"].as_object() {
                    bodies.extend(content.values());
                }
            }
            for body in bodies {
                let schema = &body["schema"];
                assert!(schema.is_object(), "{what}: a body without a schema");
                let integer_array =
                    schema["type"] == "array" && schema["items"]["type"] == "integer";
                assert!(!integer_array, "{what}: bytes as an integer array: {schema}");
                // The document itself is the one body whose schema is "some object".
                if path != "/openapi.json" {
                    assert_ne!(
                        schema,
                        &serde_json::json!({"type": "object"}),
                        "{what}: a bare object"
                    );
                }
            }
        }
    }
    let jobs = &doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"];
    assert_eq!(jobs["schema"]["$ref"], "#/components/schemas/JobSpec");
    let upload = &doc["paths"]["/v1/datasets"]["post"]["requestBody"]["content"];
    assert_eq!(
        upload["application/octet-stream"]["schema"],
        serde_json::json!({"type": "string", "format": "binary"})
    );
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["JobSpec"]["required"], serde_json::json!(["dataset_id", "task", "model"]));
    let titles: Vec<&str> = schemas["ModelSpec"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["LinearModel", "MlpModel", "CnnModel", "TorchScriptModel"]);
    let predictions: Vec<&str> = schemas["Prediction"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["$ref"].as_str().unwrap())
        .collect();
    assert_eq!(
        predictions,
        ["#/components/schemas/ClassPrediction", "#/components/schemas/ValuePrediction"]
    );
    assert_eq!(
        schemas["Page_Dataset"]["properties"]["items"]["items"]["$ref"],
        "#/components/schemas/Dataset"
    );
    // Union members are objects or references, never `allOf` (generators drop such unions
    // and every schema using them), and no inline member takes a component's name.
    for (name, schema) in schemas.as_object().unwrap() {
        for member in schema["oneOf"].as_array().into_iter().flatten() {
            assert!(member.get("allOf").is_none(), "{name} has an allOf member: {member}");
            if let Some(title) = member["title"].as_str() {
                assert!(schemas.get(title).is_none(), "{name}'s member {title} is a component");
            }
        }
    }
    let formats: Vec<&str> = schemas["DatasetSchema"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["properties"]["format"]["enum"][0].as_str().unwrap())
        .collect();
    assert_eq!(formats, ["csv", "npz", "torchscript"]);
}

/// The canonical form of a spec (what jobs answer as `spec`) has every field the schema
/// names, and nothing it does not.
#[test]
fn the_canonical_spec_matches_its_schema() {
    let doc: Value = serde_json::from_str(kiln_api::openapi::document_json()).unwrap();
    let spec = kiln_types::spec::JobSpec::parse(&serde_json::json!({
        "dataset_id": uuid::Uuid::now_v7(), "task": "classification", "target": "y",
        "model": {"type": "mlp"}
    }))
    .unwrap()
    .to_json();
    let schemas = &doc["components"]["schemas"];
    for (name, value) in [
        ("JobSpec", &spec),
        ("Hyperparameters", &spec["hyperparameters"]),
        ("Preprocessing", &spec["preprocessing"]),
    ] {
        let mut named: Vec<&String> =
            schemas[name]["properties"].as_object().unwrap().keys().collect();
        let mut present: Vec<&String> = value.as_object().unwrap().keys().collect();
        named.sort();
        present.sort();
        assert_eq!(named, present, "{name}");
    }
    let mlp = schemas["ModelSpec"]["oneOf"][1]["properties"].as_object().unwrap();
    let mut named: Vec<&String> = mlp.keys().collect();
    let mut present: Vec<&String> = spec["model"].as_object().unwrap().keys().collect();
    named.sort();
    present.sort();
    assert_eq!(named, present, "MlpModel");
}
