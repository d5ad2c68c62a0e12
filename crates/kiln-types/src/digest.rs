//! [`Sha256Digest`]: a SHA-256 digest as Kiln spells it everywhere (64 lowercase hex
//! digits), valid by construction.
//!
//! It serialises as exactly that string, so the jsonb columns and the wire keep the form
//! they had when digests travelled as plain strings; reading one back validates it.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A SHA-256 digest: 64 lowercase hexadecimal digits. Parsing accepts upper case and
/// lowers it (the canonical form every writer produces).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[0-9a-f]{64}$", example = json!("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"))]
pub struct Sha256Digest(String);

/// A string that is not a SHA-256 hex digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a sha256 digest (64 hexadecimal digits)")]
pub struct DigestError {
    /// The refused text, cut to 80 characters.
    pub value: String,
}

impl Sha256Digest {
    /// Parses 64 hexadecimal digits (either case).
    pub fn parse(text: impl Into<String>) -> Result<Self, DigestError> {
        let mut text = text.into();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let value = text.chars().take(80).collect();
            return Err(DigestError { value });
        }
        text.make_ascii_lowercase();
        Ok(Sha256Digest(text))
    }

    /// The 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first `n` digits, for log lines and tables.
    pub fn short(&self, n: usize) -> &str {
        &self.0[..n.min(64)]
    }
}

impl Deref for Sha256Digest {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Sha256Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Sha256Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sha256Digest::parse(s)
    }
}

impl TryFrom<String> for Sha256Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Sha256Digest::parse(s)
    }
}

impl From<Sha256Digest> for String {
    fn from(d: Sha256Digest) -> String {
        d.0
    }
}

impl PartialEq<str> for Sha256Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Sha256Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Sha256Digest {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_digest_serialises_as_the_same_string() {
        let digest: Sha256Digest = serde_json::from_value(json!(SHA)).unwrap();
        assert_eq!(digest, SHA);
        assert_eq!(serde_json::to_value(&digest).unwrap(), json!(SHA));
        assert_eq!(digest.short(12), &SHA[..12]);
        assert_eq!(digest.to_string(), SHA);
    }

    #[test]
    fn upper_case_is_lowered() {
        let digest = Sha256Digest::parse(SHA.to_ascii_uppercase()).unwrap();
        assert_eq!(digest.as_str(), SHA);
    }

    #[test]
    fn bad_digests_are_refused_naming_the_value() {
        for bad in ["", "abc", &SHA[..63], &format!("{SHA}0"), &SHA.replace('9', "g")] {
            let err = Sha256Digest::parse(bad).unwrap_err();
            assert_eq!(err.value, bad);
            assert!(err.to_string().contains("is not a sha256 digest"), "{err}");
        }
        let err = serde_json::from_value::<Sha256Digest>(json!("xyz")).unwrap_err();
        assert!(err.to_string().contains("`xyz` is not a sha256 digest"), "{err}");
        assert!(serde_json::from_value::<Sha256Digest>(json!(42)).is_err());
    }
}
