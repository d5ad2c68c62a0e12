//! The typed job contract reads the rows today's code writes, and writes them back
//! unchanged.
//!
//! Every file in `tests/fixtures/` is a jsonb value as a row holds it (a `jobs` row's
//! `inputs`, `progress` or `result`, a `datasets` row's `schema`); most were captured from
//! rows the code wrote before these types existed (`tests/fixtures/README.md` says which);
//! its name's prefix says which type reads it. Each must
//! deserialise, and serialise back to the same JSON value (jsonb keeps no key order, so
//! values are compared, not text).

use std::path::Path;

use kiln_types::{DatasetSchema, JobInputs, JobProgress, JobResult, Sha256Digest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn fixtures(prefix: &str) -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(".json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            out.push((name, value));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no fixtures `{prefix}*.json` in {}", dir.display());
    out
}

/// Each fixture reads into `T` and writes back as the same value; returns the typed values.
fn round_trip<T: DeserializeOwned + Serialize>(prefix: &str) -> Vec<(String, T)> {
    fixtures(prefix)
        .into_iter()
        .map(|(name, value)| {
            let typed: T = serde_json::from_value(value.clone())
                .unwrap_or_else(|e| panic!("{name} does not read back: {e}"));
            let again = serde_json::to_value(&typed).unwrap();
            assert_eq!(again, value, "{name} does not write back unchanged");
            (name, typed)
        })
        .collect()
}

#[test]
fn dataset_schemas_round_trip() {
    let schemas = round_trip::<DatasetSchema>("schema_");
    let formats: Vec<&str> = schemas.iter().map(|(_, s)| s.format()).collect();
    assert!(formats.contains(&"csv") && formats.contains(&"npz"), "{formats:?}");
    assert!(formats.contains(&"torchscript"), "{formats:?}");
}

#[test]
fn job_inputs_round_trip() {
    let inputs = round_trip::<JobInputs>("inputs_");
    assert!(inputs.iter().any(|(_, i)| i.script.is_some()), "a torchscript job's inputs");
    assert!(inputs.iter().any(|(_, i)| i.dataset.is_none()), "the column's default `{{}}`");
}

#[test]
fn job_progress_round_trips() {
    round_trip::<JobProgress>("progress");
}

#[test]
fn job_results_round_trip() {
    let results = round_trip::<JobResult>("result_");
    assert!(results.iter().any(|(_, r)| r.metrics.confusion_matrix.is_some()));
    assert!(results.iter().any(|(_, r)| r.metrics.val_r2.is_some()));
}

#[test]
fn a_non_finite_metric_stays_null() {
    let (_, mut result) = fixtures("result_").remove(0);
    result["metrics"]["val_loss"] = Value::Null;
    let typed: JobResult = serde_json::from_value(result.clone()).unwrap();
    assert!(typed.metrics.val_loss.is_nan());
    assert_eq!(serde_json::to_value(&typed).unwrap(), result);
}

#[test]
fn bad_digests_in_rows_are_refused() {
    let (_, mut inputs) = fixtures("inputs_csv").remove(0);
    inputs["dataset"]["sha256"] = json!("not-a-digest");
    let err = serde_json::from_value::<JobInputs>(inputs).unwrap_err();
    assert!(err.to_string().contains("`not-a-digest` is not a sha256 digest"), "{err}");

    let (_, mut result) = fixtures("result_").remove(0);
    result["bundle_sha256"] = json!("ab".repeat(31));
    let err = serde_json::from_value::<JobResult>(result).unwrap_err();
    assert!(err.to_string().contains("is not a sha256 digest"), "{err}");

    assert!(Sha256Digest::parse("g".repeat(64)).is_err());
}

#[test]
fn inputs_name_their_format() {
    let (_, inputs) = fixtures("inputs_torchscript").remove(0);
    let typed: JobInputs = serde_json::from_value(inputs).unwrap();
    let script = typed.script.unwrap();
    assert_eq!(script.format.as_str(), "torchscript");
    assert_eq!(typed.dataset.unwrap().format.as_str(), "csv");
    let mut bad = serde_json::to_value(&script).unwrap();
    bad["format"] = json!("parquet");
    assert!(serde_json::from_value::<kiln_types::InputBlob>(bad).is_err());
}
