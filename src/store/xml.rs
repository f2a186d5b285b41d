//! XML response bodies: listings, multipart results, copy results, batch
//! delete results, bucket info and error bodies, parsed with quick-xml.
//!
//! Real servers (and the vendors' own documentation samples) are untidy, so
//! the parser is lenient where it costs nothing:
//! 1. Namespaces are ignored (`xmlns="http://s3.amazonaws.com/doc/2006-03-01/"`
//!    or none at all).
//! 2. Anything before the root element is skipped, including a malformed
//!    declaration such as `<? xml version="1.0"? >` (OSS docs, UploadPartCopy).
//! 3. Booleans accept stray characters (`<IsTruncated>>false` in OSS docs);
//!    numbers and dates are trimmed.
//! 4. ETags lose their quotes.
//! 5. Under `encoding-type=url`, keys and prefixes are percent-decoded; whether
//!    `+` means a space is the caller's choice (S3 writes spaces as `+`, OSS
//!    does not; see `sdk-quirks.md`).

use super::error::{ServiceDetails, StoreError, StoreResult};
use super::types::{
    BucketInfo, CompletedPart, DeleteError, DeleteObjectsResult, ListContinuation, ListEntry,
    ListPage, PartSummary, UploadPage, UploadSummary,
};
use serde::Deserialize;
use std::time::SystemTime;

/// The body from its root element on.
fn from_root(body: &str) -> &str {
    let mut rest = body;
    while let Some(i) = rest.find('<') {
        let after = &rest[i + 1..];
        if after.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return &rest[i..];
        }
        rest = after;
    }
    ""
}

/// The name of the root element, e.g. `Error` or `CopyObjectResult`.
pub fn root_element(body: &str) -> Option<&str> {
    let root = from_root(body).strip_prefix('<')?;
    let end = root.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
    Some(&root[..end])
}

fn parse<'de, T: Deserialize<'de>>(body: &'de str, what: &str) -> StoreResult<T> {
    quick_xml::de::from_str(from_root(body))
        .map_err(|e| StoreError::InvalidResponse(format!("{what}: {e}")))
}

fn parse_bool(s: &str) -> bool {
    s.to_ascii_lowercase().contains("true")
}

fn parse_u64(s: &str, what: &str) -> StoreResult<u64> {
    s.trim()
        .parse()
        .map_err(|_| StoreError::InvalidResponse(format!("{what}: not a number: {s:?}")))
}

fn parse_u32(s: &str, what: &str) -> StoreResult<u32> {
    u32::try_from(parse_u64(s, what)?)
        .map_err(|_| StoreError::InvalidResponse(format!("{what}: out of range: {s:?}")))
}

/// Strips the quotes around an ETag value (`"abc"` -> `abc`).
pub fn unquote_etag(s: &str) -> String {
    s.trim().trim_matches('"').to_string()
}

/// Parses an ISO-8601 timestamp (`2020-05-18T05:45:43.000Z`).
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some(SystemTime::from(t))
}

/// How listing keys are decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyEncoding {
    /// Keys are sent as they are.
    Plain,
    /// `encoding-type=url`: `%XX` escapes; `plus_is_space` decodes `+` as a space.
    Url { plus_is_space: bool },
}

impl KeyEncoding {
    /// The key, `None` if its bytes are not UTF-8.
    fn decode_exact(self, s: &str) -> Option<String> {
        match self {
            KeyEncoding::Plain => Some(s.to_string()),
            KeyEncoding::Url { plus_is_space } => {
                let s = if plus_is_space {
                    s.replace('+', " ")
                } else {
                    s.to_string()
                };
                super::encode::decode_exact(&s)
            }
        }
    }

