//! The HMAC-SHA1 family: S3 SigV2, OSS V1, OBS native and OBS AWS-V2.
//!
//! All four sign
//! `VERB\nContent-MD5\nContent-Type\nDate\n` + prefixed headers + resource
//! and differ only in data, held in a [`Scheme`]:
//! 1. the header prefix that is signed (`x-amz-`, `x-oss-`, `x-obs-`);
//! 2. how header values are cleaned (SigV2 strips them, OSS keeps them as is,
//!    OBS strips only `*-meta-*` values);
//! 3. how the key enters the resource (OSS: raw UTF-8; the others:
//!    `quote(key, safe="/~")`);
//! 4. which query parameters are sub-resources, and whether an empty value is
//!    written bare (`?append&position=0` for OSS although `append=` was sent).

use super::{RequestParts, hmac_sha1};
use crate::store::credentials::Credentials;
use crate::store::encode;
use base64::Engine;

/// How prefixed header values are cleaned before signing.
#[derive(Clone, Copy)]
enum ValueTrim {
    /// Leading/trailing whitespace removed (botocore `.strip()`).
    All,
    /// Values signed exactly as sent (oss2).
    None,
    /// Only `*-meta-*` values stripped (esdk-obs-python).
    MetaOnly,
}

pub(super) struct Scheme {
    auth_prefix: &'static str,
    header_prefix: &'static str,
    trim: ValueTrim,
    raw_key: bool,
    sub_resources: &'static [&'static str],
    /// Parameters starting with the header prefix are sub-resources too (OBS).
    prefixed_params_signed: bool,
    /// Sub-resource names are compared lower-cased (OBS).
    case_insensitive_names: bool,
    /// `name=` (empty value) is signed as bare `name` (OSS, OBS).
    empty_value_bare: bool,
    /// What a vendor date header does to the Date line.
    date_override: DateOverride,
    /// A path-style bucket-level request sent as `/bucket` signs `/bucket`,
    /// without the trailing slash (esdk-obs-python: its canonical resource
    /// appends `/` after the bucket only for virtual-hosted requests or when
    /// a key follows). Virtual-hosted requests and `/bucket/` keep `/bucket/`.
    bare_path_style_bucket: bool,
}

