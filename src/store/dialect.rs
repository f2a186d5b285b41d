//! Dialects: how S3, OSS, OBS and COS differ, as data.
//!
//! Callers never ask "is this OSS?"; they ask the [`Capabilities`] whether an
//! operation exists, and the HTTP client reads the spelling of headers and
//! sub-resources from the [`Dialect`]. Notes:
//! 1. The header prefix follows the signature: OBS signed the AWS-V2 way uses
//!    `x-amz-` headers, and OBS servers were seen to answer with `x-obs-`
//!    headers in either mode, so responses are read under both prefixes
//!    ([`Dialect::response_prefixes`]).
//! 2. Some capabilities are only known once the bucket is probed: OBS
//!    parallel-file-system buckets (HeadBucket `x-obs-fs-file-interface`) and
//!    OSS hierarchical-namespace buckets (GetBucketInfo). See
//!    [`Dialect::with_bucket_info`].
//! 3. COS spells the metadata directive `Copy`/`Replaced` and names the copy
//!    source by host (`bucket.cos.region.myqcloud.com/key`), per its SDK docs.

use super::sign::SignatureVersion;
use super::types::BucketInfo;

/// Which vendor API family a dialect speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    S3,
    Oss,
    Obs,
    Cos,
}

impl Provider {
    /// Parses a URL scheme or `--dialect` value (`s3`, `oss`, `obs`, `cos`).
    pub fn parse(s: &str) -> Option<Provider> {
        match s.to_ascii_lowercase().as_str() {
            "s3" => Some(Provider::S3),
            "oss" => Some(Provider::Oss),
            "obs" => Some(Provider::Obs),
            "cos" => Some(Provider::Cos),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Provider::S3 => "s3",
            Provider::Oss => "oss",
            Provider::Obs => "obs",
            Provider::Cos => "cos",
        }
    }
}

/// What the backend can do beyond plain S3.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// AppendObject (`POST ?append&position=N`).
    pub append: bool,
    /// OBS PFS write at an offset (`PUT ?modify&position=N`).
    pub modify_at_offset: bool,
    /// OBS PFS truncate (`PUT ?length=N&truncate`).
    pub truncate: bool,
    /// Atomic native rename of a single object.
    pub native_rename_file: bool,
    /// Atomic native rename of a whole directory.
    pub native_rename_dir: bool,
    /// Native symlink objects (PutSymlink/GetSymlink).
    pub symlink: bool,
    /// ListObjectsV2; when false (or when the server refuses it) V1 is used.
    pub list_v2: bool,
    /// Multipart UploadPartCopy with a source range.
    pub upload_part_copy: bool,
}

/// How a server-side copy names its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopySourceForm {
    /// `/bucket/key` with the key percent-encoded.
    BucketKey,
    /// `bucket.host/key` (COS).
    HostKey,
}

/// How a native rename is requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameForm {
    /// None available.
    None,
    /// OSS: `POST /dst?x-oss-rename` with `x-oss-rename-source: src`.
    OssRenameSource,
    /// OBS PFS: `POST /src?name=dst&rename`.
    ObsNameParam,
}

/// How the bucket is probed at mount time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketProbe {
    /// HEAD on the bucket.
    HeadBucket,
    /// OSS `GET /?bucketInfo`, which also tells the hierarchical-namespace state.
    OssBucketInfo,
}

/// Everything that differs between object-store APIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dialect {
    pub provider: Provider,
    pub signature: SignatureVersion,
    pub capabilities: Capabilities,
    /// Response header with the content CRC-64 (`x-oss-hash-crc64ecma`).
    pub crc64_header: Option<&'static str>,
    /// Values of the metadata directive header: (copy, replace).
    pub metadata_directive: (&'static str, &'static str),
    pub copy_source: CopySourceForm,
    pub rename: RenameForm,
    pub bucket_probe: BucketProbe,
    /// Listings under `encoding-type=url` write a space as `+` (S3, COS);
    /// OSS and OBS percent-encode it, so a `+` there is a plus.
    pub list_plus_is_space: bool,
    /// Symlink targets travel percent-encoded (OSS) rather than raw (COS).
    pub symlink_target_encoded: bool,
    /// The largest object the service accepts: a file may not grow past it
    /// (EFBIG). See [`S3_MAX_OBJECT`] and [`MULTIPART_MAX_OBJECT`].
    pub max_object_size: u64,
}

/// S3's largest object, 5 TiB (the AWS S3 user guide); also what any
/// S3-compatible store can be assumed to take.
pub const S3_MAX_OBJECT: u64 = 5 << 40;

/// OSS, OBS and COS: a multipart upload of at most 10,000 parts of at most
/// 5 GiB (OSS reference 8.3 UploadPart: "Valid values: 1 to 10000", "The
/// size of a part ranges from 100 KB to 5 GB"; COS SDK: "The maximum
/// number of parts to be uploaded is 10,000"), about 48.8 TiB, which their
/// documents give as the largest object.
pub const MULTIPART_MAX_OBJECT: u64 = 10_000 * (5 << 30);

