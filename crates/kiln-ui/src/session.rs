//! Sign-in sessions and CSRF tokens.
//!
//! Signing in with a Kiln token creates a session: a random 256-bit secret that only the
//! browser holds, in an HttpOnly, SameSite=Strict cookie (Secure when the request came over
//! TLS). The database keeps the secret's sha256 and the token's id, never the token, so
//! neither the cookie nor a database dump can be replayed as an API token, and signing out
//! (or revoking the token) ends the session at once.
//!
//! Every form carries a CSRF token bound to the session: the sha256 of a domain tag and the
//! secret. A page can show it without revealing the secret, and a cross-site form cannot
//! know it. The sign-in form itself (before any session exists) uses a double-submit token:
//! a random nonce in a cookie of its own that the form must repeat.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// The session cookie.
pub const SESSION_COOKIE: &str = "kiln_ui_session";
/// The sign-in form's double-submit cookie.
pub const SIGN_IN_COOKIE: &str = "kiln_ui_sign_in";
/// The form field every POST carries.
pub const CSRF_FIELD: &str = "csrf";
/// How long a session lasts (the cookie and the database row).
pub const SESSION_SECONDS: i64 = 12 * 3600;

/// A session's secret: 64 hex digits. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionSecret(String);

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecret(***)")
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn is_token_shape(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl SessionSecret {
    pub fn generate() -> Self {
        SessionSecret(random_hex())
    }

    /// A cookie's value, if it has a secret's shape.
    pub fn parse(s: &str) -> Option<Self> {
        is_token_shape(s).then(|| SessionSecret(s.to_owned()))
    }

    /// What the database stores and looks the session up by.
    pub fn id_hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }

    /// The CSRF token of this session's forms.
    pub fn csrf_token(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"kiln-ui csrf\0");
        h.update(self.0.as_bytes());
        hex::encode(h.finalize())
    }

    /// The cookie's value: the one place the secret is read.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A fresh sign-in nonce (the double-submit token of the sign-in form).
pub fn sign_in_nonce() -> String {
    random_hex()
}

/// True when `given` is `expected`, compared in constant time (and never for an empty or
/// malformed token).
pub fn tokens_match(expected: &str, given: &str) -> bool {
    if !is_token_shape(expected) || expected.len() != given.len() {
        return false;
    }
    expected.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// A `Set-Cookie` value: `Path=/ui`, HttpOnly, SameSite=Strict, `Secure` over TLS;
/// `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> String {
    let mut out =
        format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}", max_age.max(0));
    if secure {
        out.push_str("; Secure");
    }
    out
}

/// The value of cookie `name` in a `Cookie` request header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').map(str::trim).find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim())
    })
}

/// Where to go after signing in: a path inside the UI, or the UI's start page (never
/// another site: `//evil` and absolute URLs are refused).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ui")
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/ui".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_their_debug_hides_them() {
        let a = SessionSecret::generate();
        let b = SessionSecret::generate();
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "SessionSecret(***)");
        assert!(!format!("{a:?}").contains(a.expose()));
        assert_eq!(SessionSecret::parse(a.expose()), Some(a.clone()));
        assert_eq!(a.id_hash().len(), 32);
        assert_ne!(hex::encode(a.id_hash()), a.expose(), "the database never sees the secret");
    }

    #[test]
    fn malformed_cookies_are_no_session() {
        for bad in ["", "abc", &"g".repeat(64), &"A".repeat(64), &"0".repeat(63)] {
            assert_eq!(SessionSecret::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn csrf_token_is_bound_to_its_session() {
        let a = SessionSecret::generate();
        let b = SessionSecret::generate();
        assert_eq!(a.csrf_token(), a.csrf_token());
        assert_ne!(a.csrf_token(), b.csrf_token());
        assert_ne!(a.csrf_token(), a.expose(), "the page's token is not the secret");
        assert!(tokens_match(&a.csrf_token(), &a.csrf_token()));
        assert!(!tokens_match(&a.csrf_token(), &b.csrf_token()));
        assert!(!tokens_match(&a.csrf_token(), ""));
        assert!(!tokens_match(&a.csrf_token(), &a.csrf_token()[..63]));
        assert!(!tokens_match("", ""), "an empty expected token matches nothing");
    }

    #[test]
    fn sign_in_nonce_is_double_submitted() {
        let nonce = sign_in_nonce();
        assert!(tokens_match(&nonce, &nonce));
        assert!(!tokens_match(&nonce, &sign_in_nonce()));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_tls() {
        let plain = set_cookie(SESSION_COOKIE, "v", SESSION_SECONDS, false);
        assert_eq!(plain, "kiln_ui_session=v; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=43200");
        let tls = set_cookie(SESSION_COOKIE, "v", 0, true);
        assert!(tls.ends_with("Max-Age=0; Secure"), "{tls}");
    }

    #[test]
    fn cookie_header_parsing() {
        let h = "a=1; kiln_ui_session=abc ; other=x=y";
        assert_eq!(cookie(h, "kiln_ui_session"), Some("abc"));
        assert_eq!(cookie(h, "other"), Some("x=y"));
        assert_eq!(cookie(h, "missing"), None);
    }

    #[test]
    fn next_stays_inside_the_ui() {
        assert_eq!(safe_next(Some("/ui/jobs?state=running")), "/ui/jobs?state=running");
        for bad in ["https://evil.example/ui", "//evil.example", "/v1/jobs", "/ui\\..", "/ui\r\nx"]
        {
            assert_eq!(safe_next(Some(bad)), "/ui", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/ui");
    }
}
