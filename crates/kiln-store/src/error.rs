//! The store's one error type: a kind callers match on, over an opaque cause that logs show.
//!
//! Both backends map every failure onto an [`ErrorKind`], so a caller never needs to know
//! whether the bytes live on S3 or on a local disk. Only [`ErrorKind::Unavailable`] is worth
//! retrying; the S3 backend already did, with backoff, before it returned one.

use std::fmt;

/// What went wrong, independent of the backend. Callers match on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No object under that key.
    NotFound,
    /// A create-only write found an object already there.
    AlreadyExists,
    /// The bytes do not hash to what they should: corruption, or a caller's wrong digest.
    Integrity,
    /// Transient: timeouts, refused connections, 5xx, throttling. Retried before returned.
    Unavailable,
    /// The backend refused our credentials or permissions.
    Unauthorized,
    /// A key, team or prefix that is not valid (path traversal, NUL, empty segments...).
    InvalidKey,
    /// A request the store understood and refused: an unsatisfiable range, a too-long expiry.
    InvalidArgument,
    /// This backend cannot do that (presigned URLs on the local directory).
    Unsupported,
    /// The store's configuration cannot work (a relative path, an unknown URL scheme).
    InvalidConfig,
    /// The caller's reader failed while we were uploading from it.
    Source,
    /// The store's file system (or quota) has no room left: `ENOSPC`, `EDQUOT`. Nothing
    /// was stored; writing may work again once space is freed.
    NoSpace,
    /// The store's file system refuses writes (`EROFS`: mounted or remounted read-only).
    ReadOnly,
    /// A local I/O failure that is none of the above.
    Io,
    /// A permanent error from the backend that none of the other kinds describe.
    Backend,
}

impl ErrorKind {
    /// True when trying again later may succeed.
    pub fn is_retryable(self) -> bool {
        self == ErrorKind::Unavailable
    }

    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::Integrity => "integrity check failed",
            ErrorKind::Unavailable => "store unavailable",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::InvalidKey => "invalid key",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Unsupported => "not supported",
            ErrorKind::InvalidConfig => "invalid configuration",
            ErrorKind::Source => "reading the upload failed",
            ErrorKind::NoSpace => "no space left in the store",
            ErrorKind::ReadOnly => "the store is read-only",
            ErrorKind::Io => "i/o error",
            ErrorKind::Backend => "backend error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from the artifact store: match on [`StoreError::kind`]; `Debug` and the source
/// chain carry the backend's own error for logs. Never contains credentials.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct StoreError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl StoreError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }

    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self { kind, message: message.into(), source: Some(source.into()) }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// The same error with more context in front of its message.
    pub(crate) fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The operating system's own words for the failure, e.g. `No space left on device (os
    /// error 28)`, when an OS error caused it. Never a path: safe to show to API users.
    pub fn os_reason(&self) -> Option<String> {
        let mut source: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|s| s as _);
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && let Some(code) = io.raw_os_error()
            {
                return Some(std::io::Error::from_raw_os_error(code).to_string());
            }
            source = err.source();
        }
        None
    }

    /// Maps a local `std::io::Error`, keeping the kinds callers care about. The message ends
    /// with the OS reason (`...: No space left on device (os error 28)`), so it reaches job
    /// errors and logs that print only the message.
    pub(crate) fn io(message: impl Into<String>, err: std::io::Error) -> Self {
        let kind = match err.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => ErrorKind::NoSpace,
            Some(libc::EROFS) => ErrorKind::ReadOnly,
            _ => match err.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                std::io::ErrorKind::PermissionDenied => ErrorKind::Unauthorized,
                _ => ErrorKind::Io,
            },
        };
        Self::with_source(kind, format!("{}: {err}", message.into()), err)
    }

    /// The error a caller's reader produced while we uploaded from it.
    pub(crate) fn source_read(err: std::io::Error) -> Self {
        Self::with_source(ErrorKind::Source, "the upload's reader failed", err)
    }
}

/// Lets a [`StoreError`] travel through `std::io` (for [`crate::into_async_read`]); the
/// original is recoverable with `io_error.get_ref()` and `downcast_ref::<StoreError>()`.
impl From<StoreError> for std::io::Error {
    fn from(err: StoreError) -> Self {
        let kind = match err.kind {
            ErrorKind::NotFound => std::io::ErrorKind::NotFound,
            ErrorKind::Integrity => std::io::ErrorKind::InvalidData,
            ErrorKind::Unavailable => std::io::ErrorKind::TimedOut,
            ErrorKind::Unauthorized => std::io::ErrorKind::PermissionDenied,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, err)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
