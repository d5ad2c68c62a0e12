//! The S3 backend, through aws-sdk-s3: AWS itself or any S3-compatible endpoint.
//!
//! Region, credentials and endpoint come from the SDK's standard chain (`AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, profiles, instance
//! roles...) unless [`S3Settings`] overrides them. The SDK's own retries are off: every call
//! goes through [`crate::retry`] instead, one policy for every operation, with a timeout per
//! attempt, so a dead endpoint becomes [`ErrorKind::Unavailable`] in seconds.
//!
//! Uploads read the caller's stream in parts of `part_size` bytes. An upload that fits in
//! one part is hashed first and sent with one `PutObject` straight to its final key. A larger
//! one becomes a multipart upload with at most `parts_in_flight` parts uploading at once (so
//! memory stays near `(parts_in_flight + 1) * part_size` for any size); any failure, digest
//! mismatch or cancellation aborts it, so no part and no partial object remain. A
//! content-addressed upload of unknown digest goes to a staging key under
//! `{prefix}.kiln-staging/` (unreachable by any [`Key`]), is copied server-side to its final
//! key once the digest is known, and the staging object is deleted.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use crate::error::{ErrorKind, Result, StoreError};
use crate::retry::{RetryPolicy, retry};
use crate::transfer::{read_part, verify_stream};
use crate::{
    ArtifactStore, ByteRange, ByteStream, Key, ListPage, ObjectInfo, ObjectMeta, PresignedRequest,
    Sha256Digest, Team, Upload, check_expiry, validate_prefix,
};

/// Where content-addressed uploads wait until their digest is known, under the store's
/// prefix. Keys cannot start with `.`, so no [`Key`] reaches it.
const STAGING: &str = ".kiln-staging";

/// A secret that never shows in `Debug` or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

/// An access key pair that replaces the SDK's credential chain (tests, tools).
#[derive(Debug, Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

/// How to reach a bucket and how to move bytes. `None` fields come from the SDK's chain.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Prepended to every key: empty, or ending with `/`.
    pub prefix: String,
    /// Path-style addressing (`http://host/bucket/key`), for S3-compatible servers.
    pub force_path_style: bool,
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub credentials: Option<StaticCredentials>,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    /// A download whose next chunk takes longer than this fails with `Unavailable`.
    pub read_timeout: Duration,
    /// Multipart part size (S3: at least 5 MiB, except the last part).
    pub part_size: usize,
    /// Parts uploading at once. Memory is about `(parts_in_flight + 1) * part_size`.
    pub parts_in_flight: usize,
    /// Bulk downloads ([`ArtifactStore::get_bulk`]) fetch ranges of this many bytes...
    pub range_size: usize,
    /// ...this many at once. Memory is about `range_size * ranges_in_flight`.
    pub ranges_in_flight: usize,
    /// Staging objects up to this size are copied with one `CopyObject` (S3's limit is
    /// 5 GiB); larger ones with `UploadPartCopy` in parts of `copy_part_size`.
    pub max_single_copy: u64,
    pub copy_part_size: u64,
    /// The timeout of one server-side copy attempt (it moves the whole object).
    pub copy_timeout: Duration,
}

impl S3Settings {
    /// Settings for `bucket` and `prefix`, everything else at its default.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        let mut prefix: String = prefix.into();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self {
            bucket: bucket.into(),
            prefix,
            force_path_style: false,
            endpoint_url: None,
            region: None,
            credentials: None,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(30),
            part_size: 8 << 20,
            parts_in_flight: 4,
            range_size: 2 << 20,
            ranges_in_flight: 24,
            max_single_copy: 5 << 30,
            copy_part_size: 1 << 30,
            copy_timeout: Duration::from_secs(600),
        }
    }
}

