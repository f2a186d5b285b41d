//! Percent-encoding rules shared by the URL builder and the signers.
//!
//! Each vendor SDK encodes with Python's `quote(s, safe=...)`, whose always-safe
//! set is `A-Za-z0-9-_.~`. The sets below reproduce the two variants we need:
//!
//! 1. [`STRICT`]: only the unreserved characters stay literal (`/` becomes
//!    `%2F`). Used for query names/values and for signers that encode the
//!    whole key as one component (SigV4 query, OSS V4 query, COS).
//! 2. [`PATH`]: like `STRICT` but `/` stays literal. Used for object keys in
//!    URL paths (botocore `quote(key, safe="/~")`, OBS, COS).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// RFC 3986 unreserved characters stay literal, everything else is `%XX`.
pub const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// [`STRICT`] plus a literal `/`, for object keys in paths.
pub const PATH: &AsciiSet = &STRICT.remove(b'/');

/// Percent-encodes every byte outside the unreserved set (uppercase hex).
pub fn strict(s: &str) -> String {
    utf8_percent_encode(s, STRICT).to_string()
}

/// Percent-encodes a key for a URL path, keeping `/` literal.
pub fn path(s: &str) -> String {
    utf8_percent_encode(s, PATH).to_string()
}

/// Decodes `%XX` escapes; invalid UTF-8 is replaced (U+FFFD).
pub fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Decodes `%XX` escapes, or `None` when the bytes are not UTF-8 (a key
/// no path can name, nor a request address exactly).
pub fn decode_exact(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|k| k.into_owned())
}

/// Decodes a form-encoded value, where `+` means a space (the `encoding-type=url`
/// listings of some servers write spaces that way).
pub fn decode_form(s: &str) -> String {
    decode(&s.replace('+', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_and_path_match_python_quote() {
        assert_eq!(strict("a b/c+d=e&f~g%h"), "a%20b%2Fc%2Bd%3De%26f~g%25h");
        assert_eq!(
            path("weird/a+b=c&d~e%f g.txt"),
            "weird/a%2Bb%3Dc%26d~e%25f%20g.txt"
        );
        assert_eq!(path("日本"), "%E6%97%A5%E6%9C%AC");
    }

    #[test]
    fn decoding_handles_plus_only_in_form_mode() {
        assert_eq!(decode("a%2Bb+c%20d"), "a+b+c d");
        assert_eq!(decode_form("a%2Bb+c%20d"), "a+b c d");
    }
}
