//! What only the S3 backend does, against a real s3s-fs: presigned URLs, failures of the
//! server and of credentials, multipart details.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use kiln_store::{ArtifactStore, ErrorKind, Key, RetryPolicy, S3Store, Sha256Digest};
use tokio::io::{AsyncRead, ReadBuf};

use crate::{ACCESS_KEY, Generated, MIB, S3sServer, SECRET_KEY, collect, drain, key, team};

/// Fails the test instead of hanging forever; the store's own timeouts should answer long
/// before this.
async fn no_hang<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(300), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_get_and_put_work_with_a_plain_http_client() {
    let server = S3sServer::start();
    let store = server.store("kiln").await;
    let http = reqwest::Client::new();
    let k = key("teams/acme/exports/report.csv");
    let body = b"a,b\n1,2\n".to_vec();

    let put = store.presign_put(&k, Duration::from_secs(300)).await.expect("presign put");
    assert_eq!(put.method, "PUT");
    assert!(!format!("{put:?}").contains("Signature="), "Debug hides the signature");
    let mut request = http.put(&put.url).body(body.clone());
    for (name, value) in &put.headers {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("PUT");
    assert!(response.status().is_success(), "PUT: {}", response.status());
    assert_eq!(collect(store.get(&k, None).await.unwrap()).await.unwrap(), body);

    let get = store.presign_get(&k, Duration::from_secs(300)).await.expect("presign get");
    let response = http.get(&get.url).send().await.expect("GET");
    assert!(response.status().is_success(), "GET: {}", response.status());
    assert_eq!(response.bytes().await.unwrap().as_ref(), &body[..]);

    // The signature is checked: change the signed key and the server refuses.
    let forged = get.url.replace("report.csv", "other.csv");
    let response = http.get(&forged).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 403);

    for bad in [Duration::ZERO, Duration::from_secs(8 * 24 * 3600)] {
        let err = store.presign_get(&k, bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_unauthorized_at_once() {
    let server = S3sServer::start();
    let good = server.store("").await;
    let info = good.put_stream(&team("acme"), &mut &b"secret"[..]).await.unwrap();
    for (access, secret) in [(ACCESS_KEY, "not-the-secret"), ("nobody", SECRET_KEY)] {
        let store = S3Store::connect(server.settings_with("", access, secret)).await.unwrap();
        let errors = [
            store.head(&info.key).await.unwrap_err(),
            store.get(&info.key, None).await.err().unwrap(),
            store.put_stream(&team("acme"), &mut &b"x"[..]).await.unwrap_err(),
            store.list("", None).await.unwrap_err(),
        ];
        for err in errors {
            assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
            assert!(!err.to_string().contains("gave up"), "not retried: {err}");
            assert!(!format!("{err:?}").contains(SECRET_KEY), "no secret in errors");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_gives_unavailable_after_retries_not_a_hang() {
    let mut server = S3sServer::start();
    // The production retry policy, not the tests' quick one.
    let mut settings = server.settings("");
    settings.retry = RetryPolicy::default();
    let store = S3Store::connect(settings).await.unwrap();
    let info = store.put_stream(&team("acme"), &mut &b"before"[..]).await.unwrap();

    server.stop();

    let results = no_hang("calls to a stopped server", async {
        vec![
            store.head(&info.key).await.map(drop),
            store.get(&info.key, None).await.map(drop),
            store.put_stream(&team("acme"), &mut &b"after"[..]).await.map(drop),
            store.list("", None).await.map(drop),
            store.delete(&info.key).await,
        ]
    })
    .await;
    for result in results {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.to_string().contains("gave up after 4 attempts"), "retried: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stopped_mid_download_ends_the_stream_with_unavailable() {
    let mut server = S3sServer::start();
    let store = server.store("").await;
    let size = 64 * MIB;
    let info = store.put_stream(&team("acme"), &mut Generated::new(21, size)).await.unwrap();
    let mut stream = store.get(&info.key, None).await.unwrap();
    use futures::StreamExt;
    let first = stream.next().await.expect("a first chunk").expect("bytes");
    assert!(!first.is_empty());
    server.stop();
    let err = no_hang("a broken download", drain(stream)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_use_parallel_parts_and_multipart_copy() {
    let server = S3sServer::start();
    let mut settings = server.settings("p");
    settings.part_size = 5 * MIB as usize;
    settings.parts_in_flight = 3;
    // Force the >5 GiB path (UploadPartCopy) at a size a test can afford.
    settings.max_single_copy = 6 * MIB;
    settings.copy_part_size = 5 * MIB;
    let store = S3Store::connect(settings).await.unwrap();
    let size = 23 * MIB + 5;
    let info = store.put_stream(&team("acme"), &mut Generated::new(4, size)).await.unwrap();
    assert_eq!(info.sha256, Sha256Digest::of(&Generated::bytes(4, size)));
    let (sha, read) = drain(store.get(&info.key, None).await.unwrap()).await.unwrap();
    assert_eq!((sha, read), (info.sha256.to_hex(), size));
    assert_eq!(crate::files_under(&server.bucket_dir()), vec![format!("p/{}", info.key)]);
    assert!(server.open_multipart_uploads().is_empty());
}

/// Produces `limit` bytes, then never again (without failing): an upload stuck mid-way.
struct Stalls {
    inner: Generated,
    limit: u64,
    produced: Arc<AtomicU64>,
}

impl AsyncRead for Stalls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let done = self.produced.load(Ordering::SeqCst);
        if done >= self.limit {
            return Poll::Pending;
        }
        let room = (self.limit - done).min(buf.remaining() as u64) as usize;
        let mut tmp = vec![0u8; room];
        let mut tmp_buf = ReadBuf::new(&mut tmp);
        let result = Pin::new(&mut self.inner).poll_read(cx, &mut tmp_buf);
        let n = tmp_buf.filled().len();
        buf.put_slice(&tmp[..n]);
        self.produced.fetch_add(n as u64, Ordering::SeqCst);
        result
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_upload_is_aborted() {
    let server = S3sServer::start();
    let store = Arc::new(server.store("").await);
    let produced = Arc::new(AtomicU64::new(0));
    let mut reader =
        Stalls { inner: Generated::new(8, 64 * MIB), limit: 20 * MIB, produced: produced.clone() };
    let task = {
        let store = store.clone();
        tokio::spawn(async move { store.put_stream(&team("acme"), &mut reader).await })
    };
    // Wait until the upload is really under way: all its bytes read, parts on the server.
    no_hang("the upload to start", async {
        while produced.load(Ordering::SeqCst) < 20 * MIB
            || server.open_multipart_uploads().is_empty()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // The abort runs in the background; it must happen, and nothing may stay visible.
    no_hang("the abort", async {
        while !server.open_multipart_uploads().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(crate::files_under(&server.bucket_dir()).is_empty());
    assert!(kiln_store::list_all(store.as_ref(), "").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_objects_are_not_listed_and_keys_stay_under_the_prefix() {
    let server = S3sServer::start();
    let a = server.store("tenant-a").await;
    let b = server.store("tenant-b").await;
    a.put_at(&key("x"), &mut &b"a"[..]).await.unwrap();
    b.put_at(&key("x"), &mut &b"b"[..]).await.unwrap();
    assert_eq!(collect(a.get(&key("x"), None).await.unwrap()).await.unwrap(), b"a");
    let listed = kiln_store::list_all(&a, "").await.unwrap();
    assert_eq!(listed.iter().map(|o| o.key.clone()).collect::<Vec<Key>>(), vec![key("x")]);
    // A foreign object under the prefix that is no valid key is skipped, not an error.
    std::fs::create_dir_all(server.bucket_dir().join("tenant-a/.kiln-staging")).unwrap();
    std::fs::write(server.bucket_dir().join("tenant-a/.kiln-staging/leftover"), b"?").unwrap();
    assert_eq!(kiln_store::list_all(&a, "").await.unwrap().len(), 1);
}