/// The S3 store. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    settings: Arc<S3Settings>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.settings.bucket)
            .field("prefix", &self.settings.prefix)
            .field("endpoint_url", &self.settings.endpoint_url)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds a client from the SDK's standard chain, overridden by `settings`. Makes no
    /// request: a wrong endpoint or credentials show on the first call.
    pub async fn connect(settings: S3Settings) -> Result<Self> {
        if settings.bucket.is_empty() {
            return Err(StoreError::new(ErrorKind::InvalidConfig, "the S3 bucket name is empty"));
        }
        if !settings.prefix.is_empty() {
            validate_prefix(&settings.prefix).map_err(|err| {
                StoreError::new(ErrorKind::InvalidConfig, format!("S3 prefix: {}", err.message()))
            })?;
        }
        if settings.part_size < 5 << 20
            || settings.parts_in_flight == 0
            || settings.range_size == 0
            || settings.ranges_in_flight == 0
        {
            return Err(StoreError::new(
                ErrorKind::InvalidConfig,
                "S3 part size must be at least 5 MiB, range size and counts at least 1",
            ));
        }
        let region = RegionProviderChain::first_try(settings.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::new("us-east-1"));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder().connect_timeout(settings.connect_timeout).build(),
            );
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(creds) = &settings.credentials {
            loader = loader.credentials_provider(Credentials::new(
                &creds.access_key_id,
                creds.secret_access_key.expose(),
                None,
                None,
                "kiln-static",
            ));
        }
        let sdk_config = loader.load().await;
        let config = aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(settings.force_path_style)
            // We hash every byte with SHA-256 ourselves; skip the SDK's extra CRCs.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Ok(Self { client: Client::from_conf(config), settings: Arc::new(settings) })
    }

    fn full_key(&self, key: &Key) -> String {
        format!("{}{}", self.settings.prefix, key.as_str())
    }

    fn policy(&self) -> &RetryPolicy {
        &self.settings.retry
    }

    async fn head_full(&self, full_key: &str) -> Result<u64> {
        let out = retry(self.policy(), &format!("HEAD {full_key}"), || async {
            self.client
                .head_object()
                .bucket(&self.settings.bucket)
                .key(full_key)
                .send()
                .await
                .map_err(classify)
        })
        .await?;
        Ok(out.content_length().unwrap_or_default().max(0) as u64)
    }

    /// Whether the content-addressed `full_key` holds an object of `size` bytes. One of
    /// another size is not trusted (whatever left it there, its bytes are not these): the
    /// caller writes over it.
    async fn holds(&self, full_key: &str, size: u64) -> Result<bool> {
        match self.head_full(full_key).await {
            Ok(stored) if stored == size => Ok(true),
            Ok(stored) => {
                tracing::warn!(
                    key = full_key,
                    stored,
                    size,
                    "a stored blob has the wrong size; replacing it"
                );
                Ok(false)
            }
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Checks by `HEAD` that a write left `size` bytes under `full_key`: nothing is reported
    /// stored on the strength of the write's answer alone.
    async fn verify_size(&self, full_key: &str, size: u64) -> Result<()> {
        let stored = self.head_full(full_key).await?;
        if stored == size {
            return Ok(());
        }
        Err(StoreError::new(
            ErrorKind::Integrity,
            format!("{full_key} holds {stored} bytes after a write of {size}"),
        ))
    }

    async fn delete_full(&self, full_key: &str) -> Result<()> {
        retry(self.policy(), &format!("DELETE {full_key}"), || async {
            self.client
                .delete_object()
                .bucket(&self.settings.bucket)
                .key(full_key)
                .send()
                .await
                .map_err(classify)
        })
        .await?;
        Ok(())
    }

    /// Bytes `start..end` of an object, whole in memory; the body is read inside the retry,
    /// so a connection that breaks mid-part is retried too.
    /// One byte range, whole (retried as a unit), as the chunks the network delivered: kept
    /// as they are rather than copied into one buffer.
    /// One range, whole, as one buffer that starts on a direct-I/O boundary: the network's
    /// chunks are copied in as they arrive, so the connection's read buffers are released at
    /// once (they are larger than the bytes they hold) and the download writer can hand the
    /// buffer to an `O_DIRECT` write without another copy.
    async fn get_range_whole(&self, full_key: &str, start: u64, end: u64) -> Result<Bytes> {
        retry(self.policy(), &format!("GET {full_key} bytes {start}..{end}"), || async {
            let out = self
                .client
                .get_object()
                .bucket(&self.settings.bucket)
                .key(full_key)
                .range(format!("bytes={start}-{}", end - 1))
                .send()
                .await
                .map_err(classify)?;
            let want = (end - start) as usize;
            let mut body = out.body;
            let mut buf = crate::transfer::AlignedBytes::with_capacity(want);
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|err| {
                    StoreError::with_source(ErrorKind::Unavailable, "the download broke off", err)
                })?;
                if buf.len() + chunk.len() > want {
                    return Err(StoreError::new(
                        ErrorKind::Unavailable,
                        format!("asked for {want} bytes, got more"),
                    ));
                }
                buf.extend(&chunk);
            }
            if buf.len() != want {
                return Err(StoreError::new(
                    ErrorKind::Unavailable,
                    format!("asked for {want} bytes, got {}", buf.len()),
                ));
            }
            Ok(buf.freeze())
        })
        .await
    }

    /// One `PutObject` of bytes already in memory, with their SHA-256 for the server to
    /// check (`x-amz-checksum-sha256`: a body that arrives different is refused), then a
    /// `HEAD` that checks the size stored.
    async fn put_small(
        &self,
        full_key: &str,
        bytes: Bytes,
        sha256: &Sha256Digest,
        create_only: bool,
    ) -> Result<()> {
        let checksum = aws_smithy_types::base64::encode(sha256.as_bytes());
        retry(self.policy(), &format!("PUT {full_key}"), || async {
            let mut req = self
                .client
                .put_object()
                .bucket(&self.settings.bucket)
                .key(full_key)
                .content_length(bytes.len() as i64)
                .checksum_sha256(&checksum)
                .body(SdkByteStream::from(bytes.clone()));
            if create_only {
                req = req.if_none_match("*");
            }
            req.send().await.map_err(classify)
        })
        .await
        .map_err(|err| already_exists(err, full_key))?;
        self.verify_size(full_key, bytes.len() as u64).await
    }

    /// Starts a multipart upload of `full_key` and returns its id.
    async fn create_upload(&self, full_key: &str) -> Result<String> {
        retry(self.policy(), &format!("create upload {full_key}"), || async {
            self.client
                .create_multipart_upload()
                .bucket(&self.settings.bucket)
                .key(full_key)
                .send()
                .await
                .map_err(classify)
        })
        .await?
        .upload_id
        .ok_or_else(|| StoreError::new(ErrorKind::Backend, "CreateMultipartUpload: no upload id"))
    }

    /// A multipart upload of `first` followed by the rest of `reader`. Returns the digest
    /// and size; if `expected` is given and differs, aborts instead of completing.
    async fn put_multipart(
        &self,
        full_key: &str,
        first: Bytes,
        reader: Upload<'_>,
        expected: Option<&Sha256Digest>,
        create_only: bool,
    ) -> Result<(Sha256Digest, u64)> {
        let upload_id = self.create_upload(full_key).await?;
        let mut guard = Cleanup::abort_upload(self, full_key, &upload_id);
        // Named objects (`put_at`, the create-only writes) are not verified on read, so
        // their parts carry SigV4 payload hashes the server checks. Content-addressed uploads
        // are verified on every full read and at `download_to_file`, so their parts skip that
        // second SHA-256 pass over every byte (UNSIGNED-PAYLOAD; TLS protects them in transit
        // on https endpoints).
        let sign_payload = create_only;
        let result =
            self.send_parts(full_key, &upload_id, first, reader, expected, sign_payload).await;
        let result = match result {
            Ok((parts, digest, size)) => self
                .complete(full_key, &upload_id, parts, create_only)
                .await
                .map(|()| (digest, size)),
            Err(err) => Err(err),
        };
        let result = match result {
            Ok((digest, size)) => self.verify_size(full_key, size).await.map(|()| (digest, size)),
            Err(err) => Err(err),
        };
        match result {
            Ok(done) => {
                guard.disarm();
                Ok(done)
            }
            Err(err) => {
                guard.disarm();
                self.abort(full_key, &upload_id).await;
                Err(err)
            }
        }
    }

    async fn send_parts(
        &self,
        full_key: &str,
        upload_id: &str,
        first: Bytes,
        reader: Upload<'_>,
        expected: Option<&Sha256Digest>,
        sign_payload: bool,
    ) -> Result<(Vec<CompletedPart>, Sha256Digest, u64)> {
        let mut in_flight = JoinSet::new();
        let result = self
            .send_parts_in(&mut in_flight, full_key, upload_id, first, reader, sign_payload)
            .await
            .and_then(|(parts, digest, size)| match expected {
                Some(expected) if *expected != digest => Err(StoreError::new(
                    ErrorKind::Integrity,
                    format!("upload hashed to sha256:{digest}, not {expected}; aborted"),
                )),
                _ => Ok((parts, digest, size)),
            });
        if result.is_err() {
            // Let the parts already sent finish (each is bounded by its timeouts), so no
            // request can land after the abort that follows and leave a part behind.
            while in_flight.join_next().await.is_some() {}
        }
        result
    }

    async fn send_parts_in(
        &self,
        in_flight: &mut JoinSet<Result<CompletedPart>>,
        full_key: &str,
        upload_id: &str,
        first: Bytes,
        reader: Upload<'_>,
        sign_payload: bool,
    ) -> Result<(Vec<CompletedPart>, Sha256Digest, u64)> {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut done = Vec::new();
        let mut part = first;
        let mut number = 0i32;
        loop {
            hasher.update(&part);
            size += part.len() as u64;
            number += 1;
            if number > 10_000 {
                return Err(StoreError::new(
                    ErrorKind::InvalidArgument,
                    "upload exceeds 10,000 parts; raise the part size",
                ));
            }
            in_flight.spawn(upload_part(
                self.clone(),
                full_key.to_owned(),
                upload_id.to_owned(),
                number,
                part,
                sign_payload,
            ));
            if in_flight.len() >= self.settings.parts_in_flight {
                done.push(join_part(in_flight).await?);
            }
            // Reading the next part overlaps with the parts in flight.
            part = read_part(reader, self.settings.part_size).await?;
            if part.is_empty() {
                break;
            }
        }
        while !in_flight.is_empty() {
            done.push(join_part(in_flight).await?);
        }
        let digest = Sha256Digest::from_bytes(hasher.finalize().into());
        done.sort_by_key(|p| p.part_number);
        Ok((done, digest, size))
    }

    async fn complete(
        &self,
        full_key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        create_only: bool,
    ) -> Result<()> {
        let upload = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
        retry(self.policy(), &format!("complete upload {full_key}"), || async {
            let mut req = self
                .client
                .complete_multipart_upload()
                .bucket(&self.settings.bucket)
                .key(full_key)
                .upload_id(upload_id)
                .multipart_upload(upload.clone());
            if create_only {
                req = req.if_none_match("*");
            }
            req.send().await.map_err(classify)
        })
        .await
        .map_err(|err| already_exists(err, full_key))?;
        Ok(())
    }

    /// Aborts a multipart upload, with retries; a failure is logged, not returned (the
    /// original error matters more, and a bucket lifecycle rule is the last line).
    async fn abort(&self, full_key: &str, upload_id: &str) {
        let result = retry(self.policy(), &format!("abort upload {full_key}"), || async {
            self.client
                .abort_multipart_upload()
                .bucket(&self.settings.bucket)
                .key(full_key)
                .upload_id(upload_id)
                .send()
                .await
                .map_err(classify)
        })
        .await;
        match result {
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => tracing::warn!(key = full_key, error = %err, "could not abort an upload"),
        }
    }

    /// Server-side copy of a staging object to its final key.
    async fn copy(&self, from: &str, to: &str, size: u64) -> Result<()> {
        let source = format!("{}/{}", self.settings.bucket, from);
        let policy =
            RetryPolicy { attempt_timeout: self.settings.copy_timeout, ..self.policy().clone() };
        if size <= self.settings.max_single_copy {
            retry(&policy, &format!("copy to {to}"), || async {
                self.client
                    .copy_object()
                    .bucket(&self.settings.bucket)
                    .key(to)
                    .copy_source(&source)
                    .send()
                    .await
                    .map_err(classify)
            })
            .await?;
            return self.verify_size(to, size).await;
        }
        let upload_id = self.create_upload(to).await?;
        let mut guard = Cleanup::abort_upload(self, to, &upload_id);
        let mut parts = Vec::new();
        let mut start = 0u64;
        let mut result = Ok(());
        while start < size {
            let end = (start + self.settings.copy_part_size).min(size);
            let number = parts.len() as i32 + 1;
            let copied = retry(&policy, &format!("copy part {number} to {to}"), || async {
                self.client
                    .upload_part_copy()
                    .bucket(&self.settings.bucket)
                    .key(to)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={start}-{}", end - 1))
                    .send()
                    .await
                    .map_err(classify)
            })
            .await;
            match copied {
                Ok(out) => parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.copy_part_result.and_then(|r| r.e_tag))
                        .build(),
                ),
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
            start = end;
        }
        if result.is_ok() {
            result = self.complete(to, &upload_id, parts, false).await;
        }
        guard.disarm();
        if result.is_err() {
            self.abort(to, &upload_id).await;
            return result;
        }
        self.verify_size(to, size).await
    }
}

