//! kiln-store against the real thing: a local directory, and a real S3-compatible server
//! (s3s-fs, which checks SigV4 signatures) started per test on 127.0.0.1. Nothing is mocked.
//! One test binary; each feature is a module. The conformance suite runs against both
//! backends.

mod conformance;
mod full_disk;
mod local;
mod memory;
mod s3;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use kiln_store::{ArtifactStore, ByteStream, LocalStore, StoreError};
use tokio::io::{AsyncRead, ReadBuf};

pub const MIB: u64 = 1 << 20;

pub use kiln_store::testing::{ACCESS_KEY, BUCKET, S3sServer, SECRET_KEY, s3s_fs_binary};

/// Every regular file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A store under test, with what a test needs to reach behind it.
#[derive(Debug)]
pub struct Backend {
    pub store: Arc<dyn ArtifactStore>,
    pub kind: BackendKind,
}

#[derive(Debug)]
pub enum BackendKind {
    Local { root: PathBuf, _dir: tempfile::TempDir },
    S3 { server: S3sServer, prefix: String },
}

impl Backend {
    pub async fn local() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("artifacts");
        let store = Arc::new(LocalStore::open(&root).await.expect("open local store"));
        Backend { store, kind: BackendKind::Local { root, _dir: dir } }
    }

    pub async fn s3() -> Self {
        let server = S3sServer::start();
        // A prefix, so every test also checks the store keeps to it.
        let prefix = "kiln/".to_owned();
        let store = Arc::new(server.store(&prefix).await);
        Backend { store, kind: BackendKind::S3 { server, prefix } }
    }

    /// The file that holds `key`'s bytes on disk, behind the store's back.
    pub fn file_of(&self, key: &kiln_store::Key) -> PathBuf {
        match &self.kind {
            BackendKind::Local { root, .. } => root.join("objects").join(key.as_str()),
            BackendKind::S3 { server, prefix } => {
                server.bucket_dir().join(format!("{prefix}{}", key.as_str()))
            }
        }
    }

    /// Every file the backend holds for objects (including any staging or partial ones).
    pub fn object_files(&self) -> Vec<String> {
        match &self.kind {
            BackendKind::Local { root, .. } => files_under(root),
            BackendKind::S3 { server, .. } => files_under(&server.bucket_dir()),
        }
    }
}

/// Runs a test body against both backends: `both!(name)` makes `local_name` and `s3_name`
/// from `async fn name(backend: &Backend)`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod local_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&$crate::Backend::local().await).await;
                }
            )*
        }
        mod s3_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&$crate::Backend::s3().await).await;
                }
            )*
        }
    };
}

/// `len` pseudo-random bytes, generated as they are read; optionally failing after
/// `fail_after` bytes, as a dropped client connection would.
#[derive(Debug)]
pub struct Generated {
    state: u64,
    left: u64,
    fail_after: Option<u64>,
    produced: u64,
}

impl Generated {
    pub fn new(seed: u64, len: u64) -> Self {
        Self {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            left: len,
            fail_after: None,
            produced: 0,
        }
    }

    pub fn failing_after(mut self, bytes: u64) -> Self {
        self.fail_after = Some(bytes);
        self
    }

    /// The same bytes, in memory (for small sizes).
    pub fn bytes(seed: u64, len: u64) -> Vec<u8> {
        let mut reader = Generated::new(seed, len);
        let mut out = Vec::with_capacity(len as usize);
        let mut word = [0u8; 8];
        while reader.left > 0 {
            let n = reader.left.min(8) as usize;
            reader.fill(&mut word[..n]);
            out.extend_from_slice(&word[..n]);
        }
        out
    }

    fn fill(&mut self, dst: &mut [u8]) {
        for word in dst.chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let value = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            word.copy_from_slice(&value[..word.len()]);
        }
        self.left -= dst.len() as u64;
        self.produced += dst.len() as u64;
    }
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(limit) = self.fail_after
            && self.produced >= limit
        {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the client went away",
            )));
        }
        let mut n = (buf.remaining() as u64).min(self.left);
        if n >= 8 {
            n -= n % 8; // whole words keep the sequence independent of read sizes
        }
        if let Some(limit) = self.fail_after {
            n = n.min(limit - self.produced);
        }
        let n = n as usize;
        self.fill(&mut buf.initialize_unfilled_to(n)[..n]);
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// Reads a whole stream into memory (small objects only).
pub async fn collect(mut stream: ByteStream) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk?;
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Drains a stream, hashing it; returns (sha256 hex, size) or the first error.
pub async fn drain(mut stream: ByteStream) -> Result<(String, u64), StoreError> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut size = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

pub fn team(name: &str) -> kiln_store::Team {
    kiln_store::Team::parse(name).expect("team")
}

pub fn key(key: &str) -> kiln_store::Key {
    kiln_store::Key::parse(key).expect("key")
}
