//! File metadata as object metadata, in the names the s3fs family uses, so
//! a bucket written by bucketfs keeps its permissions under s3fs, ossfs,
//! cosfs and obsfs, and the other way round.
//!
//! * `mode`, `uid`, `gid`: decimal; `mode` is the whole `st_mode`.
//! * `mtime`: decimal seconds since the epoch (with a fraction when the
//!   time has one); written only when the mtime was set explicitly
//!   (`dirty.rs`, subtle case 4).
//! * `xattr`: the `user.*` extended attributes as s3fs stores them: a JSON
//!   object of name to base64 value, percent-encoded as a whole so that it
//!   survives as an HTTP header value.
//! * Any other user metadata found on the object is kept as it is.

use crate::staging::journal::FileMeta;
use crate::store::Metadata;
use base64::Engine;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use std::collections::BTreeMap;

/// The names this module owns; the rest is preserved.
const OWN: [&str; 5] = ["mode", "uid", "gid", "mtime", "xattr"];

/// The object metadata of `meta`.
pub fn to_metadata(meta: &FileMeta) -> Metadata {
    let mut out: Metadata = meta.other.clone();
    out.insert("mode".into(), meta.mode.to_string());
    out.insert("uid".into(), meta.uid.to_string());
    out.insert("gid".into(), meta.gid.to_string());
    if let Some((secs, nanos)) = meta.mtime {
        let text = if nanos == 0 {
            secs.to_string()
        } else {
            format!("{secs}.{nanos:09}")
        };
        out.insert("mtime".into(), text);
    }
    if !meta.xattrs.is_empty() {
        out.insert("xattr".into(), encode_xattrs(&meta.xattrs));
    }
    out
}

/// Metadata found on an object, split into what we own and the rest; the
/// mode, owner and time come from the attributes the caller already has.
pub fn from_metadata(metadata: &Metadata, mode: u32, uid: u32, gid: u32) -> (FileMeta, bool) {
    let has_mtime = metadata.contains_key("mtime");
    let other = metadata
        .iter()
        .filter(|(k, _)| !OWN.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let xattrs = metadata
        .get("xattr")
        .map(|v| decode_xattrs(v))
        .unwrap_or_default();
    (
        FileMeta {
            mode,
            uid,
            gid,
            mtime: None,
            xattrs,
            other,
        },
        has_mtime,
    )
}

/// s3fs's `xattr` header value.
pub fn encode_xattrs(xattrs: &BTreeMap<String, Vec<u8>>) -> String {
    let map: BTreeMap<&str, String> = xattrs
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                base64::engine::general_purpose::STANDARD.encode(v),
            )
        })
        .collect();
    let json = serde_json::to_string(&map).expect("a map of strings serializes");
    utf8_percent_encode(&json, NON_ALPHANUMERIC).to_string()
}

/// The extended attributes of an `xattr` header value; an unreadable value
/// gives none (it came from another tool).
pub fn decode_xattrs(value: &str) -> BTreeMap<String, Vec<u8>> {
    let json = percent_decode_str(value).decode_utf8_lossy();
    let Ok(map) = serde_json::from_str::<BTreeMap<String, String>>(&json) else {
        return BTreeMap::new();
    };
    map.into_iter()
        .filter_map(|(k, v)| {
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .ok()
                .map(|v| (k, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_everything() {
        let meta = FileMeta {
            mode: 0o100640,
            uid: 1000,
            gid: 100,
            mtime: Some((1_700_000_000, 5)),
            xattrs: BTreeMap::from([
                ("user.a".to_string(), b"\x00\xffbin".to_vec()),
                ("user.comment".to_string(), "ünï".as_bytes().to_vec()),
            ]),
            other: BTreeMap::from([("owner-tool".to_string(), "x".to_string())]),
        };
        let md = to_metadata(&meta);
        assert_eq!(md["mode"], "33184");
        assert_eq!(md["mtime"], "1700000000.000000005");
        assert!(md["xattr"].is_ascii() && !md["xattr"].contains('"'));
        let (back, has_mtime) = from_metadata(&md, meta.mode, meta.uid, meta.gid);
        assert!(has_mtime);
        assert_eq!(back.xattrs, meta.xattrs);
        assert_eq!(back.other, meta.other);
    }

    #[test]
    fn s3fs_xattr_values_are_read() {
        // As s3fs writes it: {"user.foo":"YmFy"} percent-encoded.
        let v = "%7B%22user.foo%22%3A%22YmFy%22%7D";
        assert_eq!(
            decode_xattrs(v),
            BTreeMap::from([("user.foo".to_string(), b"bar".to_vec())])
        );
        assert!(decode_xattrs("not json").is_empty());
    }
}
