//! What only the local-directory backend does.

use std::time::Duration;

use kiln_store::{ErrorKind, LocalStore, StoreArgs, StoreLocation};

use crate::{Backend, key};

#[tokio::test]
async fn presigned_urls_are_clearly_unsupported() {
    let backend = Backend::local().await;
    let k = key("teams/acme/models/m.bin");
    for err in [
        backend.store.presign_get(&k, Duration::from_secs(60)).await.unwrap_err(),
        backend.store.presign_put(&k, Duration::from_secs(60)).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(err.to_string().contains("S3"), "says what would work: {err}");
    }
}

#[tokio::test]
async fn open_uses_a_file_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("a").display());
    let args = StoreArgs { artifact_store: Some(url.clone()), ..StoreArgs::default() };
    assert_eq!(args.location().unwrap(), StoreLocation::Local(dir.path().join("a")));
    let store = kiln_store::open(&args).await.unwrap();
    assert_eq!(store.describe(), url);
    store.put_at(&key("x/y"), &mut &b"z"[..]).await.unwrap();
    assert!(dir.path().join("a/objects/x/y").is_file());
}

#[tokio::test]
async fn relative_directories_are_refused() {
    let err = LocalStore::open("relative/dir").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
}

/// Directories exist on disk but are not objects. (S3 has no directories; s3s-fs answers
/// 500 to a HEAD on one, so this check is the local backend's own.)
#[tokio::test]
async fn directories_are_not_objects() {
    let backend = Backend::local().await;
    backend.store.put_at(&key("teams/acme/models/m.bin"), &mut &b"m"[..]).await.unwrap();
    for dir in ["teams", "teams/acme/models"] {
        assert_eq!(backend.store.head(&key(dir)).await.unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(
            backend.store.get(&key(dir), None).await.err().unwrap().kind(),
            ErrorKind::NotFound
        );
    }
}
