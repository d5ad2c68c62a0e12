//! The local-directory backend: the embedded default when no store is configured.
//!
//! Layout under the root: `objects/{key}` holds each object as a plain file; `staging/`
//! holds uploads in progress. Every write streams into a new file in `staging/` (same
//! filesystem as `objects/`, so the rename is atomic), flushes and fsyncs it, reads it back
//! to check its size and digest, then renames it into place and fsyncs the directory: a crash leaves either the old state or the whole new
//! object, never a partial one. Create-only writes link instead of renaming, so they fail
//! if the name is taken. Presigned URLs are not supported here: the API serves the bytes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::error::{ErrorKind, Result, StoreError};
use crate::transfer::verify_stream;
use crate::{
    ArtifactStore, ByteRange, ByteStream, Key, ListPage, ObjectInfo, ObjectMeta, PresignedRequest,
    Sha256Digest, Team, Upload, validate_prefix,
};

/// Objects per [`ArtifactStore::list`] page, as on S3.
const PAGE_SIZE: usize = 1000;
/// Read and write in 1 MiB chunks: few syscalls, little memory.
const CHUNK: usize = 1 << 20;
const MIB: f64 = (1u64 << 20) as f64;

/// The local-directory store. See the module docs for its layout and guarantees.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// Below this many free bytes, [`ArtifactStore::check_writable`] fails (readiness).
    min_free: u64,
}

/// How a finished temporary file takes its final name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Publish {
    /// Content-addressed: if the name exists it holds the same bytes; keep it.
    KeepExisting,
    /// Named, create-only: fail with `AlreadyExists` if the name is taken.
    CreateOnly,
}

