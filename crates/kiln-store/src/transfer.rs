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

/// Alignment of direct-I/O buffers, file offsets and write lengths: a multiple of every
/// logical block size in use (512 or 4096 bytes).
const DIRECT_ALIGN: usize = 4096;
/// Bytes per direct write.
const DIRECT_WRITE: usize = 4 << 20;

/// A heap buffer whose usable part starts on a [`DIRECT_ALIGN`] boundary, as `O_DIRECT`
/// requires (found inside a larger allocation: no unsafe code).
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(capacity: usize) -> Self {
        let raw = vec![0u8; capacity + DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN);
        Self { raw, start, len: 0 }
    }

    fn capacity(&self) -> usize {
        self.raw.len() - DIRECT_ALIGN
    }

    /// Copies as much of `bytes` as fits; answers how much that was.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.capacity() - self.len);
        let at = self.start + self.len;
        self.raw[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// The filled part, zero-padded to a whole number of aligned blocks.
    fn padded(&mut self) -> &[u8] {
        let padded = self.len.next_multiple_of(DIRECT_ALIGN);
        self.raw[self.start + self.len..self.start + padded].fill(0);
        &self.raw[self.start..self.start + padded]
    }
}

/// A growable buffer whose bytes start on a [`DIRECT_ALIGN`] boundary (the padding in front
/// is inside the allocation), frozen into [`Bytes`] that keep the alignment.
pub(crate) struct AlignedBytes {
    vec: Vec<u8>,
    start: usize,
}

impl AlignedBytes {
    /// Room for `capacity` bytes without moving (the alignment holds only until then).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let mut vec: Vec<u8> = Vec::with_capacity(capacity + DIRECT_ALIGN);
        let start = vec.as_ptr().align_offset(DIRECT_ALIGN);
        vec.resize(start, 0);
        Self { vec, start }
    }

    pub(crate) fn len(&self) -> usize {
        self.vec.len() - self.start
    }

    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.vec.extend_from_slice(bytes);
    }

    pub(crate) fn freeze(self) -> Bytes {
        Bytes::from(self.vec).slice(self.start..)
    }
}

/// Whether `bytes` can go to an `O_DIRECT` write as they are.
fn direct_ready(bytes: &[u8]) -> bool {
    bytes.as_ptr().align_offset(DIRECT_ALIGN) == 0 && bytes.len().is_multiple_of(DIRECT_ALIGN)
}

/// Where a download's bytes go.
///
/// Large downloads are written with `O_DIRECT` where the file system allows it: on the
/// virtual machines Kiln runs on, filling the page cache with a new file costs more CPU
/// than receiving it from the network (the kernel copies every byte into freshly allocated
/// cache pages, then writes them back later), while a direct write hands aligned buffers to
/// the disk and leaves the page cache to the data that is read. The bytes are copied once,
/// into an aligned buffer, unless they arrive aligned already (the S3 backend's ranges do:
/// see [`AlignedBytes`]); the end of the file is written padded to the alignment and cut
/// back with `set_len`. File systems that refuse `O_DIRECT` (tmpfs before Linux 6.6, some
/// network and FUSE file systems) get ordinary buffered writes, from the same position.
enum Sink {
    Direct { out: DirectFile, buf: AlignedBuf },
    Buffered(std::fs::File),
}

/// A file opened with `O_DIRECT`, and how many of its bytes count so far.
struct DirectFile {
    file: std::fs::File,
    path: PathBuf,
    written: u64,
}

impl DirectFile {
    /// Writes `bytes` (aligned, a whole number of blocks) after what is written, of which
    /// the first `len` count (the rest is padding). If the file system refuses the direct
    /// write, writes the `len` bytes through a buffered handle at the same offset instead
    /// and answers it: the sink continues with that.
    fn write(&mut self, bytes: &[u8], len: usize) -> std::io::Result<Option<std::fs::File>> {
        use std::io::{Seek, SeekFrom, Write};
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.written += len as u64;
                Ok(None)
            }
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                let mut plain = std::fs::OpenOptions::new().write(true).open(&self.path)?;
                plain.set_len(self.written)?;
                plain.seek(SeekFrom::Start(self.written))?;
                plain.write_all(&bytes[..len])?;
                Ok(Some(plain))
            }
            Err(err) => Err(err),
        }
    }
}