impl Dialect {
    /// The dialect of `provider` with its default signature.
    pub fn new(provider: Provider) -> Dialect {
        let plain = Capabilities {
            list_v2: true,
            upload_part_copy: true,
            ..Capabilities::default()
        };
        match provider {
            Provider::S3 => Dialect {
                provider,
                signature: SignatureVersion::S3V4,
                capabilities: plain,
                crc64_header: None,
                metadata_directive: ("COPY", "REPLACE"),
                copy_source: CopySourceForm::BucketKey,
                rename: RenameForm::None,
                bucket_probe: BucketProbe::HeadBucket,
                list_plus_is_space: true,
                symlink_target_encoded: false,
                max_object_size: S3_MAX_OBJECT,
            },
            Provider::Oss => Dialect {
                provider,
                signature: SignatureVersion::OssV4,
                capabilities: Capabilities {
                    append: true,
                    symlink: true,
                    ..plain
                },
                crc64_header: Some("x-oss-hash-crc64ecma"),
                metadata_directive: ("COPY", "REPLACE"),
                copy_source: CopySourceForm::BucketKey,
                rename: RenameForm::None,
                bucket_probe: BucketProbe::OssBucketInfo,
                list_plus_is_space: false,
                symlink_target_encoded: true,
                max_object_size: MULTIPART_MAX_OBJECT,
            },
            Provider::Obs => Dialect {
                provider,
                signature: SignatureVersion::Obs,
                capabilities: Capabilities {
                    append: true,
                    ..plain
                },
                crc64_header: None,
                metadata_directive: ("COPY", "REPLACE"),
                copy_source: CopySourceForm::BucketKey,
                rename: RenameForm::None,
                bucket_probe: BucketProbe::HeadBucket,
                list_plus_is_space: false,
                symlink_target_encoded: false,
                max_object_size: MULTIPART_MAX_OBJECT,
            },
            Provider::Cos => Dialect {
                provider,
                signature: SignatureVersion::Cos,
                capabilities: Capabilities {
                    append: true,
                    symlink: true,
                    ..plain
                },
                crc64_header: Some("x-cos-hash-crc64ecma"),
                metadata_directive: ("Copy", "Replaced"),
                copy_source: CopySourceForm::HostKey,
                rename: RenameForm::None,
                bucket_probe: BucketProbe::HeadBucket,
                list_plus_is_space: true,
                symlink_target_encoded: false,
                max_object_size: MULTIPART_MAX_OBJECT,
            },
        }
    }

    /// The same dialect signed another way (e.g. OSS V1, OBS AWS-V2, S3 V2).
    pub fn with_signature(mut self, signature: SignatureVersion) -> Dialect {
        self.signature = signature;
        self
    }

    /// Turns on what the probe found: PFS operations on OBS, native rename on
    /// OSS hierarchical-namespace buckets.
    pub fn with_bucket_info(mut self, info: &BucketInfo) -> Dialect {
        if self.provider == Provider::Obs && info.obs_pfs {
            self.capabilities.modify_at_offset = true;
            self.capabilities.truncate = true;
            self.capabilities.native_rename_file = true;
            self.capabilities.native_rename_dir = true;
            self.rename = RenameForm::ObsNameParam;
        }
        if self.provider == Provider::Oss && info.oss_hierarchical_namespace {
            self.capabilities.native_rename_file = true;
            self.capabilities.native_rename_dir = true;
            self.rename = RenameForm::OssRenameSource;
        }
        self
    }

    /// Prefix of vendor headers on requests: `x-amz-`, `x-oss-`, `x-obs-`, `x-cos-`.
    pub fn header_prefix(&self) -> &'static str {
        match self.signature {
            SignatureVersion::S3V4 | SignatureVersion::S3V2 | SignatureVersion::ObsV2 => "x-amz-",
            SignatureVersion::OssV1 | SignatureVersion::OssV4 => "x-oss-",
            SignatureVersion::Obs => "x-obs-",
            SignatureVersion::Cos => "x-cos-",
        }
    }

    /// A vendor header name, e.g. `header("copy-source")` = `x-oss-copy-source`.
    pub fn header(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.header_prefix())
    }

    /// Prefix of user-metadata headers (`x-oss-meta-`).
    pub fn meta_prefix(&self) -> String {
        self.header("meta-")
    }

    /// Prefixes under which response headers are looked up, in order.
    pub fn response_prefixes(&self) -> &'static [&'static str] {
        match self.provider {
            Provider::Obs => &["x-obs-", "x-amz-"],
            _ => match self.header_prefix() {
                "x-oss-" => &["x-oss-"],
                "x-cos-" => &["x-cos-"],
                _ => &["x-amz-"],
            },
        }
    }

    pub fn security_token_header(&self) -> &'static str {
        self.signature.security_token_header()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_follow_the_signature() {
        assert_eq!(Dialect::new(Provider::Oss).meta_prefix(), "x-oss-meta-");
        assert_eq!(
            Dialect::new(Provider::Cos).header("copy-source"),
            "x-cos-copy-source"
        );
        let obs_v2 = Dialect::new(Provider::Obs).with_signature(SignatureVersion::ObsV2);
        assert_eq!(obs_v2.header_prefix(), "x-amz-");
        assert_eq!(obs_v2.security_token_header(), "x-amz-security-token");
        assert_eq!(obs_v2.response_prefixes(), &["x-obs-", "x-amz-"]);
    }

    #[test]
    fn probe_results_turn_on_native_operations() {
        let plain = Dialect::new(Provider::Obs);
        assert!(!plain.capabilities.truncate);
        let pfs = plain.with_bucket_info(&BucketInfo {
            obs_pfs: true,
            ..Default::default()
        });
        assert!(pfs.capabilities.truncate && pfs.capabilities.native_rename_dir);
        assert_eq!(pfs.rename, RenameForm::ObsNameParam);

        let hns = Dialect::new(Provider::Oss).with_bucket_info(&BucketInfo {
            oss_hierarchical_namespace: true,
            ..Default::default()
        });
        assert_eq!(hns.rename, RenameForm::OssRenameSource);
        // A PFS flag means nothing to S3.
        let s3 = Dialect::new(Provider::S3).with_bucket_info(&BucketInfo {
            obs_pfs: true,
            oss_hierarchical_namespace: true,
            ..Default::default()
        });
        assert_eq!(s3.capabilities, Dialect::new(Provider::S3).capabilities);
    }
}