impl LocalStore {
    /// Opens (creating if needed) a store rooted at an absolute directory.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_absolute() {
            return Err(StoreError::new(
                ErrorKind::InvalidConfig,
                format!("local artifact directory {} must be absolute", root.display()),
            ));
        }
        let store = Self { root, min_free: 0 };
        for dir in [store.objects_dir(), store.staging_dir()] {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|err| StoreError::io(format!("creating {}", dir.display()), err))?;
        }
        Ok(store)
    }

    /// The free space below which [`ArtifactStore::check_writable`] reports the store as
    /// full (`KILN_STORE_MIN_FREE_MIB`); 0 by default.
    pub fn with_min_free(mut self, bytes: u64) -> Self {
        self.min_free = bytes;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }

    fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// The file holding `key`. Safe by construction: a [`Key`] has no `..`, no absolute
    /// part, no backslash and no NUL, so the path stays under `objects/`.
    pub fn path_of(&self, key: &Key) -> PathBuf {
        let mut path = self.objects_dir();
        path.extend(key.as_str().split('/'));
        path
    }

    /// The name of a path under the root, for messages: relative, so an error shown to a
    /// user or recorded in a job never reveals where the server keeps its files.
    fn name_of(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).display().to_string()
    }

    /// Streams `reader` into a new staging file, fsyncs it, then reads it back: answers its
    /// path, digest and size only once the file on disk is exactly the bytes read.
    async fn write_staging(
        &self,
        reader: Upload<'_>,
    ) -> Result<(tempfile_path::TempPath, Sha256Digest, u64)> {
        let tmp = tempfile_path::TempPath::new(
            self.staging_dir().join(format!("{}.tmp", uuid::Uuid::new_v4())),
        );
        let name = self.name_of(tmp.path());
        let io = |what: &'static str| {
            let name = name.clone();
            move |err| StoreError::io(format!("{what} {name}"), err)
        };
        let mut file = tokio::fs::File::create(tmp.path()).await.map_err(io("creating"))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = reader.read(&mut buf).await.map_err(StoreError::source_read)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            file.write_all(&buf[..n]).await.map_err(io("writing"))?;
        }
        // tokio's `File` hands each write to a blocking thread and reports its failure on
        // the next operation. `flush` is that operation; `sync_all` would not report it, and
        // a last write lost to a full disk would pass as stored (issue 22).
        file.flush().await.map_err(io("writing"))?;
        file.sync_all().await.map_err(io("syncing"))?;
        drop(file);
        let sha256 = Sha256Digest::from_bytes(hasher.finalize().into());
        match hash_file(tmp.path()).await.map_err(io("reading back"))? {
            (digest, len) if digest == sha256 && len == size => Ok((tmp, sha256, size)),
            (digest, len) => Err(StoreError::new(
                ErrorKind::Integrity,
                format!(
                    "{name} holds {len} bytes hashing to sha256:{digest} after {size} bytes \
                     hashing to sha256:{sha256} were written; nothing stored"
                ),
            )),
        }
    }

    /// Whether `key` holds exactly the bytes of `sha256` (and `size`, when known): a
    /// content address is trusted only once its file is checked, since a file left short
    /// or empty by an earlier failure must be replaced, not kept.
    async fn holds(&self, key: &Key, sha256: &Sha256Digest, size: Option<u64>) -> Result<bool> {
        let path = self.path_of(key);
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() && size.is_none_or(|size| size == meta.len()) => {}
            Ok(_) => return Ok(false),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(StoreError::io(format!("{key}"), err)),
        }
        let (digest, len) =
            hash_file(&path).await.map_err(|err| StoreError::io(format!("reading {key}"), err))?;
        if digest == *sha256 {
            return Ok(true);
        }
        tracing::warn!(%key, len, %digest, "a stored blob does not hold its bytes; replacing it");
        Ok(false)
    }

    /// Moves a finished staging file to `key`'s path, then fsyncs the directory.
    async fn publish(&self, tmp: tempfile_path::TempPath, key: &Key, how: Publish) -> Result<()> {
        let dest = self.path_of(key);
        let dir = dest.parent().expect("an object path has a parent").to_owned();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|err| StoreError::io(format!("creating {}", self.name_of(&dir)), err))?;
        match how {
            Publish::KeepExisting => {
                // Replaces whatever is there: the staging file is verified, what is there
                // may not be.
                tokio::fs::rename(tmp.path(), &dest)
                    .await
                    .map_err(|err| StoreError::io(format!("renaming to {key}"), err))?;
                tmp.forget();
            }
            Publish::CreateOnly => {
                // link(2) fails if `dest` exists: an atomic create-only rename.
                tokio::fs::hard_link(tmp.path(), &dest).await.map_err(|err| {
                    if err.kind() == std::io::ErrorKind::AlreadyExists {
                        StoreError::new(ErrorKind::AlreadyExists, format!("{key} already exists"))
                    } else {
                        StoreError::io(format!("linking {key}"), err)
                    }
                })?;
                // `tmp` drops here and unlinks the staging name.
            }
        }
        sync_dir(&dir).await
    }

    /// Bytes free for unprivileged writers on the store's file system.
    pub fn free_bytes(&self) -> Result<u64> {
        free_bytes(&self.root).map_err(|err| StoreError::io("measuring free space", err))
    }
}

/// SHA-256 and length of a file, read on a blocking thread.
async fn hash_file(path: &Path) -> std::io::Result<(Sha256Digest, u64)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok((Sha256Digest::from_bytes(hasher.finalize().into()), len));
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
    })
    .await
    .map_err(std::io::Error::other)?
}

/// `statvfs(3)`: bytes available to unprivileged writers.
pub(crate) fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

fn mounted_read_only(path: &Path) -> std::io::Result<bool> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

/// fsyncs a directory, so a rename into it survives a crash.
pub(crate) async fn sync_dir(dir: &Path) -> Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
        .await
        .map_err(|err| StoreError::with_source(ErrorKind::Io, "fsync task failed", err))?
        .map_err(|err| StoreError::io("syncing a directory", err))
}

