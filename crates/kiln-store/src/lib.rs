//! Kiln's artifact store: every dataset, checkpoint and model bundle lives here.
//!
//! One trait, [`ArtifactStore`], with two backends: S3 through aws-sdk-s3 ([`S3Store`], any
//! S3-compatible endpoint) and a local directory ([`LocalStore`], the embedded default when
//! nothing is configured). This crate is the only one in Kiln that knows aws-sdk-s3; the
//! rest of the platform sees keys, byte streams and an [`ErrorKind`] to match on.
//!
//! Its rules:
//!
//! - **Content addressing.** [`ArtifactStore::put_stream`] stores bytes under
//!   `teams/{team}/blobs/sha256/{ab}/{digest}` ([`Key::blob`]). The same bytes twice are
//!   stored once.
//! - **Nothing partial is ever visible.** Uploads stream (never whole in memory); the digest
//!   is computed while streaming and checked before the object appears under its final key.
//!   S3 uploads large objects as multipart uploads with a bounded number of parts in flight
//!   and aborts them on any failure or cancellation; the local backend writes a temporary
//!   file, fsyncs it and renames it into place.
//! - **Writes are verified before they are reported.** The local backend reads its
//!   temporary file back (size and digest) before the rename; S3 sends small objects with
//!   their SHA-256 for the server to check and `HEAD`s every write for its size. An existing
//!   content address is checked (size; locally digest too) before it is trusted, and a
//!   wrong one is written over. A full or read-only disk is [`ErrorKind::NoSpace`] or
//!   [`ErrorKind::ReadOnly`], with the OS's reason ([`StoreError::os_reason`]).
//! - **Reads verify.** A full read of a content-addressed key re-hashes the bytes and ends
//!   with an [`ErrorKind::Integrity`] error when they do not match; [`download_to_file`]
//!   only renames a verified file into place.
//! - **Keys cannot escape.** Every key is a [`Key`], parsed once: no `..`, no absolute
//!   paths, no NUL, no backslash, no empty or hidden segments, for both backends.
//! - **Transient failures are retried, nothing hangs.** The S3 backend retries timeouts,
//!   refused connections, 5xx and throttling with full-jitter backoff, bounded attempts and
//!   a total deadline, with a timeout on every attempt; permanent errors return at once.
//!
//! Configure it with [`StoreArgs`] (`KILN_ARTIFACT_STORE`, `KILN_S3_FORCE_PATH_STYLE`, and
//! the AWS SDK's own variables) and [`open`].

mod config;
mod error;
mod key;
mod local;
mod retry;
mod s3;
mod transfer;

use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tokio::io::AsyncRead;

#[cfg(feature = "testing")]
pub mod testing;

pub use config::{S3Location, StoreArgs, StoreLocation, open};
pub use error::{ErrorKind, Result, StoreError};
pub use key::{Key, MAX_KEY_LEN, Sha256Digest, Team, validate_prefix};
pub use local::LocalStore;
pub use retry::RetryPolicy;
pub use s3::{S3Settings, S3Store, SecretString, StaticCredentials};
pub use transfer::{download_to_file, into_async_read, put_file};

/// A stream of an object's bytes. Errors are [`StoreError`]s; a content-addressed object read
/// in full ends with an [`ErrorKind::Integrity`] error instead of `None` when its bytes are
/// wrong.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;

/// The reader an upload consumes. Anything `AsyncRead`: a file, a socket, a request body.
pub type Upload<'a> = &'a mut (dyn AsyncRead + Send + Unpin);

/// What a write stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectInfo {
    pub key: Key,
    pub sha256: Sha256Digest,
    pub size: u64,
}

/// What `head` and `list` know about an object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectMeta {
    pub key: Key,
    pub size: u64,
    /// When the object was last written, where the backend reports it (listings; garbage
    /// collection's grace period depends on it).
    pub modified: Option<std::time::SystemTime>,
}

/// One page of a listing. Pass `next` back to get the following page; `None` means done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    pub next: Option<String>,
}

/// A byte range of an object: `start..end`, `end` exclusive; `end: None` reads to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: Option<u64>,
}

impl ByteRange {
    /// Bytes `start..end` (end exclusive).
    pub fn new(start: u64, end: u64) -> Self {
        Self { start, end: Some(end) }
    }

    /// Bytes from `start` to the end of the object.
    pub fn from(start: u64) -> Self {
        Self { start, end: None }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self.end {
            Some(end) if end <= self.start => Err(StoreError::new(
                ErrorKind::InvalidArgument,
                format!("empty byte range {}..{end}", self.start),
            )),
            _ => Ok(()),
        }
    }
}

/// A URL that lets a plain HTTP client read or write one object until it expires, without
/// Kiln's credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct PresignedRequest {
    /// `GET` or `PUT`.
    pub method: &'static str,
    pub url: String,
    /// Headers the client must send as they are (part of the signature).
    pub headers: Vec<(String, String)>,
    pub expires_in: Duration,
}