    /// The key, bytes that are not UTF-8 replaced.
    fn decode(self, s: &str) -> String {
        match self {
            KeyEncoding::Plain => s.to_string(),
            KeyEncoding::Url {
                plus_is_space: true,
            } => super::encode::decode_form(s),
            KeyEncoding::Url {
                plus_is_space: false,
            } => super::encode::decode(s),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct ListBucketResultXml {
    is_truncated: String,
    encoding_type: Option<String>,
    next_continuation_token: Option<String>,
    next_marker: Option<String>,
    contents: Vec<ContentsXml>,
    common_prefixes: Vec<CommonPrefixXml>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct ContentsXml {
    key: String,
    last_modified: String,
    #[serde(rename = "ETag")]
    etag: String,
    size: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct CommonPrefixXml {
    prefix: String,
}

/// Parses a ListObjectsV2 (`v2 = true`) or V1 page. `encoding` says how to
/// decode keys when the response declares `<EncodingType>url`.
pub fn parse_list(body: &str, v2: bool, plus_is_space: bool) -> StoreResult<ListPage> {
    let raw: ListBucketResultXml = parse(body, "ListBucketResult")?;
    let encoding = match raw.encoding_type.as_deref().map(str::trim) {
        Some(e) if e.eq_ignore_ascii_case("url") => KeyEncoding::Url { plus_is_space },
        _ => KeyEncoding::Plain,
    };
    let mut undecodable = Vec::new();
    // The last key or prefix as sent, for a V1 marker (below).
    let mut last_seen: Option<String> = None;
    // A key or prefix decoded, or `None` (then reported) if it is not UTF-8.
    let mut decode = |sent: String| {
        let key = encoding.decode_exact(&sent);
        last_seen = last_seen
            .take()
            .max(Some(key.clone().unwrap_or_else(|| encoding.decode(&sent))));
        if key.is_none() {
            undecodable.push(sent);
        }
        key
    };
    let mut objects = Vec::with_capacity(raw.contents.len());
    for c in raw.contents {
        let Some(key) = decode(c.key) else {
            continue;
        };
        objects.push(ListEntry {
            key,
            size: parse_u64(&c.size, "Size")?,
            etag: unquote_etag(&c.etag),
            last_modified: parse_iso8601(&c.last_modified),
        });
    }
    let common_prefixes: Vec<String> = raw
        .common_prefixes
        .into_iter()
        .filter_map(|p| decode(p.prefix))
        .collect();
    let next = if !parse_bool(&raw.is_truncated) {
        None
    } else if v2 {
        let token = raw.next_continuation_token.ok_or_else(|| {
            StoreError::InvalidResponse("truncated V2 listing without NextContinuationToken".into())
        })?;
        Some(ListContinuation::Token(token))
    } else {
        // V1 servers may omit NextMarker when no delimiter was given; the
        // last key or prefix returned is then the marker.
        let marker = raw
            .next_marker
            .map(|m| encoding.decode(&m))
            .filter(|m| !m.is_empty())
            .or(last_seen)
            .ok_or_else(|| {
                StoreError::InvalidResponse(
                    "truncated V1 listing with nothing to resume from".into(),
                )
            })?;
        Some(ListContinuation::Marker(marker))
    };
    Ok(ListPage {
        objects,
        common_prefixes,
        next,
        undecodable,
    })
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct ErrorXml {
    code: String,
    message: String,
    request_id: String,
}

/// Parses an `<Error>` body; a body that is not one gives only the status.
pub fn parse_error(status: u16, body: &str, request_id_header: Option<&str>) -> ServiceDetails {
    let parsed: ErrorXml = if root_element(body) == Some("Error") {
        parse(body, "Error").unwrap_or_default()
    } else {
        ErrorXml::default()
    };
    let request_id = if parsed.request_id.trim().is_empty() {
        request_id_header.unwrap_or_default().to_string()
    } else {
        parsed.request_id.trim().to_string()
    };
    ServiceDetails {
        status,
        code: parsed.code.trim().to_string(),
        message: parsed.message.trim().to_string(),
        request_id,
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct InitiateXml {
    upload_id: String,
}

pub fn parse_initiate_multipart(body: &str) -> StoreResult<String> {
    let raw: InitiateXml = parse(body, "InitiateMultipartUploadResult")?;
    let id = raw.upload_id.trim().to_string();
    if id.is_empty() {
        return Err(StoreError::InvalidResponse(
            "no UploadId in InitiateMultipartUploadResult".into(),
        ));
    }
    Ok(id)
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct EtagXml {
    #[serde(rename = "ETag")]
    etag: String,
}

/// The ETag of a CopyObjectResult, CopyPartResult or
/// CompleteMultipartUploadResult body.
pub fn parse_result_etag(body: &str, what: &str) -> StoreResult<String> {
    let raw: EtagXml = parse(body, what)?;
    let etag = unquote_etag(&raw.etag);
    if etag.is_empty() {
        return Err(StoreError::InvalidResponse(format!("no ETag in {what}")));
    }
    Ok(etag)
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct ListPartsXml {
    is_truncated: String,
    next_part_number_marker: String,
    part: Vec<PartXml>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct PartXml {
    part_number: String,
    #[serde(rename = "ETag")]
    etag: String,
    size: String,
}

/// One page of ListParts and, when truncated, the part-number marker to go on from.
pub fn parse_list_parts(body: &str) -> StoreResult<(Vec<PartSummary>, Option<u32>)> {
    let raw: ListPartsXml = parse(body, "ListPartsResult")?;
    let mut parts = Vec::with_capacity(raw.part.len());
    for p in raw.part {
        let part_number = parse_u32(&p.part_number, "PartNumber")?;
        parts.push(PartSummary {
            part_number,
            etag: unquote_etag(&p.etag),
            size: parse_u64(&p.size, "Size")?,
        });
    }
    let next = if parse_bool(&raw.is_truncated) {
        let marker = parse_u32(&raw.next_part_number_marker, "NextPartNumberMarker")?;
        Some(marker)
    } else {
        None
    };
    Ok((parts, next))
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct ListUploadsXml {
    is_truncated: String,
    next_key_marker: String,
    next_upload_id_marker: String,
    upload: Vec<UploadXml>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct UploadXml {
    key: String,
    upload_id: String,
    initiated: String,
}

/// One page of ListMultipartUploads.
pub fn parse_list_uploads(body: &str) -> StoreResult<UploadPage> {
    let raw: ListUploadsXml = parse(body, "ListMultipartUploadsResult")?;
    let uploads = raw
        .upload
        .into_iter()
        .map(|u| UploadSummary {
            initiated: parse_iso8601(&u.initiated),
            key: u.key,
            upload_id: u.upload_id,
        })
        .collect();
    let next =
        parse_bool(&raw.is_truncated).then_some((raw.next_key_marker, raw.next_upload_id_marker));
    if next.as_ref().is_some_and(|(k, _)| k.is_empty()) {
        return Err(StoreError::InvalidResponse(
            "ListMultipartUploads is truncated but names no NextKeyMarker".into(),
        ));
    }
    Ok(UploadPage { uploads, next })
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct DeleteResultXml {
    deleted: Vec<DeletedXml>,
    error: Vec<DeleteErrorXml>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct DeletedXml {
    key: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct DeleteErrorXml {
    key: String,
    code: String,
    message: String,
}

pub fn parse_delete_result(body: &str) -> StoreResult<DeleteObjectsResult> {
    let raw: DeleteResultXml = parse(body, "DeleteResult")?;
    Ok(DeleteObjectsResult {
        deleted: raw.deleted.into_iter().map(|d| d.key).collect(),
        errors: raw
            .error
            .into_iter()
            .map(|e| DeleteError {
                key: e.key,
                code: e.code,
                message: e.message,
            })
            .collect(),
    })
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct BucketInfoXml {
    bucket: BucketXml,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct BucketXml {
    location: String,
    hierarchical_namespace: String,
}

/// OSS GetBucketInfo: region and hierarchical-namespace state.
pub fn parse_oss_bucket_info(body: &str) -> StoreResult<BucketInfo> {
    let raw: BucketInfoXml = parse(body, "BucketInfo")?;
    let location = raw.bucket.location.trim();
    Ok(BucketInfo {
        region: Some(location.trim_start_matches("oss-").to_string()).filter(|r| !r.is_empty()),
        obs_pfs: false,
        oss_hierarchical_namespace: raw
            .bucket
            .hierarchical_namespace
            .trim()
            .eq_ignore_ascii_case("enabled"),
    })
}

/// Escapes text for an XML element body.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// The body of DeleteObjects (quiet mode off, so every deletion is reported).
pub fn delete_objects_body(keys: &[String]) -> String {
    let mut body =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete><Quiet>false</Quiet>");
    for key in keys {
        body.push_str("<Object><Key>");
        body.push_str(&escape(key));
        body.push_str("</Key></Object>");
    }
    body.push_str("</Delete>");
    body
}

/// The body of CompleteMultipartUpload.
pub fn complete_multipart_body(parts: &[CompletedPart]) -> String {
    let mut body = String::from("<CompleteMultipartUpload>");
    for p in parts {
        body.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>\"{}\"</ETag></Part>",
            p.part_number,
            escape(&p.etag)
        ));
    }
    body.push_str("</CompleteMultipartUpload>");
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every parser of server answers, on `body`: none may panic, whatever
    /// it is given.
    fn parse_with_all(body: &str) {
        let _ = root_element(body);
        let _ = parse_list(body, true, false);
        let _ = parse_list(body, false, true);
        let _ = parse_error(500, body, Some("id"));
        let _ = parse_initiate_multipart(body);
        let _ = parse_result_etag(body, "CopyObjectResult");
        let _ = parse_list_parts(body);
        let _ = parse_list_uploads(body);
        let _ = parse_delete_result(body);
        let _ = parse_oss_bucket_info(body);
    }

    /// Well-formed answers of each kind, to be cut and spliced.
    const SAMPLES: [&str; 4] = [
        OSS_LIST_V2_TRUNCATED,
        "<ListPartsResult><IsTruncated>true</IsTruncated><NextPartNumberMarker>2</NextPartNumberMarker><Part><PartNumber>2</PartNumber><ETag>\"e\"</ETag><Size>5</Size></Part></ListPartsResult>",
        "<ListMultipartUploadsResult><IsTruncated>true</IsTruncated><NextKeyMarker>k</NextKeyMarker><Upload><Key>k</Key><UploadId>u</UploadId><Initiated>2026-01-01T00:00:00.000Z</Initiated></Upload></ListMultipartUploadsResult>",
        "<Error><Code>SlowDown</Code><Message>m</Message><RequestId>r</RequestId></Error>",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn no_parser_panics_on_any_text(body in "\\PC{0,300}") {
            parse_with_all(&body);
        }

        /// Answers cut short (a connection lost mid-body) or with bytes
        /// spliced in (a broken proxy).
        #[test]
        fn no_parser_panics_on_cut_or_spliced_answers(
            sample in prop::sample::select(SAMPLES.to_vec()),
            at in any::<prop::sample::Index>(),
            junk in "[<>/&;#\"'=a-zA-Z0-9% \\-]{0,16}",
        ) {
            let mut cut = at.index(sample.len() + 1);
            while !sample.is_char_boundary(cut) {
                cut -= 1;
            }
            parse_with_all(&sample[..cut]);
            parse_with_all(&format!("{}{junk}{}", &sample[..cut], &sample[cut..]));
        }

        /// Any key the server sends url-encoded comes back exactly, in
        /// both `+` conventions.
        #[test]
        fn url_encoded_keys_come_back_exactly(key in "\\PC{1,60}", plus_is_space in any::<bool>()) {
            let sent = if plus_is_space {
                super::super::encode::strict(&key).replace("%20", "+")
            } else {
                super::super::encode::strict(&key)
            };
            let body = format!(
                "<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated><Contents><Key>{sent}</Key><Size>3</Size></Contents><CommonPrefixes><Prefix>{sent}/</Prefix></CommonPrefixes></ListBucketResult>"
            );
            let page = parse_list(&body, true, plus_is_space).unwrap();
            prop_assert_eq!(&page.objects[0].key, &key);
            prop_assert_eq!(&page.common_prefixes[0], &format!("{key}/"));
        }
    }

    // OSS API reference, 7.1.4 GetBucketV2 (ListObjectsV2), sample response to
    // "StartAfter, MaxKeys and FetchOwner" (first two entries kept).
    const OSS_LIST_V2_TRUNCATED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://doc.oss-cn-hangzhou.aliyuncs.com">
  <Name>examplebucket</Name>
  <Prefix></Prefix>
  <StartAfter>b</StartAfter>
  <MaxKeys>3</MaxKeys>
  <EncodingType>url</EncodingType>
  <IsTruncated>true</IsTruncated>
  <NextContinuationToken>CgJiYw--</NextContinuationToken>
  <Contents>
    <Key>b/c</Key>
    <LastModified>2020-05-18T05:45:54.000Z</LastModified>
    <ETag>"35A27C2B9EAEEB6F48FD7FB5861D****"</ETag>
    <Size>25</Size>
    <StorageClass>STANDARD</StorageClass>
    <Owner>
      <ID>1686240967192623</ID>
      <DisplayName>1686240967192623</DisplayName>
    </Owner>
  </Contents>
  <Contents>
    <Key>ba</Key>
    <LastModified>2020-05-18T11:17:58.000Z</LastModified>
    <ETag>"35A27C2B9EAEEB6F48FD7FB5861D****"</ETag>
    <Size>25</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
</ListBucketResult>"#;

    // Same section, the "Delimiter" sample, with its `<IsTruncated>>false` typo.
    const OSS_LIST_V2_PREFIXES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://doc.oss-cn-hangzhou.aliyuncs.com">
  <Name>examplebucket</Name>
  <Prefix>a/</Prefix>
  <MaxKeys>100</MaxKeys>
  <Delimiter>/</Delimiter>
  <EncodingType>url</EncodingType>
  <IsTruncated>>false</IsTruncated>
  <Contents>
    <Key>a/b</Key>
    <LastModified>2020-05-18T05:45:47.000Z</LastModified>
    <ETag>"35A27C2B9EAE6B6F48FD7FB5861D****"</ETag>
    <Size>25</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
  <CommonPrefixes>
    <Prefix>a/b/</Prefix>
  </CommonPrefixes>
  <KeyCount>2</KeyCount>
</ListBucketResult>"#;

    // OSS API reference, 7.1.3 GetBucket (ListObjects), "marker" sample: V1,
    // no namespace, truncated with NextMarker.
    const OSS_LIST_V1_MARKER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult>
  <Name>examplebucket</Name>
  <Prefix></Prefix>
  <Marker>test1.txt</Marker>
  <MaxKeys>2</MaxKeys>
  <Delimiter></Delimiter>
  <EncodingType>url</EncodingType>
  <IsTruncated>true</IsTruncated>
  <NextMarker>test100.txt</NextMarker>
  <Contents>
    <Key>test10.txt</Key>
    <LastModified>2020-05-26T07:50:18.000Z</LastModified>
    <ETag>"C4CA4238A0B923820DCC509A6F75*****"</ETag>
    <Type>Normal</Type>
    <Size>1</Size>
    <StorageClass>Standard</StorageClass>
  </Contents>
</ListBucketResult>"#;

    // An S3 ListObjectsV2 page with URL-encoded keys as AWS writes them: a
    // space as `+`, a plus as `%2B`, UTF-8 as `%XX`.
    const S3_LIST_V2_ENCODED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>photos%2F</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>%2F</Delimiter><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated><Contents><Key>photos%2Fsummer+trip%2Fa%2Bb.jpg</Key><LastModified>2024-03-05T07:24:19.000Z</LastModified><ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag><Size>1024</Size><StorageClass>STANDARD</StorageClass></Contents><CommonPrefixes><Prefix>photos%2F%E6%97%A5%E6%9C%AC%2F</Prefix></CommonPrefixes></ListBucketResult>"#;

    #[test]
    fn list_v2_pages_give_entries_token_and_prefixes() {
        let page = parse_list(OSS_LIST_V2_TRUNCATED, true, false).unwrap();
        assert_eq!(page.objects.len(), 2);
        assert_eq!(page.objects[0].key, "b/c");
        assert_eq!(page.objects[0].size, 25);
        assert_eq!(page.objects[0].etag, "35A27C2B9EAEEB6F48FD7FB5861D****");
        assert!(page.objects[0].last_modified.is_some());
        assert_eq!(page.next, Some(ListContinuation::Token("CgJiYw--".into())));

        let page = parse_list(OSS_LIST_V2_PREFIXES, true, false).unwrap();
        assert_eq!(page.common_prefixes, vec!["a/b/".to_string()]);
        assert_eq!(page.next, None, "`>false` is not truncated");
    }

    #[test]
    fn list_v1_page_resumes_from_next_marker() {
        let page = parse_list(OSS_LIST_V1_MARKER, false, false).unwrap();
        assert_eq!(
            page.next,
            Some(ListContinuation::Marker("test100.txt".into()))
        );
        // Without NextMarker the last key is the marker.
        let without = OSS_LIST_V1_MARKER.replace("<NextMarker>test100.txt</NextMarker>", "");
        let page = parse_list(&without, false, false).unwrap();
        assert_eq!(
            page.next,
            Some(ListContinuation::Marker("test10.txt".into()))
        );
    }

    #[test]
    fn url_encoded_keys_are_decoded_per_dialect() {
        let page = parse_list(S3_LIST_V2_ENCODED, true, true).unwrap();
        assert_eq!(page.objects[0].key, "photos/summer trip/a+b.jpg");
        assert_eq!(page.objects[0].etag, "9b2cf535f27731c974343645a3985328");
        assert_eq!(page.common_prefixes, vec!["photos/日本/".to_string()]);
        // A server that does not use `+` for spaces keeps a literal plus.
        let page = parse_list(S3_LIST_V2_ENCODED, true, false).unwrap();
        assert_eq!(page.objects[0].key, "photos/summer+trip/a+b.jpg");
        // Without <EncodingType> keys are taken as they are.
        let plain = S3_LIST_V2_ENCODED.replace("<EncodingType>url</EncodingType>", "");
        let page = parse_list(&plain, true, true).unwrap();
        assert_eq!(page.objects[0].key, "photos%2Fsummer+trip%2Fa%2Bb.jpg");
    }

    #[test]
    fn truncated_v2_without_token_is_an_error() {
        let broken = OSS_LIST_V2_TRUNCATED.replace(
            "<NextContinuationToken>CgJiYw--</NextContinuationToken>",
            "",
        );
        assert!(matches!(
            parse_list(&broken, true, false),
            Err(StoreError::InvalidResponse(_))
        ));
        assert!(
            parse_list(
                "<ListBucketResult><Contents><Size>x</Size></Contents></ListBucketResult>",
                true,
                false
            )
            .is_err()
        );
    }

    #[test]
    fn error_bodies_give_code_message_and_request_id() {
        // OSS API reference, DeleteBucket sample error.
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error>
  <Code>NoSuchBucket</Code>
  <Message>The specified bucket does not exist.</Message>
  <RequestId>568D547F31243C673BA1****</RequestId>
  <HostId>nosuchbucket.oss.aliyuncs.com</HostId>
  <BucketName>nosuchbucket</BucketName>
</Error>"#;
        let d = parse_error(404, body, Some("header-id"));
        assert_eq!(d.code, "NoSuchBucket");
        assert_eq!(d.message, "The specified bucket does not exist.");
        assert_eq!(d.request_id, "568D547F31243C673BA1****");
        // HEAD responses have no body: the header's request ID is used.
        let d = parse_error(403, "", Some("5C3D9175B6FC201293AD"));
        assert_eq!(
            (d.code.as_str(), d.request_id.as_str()),
            ("", "5C3D9175B6FC201293AD")
        );
        // A non-XML body (a proxy's HTML page) is not mistaken for an error code.
        let d = parse_error(502, "<html><body>Bad gateway</body></html>", None);
        assert_eq!(d.code, "");
    }

    #[test]
    fn multipart_and_copy_results() {
        // OSS API reference, 8.3.1 InitiateMultipartUpload sample.
        let init = r#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://doc.oss-cn-hangzhou.aliyuncs.com">
    <Bucket>oss-example</Bucket>
    <Key>multipart.data</Key>
    <UploadId>0004B9894A22E5B1888A1E29F823****</UploadId>
</InitiateMultipartUploadResult>"#;
        assert_eq!(
            parse_initiate_multipart(init).unwrap(),
            "0004B9894A22E5B1888A1E29F823****"
        );

        // 8.3.5 CompleteMultipartUpload sample.
        let complete = r#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUploadResult xmlns="http://doc.oss-cn-hangzhou.aliyuncs.com">
  <EncodingType>url</EncodingType>
  <Location>http://oss-example.oss-cn-hangzhou.aliyuncs.com /multipart.data</Location>
  <Bucket>oss-example</Bucket>
  <Key>multipart.data</Key>
  <ETag>"B864DB6A936D376F9F8D3ED3BBE540***"</ETag>
</CompleteMultipartUploadResult>"#;
        assert_eq!(
            root_element(complete),
            Some("CompleteMultipartUploadResult")
        );
        assert_eq!(
            parse_result_etag(complete, "CompleteMultipartUploadResult").unwrap(),
            "B864DB6A936D376F9F8D3ED3BBE540***"
        );

        // 8.3.3 UploadPartCopy sample, malformed declaration and a trailing space.
        let copy_part = r#"<? xml version="1.0" encoding="UTF-8"? >
<CopyPartResult xmlns="http://doc.oss-cn-hangzhou.aliyuncs.com">
  <LastModified>2014-07-17T06:27:54.000Z </LastModified>
  <ETag>"5B3C1A2E053D763E1B002CC607C5****"</ETag>
</CopyPartResult>"#;
        assert_eq!(root_element(copy_part), Some("CopyPartResult"));
        assert_eq!(
            parse_result_etag(copy_part, "CopyPartResult").unwrap(),
            "5B3C1A2E053D763E1B002CC607C5****"
        );

        // A 200 response that carries an error (CopyObject/Complete) is seen as one.
        let late_error = "<?xml version=\"1.0\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message><RequestId>R1</RequestId></Error>";
        assert_eq!(root_element(late_error), Some("Error"));
        assert!(
            parse_result_etag("<CopyObjectResult></CopyObjectResult>", "CopyObjectResult").is_err()
        );
    }

    #[test]
    fn keys_that_are_not_utf8_are_left_out_and_reported() {
        let body = r#"<ListBucketResult><EncodingType>url</EncodingType>
<IsTruncated>true</IsTruncated>
<Contents><Key>ok%20key</Key><Size>1</Size></Contents>
<Contents><Key>zz%FFbad</Key><Size>2</Size></Contents>
<CommonPrefixes><Prefix>p%C3/</Prefix></CommonPrefixes>
<CommonPrefixes><Prefix>dir/</Prefix></CommonPrefixes>
</ListBucketResult>"#;
        let page = parse_list(body, false, false).unwrap();
        let keys: Vec<_> = page.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["ok key"]);
        assert_eq!(page.common_prefixes, ["dir/"]);
        assert_eq!(page.undecodable, ["zz%FFbad", "p%C3/"]);
        // V1 without NextMarker: the listing goes on after the last key
        // sent, even one left out, so it cannot loop.
        assert_eq!(
            page.next,
            Some(ListContinuation::Marker("zz\u{FFFD}bad".into()))
        );
    }

    #[test]
    fn list_multipart_uploads_pages() {
        // OSS API reference, 8.3.6 ListMultipartUploads sample (its
        // `<IsTruncated>>false` kept as printed; first two uploads).
        let page = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://doc.oss-cn-hangzhou.aliyuncs.com">
  <Bucket>oss-example</Bucket>
  <KeyMarker></KeyMarker>
  <UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>oss.avi</NextKeyMarker>
  <NextUploadIdMarker>0004B999EF518A1FE585B0C9360DC4C8</NextUploadIdMarker>
  <Delimiter></Delimiter>
  <Prefix></Prefix>
  <MaxUploads>1000</MaxUploads>
  <IsTruncated>>false</IsTruncated>
  <Upload>
    <Key>multipart.data</Key>
    <UploadId>0004B999EF518A1FE585B0C9360DC4C8</UploadId>
    <Initiated>2012-02-23T04:18:23.000Z</Initiated>
  </Upload>
  <Upload>
    <Key>oss.avi</Key>
    <UploadId>0004B999B8E707874FC2D692FA5D7****</UploadId>
    <Initiated>2012-02-23T06:14:27.000Z</Initiated>
  </Upload>
</ListMultipartUploadsResult>"#;
        let parsed = parse_list_uploads(page).unwrap();
        assert_eq!(parsed.next, None);
        assert_eq!(parsed.uploads.len(), 2);
        assert_eq!(parsed.uploads[1].key, "oss.avi");
        assert_eq!(
            parsed.uploads[1].upload_id,
            "0004B999B8E707874FC2D692FA5D7****"
        );
        let at = parsed.uploads[0].initiated.unwrap();
        let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_329_970_703, "2012-02-23T04:18:23Z");
        let truncated = parse_list_uploads(&page.replace(">false", "true")).unwrap();
        assert_eq!(
            truncated.next,
            Some(("oss.avi".into(), "0004B999EF518A1FE585B0C9360DC4C8".into()))
        );
        let no_marker = page
            .replace(">false", "true")
            .replace("<NextKeyMarker>oss.avi</NextKeyMarker>", "");
        assert!(parse_list_uploads(&no_marker).is_err());
    }

    #[test]
    fn list_parts_and_delete_results() {
        // OSS API reference, 8.3.7 ListParts sample.
        let parts = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListPartsResult xmlns="http://doc.oss-cn-hangzhou.aliyuncs.com">
  <Bucket>multipart_upload</Bucket>
  <Key>multipart.data</Key>
  <UploadId>0004B999EF5A239BB9138C6227D6****</UploadId>
  <NextPartNumberMarker>5</NextPartNumberMarker>
  <MaxParts>1000</MaxParts>
  <IsTruncated>>false</IsTruncated>
  <Part>
    <PartNumber>1</PartNumber>
    <LastModified>2012-02-23T07:01:34.000Z</LastModified>
    <ETag>"3349DC700140D7F86A0784842780****"</ETag>
    <Size>6291456</Size>
  </Part>
  <Part>
    <PartNumber>5</PartNumber>
    <LastModified>2012-02-23T07:02:03.000Z</LastModified>
    <ETag>"7265F4D211B56873A381D321F586****"</ETag>
    <Size>1024</Size>
  </Part>
</ListPartsResult>"#;
        let (list, next) = parse_list_parts(parts).unwrap();
        assert_eq!(next, None);
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[1],
            PartSummary {
                part_number: 5,
                etag: "7265F4D211B56873A381D321F586****".into(),
                size: 1024
            }
        );
        let truncated = parts.replace(">false", "true");
        assert_eq!(parse_list_parts(&truncated).unwrap().1, Some(5));

        // 8.1.6 DeleteMultipleObjects sample, plus an S3-style per-key error.
        let deleted = r#"<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://doc.oss-cn-hangzhou.aliyuncs.com">
  <Deleted>
    <Key>multipart.data</Key>
  </Deleted>
  <Deleted>
    <Key>test.jpg</Key>
  </Deleted>
  <Error><Key>locked.jpg</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>
</DeleteResult>"#;
        let r = parse_delete_result(deleted).unwrap();
        assert_eq!(
            r.deleted,
            vec!["multipart.data".to_string(), "test.jpg".to_string()]
        );
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].code, "AccessDenied");
    }

    #[test]
    fn oss_bucket_info_reports_hierarchical_namespace() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<BucketInfo>
  <Bucket>
    <CreationDate>2013-07-31T10:56:21.000Z</CreationDate>
    <ExtranetEndpoint>oss-cn-hangzhou.aliyuncs.com</ExtranetEndpoint>
    <Location>oss-cn-hangzhou</Location>
    <Name>oss-example</Name>
    <HierarchicalNamespace>Enabled</HierarchicalNamespace>
  </Bucket>
</BucketInfo>"#;
        let info = parse_oss_bucket_info(body).unwrap();
        assert!(info.oss_hierarchical_namespace);
        assert_eq!(info.region.as_deref(), Some("cn-hangzhou"));
        let plain = parse_oss_bucket_info(
            "<BucketInfo><Bucket><Location>oss-cn-beijing</Location></Bucket></BucketInfo>",
        )
        .unwrap();
        assert!(!plain.oss_hierarchical_namespace);
    }

    #[test]
    fn request_bodies_escape_keys() {
        let body = delete_objects_body(&["a&b<c>.txt".to_string()]);
        assert!(body.contains("<Key>a&amp;b&lt;c&gt;.txt</Key>"), "{body}");
        let body = complete_multipart_body(&[CompletedPart {
            part_number: 2,
            etag: "abc".into(),
        }]);
        assert!(body.contains("<PartNumber>2</PartNumber><ETag>\"abc\"</ETag>"));
    }
}