#[async_trait]
impl ArtifactStore for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put_stream(&self, team: &Team, reader: Upload<'_>) -> Result<ObjectInfo> {
        let (tmp, sha256, size) = self.write_staging(reader).await?;
        let key = Key::blob(team, &sha256);
        self.publish(tmp, &key, Publish::KeepExisting).await?;
        Ok(ObjectInfo { key, sha256, size })
    }

    async fn put_verified(
        &self,
        team: &Team,
        sha256: &Sha256Digest,
        size: u64,
        reader: Upload<'_>,
    ) -> Result<ObjectInfo> {
        let key = Key::blob(team, sha256);
        if self.holds(&key, sha256, Some(size)).await? {
            return Ok(ObjectInfo { key, sha256: *sha256, size });
        }
        let (tmp, actual, written) = self.write_staging(reader).await?;
        if actual != *sha256 || written != size {
            return Err(StoreError::new(
                ErrorKind::Integrity,
                format!(
                    "upload for {key} was {written} bytes hashing to sha256:{actual}, not \
                     {size} bytes; nothing stored"
                ),
            ));
        }
        let size = written;
        self.publish(tmp, &key, Publish::KeepExisting).await?;
        Ok(ObjectInfo { key, sha256: actual, size })
    }

    async fn put_at(&self, key: &Key, reader: Upload<'_>) -> Result<ObjectInfo> {
        let (tmp, sha256, size) = self.write_staging(reader).await?;
        self.publish(tmp, key, Publish::CreateOnly).await?;
        Ok(ObjectInfo { key: key.clone(), sha256, size })
    }

    async fn get(&self, key: &Key, range: Option<ByteRange>) -> Result<ByteStream> {
        let path = self.path_of(key);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|err| StoreError::io(format!("{key}"), err))?;
        let len = file.metadata().await.map_err(|err| StoreError::io(format!("{key}"), err))?.len();
        if !file_is_regular(&path).await {
            return Err(StoreError::new(ErrorKind::NotFound, format!("{key} is not an object")));
        }
        let Some(range) = range else {
            let stream = read_stream(file, len);
            return Ok(match key.content_digest() {
                Some(expected) => verify_stream(key.clone(), expected, stream),
                None => stream,
            });
        };
        range.validate()?;
        if range.start >= len {
            return Err(StoreError::new(
                ErrorKind::InvalidArgument,
                format!("range starts at {} but {key} has {len} bytes", range.start),
            ));
        }
        let end = range.end.map_or(len, |end| end.min(len));
        file.seek(std::io::SeekFrom::Start(range.start))
            .await
            .map_err(|err| StoreError::io(format!("{key}"), err))?;
        Ok(read_stream(file, end - range.start))
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let path = self.path_of(key);
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|err| StoreError::io(format!("{key}"), err))?;
        if !meta.is_file() {
            return Err(StoreError::new(ErrorKind::NotFound, format!("{key} is not an object")));
        }
        Ok(ObjectMeta { key: key.clone(), size: meta.len(), modified: meta.modified().ok() })
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        match tokio::fs::remove_file(self.path_of(key)).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(StoreError::io(format!("deleting {key}"), err)),
        }
    }

    async fn list(&self, prefix: &str, continuation: Option<String>) -> Result<ListPage> {
        validate_prefix(prefix)?;
        let root = self.objects_dir();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || list_dir(&root, &prefix, continuation.as_deref()))
            .await
            .map_err(|err| StoreError::with_source(ErrorKind::Io, "listing task failed", err))?
    }

    async fn check_writable(&self) -> Result<()> {
        let root = self.root.clone();
        let probe = self.staging_dir().join(format!("readyz-{}.probe", uuid::Uuid::new_v4()));
        let min_free = self.min_free;
        tokio::task::spawn_blocking(move || {
            let io = |what: &str| {
                let what = what.to_owned();
                move |err| StoreError::io(what, err)
            };
            if mounted_read_only(&root).map_err(io("checking the mount"))? {
                return Err(StoreError::io(
                    "the store's file system is mounted read-only",
                    std::io::Error::from_raw_os_error(libc::EROFS),
                ));
            }
            let free = free_bytes(&root).map_err(io("measuring free space"))?;
            if free < min_free {
                return Err(StoreError::new(
                    ErrorKind::NoSpace,
                    format!(
                        "{:.1} MiB free, below the minimum of {:.1} MiB (KILN_STORE_MIN_FREE_MIB)",
                        free as f64 / MIB,
                        min_free as f64 / MIB
                    ),
                ));
            }
            // A real write, fsynced: what a full, read-only or broken disk refuses.
            let written = std::fs::File::create_new(&probe).and_then(|mut file| {
                use std::io::Write;
                file.write_all(b"kiln readiness probe\n")?;
                file.sync_all()
            });
            let removed = std::fs::remove_file(&probe);
            written.map_err(io("writing a probe file"))?;
            removed.map_err(io("removing a probe file"))
        })
        .await
        .map_err(|err| StoreError::with_source(ErrorKind::Io, "probe task failed", err))?
    }

    async fn presign_get(&self, key: &Key, _expires_in: Duration) -> Result<PresignedRequest> {
        Err(unsupported_presign(key))
    }

    async fn presign_put(&self, key: &Key, _expires_in: Duration) -> Result<PresignedRequest> {
        Err(unsupported_presign(key))
    }
}

