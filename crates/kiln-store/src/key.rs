//! Keys, teams and digests: parsed once at the edge, valid from then on.
//!
//! A [`Key`] is a relative, `/`-separated path with no way out of its root: both backends
//! use it, so `../`, absolute paths, NUL, backslashes and empty or hidden segments are
//! refused before any I/O happens. Content-addressed blobs live under
//! `teams/{team}/blobs/sha256/{first two hex digits}/{64 hex digits}` ([`Key::blob`]); the
//! key alone says which bytes it must hold, so reads can verify them.

use std::fmt;
use std::str::FromStr;

use crate::error::{ErrorKind, Result, StoreError};

/// The longest key we accept (S3's own limit is 1,024 bytes, and the S3 backend adds its
/// prefix in front).
pub const MAX_KEY_LEN: usize = 900;

/// A validated object key, relative to the store's root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl Key {
    /// Parses a key: non-empty `/`-separated segments of printable characters, none empty and
    /// none starting with `.` (which refuses `.` and `..`, and keeps the store's own staging
    /// names out of reach), no backslash, no leading `/`, at most [`MAX_KEY_LEN`] bytes.
    pub fn parse(key: impl Into<String>) -> Result<Key> {
        let key = key.into();
        validate_path(&key, "key")?;
        Ok(Key(key))
    }

    /// The key of a content-addressed blob.
    pub fn blob(team: &Team, digest: &Sha256Digest) -> Key {
        let hex = digest.to_hex();
        Key(format!("teams/{team}/blobs/sha256/{}/{hex}", &hex[..2]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// When this key names a content-addressed blob, the digest its bytes must have.
    pub fn content_digest(&self) -> Option<Sha256Digest> {
        let mut parts = self.0.split('/');
        let (Some("teams"), Some(team), Some("blobs"), Some("sha256"), Some(fan), Some(hex), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        Team::parse(team).ok()?;
        let digest = Sha256Digest::from_hex(hex).ok()?;
        (fan == &hex[..2]).then_some(digest)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Key {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Key> {
        Key::parse(s)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Checks a list prefix: empty (everything), or a valid key optionally followed by one `/`.
/// A prefix may end in the middle of a segment (`teams/ac` matches `teams/acme/...`).
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_path(prefix.strip_suffix('/').unwrap_or(prefix), "prefix")
}

fn validate_path(path: &str, what: &str) -> Result<()> {
    let refuse = |why: &str| {
        Err(StoreError::new(ErrorKind::InvalidKey, format!("{what} {path:?} refused: {why}")))
    };
    if path.is_empty() {
        return refuse("empty");
    }
    if path.len() > MAX_KEY_LEN {
        return refuse("too long");
    }
    if path.starts_with('/') {
        return refuse("absolute paths are not keys");
    }
    if path.chars().any(|c| c.is_control()) {
        return refuse("control characters (NUL included) are not allowed");
    }
    if path.contains('\\') {
        return refuse("backslashes are not allowed");
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return refuse("empty path segment");
        }
        if segment.starts_with('.') {
            return refuse("segments may not start with '.' (no `.`, `..` or hidden names)");
        }
    }
    Ok(())
}

/// A team's name as it appears in keys: 1 to 64 ASCII letters, digits, `-` or `_`,
/// starting with a letter or digit. One key segment, never a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Team(String);

impl Team {
    pub fn parse(team: impl Into<String>) -> Result<Team> {
        let team = team.into();
        let valid = (1..=64).contains(&team.len())
            && team.starts_with(|c: char| c.is_ascii_alphanumeric())
            && team.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            Ok(Team(team))
        } else {
            Err(StoreError::new(
                ErrorKind::InvalidKey,
                format!("team {team:?} refused: 1-64 of [A-Za-z0-9_-], starting alphanumeric"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Team {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SHA-256 digest. Displays as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn from_hex(hex_digits: &str) -> Result<Self> {
        let invalid = || {
            StoreError::new(
                ErrorKind::InvalidArgument,
                format!("{hex_digits:?} is not 64 lowercase hex digits"),
            )
        };
        if hex_digits.len() != 64 || hex_digits.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut bytes).map_err(|_| invalid())?;
        Ok(Self(bytes))
    }

    /// The digest of a byte slice (for small things and tests; uploads hash as they stream).
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(bytes).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl FromStr for Sha256Digest {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_hex(s.strip_prefix("sha256:").unwrap_or(s))
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_key(input: &str, ok: bool) {
        assert_eq!(Key::parse(input).is_ok(), ok, "{input:?}");
    }

    #[test]
    fn keys_refuse_escapes() {
        for good in ["a", "teams/acme/models/m1/v2.bin", "a-b_c/d e/f@1+2"] {
            check_key(good, true);
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/..",
            "./a",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            "a\\b",
            "..\\x",
            "a/.hidden",
            "a\nb",
        ] {
            check_key(bad, false);
        }
        check_key(&"a".repeat(MAX_KEY_LEN + 1), false);
        for err in [Key::parse("../x").unwrap_err(), Key::parse("/x").unwrap_err()] {
            assert_eq!(err.kind(), ErrorKind::InvalidKey);
        }
    }

    #[test]
    fn prefixes() {
        for good in ["", "teams/", "teams/ac", "teams/acme/blobs/"] {
            assert!(validate_prefix(good).is_ok(), "{good:?}");
        }
        for bad in ["/", "../", "teams//", "teams/../", "a\0"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn blob_keys_round_trip_their_digest() {
        let team = Team::parse("acme").unwrap();
        let digest = Sha256Digest::of(b"hello");
        let key = Key::blob(&team, &digest);
        assert_eq!(
            key.as_str(),
            "teams/acme/blobs/sha256/2c/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(key.content_digest(), Some(digest));
        assert_eq!(Key::parse(key.as_str()).unwrap(), key);
        // A wrong fan-out directory or a name that is not a digest is just a named key.
        let wrong_fan = key.as_str().replace("/2c/", "/2d/");
        assert_eq!(Key::parse(wrong_fan).unwrap().content_digest(), None);
        assert_eq!(Key::parse("teams/acme/blobs/sha256/ab/abc").unwrap().content_digest(), None);
    }

    #[test]
    fn teams_are_one_segment() {
        for good in ["acme", "a", "team-1_x", "0f8e2c9a-5b1d-4e7a-9c3b-2d1e0f9a8b7c"] {
            assert!(Team::parse(good).is_ok(), "{good:?}");
        }
        for bad in ["", "-a", "a/b", "..", "a b", "é", &"a".repeat(65)] {
            assert!(Team::parse(bad).is_err(), "{bad:?}");
        }
    }
}