async fn upload_part(
    store: S3Store,
    full_key: String,
    upload_id: String,
    number: i32,
    bytes: Bytes,
    sign_payload: bool,
) -> Result<CompletedPart> {
    let out = retry(store.policy(), &format!("upload part {number} of {full_key}"), || async {
        let request = store
            .client
            .upload_part()
            .bucket(&store.settings.bucket)
            .key(&full_key)
            .upload_id(&upload_id)
            .part_number(number)
            .content_length(bytes.len() as i64)
            .body(SdkByteStream::from(bytes.clone()))
            .customize();
        let request = if sign_payload { request } else { request.disable_payload_signing() };
        request.send().await.map_err(classify)
    })
    .await?;
    Ok(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag).build())
}

async fn join_part(set: &mut JoinSet<Result<CompletedPart>>) -> Result<CompletedPart> {
    match set.join_next().await {
        Some(Ok(part)) => part,
        Some(Err(err)) => Err(StoreError::with_source(ErrorKind::Backend, "part task failed", err)),
        None => Err(StoreError::new(ErrorKind::Backend, "no part in flight")),
    }
}

/// A spawned range download, cancelled if the stream that wants it is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<Result<Bytes>>);

impl AbortOnDrop {
    async fn join(mut self) -> Result<Bytes> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(err) => {
                Err(StoreError::with_source(ErrorKind::Backend, "range download task failed", err))
            }
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn already_exists(err: StoreError, full_key: &str) -> StoreError {
    if err.kind() == ErrorKind::AlreadyExists {
        StoreError::new(ErrorKind::AlreadyExists, format!("{full_key} already exists"))
    } else {
        err
    }
}

/// Undo work if the future doing it is dropped (cancelled) before it finishes: abort a
/// multipart upload, or delete a staging object. Runs on the current Tokio runtime.
struct Cleanup {
    store: Option<S3Store>,
    key: String,
    upload_id: Option<String>,
}

impl Cleanup {
    fn abort_upload(store: &S3Store, key: &str, upload_id: &str) -> Self {
        Self { store: Some(store.clone()), key: key.to_owned(), upload_id: Some(upload_id.into()) }
    }

