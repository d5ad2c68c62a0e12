//! The conformance suite: the same checks against both backends (`both!`). Whatever a
//! caller can observe through `ArtifactStore` must not depend on where the bytes live.

use futures::StreamExt;
use kiln_store::{ByteRange, ErrorKind, Key, Sha256Digest};

use crate::{Backend, BackendKind, Generated, MIB, both, collect, drain, key, team};

both!(
    round_trip_checks_sha256,
    same_bytes_are_stored_once,
    byte_ranges,
    head_delete_and_missing_objects,
    put_at_is_create_only,
    put_verified_checks_the_digest,
    listing_pages_past_1000_objects,
    traversal_keys_are_refused,
    corruption_is_detected_on_read,
    failed_upload_leaves_nothing,
    download_to_file_verifies_before_rename,
    an_existing_content_address_with_short_bytes_is_not_trusted,
);

/// Sizes on both sides of the S3 backend's 8 MiB part size.
const SIZES: [u64; 4] = [0, 1000, 8 * MIB, 20 * MIB + 123];

async fn round_trip_checks_sha256(backend: &Backend) {
    let store = &backend.store;
    for (seed, size) in SIZES.into_iter().enumerate() {
        let data = Generated::bytes(seed as u64, size);
        let expected = Sha256Digest::of(&data);
        let info = store
            .put_stream(&team("acme"), &mut Generated::new(seed as u64, size))
            .await
            .expect("put");
        assert_eq!(info.sha256, expected, "size {size}");
        assert_eq!(info.size, size);
        assert_eq!(info.key, Key::blob(&team("acme"), &expected));
        assert!(info.key.as_str().starts_with("teams/acme/blobs/sha256/"), "{}", info.key);
        assert_eq!(store.head(&info.key).await.expect("head").size, size);
        let read = collect(store.get(&info.key, None).await.expect("get")).await.expect("read");
        assert!(read == data, "size {size}: bytes differ");
    }
}

async fn same_bytes_are_stored_once(backend: &Backend) {
    let store = &backend.store;
    for size in [4096, 17 * MIB] {
        let first = store.put_stream(&team("acme"), &mut Generated::new(7, size)).await.unwrap();
        let second = store.put_stream(&team("acme"), &mut Generated::new(7, size)).await.unwrap();
        assert_eq!(first, second);
        // Another team's copy is its own object.
        let other = store.put_stream(&team("zeta"), &mut Generated::new(7, size)).await.unwrap();
        assert_ne!(other.key, first.key);
        assert_eq!(other.sha256, first.sha256);
    }
    // Two sizes × two teams = four files, and nothing else (no staging leftovers).
    let files = backend.object_files();
    assert_eq!(files.len(), 4, "{files:#?}");
}

async fn byte_ranges(backend: &Backend) {
    let store = &backend.store;
    let data = Generated::bytes(3, MIB);
    let info = store.put_stream(&team("acme"), &mut Generated::new(3, MIB)).await.unwrap();
    let len = data.len() as u64;
    for (range, expected) in [
        (ByteRange::new(0, 10), &data[..10]),
        (ByteRange::new(100, 1000), &data[100..1000]),
        (ByteRange::from(len - 5), &data[len as usize - 5..]),
        // An end past the object is cut to the object, as HTTP ranges are.
        (ByteRange::new(len - 3, len + 100), &data[len as usize - 3..]),
    ] {
        let read = collect(store.get(&info.key, Some(range)).await.expect("ranged get"))
            .await
            .expect("read range");
        assert!(read == expected, "{range:?}");
    }
    for bad in [ByteRange::from(len + 10), ByteRange::new(10, 10)] {
        let err = match store.get(&info.key, Some(bad)).await {
            Ok(stream) => collect(stream).await.unwrap_err(),
            Err(err) => err,
        };
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}: {err}");
    }
}

