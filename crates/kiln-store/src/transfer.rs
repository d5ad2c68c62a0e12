//! Streaming helpers shared by both backends: reading an upload in parts, verifying a
//! download while it streams, and the two file helpers the worker and CLI use.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{ErrorKind, Result, StoreError};
use crate::{ArtifactStore, ByteStream, Key, ObjectInfo, Sha256Digest, Team};

/// Bytes gathered into one vectored write of a download.
const WRITE_BATCH: usize = 4 << 20;
/// Bytes queued for the writer thread, at most (in KiB: semaphore permits). Network chunks
/// vary in size, so the bound is on bytes, not on chunks.
const WRITE_QUEUE_KIB: usize = 8 << 10;

/// Bytes per message to a download's writer thread.
const GROUP: usize = 1 << 20;

/// Semaphore permits for `len` bytes: whole KiB, at least one.
fn kib(len: usize) -> usize {
    len.div_ceil(1024).max(1)
}

/// The writer thread of a download: hashes and gathers queued chunks into vectored writes
/// until the channel closes, then fsyncs; answers the digest and size of what it wrote.
fn write_chunks(
    mut file: std::fs::File,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<Bytes>>,
    budget: std::sync::Arc<tokio::sync::Semaphore>,
) -> std::io::Result<(Sha256Digest, u64)> {
    use std::io::{IoSlice, Write};
    let mut batch: Vec<Bytes> = Vec::new();
    // The digest is computed here, beside the writes, so hashing runs in parallel with the
    // network side instead of in series with it.
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(first) = rx.blocking_recv() {
        let mut bytes: usize = first.iter().map(Bytes::len).sum();
        let mut permits = kib(bytes).min(WRITE_QUEUE_KIB);
        batch.extend(first);
        while bytes < WRITE_BATCH {
            match rx.try_recv() {
                Ok(group) => {
                    let len: usize = group.iter().map(Bytes::len).sum();
                    bytes += len;
                    permits += kib(len).min(WRITE_QUEUE_KIB);
                    batch.extend(group);
                }
                Err(_) => break,
            }
        }
        for chunk in &batch {
            hasher.update(chunk);
            size += chunk.len() as u64;
        }
        // write_all_vectored is unstable: advance through the slices by hand.
        let (mut index, mut offset) = (0, 0);
        while index < batch.len() {
            let slices: Vec<IoSlice<'_>> = std::iter::once(IoSlice::new(&batch[index][offset..]))
                .chain(batch[index + 1..].iter().map(|b| IoSlice::new(b)))
                .take(1024)
                .collect();
            let mut n = file.write_vectored(&slices)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while n > 0 {
                let left = batch[index].len() - offset;
                if n >= left {
                    n -= left;
                    index += 1;
                    offset = 0;
                } else {
                    offset += n;
                    n = 0;
                }
            }
        }
        budget.add_permits(permits);
        batch.clear();
    }
    file.sync_all()?;
    Ok((Sha256Digest::from_bytes(hasher.finalize().into()), size))
}

/// Reads from `reader` until `size` bytes or end of input; a short buffer means the end.
pub(crate) async fn read_part(
    reader: &mut (dyn AsyncRead + Send + Unpin),
    size: usize,
) -> Result<Bytes> {
    let mut buf = BytesMut::with_capacity(size);
    while buf.len() < size {
        // `read_buf` appends into the spare capacity: no zero-fill, no copy.
        let n = reader.read_buf(&mut buf).await.map_err(StoreError::source_read)?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

/// Wraps a full read of a content-addressed object: hashes every chunk and, at the end,
/// yields an [`ErrorKind::Integrity`] error instead of ending cleanly if the digest differs.
pub(crate) fn verify_stream(key: Key, expected: Sha256Digest, inner: ByteStream) -> ByteStream {
    struct State {
        inner: ByteStream,
        hasher: Option<Sha256>,
        size: u64,
    }
    let state = State { inner, hasher: Some(Sha256::new()), size: 0 };
    Box::pin(futures::stream::unfold(state, move |mut state| {
        let key = key.clone();
        async move {
            let hasher = state.hasher.as_mut()?;
            match state.inner.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    state.size += chunk.len() as u64;
                    Some((Ok(chunk), state))
                }
                Some(Err(err)) => {
                    state.hasher = None;
                    Some((Err(err), state))
                }
                None => {
                    let actual = Sha256Digest::from_bytes(state.hasher.take()?.finalize().into());
                    if actual == expected {
                        None
                    } else {
                        let err = StoreError::new(
                            ErrorKind::Integrity,
                            format!(
                                "{key}: stored bytes ({} bytes) hash to sha256:{actual}",
                                state.size
                            ),
                        );
                        Some((Err(err), state))
                    }
                }
            }
        }
    }))
}