    fn delete_object(store: &S3Store, key: &str) -> Self {
        Self { store: Some(store.clone()), key: key.to_owned(), upload_id: None }
    }

    fn disarm(&mut self) {
        self.store = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let key = std::mem::take(&mut self.key);
        let upload_id = self.upload_id.take();
        runtime.spawn(async move {
            match upload_id {
                Some(upload_id) => store.abort(&key, &upload_id).await,
                None => {
                    if let Err(err) = store.delete_full(&key).await {
                        tracing::warn!(key, error = %err, "could not delete a staging object");
                    }
                }
            }
        });
    }
}

#[async_trait]
impl ArtifactStore for S3Store {
    fn describe(&self) -> String {
        let endpoint = self.settings.endpoint_url.as_deref().unwrap_or("AWS");
        format!("s3://{}/{} at {endpoint}", self.settings.bucket, self.settings.prefix)
    }

    async fn put_stream(&self, team: &Team, reader: Upload<'_>) -> Result<ObjectInfo> {
        let first = read_part(reader, self.settings.part_size).await?;
        if first.len() < self.settings.part_size {
            // Small: we hold every byte, so we know the digest before sending anything.
            let sha256 = Sha256Digest::of(&first);
            let key = Key::blob(team, &sha256);
            let full = self.full_key(&key);
            let size = first.len() as u64;
            if !self.holds(&full, size).await? {
                self.put_small(&full, first, &sha256, false).await?;
            }
            return Ok(ObjectInfo { key, sha256, size });
        }
        let staging = format!("{}{STAGING}/{}", self.settings.prefix, uuid::Uuid::new_v4());
        let (sha256, size) = self.put_multipart(&staging, first, reader, None, false).await?;
        let mut guard = Cleanup::delete_object(self, &staging);
        let key = Key::blob(team, &sha256);
        let full = self.full_key(&key);
        if !self.holds(&full, size).await? {
            self.copy(&staging, &full, size).await?;
        }
        guard.disarm();
        if let Err(err) = self.delete_full(&staging).await {
            tracing::warn!(key = staging, error = %err, "could not delete a staging object");
        }
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
        let full = self.full_key(&key);
        if self.holds(&full, size).await? {
            return Ok(ObjectInfo { key, sha256: *sha256, size });
        }
        let wrong = |actual: &Sha256Digest, written: u64| {
            StoreError::new(
                ErrorKind::Integrity,
                format!(
                    "upload for {key} was {written} bytes hashing to sha256:{actual}, not \
                     {size} bytes; nothing stored"
                ),
            )
        };
        let first = read_part(reader, self.settings.part_size).await?;
        if first.len() < self.settings.part_size {
            let actual = Sha256Digest::of(&first);
            let written = first.len() as u64;
            if actual != *sha256 || written != size {
                return Err(wrong(&actual, written));
            }
            self.put_small(&full, first, &actual, false).await?;
            return Ok(ObjectInfo { key, sha256: actual, size });
        }
        let (actual, written) =
            self.put_multipart(&full, first, reader, Some(sha256), false).await?;
        if written != size {
            // The digest matched, so this cannot happen short of a SHA-256 collision.
            return Err(wrong(&actual, written));
        }
        Ok(ObjectInfo { key, sha256: actual, size })
    }