async fn head_delete_and_missing_objects(backend: &Backend) {
    let store = &backend.store;
    let missing = key("teams/acme/models/none.bin");
    assert_eq!(store.head(&missing).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(store.get(&missing, None).await.err().unwrap().kind(), ErrorKind::NotFound);
    store.delete(&missing).await.expect("deleting a missing object succeeds");

    let info = store.put_stream(&team("acme"), &mut &b"bytes"[..]).await.unwrap();
    store.delete(&info.key).await.unwrap();
    assert_eq!(store.head(&info.key).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(store.get(&info.key, None).await.err().unwrap().kind(), ErrorKind::NotFound);
}

async fn put_at_is_create_only(backend: &Backend) {
    let store = &backend.store;
    for (name, size) in [("small.bin", 100), ("large.bin", 12 * MIB)] {
        let key = key(&format!("teams/acme/checkpoints/{name}"));
        let info = store.put_at(&key, &mut Generated::new(1, size)).await.expect("put_at");
        assert_eq!(info.size, size);
        assert_eq!(info.sha256, Sha256Digest::of(&Generated::bytes(1, size)));
        let err = store.put_at(&key, &mut Generated::new(2, size)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
        let (sha, read) = drain(store.get(&key, None).await.unwrap()).await.unwrap();
        assert_eq!((sha, read), (info.sha256.to_hex(), size), "the first write survives");
    }
    assert_no_open_uploads(backend);
}

async fn put_verified_checks_the_digest(backend: &Backend) {
    let store = &backend.store;
    for size in [100, 12 * MIB] {
        let right = Sha256Digest::of(&Generated::bytes(5, size));
        let wrong = Sha256Digest::of(b"something else");
        let before = backend.object_files();
        let err = store
            .put_verified(&team("acme"), &wrong, size, &mut Generated::new(5, size))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
        assert_eq!(backend.object_files(), before, "nothing stored");
        let wrong_key = Key::blob(&team("acme"), &wrong);
        assert_eq!(store.head(&wrong_key).await.unwrap_err().kind(), ErrorKind::NotFound);

        let info = store
            .put_verified(&team("acme"), &right, size, &mut Generated::new(5, size))
            .await
            .unwrap();
        assert_eq!(info.key, Key::blob(&team("acme"), &right));
        // Stored already: the reader is not even read (this one would fail at once).
        let again = store
            .put_verified(
                &team("acme"),
                &right,
                size,
                &mut Generated::new(5, size).failing_after(0),
            )
            .await
            .expect("skips the upload");
        assert_eq!(again, info);
    }
    assert_eq!(backend.object_files().len(), 2, "{:#?}", backend.object_files());
    assert_no_open_uploads(backend);
}

async fn listing_pages_past_1000_objects(backend: &Backend) {
    let store = &backend.store;
    let count = 1_003;
    let mut expected: Vec<String> = (0..count).map(|i| format!("many/obj-{i:05}")).collect();
    futures::stream::iter(expected.clone())
        .map(|name| async move {
            store.put_at(&key(&name), &mut name.as_bytes()).await.expect("put");
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    store.put_at(&key("other/x"), &mut &b"x"[..]).await.unwrap();

    let first = store.list("many/", None).await.expect("first page");
    assert_eq!(first.objects.len(), 1000);
    assert!(first.next.is_some(), "a second page");
    let mut all: Vec<String> = first.objects.iter().map(|o| o.key.to_string()).collect();
    let second = store.list("many/", first.next).await.expect("second page");
    assert_eq!(second.next, None);
    all.extend(second.objects.iter().map(|o| o.key.to_string()));
    expected.sort();
    assert_eq!(all, expected);
    assert_eq!(second.objects[0].size, "many/obj-01000".len() as u64);

    let everything = kiln_store::list_all(store.as_ref(), "").await.unwrap();
    assert_eq!(everything.len(), count + 1);
    assert_eq!(kiln_store::list_all(store.as_ref(), "man").await.unwrap().len(), count);
    assert!(kiln_store::list_all(store.as_ref(), "nothing/").await.unwrap().is_empty());
}

async fn traversal_keys_are_refused(backend: &Backend) {
    let store = &backend.store;
    for bad in [
        "../escape",
        "teams/../../etc/passwd",
        "/etc/passwd",
        "teams/acme/\0/x",
        "teams\\..\\x",
        "teams//x",
        "teams/./x",
        "teams/.kiln-staging/x",
    ] {
        let err = Key::parse(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey, "{bad:?}");
        // Prefixes, the one place the store takes a string, refuse them too.
        let err = store.list(bad, None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey, "list {bad:?}: {err}");
    }
    // Nothing written anywhere by trying.
    assert!(backend.object_files().is_empty(), "{:#?}", backend.object_files());
}

async fn corruption_is_detected_on_read(backend: &Backend) {
    let store = &backend.store;
    for size in [3 * MIB, 20 * MIB] {
        let info = store.put_stream(&team("acme"), &mut Generated::new(9, size)).await.unwrap();
        let path = backend.file_of(&info.key);
        let mut bytes = std::fs::read(&path).expect("the stored file");
        bytes[size as usize / 2] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();

        let err = drain(store.get(&info.key, None).await.expect("get starts")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");

        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dataset.bin");
        let err = kiln_store::download_to_file(store.as_ref(), &info.key, &dest).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
        assert!(!dest.exists(), "a corrupt download never takes the final name");
        assert!(crate::files_under(dir.path()).is_empty(), "no temporary file left");
    }
}

async fn failed_upload_leaves_nothing(backend: &Backend) {
    let store = &backend.store;
    // The reader dies after 20 MiB: two parts are uploaded by then, the third is being read.
    let mut reader = Generated::new(11, 64 * MIB).failing_after(20 * MIB);
    let err = store.put_stream(&team("acme"), &mut reader).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Source, "{err}");
    let mut reader = Generated::new(11, 64 * MIB).failing_after(20 * MIB);
    let err = store.put_at(&key("teams/acme/checkpoints/ckpt"), &mut reader).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Source, "{err}");
    assert_eq!(
        store.head(&key("teams/acme/checkpoints/ckpt")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(kiln_store::list_all(store.as_ref(), "").await.unwrap().is_empty());
    // Behind the store's back: no staging object, no partial file, no upload state.
    assert!(backend.object_files().is_empty(), "{:#?}", backend.object_files());
    assert_no_open_uploads(backend);
}

async fn download_to_file_verifies_before_rename(backend: &Backend) {
    let store = &backend.store;
    // Downloads are written with O_DIRECT where the file system allows it, the end padded
    // to the alignment and cut back: sizes around the 4 MiB direct write and 4 KiB blocks,
    // on disk and on tmpfs (/dev/shm, where older kernels refuse O_DIRECT).
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    if std::path::Path::new("/dev/shm").is_dir() {
        dirs.push(tempfile::tempdir_in("/dev/shm").unwrap());
    }
    for (seed, size) in [0, 1000, 4096, 4 * MIB, 9 * MIB + 7].into_iter().enumerate() {
        let seed = 13 + seed as u64;
        let info = store.put_stream(&team("acme"), &mut Generated::new(seed, size)).await.unwrap();
        for dir in &dirs {
            let dest = dir.path().join("data.bin");
            let got = kiln_store::download_to_file(store.as_ref(), &info.key, &dest).await.unwrap();
            assert_eq!(got, info);
            let written = std::fs::read(&dest).unwrap();
            assert_eq!(written.len() as u64, size, "{}", dir.path().display());
            assert!(written == Generated::bytes(seed, size), "size {size}: bytes differ");
            assert_eq!(crate::files_under(dir.path()), vec!["data.bin".to_owned()]);
            std::fs::remove_file(&dest).unwrap();
        }
    }
}

/// On S3: no multipart upload left open on the server.
pub fn assert_no_open_uploads(backend: &Backend) {
    if let BackendKind::S3 { server, .. } = &backend.kind {
        let open = server.open_multipart_uploads();
        assert!(open.is_empty(), "open multipart uploads left behind: {open:?}");
    }
}

/// Issue 22: a blob left empty or short (by a write that failed unnoticed, or by anything
/// behind the store's back) was trusted because its content address "existed", so the
/// same bytes uploaded again stayed broken. Every write path must replace it instead.
async fn an_existing_content_address_with_short_bytes_is_not_trusted(backend: &Backend) {
    let store = &backend.store;
    for size in [1000, 12 * MIB] {
        let data = Generated::bytes(21, size);
        let sha256 = Sha256Digest::of(&data);
        let info = store.put_stream(&team("acme"), &mut &data[..]).await.unwrap();
        let file = backend.file_of(&info.key);
        for broken in [0, size / 2] {
            // put_verified (the API's dataset uploads) and put_stream (bundles, checkpoints).
            for verified in [true, false] {
                std::fs::write(&file, &data[..broken as usize]).unwrap();
                let again = if verified {
                    store.put_verified(&team("acme"), &sha256, size, &mut &data[..]).await
                } else {
                    store.put_stream(&team("acme"), &mut &data[..]).await
                };
                assert_eq!(again.unwrap(), info, "size {size}, broken to {broken}");
                let stored = std::fs::read(&file).unwrap();
                assert_eq!(stored.len() as u64, size, "verified {verified}: repaired in full");
                assert!(stored == data, "verified {verified}: the right bytes");
                assert_eq!(collect(store.get(&info.key, None).await.unwrap()).await.unwrap(), data);
            }
        }
    }
    assert_no_open_uploads(backend);
}