/// A [`ByteStream`] as an `AsyncRead`. Store errors arrive as `std::io::Error`s wrapping the
/// [`StoreError`] (an integrity failure has kind `InvalidData`).
pub fn into_async_read(stream: ByteStream) -> impl AsyncRead + Send + Unpin {
    tokio_util::io::StreamReader::new(stream.map(|chunk| chunk.map_err(std::io::Error::from)))
}

/// Uploads a local file as a content-addressed blob: hashes it first, skips the upload when
/// the blob is already stored, and otherwise streams it straight to its final key with
/// [`ArtifactStore::put_verified`] (no staging copy; a file changed meanwhile fails with
/// [`ErrorKind::Integrity`] and leaves nothing behind).
pub async fn put_file(store: &dyn ArtifactStore, team: &Team, path: &Path) -> Result<ObjectInfo> {
    let open = || async {
        tokio::fs::File::open(path)
            .await
            .map_err(|err| StoreError::io(format!("opening {}", path.display()), err))
    };
    let mut file = open().await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|err| StoreError::io(format!("reading {}", path.display()), err))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    drop(buf);
    let digest = Sha256Digest::from_bytes(hasher.finalize().into());
    let mut file = tokio::io::BufReader::with_capacity(1 << 20, open().await?);
    store.put_verified(team, &digest, &mut file).await
}

/// Downloads an object into `dest`: streams into a temporary file beside it, verifies
/// content-addressed objects, fsyncs, and only then renames it into place. On any failure
/// `dest` is untouched and the temporary file removed. For the worker's dataset cache.
pub async fn download_to_file(
    store: &dyn ArtifactStore,
    key: &Key,
    dest: &Path,
) -> Result<ObjectInfo> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = dest.file_name().ok_or_else(|| {
        StoreError::new(
            ErrorKind::InvalidArgument,
            format!("{} is not a file path", dest.display()),
        )
    })?;
    let tmp: PathBuf =
        dir.join(format!(".{}.kiln-tmp-{}", name.to_string_lossy(), uuid::Uuid::new_v4()));
    let result = download_into(store, key, &tmp, dest, dir).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

async fn download_into(
    store: &dyn ArtifactStore,
    key: &Key,
    tmp: &Path,
    dest: &Path,
    dir: &Path,
) -> Result<ObjectInfo> {
    let io = |what: &str, path: &Path| {
        let message = format!("{what} {}", path.display());
        move |err| StoreError::io(message, err)
    };
    let mut stream = store.get_bulk(key).await?;
    // The file is written by one blocking thread with vectored writes straight from the
    // network's buffers: no copy into a BufWriter or into tokio's file buffer, and no hop to
    // the blocking pool per write. The channel is bounded, so a slow disk slows the download
    // instead of growing memory.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Bytes>>();
    let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(WRITE_QUEUE_KIB));
    let file = std::fs::File::create(tmp).map_err(io("creating", tmp))?;
    let writer_budget = budget.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let written = write_chunks(file, rx, writer_budget.clone());
        // A failed writer must not leave the download waiting for room forever.
        writer_budget.close();
        written
    });
    // Chunks go to the writer in groups of about GROUP bytes: one budget acquisition and one
    // channel message per group, not per network chunk.
    let send = |group: Vec<Bytes>, len: usize| {
        let budget = budget.clone();
        let tx = tx.clone();
        async move {
            // Wait for room in the byte budget (a group larger than all of it takes all of
            // it); the writer returns the permits once the bytes are written.
            let permits = budget.acquire_many(kib(len).min(WRITE_QUEUE_KIB) as u32).await;
            // A closed budget or channel: the writer failed; its error is reported below.
            permits.is_ok_and(|p| {
                p.forget();
                tx.send(group).is_ok()
            })
        }
    };
    let mut failure = None;
    let (mut group, mut len) = (Vec::new(), 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) if chunk.is_empty() => continue,
            Ok(chunk) => chunk,
            Err(err) => {
                failure = Some(err);
                break;
            }
        };
        len += chunk.len();
        group.push(chunk);
        if len >= GROUP && !send(std::mem::take(&mut group), std::mem::take(&mut len)).await {
            break;
        }
    }
    if failure.is_none() && !group.is_empty() {
        send(group, len).await;
    }
    drop(tx);
    let written = writer.await.map_err(|e| StoreError::io("writing", std::io::Error::other(e)));
    if let Some(err) = failure {
        return Err(err);
    }
    let (sha256, size) = written?.map_err(io("writing", tmp))?;
    // The bulk stream is not verified on the way in (see `get_bulk`): check here, before the
    // file becomes visible.
    if let Some(expected) = key.content_digest()
        && expected != sha256
    {
        return Err(StoreError::new(
            ErrorKind::Integrity,
            format!("{key}: stored bytes ({size} bytes) hash to sha256:{sha256}"),
        ));
    }
    tokio::fs::rename(tmp, dest).await.map_err(io("renaming into", dest))?;
    crate::local::sync_dir(dir).await?;
    Ok(ObjectInfo { key: key.clone(), sha256, size })
}