/// How a vendor date header (`x-amz-date`, `x-oss-date`, `x-obs-date`)
/// changes the Date line of the string to sign.
#[derive(Clone, Copy)]
enum DateOverride {
    /// Its presence empties the line (botocore, esdk-obs-python).
    Blank(&'static str),
    /// Its value replaces the `Date` value (oss2).
    Replace(&'static str),
}

/// botocore `HmacV1Auth.QSAOfInterest`.
const S3_SUB_RESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "defaultObjectAcl",
    "delete",
    "inventory",
    "lifecycle",
    "location",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "partNumber",
    "policy",
    "replication",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "select",
    "select-type",
    "storageClass",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// oss2 `Auth._subresource_key_set`.
const OSS_SUB_RESOURCES: &[&str] = &[
    "accessPoint",
    "accessPointPolicy",
    "acl",
    "append",
    "asyncFetch",
    "bucketArchiveDirectRead",
    "bucketInfo",
    "callback",
    "callback-var",
    "cname",
    "comp",
    "continuation-token",
    "cors",
    "delete",
    "encryption",
    "endTime",
    "group",
    "httpsConfig",
    "inventory",
    "inventoryId",
    "lifecycle",
    "link",
    "live",
    "location",
    "logging",
    "metaQuery",
    "objectInfo",
    "objectMeta",
    "partNumber",
    "policy",
    "position",
    "publicAccessBlock",
    "qos",
    "qosInfo",
    "qosRequester",
    "redundancyTransition",
    "referer",
    "regionList",
    "replication",
    "replicationLocation",
    "replicationProgress",
    "requesterQosInfo",
    "requestPayment",
    "resourceGroup",
    "resourcePool",
    "resourcePoolBuckets",
    "resourcePoolInfo",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "security-token",
    "sequential",
    "startTime",
    "stat",
    "status",
    "style",
    "styleName",
    "symlink",
    "tagging",
    "transferAcceleration",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "vod",
    "website",
    "worm",
    "wormExtend",
    "wormId",
    "x-oss-ac-forward-allow",
    "x-oss-ac-source-ip",
    "x-oss-ac-subnet-mask",
    "x-oss-ac-vpc-id",
    "x-oss-access-point-name",
    "x-oss-async-process",
    "x-oss-process",
    "x-oss-redundancy-transition-taskid",
    "x-oss-request-payer",
    "x-oss-target-redundancy-type",
    "x-oss-traffic-limit",
    "x-oss-write-get-object-response",
];

/// esdk-obs-python `ALLOWED_RESOURCE_PARAMTER_NAMES` (compared lower-cased).
const OBS_SUB_RESOURCES: &[&str] = &[
    "acl",
    "append",
    "backtosource",
    "bucketstatus",
    "cors",
    "delete",
    "deletebucket",
    "directcoldaccess",
    "dispolicy",
    "encryption",
    "fileinterface",
    "inventory",
    "length",
    "lifecycle",
    "location",
    "logging",
    "metadata",
    "modify",
    "name",
    "notification",
    "object-lock",
    "obsalias",
    "obsbucketalias",
    "obscompresspolicy",
    "obsworkflowtriggerpolicy",
    "partnumber",
    "policy",
    "policystatus",
    "position",
    "publicaccessblock",
    "quota",
    "rename",
    "replication",
    "requestpayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "retention",
    "storageclass",
    "storageinfo",
    "storagepolicy",
    "tagging",
    "torrent",
    "truncate",
    "uploadid",
    "uploads",
    "versionid",
    "versioning",
    "versions",
    "website",
    "x-image-process",
    "x-image-save-bucket",
    "x-image-save-object",
    "x-obs-accesslabel",
    "x-oss-process",
    "x-workflow-execution-state",
    "x-workflow-execution-type",
    "x-workflow-graph-name",
    "x-workflow-limit",
    "x-workflow-next-marker",
    "x-workflow-prefix",
    "x-workflow-start",
    "x-workflow-template-name",
];

pub(super) const S3V2: Scheme = Scheme {
    auth_prefix: "AWS",
    header_prefix: "x-amz-",
    trim: ValueTrim::All,
    raw_key: false,
    sub_resources: S3_SUB_RESOURCES,
    prefixed_params_signed: false,
    case_insensitive_names: false,
    empty_value_bare: false,
    date_override: DateOverride::Blank("x-amz-date"),
    bare_path_style_bucket: false,
};

pub(super) const OSS_V1: Scheme = Scheme {
    auth_prefix: "OSS",
    header_prefix: "x-oss-",
    trim: ValueTrim::None,
    raw_key: true,
    sub_resources: OSS_SUB_RESOURCES,
    prefixed_params_signed: false,
    case_insensitive_names: false,
    empty_value_bare: true,
    date_override: DateOverride::Replace("x-oss-date"),
    bare_path_style_bucket: false,
};

pub(super) const OBS: Scheme = Scheme {
    auth_prefix: "OBS",
    header_prefix: "x-obs-",
    trim: ValueTrim::MetaOnly,
    raw_key: false,
    sub_resources: OBS_SUB_RESOURCES,
    prefixed_params_signed: true,
    case_insensitive_names: true,
    empty_value_bare: true,
    date_override: DateOverride::Blank("x-obs-date"),
    bare_path_style_bucket: true,
};

pub(super) const OBS_V2: Scheme = Scheme {
    auth_prefix: "AWS",
    header_prefix: "x-amz-",
    date_override: DateOverride::Blank("x-amz-date"),
    ..OBS
};

impl Scheme {
    fn is_sub_resource(&self, name: &str) -> bool {
        if self.case_insensitive_names {
            let lower = name.to_ascii_lowercase();
            self.sub_resources.contains(&lower.as_str())
                || (self.prefixed_params_signed && lower.starts_with(self.header_prefix))
        } else {
            self.sub_resources.contains(&name)
        }
    }

    fn clean_value<'a>(&self, name: &str, value: &'a str) -> &'a str {
        match self.trim {
            ValueTrim::All => value.trim(),
            ValueTrim::None => value,
            ValueTrim::MetaOnly if name.contains("-meta-") => value.trim(),
            ValueTrim::MetaOnly => value,
        }
    }

    fn resource(&self, req: &RequestParts) -> String {
        let mut resource = match (&req.bucket, &req.key) {
            (Some(b), Some(k)) if self.raw_key => format!("/{b}/{k}"),
            (Some(b), Some(k)) => format!("/{b}/{}", encode::path(k)),
            (Some(b), None)
                if self.bare_path_style_bucket
                    && req.path.split('?').next().unwrap_or_default() == format!("/{b}") =>
            {
                format!("/{b}")
            }
            (Some(b), None) => format!("/{b}/"),
            (None, _) => "/".to_string(),
        };
        let mut subs: Vec<(&str, Option<&str>)> = req
            .query
            .iter()
            .filter(|(n, _)| self.is_sub_resource(n))
            .map(|(n, v)| {
                let v = v
                    .as_deref()
                    .filter(|v| !(self.empty_value_bare && v.is_empty()));
                (n.as_str(), v)
            })
            .collect();
        subs.sort();
        for (i, (n, v)) in subs.iter().enumerate() {
            resource.push(if i == 0 { '?' } else { '&' });
            resource.push_str(n);
            if let Some(v) = v {
                resource.push('=');
                resource.push_str(v);
            }
        }
        resource
    }