impl fmt::Debug for PresignedRequest {
    /// The URL is a bearer credential until it expires: never print its signature.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url.split('?').next().unwrap_or_default();
        f.debug_struct("PresignedRequest")
            .field("method", &self.method)
            .field("url", &format_args!("{url}?<signed>"))
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// The longest expiry a presigned URL may have (S3's own limit for SigV4).
pub const MAX_PRESIGN_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where every artifact lives. Implemented by [`S3Store`] and [`LocalStore`]; the same
/// conformance tests run against both.
#[async_trait]
pub trait ArtifactStore: Send + Sync + fmt::Debug {
    /// Where this store keeps things, for logs and `kiln doctor` (no secrets).
    fn describe(&self) -> String;

    /// Stores the bytes of `reader` as a content-addressed blob of `team`, hashing them while
    /// they stream. The object becomes visible under [`Key::blob`] only once complete; storing
    /// the same bytes again keeps the one copy.
    async fn put_stream(&self, team: &Team, reader: Upload<'_>) -> Result<ObjectInfo>;

    /// Like [`put_stream`](Self::put_stream) when the caller already knows the digest and
    /// size: skips the upload when the blob is already stored (checked, not assumed: a blob
    /// of the wrong size, or locally of the wrong bytes, is replaced), otherwise writes
    /// straight to the final key and fails with [`ErrorKind::Integrity`] (leaving nothing
    /// behind) if the bytes do not match.
    async fn put_verified(
        &self,
        team: &Team,
        sha256: &Sha256Digest,
        size: u64,
        reader: Upload<'_>,
    ) -> Result<ObjectInfo>;

    /// Stores a named object, create-only: [`ErrorKind::AlreadyExists`] if the key is taken.
    /// Visible only once complete, like every write.
    async fn put_at(&self, key: &Key, reader: Upload<'_>) -> Result<ObjectInfo>;

    /// Streams an object, or a range of it. Full reads of content-addressed keys verify.
    async fn get(&self, key: &Key, range: Option<ByteRange>) -> Result<ByteStream>;

    /// Reads a whole object for a bulk copy (a download to a file), where throughput
    /// matters more than memory: the S3 backend fetches `ranges_in_flight` ranges of
    /// `range_size` bytes at once, each in its own task, and yields each range in order as
    /// one buffer aligned for direct I/O (memory about `ranges_in_flight * range_size`). Same bytes as `get(key, None)` (what other
    /// backends do), but **not necessarily verified**: its one caller, `download_to_file`,
    /// hashes every byte on its writer thread and checks the digest itself before the file
    /// becomes visible.
    async fn get_bulk(&self, key: &Key) -> Result<ByteStream> {
        self.get(key, None).await
    }

    /// Whether the store can take writes now, for readiness checks. The local directory
    /// fails when its file system is read-only, has less free space than its minimum
    /// ([`LocalStore::with_min_free`]), or refuses a small fsynced probe file; the default
    /// (S3) lists one page, proving the store answers with these credentials.
    async fn check_writable(&self) -> Result<()> {
        self.list("kiln-readyz/", None).await.map(drop)
    }

    /// The object's size, or [`ErrorKind::NotFound`].
    async fn head(&self, key: &Key) -> Result<ObjectMeta>;

    /// Deletes an object. Deleting a missing object succeeds (as on S3).
    async fn delete(&self, key: &Key) -> Result<()>;

    /// One page (at most 1,000) of the objects whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str, continuation: Option<String>) -> Result<ListPage>;

    /// A URL a plain HTTP client can `GET` the object from until `expires_in` passes.
    async fn presign_get(&self, key: &Key, expires_in: Duration) -> Result<PresignedRequest>;

    /// A URL a plain HTTP client can `PUT` the object's bytes to until `expires_in` passes.
    /// The store does not verify bytes uploaded this way; reads of content-addressed keys do.
    async fn presign_put(&self, key: &Key, expires_in: Duration) -> Result<PresignedRequest>;
}

/// Lists every object under `prefix`, following continuation tokens. For tools and tests;
/// services should page.
pub async fn list_all(store: &dyn ArtifactStore, prefix: &str) -> Result<Vec<ObjectMeta>> {
    let mut all = Vec::new();
    let mut continuation = None;
    loop {
        let page = store.list(prefix, continuation).await?;
        all.extend(page.objects);
        match page.next {
            Some(next) => continuation = Some(next),
            None => return Ok(all),
        }
    }
}

/// Opens the local-directory store at `dir` (see [`LocalStore::open`]).
pub async fn open_local(dir: &Path) -> Result<Arc<dyn ArtifactStore>> {
    Ok(Arc::new(LocalStore::open(dir).await?))
}

pub(crate) fn check_expiry(expires_in: Duration) -> Result<()> {
    if expires_in.is_zero() || expires_in > MAX_PRESIGN_EXPIRY {
        return Err(StoreError::new(
            ErrorKind::InvalidArgument,
            format!("presign expiry {expires_in:?} must be between 1s and 7 days"),
        ));
    }
    Ok(())
}
