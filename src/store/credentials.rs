//! Access credentials, kept out of `Debug` output and logs.
//!
//! The secret key and session token are wrapped in [`Secret`], whose `Debug`
//! and `Display` print a fixed placeholder, so a credentials value can be
//! logged or put in an error by mistake without leaking. Only the signers
//! read the secret, through [`Secret::expose`].

use std::fmt;

/// A string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for signing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One set of credentials: a key id (not secret: it appears in every
/// Authorization header and in server logs), a secret key, and for
/// temporary credentials a session token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl Credentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: Secret::new(secret_access_key),
            session_token: None,
        }
    }

    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(Secret::new(token));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret_or_token() {
        let c = Credentials::new("AKID", "very-secret-key").with_session_token("tok-123");
        let shown = format!("{c:?} {}", c.secret_access_key);
        assert!(shown.contains("AKID"));
        assert!(!shown.contains("very-secret-key"));
        assert!(!shown.contains("tok-123"));
    }
}
