//! `job.inputs`: what the API resolved the spec's ids to at submission, and the dataset
//! cache that turns a dataset's key into a local file.
//!
//! ```json
//! {"dataset": {"id": "<uuid>", "key": "teams/<team>/blobs/sha256/ab/…", "sha256": "<hex>",
//!              "format": "csv", "size_bytes": 1234},
//!  "script":  {"id": "<uuid>", "key": "…", "sha256": "<hex>", "size_bytes": 56}}
//! ```
//!
//! The cache holds one file per dataset, named by its sha256, so a second job on the same
//! data makes no store request at all. A cached file is trusted by its name and size; the
//! download itself verifies the bytes (content-addressed keys are re-hashed on full reads),
//! and kiln-ml hashes the bytes again when it reads them, so a file corrupted on disk is
//! caught and removed (see `job.rs`).

use std::path::{Path, PathBuf};

use kiln_store::{ArtifactStore, ErrorKind, Key, StoreError, download_to_file};
use serde_json::Value;

/// One stored blob the job needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInput {
    pub key: String,
    pub sha256: String,
    pub size_bytes: Option<u64>,
}

/// The parsed `job.inputs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub dataset: BlobInput,
    /// The TorchScript module, for `{"type": "torchscript"}` models.
    pub script: Option<BlobInput>,
}

impl Inputs {
    /// Parses `job.inputs`; the error is a sentence about what is missing or wrong.
    pub fn parse(inputs: &Value) -> Result<Inputs, String> {
        let dataset = inputs.get("dataset").filter(|v| !v.is_null()).ok_or_else(|| {
            "the job has no dataset in its inputs; submit it again through the API".to_owned()
        })?;
        let dataset = BlobInput::parse("dataset", dataset)?;
        let script = match inputs.get("script").filter(|v| !v.is_null()) {
            Some(script) => Some(BlobInput::parse("script", script)?),
            None => None,
        };
        Ok(Inputs { dataset, script })
    }
}

impl BlobInput {
    fn parse(what: &str, value: &Value) -> Result<BlobInput, String> {
        let field = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("job inputs: `{what}.{name}` is missing or not a string"))
        };
        let key = field("key")?.to_owned();
        Key::parse(key.clone()).map_err(|e| format!("job inputs: `{what}.key`: {e}"))?;
        let sha256 = field("sha256")?.to_owned();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("job inputs: `{what}.sha256` is not a sha256 hex digest"));
        }
        let size_bytes = match value.get("size_bytes") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                format!("job inputs: `{what}.size_bytes` is not a non-negative integer")
            })?),
        };
        Ok(BlobInput { key, sha256: sha256.to_ascii_lowercase(), size_bytes })
    }
}

/// The local dataset cache: `<dir>/<sha256>`.
#[derive(Debug, Clone)]
pub struct DatasetCache {
    dir: PathBuf,
}

/// Where a dataset came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Downloaded,
}

impl DatasetCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn path_of(&self, blob: &BlobInput) -> PathBuf {
        self.dir.join(&blob.sha256)
    }

    /// The dataset's local file: the cached one, or a fresh, verified download.
    pub async fn fetch(
        &self,
        store: &dyn ArtifactStore,
        blob: &BlobInput,
    ) -> Result<(PathBuf, CacheOutcome), StoreError> {
        let path = self.path_of(blob);
        if let Ok(meta) = tokio::fs::metadata(&path).await {
            if meta.is_file() && blob.size_bytes.is_none_or(|size| size == meta.len()) {
                return Ok((path, CacheOutcome::Hit));
            }
            // A stale file of the wrong size: replace it.
            remove(&path).await;
        }
        tokio::fs::create_dir_all(&self.dir).await.map_err(|err| {
            StoreError::with_source(
                ErrorKind::Io,
                format!("creating the dataset cache {}", self.dir.display()),
                err,
            )
        })?;
        let key = Key::parse(blob.key.clone())?;
        let started = std::time::Instant::now();
        let downloaded = download_to_file(store, &key, &path).await;
        kiln_telemetry::metrics::store_operation(
            "get",
            downloaded.as_ref().map_or(0, |info| info.size),
            started.elapsed().as_secs_f64(),
            downloaded.is_ok(),
        );
        let info = downloaded?;
        if info.sha256.to_string() != blob.sha256 {
            remove(&path).await;
            return Err(StoreError::new(
                ErrorKind::Integrity,
                format!(
                    "{} holds bytes with sha256 {}, but the job expects {}",
                    blob.key, info.sha256, blob.sha256
                ),
            ));
        }
        Ok((path, CacheOutcome::Downloaded))
    }
}

/// Removes a cache file, ignoring a file already gone.
pub async fn remove(path: &Path) {
    if let Err(err) = tokio::fs::remove_file(path).await
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %err, "could not remove a cached dataset");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SHA: &str = "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd";

    fn check_error(inputs: Value, expected: &str) {
        let err = Inputs::parse(&inputs).unwrap_err();
        assert!(err.contains(expected), "{err:?} should mention {expected:?}");
    }

    #[test]
    fn the_api_contract_parses() {
        let key = format!("teams/t1/blobs/sha256/ab/{SHA}");
        let inputs = Inputs::parse(&json!({
            "dataset": {"id": "0190a5f2-0000-7000-8000-000000000000", "key": key,
                        "sha256": SHA, "format": "csv", "size_bytes": 4550}
        }))
        .unwrap();
        assert_eq!(inputs.dataset.key, key);
        assert_eq!(inputs.dataset.size_bytes, Some(4550));
        assert_eq!(inputs.script, None);
    }

    #[test]
    fn missing_or_malformed_inputs_say_what_is_wrong() {
        check_error(json!({}), "no dataset");
        check_error(json!({"dataset": {"sha256": SHA}}), "`dataset.key`");
        check_error(json!({"dataset": {"key": "a/b", "sha256": "xyz"}}), "`dataset.sha256`");
        check_error(json!({"dataset": {"key": "../etc", "sha256": SHA}}), "`dataset.key`");
        check_error(
            json!({"dataset": {"key": "a/b", "sha256": SHA, "size_bytes": -1}}),
            "`dataset.size_bytes`",
        );
        check_error(
            json!({"dataset": {"key": "a/b", "sha256": SHA}, "script": {"key": "a/c"}}),
            "`script.sha256`",
        );
    }
}
