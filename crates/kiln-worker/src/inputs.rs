//! The dataset cache that turns a job input's key (kiln-types' [`InputBlob`], from
//! `job.inputs`) into a local file.
//!
//! The cache holds one file per dataset, named by its sha256, so a second job on the same
//! data makes no store request at all. A cached file is trusted by its name and size; the
//! download itself verifies the bytes (content-addressed keys are re-hashed on full reads),
//! and kiln-ml hashes the bytes again when it reads them, so a file corrupted on disk is
//! caught and removed (see `job/train.rs`).

use std::path::{Path, PathBuf};

use kiln_store::{ArtifactStore, ErrorKind, Key, StoreError, download_to_file};
use kiln_types::InputBlob;

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

    pub fn path_of(&self, blob: &InputBlob) -> PathBuf {
        self.dir.join(blob.sha256.as_str())
    }

    /// The dataset's local file: the cached one, or a fresh, verified download.
    pub async fn fetch(
        &self,
        store: &dyn ArtifactStore,
        blob: &InputBlob,
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
        if info.sha256.to_string() != blob.sha256.as_str() {
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
