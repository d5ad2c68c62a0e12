//! Issue 22: the local store on a real, small file system (a tmpfs) that fills up or goes
//! read-only. A write that does not fit fails with the OS's reason and leaves nothing
//! behind; it never reports a blob that is empty or short.

use kiln_store::testing::SmallFs;
use kiln_store::{ArtifactStore, ErrorKind, Key, LocalStore, Sha256Digest, put_file};

use crate::{Generated, MIB, files_under, team};

const OS_NO_SPACE: &str = "No space left on device (os error 28)";
const OS_READ_ONLY: &str = "Read-only file system (os error 30)";

async fn store_on(fs: &SmallFs) -> LocalStore {
    LocalStore::open(fs.path.join("store")).await.expect("open the store")
}

/// Nothing under `objects/` or `staging/`.
fn assert_nothing_stored(fs: &SmallFs) {
    let files = files_under(&fs.path.join("store"));
    assert!(files.is_empty(), "nothing may be stored or left behind: {files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_upload_instead_of_storing_an_empty_or_truncated_blob() {
    let fs = SmallFs::mount(20);
    let store = store_on(&fs).await;
    let outside = tempfile::tempdir().unwrap();

    // Full: an 810,588-byte upload (one write of tokio's file, whose error was lost).
    fs.fill_leaving(0);
    let small = Generated::bytes(1, 810_588);
    let err = store.put_stream(&team("acme"), &mut &small[..]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err}");
    let message = err.to_string();
    assert!(message.contains(OS_NO_SPACE), "carries the OS reason: {message}");
    assert!(!message.contains(&*fs.path.to_string_lossy()), "no server path: {message}");
    assert_eq!(err.os_reason().as_deref(), Some(OS_NO_SPACE));
    assert_nothing_stored(&fs);

    // 1.9 MiB with 1.5 MiB free: the first MiB fits, the rest does not.
    fs.free_filler();
    fs.fill_leaving(3 * MIB / 2);
    let large = Generated::bytes(2, 19 * MIB / 10);
    let path = outside.path().join("large.bin");
    std::fs::write(&path, &large).unwrap();
    let err = put_file(&store, &team("acme"), &path).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err}");
    assert_nothing_stored(&fs);

    // Space freed: the same bytes again are stored whole.
    fs.free_filler();
    for (bytes, name) in [(&small, "small.bin"), (&large, "large.bin")] {
        let path = outside.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let info = put_file(&store, &team("acme"), &path).await.expect("stored once there is room");
        assert_eq!(info.size, bytes.len() as u64);
        assert_eq!(info.key, Key::blob(&team("acme"), &Sha256Digest::of(bytes)));
        let stored = std::fs::read(store.path_of(&info.key)).unwrap();
        assert!(stored == *bytes, "{name}: exactly the bytes uploaded");
    }
}

/// A blob left empty by the old bug (or anything else) and the same bytes uploaded again
/// after space is freed: replaced in full, not trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reupload_after_freeing_space_repairs_an_empty_blob() {
    let fs = SmallFs::mount(20);
    let store = store_on(&fs).await;
    let data = Generated::bytes(3, 810_588);
    let key = Key::blob(&team("acme"), &Sha256Digest::of(&data));
    let file = store.path_of(&key);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"").unwrap();
    fs.fill_leaving(0);
    let err = store.put_stream(&team("acme"), &mut &data[..]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err}");
    fs.free_filler();
    let outside = tempfile::tempdir().unwrap();
    let path = outside.path().join("data.csv");
    std::fs::write(&path, &data).unwrap();
    let info = put_file(&store, &team("acme"), &path).await.unwrap();
    assert_eq!(info.key, key);
    assert!(std::fs::read(&file).unwrap() == data, "the empty blob was replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_fails_writes_with_the_os_reason_and_is_not_ready() {
    let fs = SmallFs::mount(20);
    let store = store_on(&fs).await;
    store.check_writable().await.expect("ready while writable");
    fs.set_read_only(true);
    let err = store.check_writable().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
    let err = store.put_stream(&team("acme"), &mut &b"bytes"[..]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
    assert!(err.to_string().contains(OS_READ_ONLY), "{err}");
    fs.set_read_only(false);
    store.check_writable().await.expect("ready again");
    store.put_stream(&team("acme"), &mut &b"bytes"[..]).await.expect("writes again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_below_its_minimum_free_space_is_not_ready() {
    let fs = SmallFs::mount(20);
    let store = store_on(&fs).await.with_min_free(8 * MIB);
    store.check_writable().await.expect("20 MiB free, 8 required");
    fs.fill_leaving(4 * MIB);
    let err = store.check_writable().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err}");
    assert!(err.to_string().contains("KILN_STORE_MIN_FREE_MIB"), "names the setting: {err}");
    // Without a minimum, a full disk still fails the probe write itself.
    let store = store.with_min_free(0);
    store.check_writable().await.expect("4 MiB free, none required");
    fs.free_filler();
    fs.fill_leaving(0);
    let err = store.check_writable().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err}");
    assert!(err.to_string().contains(OS_NO_SPACE), "{err}");
}