    pub(super) fn string_to_sign(&self, req: &RequestParts) -> String {
        let date = match self.date_override {
            DateOverride::Blank(h) if req.header(h).is_some() => "",
            DateOverride::Replace(h) if req.header(h).is_some() => {
                req.header(h).unwrap_or_default()
            }
            _ => req.header("date").unwrap_or_default(),
        };
        let mut prefixed: Vec<(String, &str)> = req
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
            .filter(|(n, _)| n.starts_with(self.header_prefix))
            .collect();
        prefixed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = format!(
            "{}\n{}\n{}\n{date}\n",
            req.method,
            req.header("content-md5").unwrap_or_default(),
            req.header("content-type").unwrap_or_default(),
        );
        let mut last: Option<&str> = None;
        for (n, v) in &prefixed {
            let v = self.clean_value(n, v);
            if last == Some(n.as_str()) {
                // Repeated header: values join with a comma on one line.
                out.pop();
                out.push(',');
            } else {
                out.push_str(n);
                out.push(':');
            }
            out.push_str(v);
            out.push('\n');
            last = Some(n);
        }
        out.push_str(&self.resource(req));
        out
    }
}

pub(super) fn authorization(scheme: &Scheme, req: &RequestParts, creds: &Credentials) -> String {
    let mac = hmac_sha1(
        creds.secret_access_key.expose().as_bytes(),
        scheme.string_to_sign(req).as_bytes(),
    );
    let signature = base64::engine::general_purpose::STANDARD.encode(mac);
    format!("{} {}:{signature}", scheme.auth_prefix, creds.access_key_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestParts {
        RequestParts {
            method: "GET".into(),
            bucket: Some("b".into()),
            key: Some("k".into()),
            path: "/k".into(),
            query: Vec::new(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn vendor_date_headers_override_the_date_line() {
        let date = ("Date", "Tue, 05 Mar 2024 07:24:19 GMT");
        // botocore and esdk-obs-python leave the line empty...
        let s3 = S3V2.string_to_sign(&request(&[date, ("x-amz-date", "X")]));
        assert!(s3.starts_with("GET\n\n\n\nx-amz-date:X\n"), "{s3:?}");
        let obs = OBS.string_to_sign(&request(&[date, ("x-obs-date", "X")]));
        assert!(obs.starts_with("GET\n\n\n\nx-obs-date:X\n"), "{obs:?}");
        // ...oss2 puts the vendor date on it.
        let oss = OSS_V1.string_to_sign(&request(&[date, ("x-oss-date", "X")]));
        assert!(oss.starts_with("GET\n\n\nX\nx-oss-date:X\n"), "{oss:?}");
        // Without one, Date is used.
        let plain = OSS_V1.string_to_sign(&request(&[date]));
        assert!(
            plain.starts_with("GET\n\n\nTue, 05 Mar 2024 07:24:19 GMT\n/b/k"),
            "{plain:?}"
        );
    }

    #[test]
    fn obs_path_style_bucket_requests_sign_the_bucket_as_sent() {
        let bucket_level = |path: &str| RequestParts {
            key: None,
            path: path.into(),
            ..request(&[])
        };
        // esdk-obs-python on an IP endpoint sends and signs `GET /b?delete`...
        for scheme in [&OBS, &OBS_V2] {
            assert!(scheme.string_to_sign(&bucket_level("/b")).ends_with("\n/b"));
            assert!(
                scheme
                    .string_to_sign(&bucket_level("/b/"))
                    .ends_with("\n/b/")
            );
            assert!(scheme.string_to_sign(&bucket_level("/")).ends_with("\n/b/"));
        }
        // ...while botocore signs `/b/` for the same path-style request.
        assert!(S3V2.string_to_sign(&bucket_level("/b")).ends_with("\n/b/"));
    }

    #[test]
    fn repeated_prefixed_headers_join_with_commas() {
        let s = S3V2.string_to_sign(&request(&[("x-amz-meta-a", "1"), ("X-Amz-Meta-A", " 2 ")]));
        assert!(s.contains("x-amz-meta-a:1,2\n"), "{s:?}");
    }
}