    async fn put_at(&self, key: &Key, reader: Upload<'_>) -> Result<ObjectInfo> {
        let full = self.full_key(key);
        let first = read_part(reader, self.settings.part_size).await?;
        if first.len() < self.settings.part_size {
            let sha256 = Sha256Digest::of(&first);
            let size = first.len() as u64;
            self.put_small(&full, first, &sha256, true).await?;
            return Ok(ObjectInfo { key: key.clone(), sha256, size });
        }
        let (sha256, size) = self.put_multipart(&full, first, reader, None, true).await?;
        Ok(ObjectInfo { key: key.clone(), sha256, size })
    }

    async fn get(&self, key: &Key, range: Option<ByteRange>) -> Result<ByteStream> {
        if let Some(range) = &range {
            range.validate()?;
        }
        let full = self.full_key(key);
        let header = range.map(|r| match r.end {
            Some(end) => format!("bytes={}-{}", r.start, end - 1),
            None => format!("bytes={}-", r.start),
        });
        let out = retry(self.policy(), &format!("GET {key}"), || async {
            self.client
                .get_object()
                .bucket(&self.settings.bucket)
                .key(&full)
                .set_range(header.clone())
                .send()
                .await
                .map_err(classify)
        })
        .await?;
        let read_timeout = self.settings.read_timeout;
        let body = futures::stream::unfold(Some(out.body), move |body| async move {
            let mut body = body?;
            match tokio::time::timeout(read_timeout, body.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
                Ok(None) => None,
                Ok(Some(Err(err))) => Some((
                    Err(StoreError::with_source(
                        ErrorKind::Unavailable,
                        "the download broke off",
                        err,
                    )),
                    None,
                )),
                Err(_) => Some((
                    Err(StoreError::new(
                        ErrorKind::Unavailable,
                        format!("the download stalled for {read_timeout:?}"),
                    )),
                    None,
                )),
            }
        });
        let stream: ByteStream = Box::pin(body);
        Ok(match (range, key.content_digest()) {
            (None, Some(expected)) => verify_stream(key.clone(), expected, stream),
            _ => stream,
        })
    }