fn unsupported_presign(key: &Key) -> StoreError {
    StoreError::new(
        ErrorKind::Unsupported,
        format!(
            "presigned URLs need an S3 artifact store; the local directory store cannot sign \
             one for {key} (serve the bytes through the Kiln API instead)"
        ),
    )
}

async fn file_is_regular(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_file())
}

/// Streams `len` bytes from the file's current position in 1 MiB chunks.
fn read_stream(file: tokio::fs::File, len: u64) -> ByteStream {
    let reader = file.take(len);
    Box::pin(
        tokio_util::io::ReaderStream::with_capacity(reader, CHUNK)
            .map(|chunk| chunk.map_err(|err| StoreError::io("reading an object", err))),
    )
}

/// Walks `objects/` for keys starting with `prefix` after `after`, in key order.
fn list_dir(root: &Path, prefix: &str, after: Option<&str>) -> Result<ListPage> {
    // Only descend into directories that can hold matching keys.
    let mut keys = Vec::new();
    walk(root, String::new(), prefix, &mut keys)?;
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let mut objects = Vec::new();
    let mut remaining = keys.into_iter().filter(|(k, _, _)| after.is_none_or(|a| k.as_str() > a));
    for (key, size, modified) in remaining.by_ref() {
        objects.push(ObjectMeta { key: Key::parse(key)?, size, modified });
        if objects.len() == PAGE_SIZE {
            break;
        }
    }
    let next = match remaining.next() {
        Some(_) => objects.last().map(|o| o.key.as_str().to_owned()),
        None => None,
    };
    Ok(ListPage { objects, next })
}

/// One listed file: key, size, modification time.
type Listed = (String, u64, Option<std::time::SystemTime>);

fn walk(dir: &Path, rel: String, prefix: &str, out: &mut Vec<Listed>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(StoreError::io(format!("listing {}", dir.display()), err)),
    };
    for entry in entries {
        let entry =
            entry.map_err(|err| StoreError::io(format!("listing {}", dir.display()), err))?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        let key = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let file_type =
            entry.file_type().map_err(|err| StoreError::io(format!("listing {key}"), err))?;
        if file_type.is_dir() {
            let as_dir = format!("{key}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(&entry.path(), key, prefix, out)?;
            }
        } else if file_type.is_file() && key.starts_with(prefix) && Key::parse(key.clone()).is_ok()
        {
            let meta = entry.metadata().map_err(|err| StoreError::io(key.clone(), err))?;
            out.push((key, meta.len(), meta.modified().ok()));
        }
    }
    Ok(())
}

/// A path removed on drop unless forgotten: no staging file outlives a failed or cancelled
/// write.
mod tempfile_path {
    use std::path::{Path, PathBuf};

    #[derive(Debug)]
    pub struct TempPath(Option<PathBuf>);

    impl TempPath {
        pub fn new(path: PathBuf) -> Self {
            Self(Some(path))
        }

        pub fn path(&self) -> &Path {
            self.0.as_deref().expect("a live temp path")
        }

        pub fn forget(mut self) {
            self.0 = None;
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            if let Some(path) = self.0.take() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
