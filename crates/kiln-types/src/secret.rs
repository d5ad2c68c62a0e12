//! [`Secret`]: a string that never shows itself in `Debug` (nor has `Display`), for
//! database URLs with passwords, API tokens and keys held in settings structs.
//!
//! Reading the value takes an explicit [`Secret::expose`], so a `{:?}` of a settings struct,
//! a `tracing` field or a panic message cannot print it by accident.

use std::fmt;

/// A secret string. `Debug` prints `Secret(***)`; there is no `Display` and no `Serialize`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself: call it only where the value is used (a connection, a header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("postgres://kiln:hunter2@db/kiln");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(Secret(***))");
        assert_eq!(secret.expose(), "postgres://kiln:hunter2@db/kiln");
        let parsed: Secret = serde_json::from_str("\"kiln_abc\"").unwrap();
        assert_eq!(parsed.expose(), "kiln_abc");
    }
}