    async fn get_bulk(&self, key: &Key) -> Result<ByteStream> {
        let full = self.full_key(key);
        let size = self.head_full(&full).await?;
        let part = self.settings.range_size as u64;
        if size <= part {
            return self.get(key, None).await;
        }
        let ranges =
            (0..size).step_by(part as usize).map(move |start| (start, (start + part).min(size)));
        let store = self.clone();
        let parts = futures::stream::iter(ranges)
            .map(move |(start, end)| {
                let store = store.clone();
                let full = full.clone();
                // A task per range, so ranges keep downloading while the consumer is busy
                // (a plain future would only make progress when the stream is polled).
                let task = AbortOnDrop(tokio::spawn(async move {
                    store.get_range_whole(&full, start, end).await
                }));
                async move { task.join().await }
            })
            .buffered(self.settings.ranges_in_flight)
            // Stop after the first error: the consumer sees it once, nothing after it.
            .scan(false, |failed, part| {
                let item = (!*failed).then(|| {
                    *failed = part.is_err();
                    part
                });
                async move { item }
            });
        // One item per range, each one aligned buffer. Not verified here: download_to_file hashes off the receiving path (see the trait).
        Ok(Box::pin(parts))
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let size = self.head_full(&self.full_key(key)).await?;
        Ok(ObjectMeta { key: key.clone(), size, modified: None })
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.delete_full(&self.full_key(key)).await
    }

