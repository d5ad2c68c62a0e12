//! Model bundles for serving, cached by content hash: in memory while any engine uses one,
//! and on local disk across restarts. A second load of the same bundle downloads nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use kiln_ml::ModelBundle;
use kiln_store::{ArtifactStore, Key};
use prometheus::IntCounterVec;
use sha2::{Digest, Sha256};

use crate::LoadError;

/// Where a bundle came from, for the cache metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Memory,
    Disk,
    Store,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Memory => "memory",
            Source::Disk => "disk",
            Source::Store => "store",
        }
    }
}

/// The bundles of this process, by sha256: shared in memory while loaded, on disk under
/// `KILN_SERVING_CACHE_DIR` across restarts.
#[derive(Debug)]
pub struct BundleCache {
    dir: PathBuf,
    store: Arc<dyn ArtifactStore>,
    memory: Mutex<HashMap<String, Weak<ModelBundle>>>,
    /// `kiln_serving_bundle_loads_total{source}`.
    loads: IntCounterVec,
}

impl BundleCache {
    pub fn new(dir: PathBuf, store: Arc<dyn ArtifactStore>, loads: IntCounterVec) -> Self {
        BundleCache { dir, store, memory: Mutex::new(HashMap::new()), loads }
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(&sha256[..2.min(sha256.len())]).join(format!("{sha256}.kiln.zip"))
    }

    /// The bundle with this content hash, from memory, disk or the store (verified against
    /// the hash wherever it came from).
    pub async fn get(
        &self,
        key: &str,
        sha256: &str,
    ) -> Result<(Arc<ModelBundle>, Source), LoadError> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(LoadError::NotASha256(sha256.to_owned()));
        }
        if let Some(bundle) = crate::lock(&self.memory).get(sha256).and_then(Weak::upgrade) {
            self.loads.with_label_values(&[Source::Memory.label()]).inc();
            return Ok((bundle, Source::Memory));
        }
        let path = self.path(sha256);
        let (bytes, source) = match read_verified(&path, sha256).await {
            Some(bytes) => (bytes, Source::Disk),
            None => (self.download(key, sha256, &path).await?, Source::Store),
        };
        let bundle = tokio::task::spawn_blocking(move || ModelBundle::from_bytes(&bytes))
            .await
            .map_err(LoadError::ParseTask)?
            .map_err(LoadError::Model)?;
        let bundle = Arc::new(bundle);
        let mut memory = crate::lock(&self.memory);
        memory.retain(|_, weak| weak.strong_count() > 0);
        // Two loads racing: keep the first, so both engines share one copy.
        let bundle = match memory.get(sha256).and_then(Weak::upgrade) {
            Some(existing) => existing,
            None => {
                memory.insert(sha256.to_owned(), Arc::downgrade(&bundle));
                bundle
            }
        };
        self.loads.with_label_values(&[source.label()]).inc();
        Ok((bundle, source))
    }

    async fn download(&self, key: &str, sha256: &str, path: &Path) -> Result<Vec<u8>, LoadError> {
        let key = Key::parse(key.to_owned()).map_err(LoadError::BadKey)?;
        let dir = path.parent().expect("cache paths have a parent");
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| LoadError::CacheDir { dir: dir.to_owned(), source })?;
        kiln_store::download_to_file(self.store.as_ref(), &key, path)
            .await
            .map_err(LoadError::Download)?;
        match read_verified(path, sha256).await {
            Some(bytes) => Ok(bytes),
            None => {
                let _ = tokio::fs::remove_file(path).await;
                Err(LoadError::DigestMismatch(sha256.to_owned()))
            }
        }
    }
}

/// The file's bytes when it exists and hashes to `sha256`; a corrupt cache file is removed.
async fn read_verified(path: &Path, sha256: &str) -> Option<Vec<u8>> {
    let bytes = tokio::fs::read(path).await.ok()?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual.eq_ignore_ascii_case(sha256) {
        Some(bytes)
    } else {
        tracing::warn!(path = %path.display(), "corrupt cached model bundle; downloading it again");
        let _ = tokio::fs::remove_file(path).await;
        None
    }
}
