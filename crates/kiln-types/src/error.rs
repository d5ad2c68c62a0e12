//! The one table of error codes: every failure a client can see has a code here, and each
//! code has exactly one HTTP status. Binaries map their typed errors onto these codes.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($(#[$meta:meta])* $variant:ident => ($text:literal, $status:literal)),+ $(,)?) => {
        /// A stable, snake_case error code, as sent in `{"error": {"code": ...}}`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode { $($(#[$meta])* $variant),+ }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The code as sent on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $text),+ }
            }

            /// The HTTP status that answers this code.
            pub const fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status),+ }
            }
        }
    };
}

error_codes! {
    /// The request body or query is not well formed (bad JSON, wrong content type).
    BadRequest => ("bad_request", 400),
    /// No token, or a token that is unknown or revoked.
    Unauthenticated => ("unauthenticated", 401),
    /// A valid token whose role does not allow this action.
    Forbidden => ("forbidden", 403),
    /// No such resource, or one that belongs to another team.
    NotFound => ("not_found", 404),
    /// The route exists but not with this method.
    MethodNotAllowed => ("method_not_allowed", 405),
    /// A resource with that name already exists.
    AlreadyExists => ("already_exists", 409),
    /// An idempotency key was reused with a different request body.
    IdempotencyConflict => ("idempotency_conflict", 409),
    /// The resource is not in a state that allows this action.
    InvalidState => ("invalid_state", 409),
    /// The resource cannot be deleted while others use it; `details` names them by kind
    /// (`jobs`, `model_versions`, `aliases`, `deployments`).
    InUse => ("in_use", 409),
    /// The body exceeds the configured size limit.
    PayloadTooLarge => ("payload_too_large", 413),
    /// The body's media type is not one this route accepts.
    UnsupportedMediaType => ("unsupported_media_type", 415),
    /// Field-by-field validation failed; `details.fields` lists each offending field.
    ValidationFailed => ("validation_failed", 422),
    /// Too many requests queued; retry after the `Retry-After` delay.
    Overloaded => ("overloaded", 503),
    /// A dependency (database, artifact store) does not answer, or the artifact store
    /// refuses writes (read-only).
    Unavailable => ("unavailable", 503),
    /// The artifact store has no space left for the upload; nothing was stored.
    InsufficientStorage => ("insufficient_storage", 507),
    /// A bug or an unexpected failure; the message never leaks internals.
    Internal => ("internal", 500),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spelling_matches_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn every_code_is_an_error_status() {
        for code in ErrorCode::ALL {
            assert!((400..600).contains(&code.http_status()), "{code}");
        }
    }
}