    async fn list(&self, prefix: &str, continuation: Option<String>) -> Result<ListPage> {
        validate_prefix(prefix)?;
        let full_prefix = format!("{}{prefix}", self.settings.prefix);
        let out = retry(self.policy(), &format!("LIST {prefix}"), || async {
            self.client
                .list_objects_v2()
                .bucket(&self.settings.bucket)
                .prefix(&full_prefix)
                .max_keys(1000)
                .set_continuation_token(continuation.clone())
                .send()
                .await
                .map_err(classify)
        })
        .await?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|object| {
                let key = object.key()?.strip_prefix(&self.settings.prefix)?;
                // Staging objects and foreign names that are not keys are not ours to show.
                let key = Key::parse(key).ok()?;
                Some(ObjectMeta {
                    key,
                    size: object.size().unwrap_or_default().max(0) as u64,
                    modified: object
                        .last_modified()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                })
            })
            .collect();
        let next =
            if out.is_truncated() == Some(true) { out.next_continuation_token } else { None };
        Ok(ListPage { objects, next })
    }

    async fn presign_get(&self, key: &Key, expires_in: Duration) -> Result<PresignedRequest> {
        check_expiry(expires_in)?;
        let config = presigning_config(expires_in)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(self.full_key(key))
            .presigned(config)
            .await
            .map_err(classify)?;
        Ok(presigned("GET", &request, expires_in))
    }

    async fn presign_put(&self, key: &Key, expires_in: Duration) -> Result<PresignedRequest> {
        check_expiry(expires_in)?;
        let config = presigning_config(expires_in)?;
        let request = self
            .client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(self.full_key(key))
            .presigned(config)
            .await
            .map_err(classify)?;
        Ok(presigned("PUT", &request, expires_in))
    }
}

fn presigning_config(expires_in: Duration) -> Result<PresigningConfig> {
    PresigningConfig::expires_in(expires_in).map_err(|err| {
        StoreError::with_source(ErrorKind::InvalidArgument, "invalid presign expiry", err)
    })
}