impl Sink {
    fn create(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        match direct {
            Ok(file) => Ok(Self::Direct {
                out: DirectFile { file, path: path.to_owned(), written: 0 },
                buf: AlignedBuf::new(DIRECT_WRITE),
            }),
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                let _ = std::fs::remove_file(path);
                Ok(Self::Buffered(std::fs::File::create_new(path)?))
            }
            Err(err) => Err(err),
        }
    }

    fn write_chunks(&mut self, chunks: &[Bytes]) -> std::io::Result<()> {
        use std::io::Write;
        if let Self::Buffered(file) = self {
            return write_all_vectored(file, chunks);
        }
        for (index, chunk) in chunks.iter().enumerate() {
            let mut rest: &[u8] = chunk;
            while !rest.is_empty() {
                match self {
                    // The file system refused a direct write: the rest goes buffered.
                    Self::Buffered(file) => {
                        file.write_all(rest)?;
                        return write_all_vectored(file, &chunks[index + 1..]);
                    }
                    // Aligned bytes at an aligned offset: written as they are.
                    Self::Direct { buf, .. } if buf.len == 0 && direct_ready(rest) => {
                        self.write_direct(rest, rest.len())?;
                        rest = &[];
                    }
                    Self::Direct { buf, .. } => {
                        let n = buf.fill(rest);
                        rest = &rest[n..];
                        if buf.len == buf.capacity() {
                            self.flush_direct()?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the aligned buffer (padded when it is the end of the file).
    fn flush_direct(&mut self) -> std::io::Result<()> {
        let Self::Direct { out, buf } = self else { return Ok(()) };
        if buf.len == 0 {
            return Ok(());
        }
        let len = buf.len;
        let fell_back = out.write(buf.padded(), len)?;
        buf.len = 0;
        if let Some(plain) = fell_back {
            *self = Self::Buffered(plain);
        }
        Ok(())
    }

    /// Writes aligned `bytes` as they are (see [`DirectFile::write`]), switching to
    /// buffered writes if the file system refuses.
    fn write_direct(&mut self, bytes: &[u8], len: usize) -> std::io::Result<()> {
        let Self::Direct { out, .. } = self else {
            unreachable!("direct writes only on a direct sink")
        };
        if let Some(plain) = out.write(bytes, len)? {
            *self = Self::Buffered(plain);
        }
        Ok(())
    }

    /// Writes what is left, cuts the padding off and fsyncs.
    fn finish(mut self) -> std::io::Result<()> {
        let tail = match &self {
            Self::Direct { out, buf } => Some(out.written + buf.len as u64),
            Self::Buffered(_) => None,
        };
        self.flush_direct()?;
        let file = match self {
            Self::Direct { out: DirectFile { file, .. }, .. } | Self::Buffered(file) => file,
        };
        if let Some(size) = tail {
            file.set_len(size)?;
        }
        file.sync_all()
    }
}

/// `write_all` over several buffers with vectored writes (`write_all_vectored` is unstable).
fn write_all_vectored(file: &mut std::fs::File, batch: &[Bytes]) -> std::io::Result<()> {
    use std::io::{IoSlice, Write};
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
    Ok(())
}

/// The writer thread of a download: hashes queued chunks and writes them (see [`Sink`])
/// until the channel closes, then fsyncs; answers the digest and size of what it wrote.
fn write_chunks(
    mut sink: Sink,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<Bytes>>,
    budget: std::sync::Arc<tokio::sync::Semaphore>,
) -> std::io::Result<(Sha256Digest, u64)> {
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
        sink.write_chunks(&batch)?;
        budget.add_permits(permits);
        batch.clear();
    }
    sink.finish()?;
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
    let mut size = 0u64;
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
        size += n as u64;
    }
    drop(buf);
    let digest = Sha256Digest::from_bytes(hasher.finalize().into());
    let mut file = tokio::io::BufReader::with_capacity(1 << 20, open().await?);
    store.put_verified(team, &digest, size, &mut file).await
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
    // File names only: these messages reach job errors, which users read.
    let io = |what: &str, path: &Path| {
        let name = path.file_name().map_or_else(|| path, Path::new);
        let message = format!("{what} {}", name.display());
        move |err| StoreError::io(message, err)
    };
    let mut stream = store.get_bulk(key).await?;
    // The file is written by one blocking thread with vectored writes straight from the
    // network's buffers: no copy into a BufWriter or into tokio's file buffer, and no hop to
    // the blocking pool per write. The channel is bounded, so a slow disk slows the download
    // instead of growing memory.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Bytes>>();
    let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(WRITE_QUEUE_KIB));
    let sink = Sink::create(tmp).map_err(io("creating", tmp))?;
    let writer_budget = budget.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let written = write_chunks(sink, rx, writer_budget.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn aligned(bytes: &[u8]) -> Bytes {
        let mut buf = AlignedBytes::with_capacity(bytes.len());
        buf.extend(bytes);
        buf.freeze()
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn aligned_bytes_stay_aligned_once_frozen() {
        for len in [DIRECT_ALIGN, 3 * DIRECT_ALIGN, 2 << 20] {
            let bytes = aligned(&pattern(len, 1));
            assert!(direct_ready(&bytes), "{len} bytes lost their alignment");
            assert_eq!(&bytes[..], &pattern(len, 1)[..]);
        }
        // Not a whole number of blocks: copied, not written as it is.
        assert!(!direct_ready(&aligned(&pattern(DIRECT_ALIGN + 1, 1))));
    }

    /// Aligned and unaligned chunks, in an order that sends the sink through both of its
    /// direct paths (as-is writes and copies into its buffer, the buffer filling up, a padded
    /// end), and the same through a buffered sink: the file is exactly the bytes either way.
    #[test]
    fn the_sink_writes_exactly_the_chunks_direct_or_buffered() {
        let chunks: Vec<Bytes> = vec![
            aligned(&pattern(2 * DIRECT_ALIGN, 1)),
            Bytes::from(pattern(100, 2)),
            aligned(&pattern(DIRECT_ALIGN, 3)),
            Bytes::from(pattern(DIRECT_WRITE + 5000, 4)),
            aligned(&pattern(DIRECT_WRITE - 100 - DIRECT_ALIGN - 5000, 5)),
            aligned(&pattern(DIRECT_WRITE, 6)),
            Bytes::from(pattern(777, 7)),
        ];
        let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let dir = tempfile::tempdir().unwrap();
        for direct in [true, false] {
            let path = dir.path().join(format!("out-{direct}"));
            let mut sink = if direct {
                Sink::create(&path).unwrap()
            } else {
                Sink::Buffered(std::fs::File::create_new(&path).unwrap())
            };
            sink.write_chunks(&chunks[..3]).unwrap();
            sink.write_chunks(&chunks[3..]).unwrap();
            sink.finish().unwrap();
            let written = std::fs::read(&path).unwrap();
            assert_eq!(written.len(), expected.len(), "direct: {direct}");
            assert!(written == expected, "direct: {direct}: bytes differ");
        }
    }

    /// A direct write the kernel refuses (EINVAL: here, a misaligned buffer) switches the
    /// sink to buffered writes from the same offset, losing and repeating nothing.
    #[test]
    fn a_refused_direct_write_falls_back_to_buffered_writes_at_the_same_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut sink = Sink::create(&path).unwrap();
        assert!(matches!(sink, Sink::Direct { .. }), "the temp dir takes O_DIRECT");
        sink.write_chunks(&[aligned(&pattern(2 * DIRECT_ALIGN, 1))]).unwrap();
        let mut shifted = vec![0u8; 2 * DIRECT_ALIGN + 1];
        shifted[1..].copy_from_slice(&pattern(2 * DIRECT_ALIGN, 2));
        sink.write_direct(&shifted[1..], 2 * DIRECT_ALIGN).unwrap();
        assert!(matches!(sink, Sink::Buffered(_)), "refused, so buffered from now on");
        sink.write_chunks(&[Bytes::from(pattern(100, 3))]).unwrap();
        sink.finish().unwrap();
        let expected =
            [pattern(2 * DIRECT_ALIGN, 1), pattern(2 * DIRECT_ALIGN, 2), pattern(100, 3)].concat();
        assert!(std::fs::read(&path).unwrap() == expected);
    }
}