fn presigned(
    method: &'static str,
    request: &aws_sdk_s3::presigning::PresignedRequest,
    expires_in: Duration,
) -> PresignedRequest {
    PresignedRequest {
        method,
        url: request.uri().to_owned(),
        headers: request.headers().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        expires_in,
    }
}

/// Maps an SDK error onto a kind: transport failures and 5xx/throttling are transient,
/// authentication and missing objects are not.
fn classify<E>(err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_owned);
    let kind = match &err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => ErrorKind::Unavailable,
        SdkError::DispatchFailure(failure) if failure.is_user() => ErrorKind::InvalidConfig,
        SdkError::DispatchFailure(_) => ErrorKind::Unavailable,
        SdkError::ConstructionFailure(_) => ErrorKind::Backend,
        _ => kind_of_response(status, code.as_deref()),
    };
    let message = match (&code, status) {
        (Some(code), Some(status)) => format!("S3 answered {status} {code}"),
        (None, Some(status)) => format!("S3 answered {status}"),
        _ => match &err {
            SdkError::TimeoutError(_) => "S3 request timed out".to_owned(),
            SdkError::DispatchFailure(_) => "could not reach S3".to_owned(),
            _ => "S3 request failed".to_owned(),
        },
    };
    StoreError::with_source(kind, message, err)
}

fn kind_of_response(status: Option<u16>, code: Option<&str>) -> ErrorKind {
    match code {
        Some("NoSuchKey" | "NotFound" | "NoSuchUpload") => return ErrorKind::NotFound,
        Some("NoSuchBucket") => return ErrorKind::InvalidConfig,
        Some(
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AccessDenied"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired"
            | "AllAccessDisabled",
        ) => return ErrorKind::Unauthorized,
        Some(
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable"
            | "RequestLimitExceeded"
            | "ConditionalRequestConflict",
        ) => return ErrorKind::Unavailable,
        Some("PreconditionFailed") => return ErrorKind::AlreadyExists,
        // The server hashed the body we sent and it did not match its checksum header.
        Some("BadDigest" | "InvalidDigest") => return ErrorKind::Integrity,
        Some("EntityTooLarge") => return ErrorKind::InvalidArgument,
        Some("InvalidRange") => return ErrorKind::InvalidArgument,
        _ => {}
    }
    match status {
        Some(401 | 403) => ErrorKind::Unauthorized,
        Some(404) => ErrorKind::NotFound,
        Some(412) => ErrorKind::AlreadyExists,
        Some(416) => ErrorKind::InvalidArgument,
        Some(408 | 429) => ErrorKind::Unavailable,
        Some(507) => ErrorKind::NoSpace,
        Some(500..=599) => ErrorKind::Unavailable,
        _ => ErrorKind::Backend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_map_to_kinds() {
        let cases = [
            (Some(404), Some("NoSuchKey"), ErrorKind::NotFound),
            (Some(404), None, ErrorKind::NotFound),
            (Some(403), Some("SignatureDoesNotMatch"), ErrorKind::Unauthorized),
            (Some(403), Some("InvalidAccessKeyId"), ErrorKind::Unauthorized),
            (Some(403), None, ErrorKind::Unauthorized),
            (Some(503), Some("SlowDown"), ErrorKind::Unavailable),
            (Some(500), Some("InternalError"), ErrorKind::Unavailable),
            (Some(502), None, ErrorKind::Unavailable),
            (Some(429), None, ErrorKind::Unavailable),
            (Some(412), Some("PreconditionFailed"), ErrorKind::AlreadyExists),
            (Some(416), Some("InvalidRange"), ErrorKind::InvalidArgument),
            (Some(400), Some("InvalidArgument"), ErrorKind::Backend),
        ];
        for (status, code, kind) in cases {
            assert_eq!(kind_of_response(status, code), kind, "{status:?} {code:?}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let creds = StaticCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SecretString::new("wJalrXUtnFEMI/K7MDENG"),
        };
        let mut settings = S3Settings::new("bucket", "pre");
        settings.credentials = Some(creds);
        let printed = format!("{settings:?}");
        assert!(!printed.contains("wJalrXUtnFEMI"), "{printed}");
        assert_eq!(settings.prefix, "pre/");
    }
}
