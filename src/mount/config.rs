//! Mount configuration: what `bucketfs mount SOURCE MOUNTPOINT -o OPTIONS`
//! means, before any FUSE session or network request.
//!
//! Three inputs become one [`MountConfig`]: the SOURCE URL ([`Source`]), the
//! `-o` options ([`MountOptions`]) and the credentials (a file named by
//! `credentials_file=`, else the provider's environment variables, looked up
//! through an injected function so tests never touch the real environment).
//! [`MountConfig::http_store_config`] turns the result into what the
//! object-store client needs. Everything here is pure except reading the
//! credentials file and the process's uid/gid defaults.
//!
//! Subtle cases:
//! 1. Secrets never reach the command line. Options whose name carries a
//!    secret (`secret_key=`, `password=`, `session_token=`, ...) are refused by
//!    name, with or without a value, and the value is never echoed. A SOURCE
//!    or `endpoint=` with `user:secret@` in it is refused without echoing any
//!    of it. Errors about the credentials file name the line, never its text
//!    (an s3fs-style `ACCESS:SECRET` line is all secret).
//! 2. `endpoint=` is a URL. s3fs spells the region `endpoint=us-west-2`; a
//!    bare word without a dot is refused with a hint to use `region=`. A host
//!    without a scheme (as the vendors' consoles show it) means `https://`.
//!    A path is refused: the bucket belongs in SOURCE, and the client would
//!    silently drop the path.
//! 3. An endpoint host that already starts with the bucket (the "bucket
//!    domain" the COS and OSS consoles show, `bkt-125.cos.ap-guangzhou...`)
//!    is reduced to the service host, because the client puts the bucket in
//!    front itself. Only when the rest is a vendor service host: bucket `obs`
//!    on `obs.cn-north-4.myhuaweicloud.com` is left alone.
//! 4. The region is read from any of the four vendors' endpoint hosts,
//!    whatever the SOURCE scheme, so `s3://` on OBS, COS or OSS's
//!    S3-compatible endpoints signs SigV4 with the right region. An explicit
//!    `region=` that contradicts the region named in the host is an error:
//!    the server would refuse every signature with an opaque message.
//! 5. OSS V4 signing needs a region. When none is given or derivable, the
//!    mount fails with an error naming `region=` (and `signature=oss_v1` as
//!    the alternative) rather than falling back to V1 silently: Alibaba is
//!    retiring V1 for new accounts, so a silent fallback would turn a clear
//!    configuration error into a signature error at the first request.
//!    `region=oss-cn-hangzhou` (the endpoint spelling) is read as `cn-hangzhou`.
//! 6. Without `endpoint=`, S3 defaults to `us-east-1`; OSS, OBS and COS have
//!    no global endpoint, so they require `region=` (a guessed region would
//!    give a confusing redirect or NoSuchBucket at the probe). AWS China
//!    regions (`cn-*`) live under `amazonaws.com.cn`.
//! 7. Path-style addressing is inferred: on for an IP-address or `localhost`
//!    host (no DNS for `bucket.127.0.0.1`), and for an S3 bucket with a dot
//!    over HTTPS (the `*.s3...` wildcard certificate covers one label only).
//! 8. Credentials come whole from one source: the file if given (the
//!    environment is then not read at all), else the first complete set of
//!    the provider's variables. A session token is only taken from the same
//!    set as its key: a token belongs to the key it was issued with. An empty
//!    variable counts as unset (`export AWS_SESSION_TOKEN=` must not send an
//!    empty token). A half-set pair (id without secret) is an error, not a
//!    reason to use the next set: that would silently pick another identity.
//! 9. The credentials file mode is checked on the opened handle (`fstat`),
//!    so the file checked is the file read. Any group/other permission bit is
//!    refused, not only read: write access lets another user swap the keys.
//! 10. Options follow mount(8): later ones win (`ro,rw` is read-write), `-`
//!     reads as `_`, and fstab bookkeeping (`defaults`, `_netdev`, `nofail`,
//!     `noauto`, `user`, `x-systemd.*`, ...) is accepted and ignored, since
//!     mount(8) passes it to the helper.
//! 11. Sizes are binary (`8M` = 8 MiB). `part_size` is bounded by what all
//!     four vendors accept (5 MiB to 5 GiB). An unset `readahead_max` shrinks
//!     to a small `cache_size`; a set one larger than the cache is an error,
//!     because prefetched blocks would be evicted before being read.
//! 12. `uid=4294967295` is `(uid_t)-1`, which chown reads as "leave
//!     unchanged": refused, like negative and non-numeric ids.
//! 13. The SOURCE prefix is taken literally (not percent-decoded). `.` and
//!     `..` components are refused: they cannot be path components and URL
//!     normalisation would resolve them into another prefix.

use crate::mount::credentials::{self, CredentialOptions, CredentialSource, Places};
use crate::store::Provider;
use crate::store::credentials::Credentials;
use crate::store::dialect::Dialect;
use crate::store::http::HttpStoreConfig;
use crate::store::sign::SignatureVersion;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Default `upload_concurrency`: eight 8 MiB parts in flight keep a
/// gigabit link busy at typical object-store latencies, in 64 MiB of memory.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 8;

/// Default `disk_cache_size`: 1 GiB, enough for a file of that size to be
/// read at random from local disk after one pass.
pub const DEFAULT_DISK_CACHE_SIZE: u64 = 1 << 30;

/// Default `cache_size`: 256 MiB holds four full 64 MiB readahead windows
/// (several sequential readers at full speed). Larger is not faster for a
/// first read: every cached byte is fresh memory whose page faults cost
/// about 20% of a cold 1 GiB read with a 1 GiB cache (measured; README,
/// "Read performance"). Re-read-heavy workloads raise it.
pub const DEFAULT_CACHE_SIZE: u64 = 256 * MIB;
/// Default `part_size`: 8 MiB, the AWS CLI / mountpoint-s3 default; big
/// enough to amortise request overhead, small enough to parallelise.
pub const DEFAULT_PART_SIZE: u64 = 8 * MIB;
/// Smallest `part_size`: S3 refuses non-final parts under 5 MiB, the largest
/// minimum of the four vendors (OSS/OBS 100 KiB, COS 1 MiB).
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// Largest `part_size`: 5 GiB, the part limit common to all four vendors.
pub const MAX_PART_SIZE: u64 = 5 * GIB;
/// Default `readahead_max`: 64 MiB = 8 default parts in flight, about what
/// one fast link needs to stay busy (geesefs/goofys use similar caps).
pub const DEFAULT_READAHEAD_MAX: u64 = 64 * MIB;
/// Smallest `readahead_max`: the read path's first request is about 1 MiB
/// (DESIGN.md), so a smaller cap could not hold even that.
pub const MIN_READAHEAD_MAX: u64 = MIB;
/// Default `attr_ttl`: 1 s, as mountpoint-s3 and the kernel's FUSE default;
/// long enough to absorb the stat storms of `ls -l` and `find`, short enough
/// that other clients' changes show up promptly.
pub const DEFAULT_ATTR_TTL: Duration = Duration::from_secs(1);
/// Default `dir_ttl`: 1 s, for the same reasons as [`DEFAULT_ATTR_TTL`].
pub const DEFAULT_DIR_TTL: Duration = Duration::from_secs(1);
/// Default `negative_ttl`: 1 s. Lookups of missing names (shell `PATH`
/// searches, editors' swap files, `.git` probes) each cost a HEAD and a LIST;
/// a file created elsewhere shows up at most 1 s late.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// Default `listing_cache_entries`: 100,000 entries (about 50 MiB at the
/// ~500 bytes an entry takes), enough for `ls -l` and `find` over
/// ordinary trees; a larger directory is read a page at a time instead.
pub const DEFAULT_LISTING_CACHE_ENTRIES: usize = 100_000;

/// Largest `listing_cache_entries` accepted (about 50 GiB of entries).
pub const MAX_LISTING_CACHE_ENTRIES: usize = 100_000_000;

/// Default `file_mode` for objects without s3fs `mode` metadata (as
/// mountpoint-s3's `--file-mode`).
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// Default `dir_mode` for directories without `mode` metadata.
pub const DEFAULT_DIR_MODE: u32 = 0o755;
/// Default `umask`: none, so `file_mode`/`dir_mode` mean what they say; set
/// `umask=077` for a private mount, as with s3fs.
pub const DEFAULT_UMASK: u32 = 0;
/// Region of an `s3://` mount that names none: AWS's original region, and
/// what S3-compatible servers (MinIO, Garage, Ceph RGW) accept by default.
pub const DEFAULT_S3_REGION: &str = "us-east-1";
/// Object keys are at most 1024 bytes on all four vendors; a prefix must
/// leave room for at least one byte of name.
const MAX_KEY_LEN: usize = 1024;

/// How the environment is read: a name in, the value (if set) out. Pass
/// [`process_env`] in production and a closure over a table in tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The real process environment, for [`MountConfig::build`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Why a mount configuration was refused. Messages are one line, for users,
/// and never contain a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// SOURCE is not `PROVIDER://BUCKET[/PREFIX]` or names a bad bucket.
    #[error("SOURCE {given:?}: {reason}")]
    Source { given: String, reason: String },
    /// SOURCE or `endpoint=` carried `user:secret@`; nothing of it is echoed.
    #[error(
        "{what} must not contain credentials (user:secret@): put them in the environment or in a credentials_file=PATH, never on the command line"
    )]
    CredentialsInArgument { what: &'static str },
    /// An option nobody knows.
    #[error("unknown option {name:?}{hint}")]
    UnknownOption { name: String, hint: String },
    /// An option that would put a secret on the command line.
    #[error(
        "option {name:?} is refused: secrets on the command line show in `ps` and shell history; set the provider's environment variables or use credentials_file=PATH"
    )]
    SecretOption { name: String },
    /// A known option with a bad or missing value.
    #[error("option {name}: {reason}")]
    BadOption { name: String, reason: String },
    /// `endpoint=` is not a usable URL.
    #[error("endpoint={given}: {reason}")]
    Endpoint { given: String, reason: String },
    /// The region is missing, malformed, or contradicts the endpoint.
    #[error("{provider}://: {reason}")]
    Region {
        provider: &'static str,
        reason: String,
    },
    /// `signature=` names an algorithm the provider does not speak.
    #[error("signature={signature} does not apply to {provider}:// (use {allowed})")]
    Signature {
        signature: &'static str,
        provider: &'static str,
        allowed: String,
    },
    /// No credentials anywhere.
    #[error(
        "no credentials for {provider}://: set {vars} in the environment, use credentials_file=PATH, or write {passwd} (mode 600)"
    )]
    MissingCredentials {
        provider: &'static str,
        vars: String,
        passwd: String,
    },
    /// `credential_process=` failed or printed something unusable.
    #[error("credential_process: {reason}")]
    CredentialProcess { reason: String },
    /// One variable of a credentials pair is set, its partner is not.
    #[error("{set} is set but {missing} is not: set both, or unset {set}")]
    PartialCredentials {
        set: &'static str,
        missing: &'static str,
    },
    /// The credentials file cannot be read or parsed.
    #[error("credentials file {path}: {reason}")]
    CredentialsFile { path: String, reason: String },
    /// The credentials file is open to group or others.
    #[error(
        "credentials file {path} is accessible by group or others (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    CredentialsFileMode { path: String, mode: u32 },
}

// ---------------------------------------------------------------------------
// SOURCE

/// What to mount: a bucket of one provider, optionally under a key prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// From the URL scheme: `s3`, `oss`, `obs`, `cos`.
    pub provider: Provider,
    /// The bucket name, validated (COS names include the `-APPID`).
    pub bucket: String,
    /// Key prefix mounted as the root: empty, or without a leading `/`,
    /// with a trailing `/`, no empty, `.` or `..` components.
    pub prefix: String,
}

impl Source {
    /// Parses `s3://bucket[/prefix]`, `oss://...`, `obs://...`,
    /// `cos://bucket-appid[/prefix]`.
    pub fn parse(s: &str) -> Result<Source, ConfigError> {
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, s),
        };
        // Before anything echoes `s`: `s3://AK:SECRET@bucket` must not end
        // up in an error message (case 1).
        let authority = rest.split('/').next().unwrap_or("");
        if authority.contains('@') {
            return Err(ConfigError::CredentialsInArgument { what: "SOURCE" });
        }
        let bad = |reason: String| ConfigError::Source {
            given: s.to_string(),
            reason,
        };
        let Some(scheme) = scheme else {
            return Err(bad(
                "expected PROVIDER://BUCKET[/PREFIX] with PROVIDER one of s3, oss, obs, cos"
                    .to_string(),
            ));
        };
        let provider = match Provider::parse(scheme) {
            Some(p) => p,
            None if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => {
                return Err(bad(
                    "SOURCE names a bucket, not a URL: use s3://BUCKET[/PREFIX] (or oss://, obs://, cos://) with -o endpoint=URL".to_string(),
                ));
            }
            None => {
                return Err(bad(format!(
                    "unknown scheme {scheme:?}: use s3://, oss://, obs:// or cos://"
                )));
            }
        };
        let (bucket, raw_prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(provider, bucket).map_err(&bad)?;
        let prefix = normalise_prefix(raw_prefix).map_err(&bad)?;
        Ok(Source {
            provider,
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

impl FromStr for Source {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Source, ConfigError> {
        Source::parse(s)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}/{}",
            self.provider.name(),
            self.bucket,
            self.prefix
        )
    }
}

/// Bucket naming rules: the S3 ones for everybody (3-63 characters of
/// lowercase letters, digits, `-`, `.`; a letter or digit at each end; no
/// `..`, `.-`, `-.`; not an IPv4 address), plus the stricter vendor ones:
/// OSS and COS allow no `.`, COS names end in `-APPID`.
fn check_bucket(provider: Provider, bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("no bucket name: expected PROVIDER://BUCKET[/PREFIX]".to_string());
    }
    let q = format!("{bucket:?}");
    if bucket.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "bucket name {q} has upper-case letters; bucket names are lower-case"
        ));
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "bucket name {q} has {c:?}; only lower-case letters, digits, '-' and '.' are allowed"
        ));
    }
    if !(3..=63).contains(&bucket.len()) {
        return Err(format!("bucket name {q} must be 3 to 63 characters long"));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(bucket.chars().next()) || !alnum(bucket.chars().last()) {
        return Err(format!(
            "bucket name {q} must start and end with a letter or digit"
        ));
    }
    if bucket.contains("..") || bucket.contains(".-") || bucket.contains("-.") {
        return Err(format!(
            "bucket name {q} has '..', '.-' or '-.', which are not valid in a host name"
        ));
    }
    if bucket.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!("bucket name {q} must not look like an IP address"));
    }
    if matches!(provider, Provider::Oss | Provider::Cos) && bucket.contains('.') {
        return Err(format!(
            "bucket name {q}: {} bucket names have no '.'",
            provider.name()
        ));
    }
    if provider == Provider::Cos {
        let appid_ok = bucket.rsplit_once('-').is_some_and(|(name, appid)| {
            !name.is_empty() && !appid.is_empty() && appid.chars().all(|c| c.is_ascii_digit())
        });
        if !appid_ok {
            return Err(format!(
                "bucket name {q}: COS bucket names end in -APPID, e.g. examplebucket-1250000000"
            ));
        }
    }
    Ok(())
}

/// `a//b/` -> `a/b/`, `/x` -> `x/`, `` -> ``; `.`/`..` refused (case 13).
fn normalise_prefix(raw: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" => {}
            "." | ".." => {
                return Err(format!(
                    "prefix component {part:?} is not allowed; name the prefix directly"
                ));
            }
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Ok(String::new());
    }
    let mut prefix = parts.join("/");
    prefix.push('/');
    if prefix.len() >= MAX_KEY_LEN {
        return Err(format!(
            "prefix is {} bytes; object keys are limited to {MAX_KEY_LEN}",
            prefix.len()
        ));
    }
    Ok(prefix)
}

// ---------------------------------------------------------------------------
// -o options

/// The `-o` options, with defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// `endpoint=URL`, normalised to `scheme://host[:port]`. Default: the
    /// provider's public endpoint for the region (see [`MountConfig`]).
    pub endpoint: Option<String>,
    /// `region=R` (lower-cased, `[a-z0-9-]`; for OSS `oss-R` reads as `R`).
    /// Default: derived from the endpoint host ([`region_from_host`]), else
    /// `us-east-1` for S3. Required for OSS/OBS/COS without `endpoint=`, and
    /// for OSS V4 when the endpoint host names no region.
    pub region: Option<String>,
    /// `path_style` or `path_style=true|false`: `/bucket/key` URLs. Default
    /// (`None`): inferred, see [`MountConfig::path_style`].
    pub path_style: Option<bool>,
    /// `signature=v4|v2|oss_v1|oss_v4|obs|obs_v2|cos`. Default (`None`): the
    /// provider's own (S3 SigV4, OSS V4, OBS native, COS).
    pub signature: Option<SignatureVersion>,
    /// `uid=N`: owner of objects without `uid` metadata. Default: the uid of
    /// the mounting process.
    pub uid: u32,
    /// `gid=N`: group of objects without `gid` metadata. Default: the gid of
    /// the mounting process.
    pub gid: u32,
    /// `umask=OCTAL`: bits removed from every mode reported. Default `000`.
    pub umask: u32,
    /// `file_mode=OCTAL`: mode of files without `mode` metadata. Default `0644`.
    pub file_mode: u32,
    /// `dir_mode=OCTAL`: mode of directories without `mode` metadata.
    /// Default `0755`.
    pub dir_mode: u32,
    /// `allow_other`: let other users access the mount (non-root mounts need
    /// `user_allow_other` in `/etc/fuse.conf`). Default off.
    pub allow_other: bool,
    /// `ro` (or `rw` to undo it; the last one wins). Default read-write.
    pub read_only: bool,
    /// `nonempty`: allow mounting over a non-empty directory. Default off.
    pub nonempty: bool,
    /// `cache_size=SIZE`: memory for the block cache. Default 256 MiB; at
    /// least `readahead_max`.
    pub cache_size: u64,
    /// `attr_ttl=DURATION`: how long file attributes are trusted. Default 1 s.
    pub attr_ttl: Duration,
    /// `read_timeout=DURATION`: longest silence of the server within one
    /// request before it is abandoned (and retried). Default 30 s.
    pub read_timeout: Option<Duration>,
    /// `ca_file=PATH`: a PEM bundle of CA certificates trusted besides the
    /// system's (a private CA, a self-signed server).
    pub ca_file: Option<PathBuf>,
    /// `no_check_certificate` (s3fs's name): accept any server
    /// certificate. Logged as a warning at mount.
    pub no_check_certificate: bool,
    /// `dir_ttl=DURATION`: how long directory listings are trusted. Default 1 s.
    pub dir_ttl: Duration,
    /// `negative_ttl=DURATION`: how long "no such file" is remembered.
    /// Default 1 s.
    pub negative_ttl: Duration,
    /// `listing_cache_entries=N`: directory entries kept in the listing
    /// cache, all directories together. Default 100,000; 0 turns it off.
    pub listing_cache_entries: usize,
    /// `part_size=SIZE`: multipart part size and ranged-GET size. Default
    /// 8 MiB, 5 MiB to 5 GiB.
    pub part_size: u64,
    /// `readahead_max=SIZE`: largest readahead window per handle. Default
    /// 64 MiB (or `cache_size`, if smaller), at least 1 MiB.
    pub readahead_max: u64,
    /// `kernel_cache`: let the kernel's page cache keep file data (kept
    /// across opens while the object's ETag is unchanged). Default off:
    /// reads bypass the page cache and are served from the block cache,
    /// whose size `cache_size` bounds.
    pub kernel_cache: bool,
    /// `cache_dir=PATH`: where written data is staged before its upload
    /// (one subdirectory per mounted source, see
    /// [`MountConfig::staging_dir`]). Default: `/var/cache/bucketfs` for
    /// root, else `$XDG_CACHE_HOME/bucketfs` or `~/.cache/bucketfs`.
    pub cache_dir: Option<PathBuf>,
    /// `staging_max=SIZE`: most bytes staged at once; writes beyond get
    /// ENOSPC. Default: no limit but the disk's free space.
    pub staging_max: Option<u64>,
    /// `disk_cache=DIR`: keep fetched blocks on local disk too (a directory
    /// per mount under DIR, emptied at mount and removed at unmount).
    /// Default off.
    pub disk_cache: Option<PathBuf>,
    /// `disk_cache_size=SIZE`: most bytes of blocks on disk. Default 1 GiB;
    /// only with `disk_cache`.
    pub disk_cache_size: Option<u64>,
    /// `sync_close`: `close` returns only once the file is uploaded (and
    /// fails if the upload does). Default off: uploads run after `close`.
    pub sync_close: bool,
    /// `upload_concurrency=N`: part-sized requests uploading at once,
    /// mount-wide. Default 8.
    pub upload_concurrency: usize,
    /// `credential_process=COMMAND`: a command printing temporary
    /// credentials (AWS CLI JSON), run again before they expire.
    pub credential_process: Option<String>,
    /// `profile=NAME`: the AWS shared-files profile (s3:// only).
    pub profile: Option<String>,
    /// `log_file=PATH`: where a detached daemon logs (default: the journal
    /// when there is one, else nowhere).
    pub log_file: Option<PathBuf>,
    /// `log_level=error|warn|info|debug|trace` (default info); `RUST_LOG`
    /// overrides it.
    pub log_level: Option<String>,
    /// `dev`/`nodev`, `suid`/`nosuid`, `exec`/`noexec` as mount(8) means
    /// them; `None` keeps the default (nodev, nosuid, exec).
    pub dev: Option<bool>,
    pub suid: Option<bool>,
    pub exec: Option<bool>,
    /// `credentials_file=PATH`, made absolute (the daemon may change
    /// directory). Default: none, the environment is used.
    pub credentials_file: Option<PathBuf>,
    /// `foreground`: do not daemonize. Default off.
    pub foreground: bool,
    /// Names of fstab bookkeeping options that were accepted and ignored
    /// (`_netdev`, `x-systemd.automount`, ...), for a log line.
    pub ignored: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        // SAFETY: getuid/getgid take no arguments, cannot fail and touch no
        // memory of ours.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        MountOptions {
            endpoint: None,
            region: None,
            path_style: None,
            signature: None,
            uid,
            gid,
            umask: DEFAULT_UMASK,
            file_mode: DEFAULT_FILE_MODE,
            dir_mode: DEFAULT_DIR_MODE,
            allow_other: false,
            read_only: false,
            nonempty: false,
            cache_size: DEFAULT_CACHE_SIZE,
            attr_ttl: DEFAULT_ATTR_TTL,
            read_timeout: None,
            ca_file: None,
            no_check_certificate: false,
            dir_ttl: DEFAULT_DIR_TTL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            listing_cache_entries: DEFAULT_LISTING_CACHE_ENTRIES,
            part_size: DEFAULT_PART_SIZE,
            readahead_max: DEFAULT_READAHEAD_MAX,
            kernel_cache: false,
            cache_dir: None,
            staging_max: None,
            disk_cache: None,
            disk_cache_size: None,
            sync_close: false,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            credential_process: None,
            profile: None,
            log_file: None,
            log_level: None,
            dev: None,
            suid: None,
            exec: None,
            credentials_file: None,
            foreground: false,
            ignored: Vec::new(),
        }
    }
}

impl MountOptions {
    /// Parses the `-o` arguments, each a comma-separated list of `name` or
    /// `name=value` (values cannot contain commas). Later options override
    /// earlier ones; empty items (`ro,,rw`, a trailing comma) are skipped.
    pub fn parse(opts: &[&str]) -> Result<MountOptions, ConfigError> {
        MountOptions::parse_with(opts, false)
    }

    /// [`MountOptions::parse`]; with `sloppy` (mount(8) `-s`) unknown
    /// options are ignored (and listed in `ignored`) instead of refused.
    /// Options that would carry a secret are refused either way.
    pub fn parse_with(opts: &[&str], sloppy: bool) -> Result<MountOptions, ConfigError> {
        let mut o = MountOptions::default();
        let mut readahead_given = false;
        for item in opts.iter().flat_map(|arg| arg.split(',')) {
            if item.is_empty() {
                continue;
            }
            let (raw_name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (item, None),
            };
            if is_mount8_bookkeeping(raw_name) {
                o.ignored.push(raw_name.to_string());
                continue;
            }
            let name = raw_name.replace('-', "_");
            let bad = |reason: String| ConfigError::BadOption {
                name: raw_name.to_string(),
                reason,
            };
            let need = || match value {
                Some("") | None => Err(bad("needs a value".to_string())),
                Some(v) => Ok(v),
            };
            let flag = || match value {
                None => Ok(true),
                Some(_) => Err(bad("takes no value".to_string())),
            };
            match name.as_str() {
                "endpoint" => o.endpoint = Some(parse_endpoint(need()?)?),
                "region" => o.region = Some(parse_region(need()?).map_err(bad)?),
                "path_style" => {
                    o.path_style = Some(match value {
                        None => true,
                        Some(v) => parse_bool(v).map_err(bad)?,
                    })
                }
                "signature" => o.signature = Some(parse_signature(need()?).map_err(bad)?),
                "uid" => o.uid = parse_id(need()?).map_err(bad)?,
                "gid" => o.gid = parse_id(need()?).map_err(bad)?,
                "umask" => o.umask = parse_mode(need()?).map_err(bad)?,
                "file_mode" => o.file_mode = parse_mode(need()?).map_err(bad)?,
                "dir_mode" => o.dir_mode = parse_mode(need()?).map_err(bad)?,
                "allow_other" => o.allow_other = flag()?,
                "ro" => o.read_only = flag()?,
                "rw" => o.read_only = !flag()?,
                "nonempty" => o.nonempty = flag()?,
                "kernel_cache" => o.kernel_cache = flag()?,
                "sync_close" => o.sync_close = flag()?,
                "staging_max" => o.staging_max = Some(parse_size(need()?).map_err(bad)?),
                "upload_concurrency" => {
                    o.upload_concurrency = parse_count(need()?, 1..=256).map_err(bad)?
                }
                "cache_dir" => {
                    let path = Path::new(need()?);
                    o.cache_dir = Some(std::path::absolute(path).map_err(|e| {
                        bad(format!("cannot make {} absolute: {e}", path.display()))
                    })?);
                }
                "foreground" => o.foreground = flag()?,
                "disk_cache" => {
                    let path = Path::new(need()?);
                    o.disk_cache = Some(std::path::absolute(path).map_err(|e| {
                        bad(format!("cannot make {} absolute: {e}", path.display()))
                    })?);
                }
                "disk_cache_size" => o.disk_cache_size = Some(parse_size(need()?).map_err(bad)?),
                "cache_size" => o.cache_size = parse_size(need()?).map_err(bad)?,
                "part_size" => o.part_size = parse_size(need()?).map_err(bad)?,
                "readahead_max" => {
                    o.readahead_max = parse_size(need()?).map_err(bad)?;
                    readahead_given = true;
                }
                "attr_ttl" => o.attr_ttl = parse_duration(need()?).map_err(bad)?,
                "read_timeout" => o.read_timeout = Some(parse_duration(need()?).map_err(bad)?),
                "ca_file" => o.ca_file = Some(PathBuf::from(need()?)),
                "no_check_certificate" => o.no_check_certificate = flag()?,
                "dir_ttl" => o.dir_ttl = parse_duration(need()?).map_err(bad)?,
                "negative_ttl" => o.negative_ttl = parse_duration(need()?).map_err(bad)?,
                "listing_cache_entries" => {
                    o.listing_cache_entries =
                        parse_count(need()?, 0..=MAX_LISTING_CACHE_ENTRIES).map_err(bad)?
                }
                "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" => {
                    flag()?;
                    let on = Some(!name.starts_with("no"));
                    match name.trim_start_matches("no") {
                        "dev" => o.dev = on,
                        "suid" => o.suid = on,
                        _ => o.exec = on,
                    }
                }
                "credential_process" => o.credential_process = Some(need()?.to_string()),
                "profile" => o.profile = Some(need()?.to_string()),
                "log_level" => {
                    let level = need()?.to_ascii_lowercase();
                    if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
                        return Err(bad("must be error, warn, info, debug or trace".into()));
                    }
                    o.log_level = Some(level);
                }
                "log_file" => {
                    let path = Path::new(need()?);
                    o.log_file = Some(std::path::absolute(path).map_err(|e| {
                        bad(format!("cannot make {} absolute: {e}", path.display()))
                    })?);
                }
                // s3fs's name for it.
                "credentials_file" | "passwd_file" => {
                    let path = Path::new(need()?);
                    o.credentials_file = Some(std::path::absolute(path).map_err(|e| {
                        bad(format!("cannot make {} absolute: {e}", path.display()))
                    })?);
                }
                _ if carries_secret(&name.to_ascii_lowercase()) => {
                    return Err(ConfigError::SecretOption {
                        name: raw_name.to_string(),
                    });
                }
                _ if sloppy => o.ignored.push(raw_name.to_string()),
                _ => {
                    return Err(ConfigError::UnknownOption {
                        name: raw_name.to_string(),
                        hint: hint_for(&name),
                    });
                }
            }
        }
        o.check(readahead_given)?;
        Ok(o)
    }

    /// Checks between options, once all are known (their order must not
    /// matter).
    fn check(&mut self, readahead_given: bool) -> Result<(), ConfigError> {
        let bad = |name: &str, reason: String| ConfigError::BadOption {
            name: name.to_string(),
            reason,
        };
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(bad(
                "part_size",
                format!(
                    "{} is outside 5M..5G, the part sizes every provider accepts",
                    show_size(self.part_size)
                ),
            ));
        }
        match (&self.disk_cache, self.disk_cache_size) {
            (None, Some(_)) => {
                return Err(bad(
                    "disk_cache_size",
                    "needs disk_cache=DIR, the directory to keep the blocks in".into(),
                ));
            }
            (Some(_), Some(size)) if size < MIN_READAHEAD_MAX => {
                return Err(bad(
                    "disk_cache_size",
                    format!("{} is below the 1M minimum", show_size(size)),
                ));
            }
            _ => {}
        }
        if self.cache_size < MIN_READAHEAD_MAX {
            return Err(bad(
                "cache_size",
                format!("{} is below the 1M minimum", show_size(self.cache_size)),
            ));
        }
        if !readahead_given {
            // Case 11: an unset readahead follows a small cache down.
            self.readahead_max = self.readahead_max.min(self.cache_size);
        }
        if self.readahead_max < MIN_READAHEAD_MAX {
            return Err(bad(
                "readahead_max",
                format!("{} is below the 1M minimum", show_size(self.readahead_max)),
            ));
        }
        if self.readahead_max > self.cache_size {
            return Err(bad(
                "readahead_max",
                format!(
                    "{} exceeds cache_size {}: prefetched blocks would be evicted before they are read; raise cache_size or lower readahead_max",
                    show_size(self.readahead_max),
                    show_size(self.cache_size)
                ),
            ));
        }
        Ok(())
    }

    /// Mode of a file without `mode` metadata: `file_mode & !umask`.
    pub fn effective_file_mode(&self) -> u32 {
        self.file_mode & !self.umask
    }

    /// Mode of a directory without `mode` metadata: `dir_mode & !umask`.
    pub fn effective_dir_mode(&self) -> u32 {
        self.dir_mode & !self.umask
    }
}

/// Options that mount(8) and fstab use for their own bookkeeping and pass to
/// the helper anyway (case 10).
fn is_mount8_bookkeeping(name: &str) -> bool {
    matches!(
        name,
        "defaults"
            | "relatime"
            | "noatime"
            | "strictatime"
            | "auto"
            | "noauto"
            | "user"
            | "nouser"
            | "users"
            | "owner"
            | "group"
            | "_netdev"
            | "nofail"
            | "comment"
    ) || name.starts_with("x-")
}

/// Whether an option name looks like it carries a secret (case 1). A name
/// ending in `_file`/`_path` names where a secret is, which is the right way.
fn carries_secret(lower_name: &str) -> bool {
    const EXACT: [&str; 9] = [
        "ak",
        "sk",
        "key",
        "akid",
        "secret_id",
        "secretid",
        "access_id",
        "accessid",
        "auth",
    ];
    const PARTS: [&str; 7] = [
        "secret",
        "password",
        "passwd",
        "token",
        "access_key",
        "accesskey",
        "credential",
    ];
    if lower_name.ends_with("_file") || lower_name.ends_with("_path") {
        return false;
    }
    EXACT.contains(&lower_name) || PARTS.iter().any(|p| lower_name.contains(p))
}

/// A pointer from other tools' option names to ours.
fn hint_for(name: &str) -> String {
    let ours = match name {
        "url" | "host" => "endpoint=URL",
        "aws_profile" => "profile=NAME",
        "use_path_request_style" | "force_path_style" => "path_style",
        "sigv2" | "sigv4" | "signature_version" => "signature=v2 or signature=v4",
        "stat_cache_expire" | "metadata_ttl" => "attr_ttl=DURATION",
        "multipart_size" => "part_size=SIZE (e.g. 64M)",
        "max_stat_cache_size" | "max_cache_size" => "cache_size=SIZE",
        "read_only" | "readonly" => "ro",
        "mp_umask" => "umask=OCTAL",
        "dialect" | "provider" => "the SOURCE scheme (s3://, oss://, obs://, cos://)",
        "f" | "fg" => "foreground",
        _ => return String::new(),
    };
    format!(" (use {ours})")
}

/// `https://host[:port]`; see case 2 for what is refused and why.
fn parse_endpoint(value: &str) -> Result<String, ConfigError> {
    // No valid endpoint has '@', '?' or '#'; any of them may sit next to a
    // secret (user:secret@host, ?X-Amz-Signature=...), so nothing is echoed.
    if value.contains('@') {
        return Err(ConfigError::CredentialsInArgument { what: "endpoint=" });
    }
    if value.contains('?') || value.contains('#') {
        return Err(ConfigError::BadOption {
            name: "endpoint".to_string(),
            reason: "must be scheme://host[:port], without a query or fragment".to_string(),
        });
    }
    let bad = |reason: String| ConfigError::Endpoint {
        given: value.to_string(),
        reason,
    };
    let url_text = if value.contains("://") {
        value.to_string()
    } else if !value.contains('.') && !value.contains(':') && value != "localhost" {
        return Err(bad(
            "this is not a URL (it looks like a region: use region=); endpoint= takes e.g. https://s3.us-west-2.amazonaws.com".to_string(),
        ));
    } else {
        format!("https://{value}")
    };
    let url = reqwest::Url::parse(&url_text).map_err(|e| bad(format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must start with http:// or https://".to_string()));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(bad("has no host".to_string()));
    };
    if !matches!(url.path(), "" | "/") {
        return Err(bad(
            "must not have a path: the bucket goes in SOURCE, and path_style chooses /bucket/key URLs".to_string(),
        ));
    }
    Ok(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 64
        && !region.starts_with('-')
        && !region.ends_with('-')
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Region ids are lower-case (`cn-hangzhou`, `eu-central-1`); the value goes
/// into signatures and host names, so nothing else is accepted.
fn parse_region(value: &str) -> Result<String, String> {
    let region = value.to_ascii_lowercase();
    if valid_region(&region) {
        Ok(region)
    } else {
        Err(format!(
            "{value:?} is not a region id (letters, digits and '-', e.g. us-east-1, cn-hangzhou)"
        ))
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{value:?} is not true or false")),
    }
}

/// The `signature=` spellings, in the order shown in messages.
const SIGNATURE_NAMES: [(&str, SignatureVersion); 7] = [
    ("v4", SignatureVersion::S3V4),
    ("v2", SignatureVersion::S3V2),
    ("oss_v4", SignatureVersion::OssV4),
    ("oss_v1", SignatureVersion::OssV1),
    ("obs", SignatureVersion::Obs),
    ("obs_v2", SignatureVersion::ObsV2),
    ("cos", SignatureVersion::Cos),
];

fn parse_signature(value: &str) -> Result<SignatureVersion, String> {
    let v = value.to_ascii_lowercase().replace('-', "_");
    SIGNATURE_NAMES
        .iter()
        .find(|(n, _)| *n == v)
        .map(|(_, s)| *s)
        .ok_or_else(|| format!("{value:?} is not one of v4, v2, oss_v4, oss_v1, obs, obs_v2, cos"))
}

/// The `signature=` spelling of an algorithm.
pub fn signature_name(version: SignatureVersion) -> &'static str {
    SIGNATURE_NAMES
        .iter()
        .find(|(_, s)| *s == version)
        .map_or("?", |(n, _)| n)
}

/// Which signatures each provider speaks, default first. The header prefix
/// follows the signature (see `dialect`), so a mismatched pair would send
/// requests the server cannot even parse.
fn signatures_for(provider: Provider) -> &'static [SignatureVersion] {
    match provider {
        Provider::S3 => &[SignatureVersion::S3V4, SignatureVersion::S3V2],
        Provider::Oss => &[SignatureVersion::OssV4, SignatureVersion::OssV1],
        Provider::Obs => &[SignatureVersion::Obs, SignatureVersion::ObsV2],
        Provider::Cos => &[SignatureVersion::Cos],
    }
}

fn parse_id(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(u32::MAX) => Err(format!(
            "{value} is (uid_t)-1, which means \"unchanged\" to chown; pick a real id"
        )),
        Ok(id) => Ok(id),
        Err(_) => Err(format!(
            "{value:?} is not a numeric id (look names up with `id -u NAME` / `getent group NAME`)"
        )),
    }
}

/// Octal permission bits, `0o` prefix allowed, at most `0777`.
fn parse_mode(value: &str) -> Result<u32, String> {
    let digits = value.strip_prefix("0o").unwrap_or(value);
    if digits.is_empty() || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(format!(
            "{value:?} is not an octal mode such as 022 or 0644"
        ));
    }
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("{value:?} has bits beyond 0777")),
    }
}

/// Bytes, with an optional binary suffix: `K`, `M`, `G`, `T`, also spelled
/// `KB`/`KiB` (all mean powers of 1024, as in s3fs and mount).
/// A whole number within `range`.
fn parse_count(value: &str, range: std::ops::RangeInclusive<usize>) -> Result<usize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| format!("must be a number from {} to {}", range.start(), range.end()))
}

fn parse_size(value: &str) -> Result<u64, String> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, suffix) = value.split_at(split);
    let unit = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        "t" | "tb" | "tib" => 1024 * GIB,
        _ => {
            return Err(format!(
                "{value:?} is not a size (bytes, or a number with K, M, G or T)"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{value:?} is not a size (bytes, or a number with K, M, G or T)"))
}

/// Seconds, or a number with `ms`, `s`, `m` or `h`.
fn parse_duration(value: &str) -> Result<Duration, String> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, suffix) = value.split_at(split);
    let err = || format!("{value:?} is not a duration (seconds, or a number with ms, s, m or h)");
    let n = digits.parse::<u64>().map_err(|_| err())?;
    match suffix {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(err),
        "h" => n.checked_mul(3600).map(Duration::from_secs).ok_or_else(err),
        _ => Err(err()),
    }
}

/// A size as the options spell it (`1G`, `64M`, `512K`, or bytes).
pub fn show_size(bytes: u64) -> String {
    for (unit, name) in [(GIB, "G"), (MIB, "M"), (KIB, "K")] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{name}", bytes / unit);
        }
    }
    format!("{bytes}")
}

// ---------------------------------------------------------------------------
// Endpoints and regions

/// The region named in a vendor endpoint host, if any (case 4):
/// `s3[.dualstack].R.amazonaws.com[.cn]`, `s3-R.amazonaws.com`,
/// `[s3.]oss-R[-internal].aliyuncs.com`, `obs.R.myhuaweicloud.com`,
/// `cos.R.myqcloud.com`. Global and acceleration hosts name none.
pub fn region_from_host(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    let region = if let Some(base) = host
        .strip_suffix(".amazonaws.com.cn")
        .or_else(|| host.strip_suffix(".amazonaws.com"))
    {
        match base.split('.').collect::<Vec<_>>().as_slice() {
            ["s3" | "s3-fips", "dualstack", r] | ["s3" | "s3-fips", r] => r.to_string(),
            // The legacy name of us-east-1's endpoint.
            ["s3-external-1"] => DEFAULT_S3_REGION.to_string(),
            [legacy] => legacy.strip_prefix("s3-")?.to_string(),
            _ => return None,
        }
    } else if let Some(base) = host.strip_suffix(".aliyuncs.com") {
        let label = match base.split('.').collect::<Vec<_>>().as_slice() {
            [label] | ["s3", label] => label.to_string(),
            _ => return None,
        };
        let r = label.strip_prefix("oss-")?;
        let r = r.strip_suffix("-internal").unwrap_or(r);
        if r.starts_with("accelerate") {
            return None;
        }
        r.to_string()
    } else if let Some(base) = host.strip_suffix(".myhuaweicloud.com") {
        match base.split('.').collect::<Vec<_>>().as_slice() {
            ["obs", r] => r.to_string(),
            _ => return None,
        }
    } else if let Some(base) = host.strip_suffix(".myqcloud.com") {
        match base.split('.').collect::<Vec<_>>().as_slice() {
            ["cos", r] if *r != "accelerate" => r.to_string(),
            _ => return None,
        }
    } else {
        return None;
    };
    valid_region(&region).then_some(region)
}

/// Whether `host` is a vendor's service host (not a bucket's), for case 3.
fn is_vendor_service_host(host: &str) -> bool {
    let domains = [
        ".amazonaws.com",
        ".amazonaws.com.cn",
        ".aliyuncs.com",
        ".myhuaweicloud.com",
        ".myqcloud.com",
    ];
    let first = host.split('.').next().unwrap_or("");
    domains.iter().any(|d| host.ends_with(d))
        && ["s3", "oss-", "obs", "cos"]
            .iter()
            .any(|p| first.starts_with(p))
}

/// The public endpoint of `provider` in `region`.
pub fn default_endpoint(provider: Provider, region: &str) -> String {
    match provider {
        // AWS China is a separate partition with its own domain.
        Provider::S3 if region.starts_with("cn-") => {
            format!("https://s3.{region}.amazonaws.com.cn")
        }
        Provider::S3 => format!("https://s3.{region}.amazonaws.com"),
        Provider::Oss => format!("https://oss-{region}.aliyuncs.com"),
        Provider::Obs => format!("https://obs.{region}.myhuaweicloud.com"),
        Provider::Cos => format!("https://cos.{region}.myqcloud.com"),
    }
}

/// A region to show in messages.
fn example_region(provider: Provider) -> &'static str {
    match provider {
        Provider::S3 => "us-west-2",
        Provider::Oss => "cn-hangzhou",
        Provider::Obs => "cn-north-4",
        Provider::Cos => "ap-guangzhou",
    }
}

/// Splits `scheme://host[:port]` (as normalised by [`parse_endpoint`]).
fn split_endpoint(endpoint: &str) -> (&str, &str, Option<&str>) {
    let (scheme, authority) = endpoint.split_once("://").unwrap_or(("https", endpoint));
    // An IPv6 host keeps its brackets; the port follows the last ']' or ':'.
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') && p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    };
    (scheme, host, port)
}

fn is_ip_or_localhost(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok() || host == "localhost" || host.ends_with(".localhost")
}

// ---------------------------------------------------------------------------
// The whole configuration

/// Everything a mount needs, resolved. `Debug` shows no secret (the
/// credentials redact themselves).
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub source: Source,
    pub options: MountOptions,
    /// `scheme://host[:port]`, from `endpoint=` (bucket label stripped, case
    /// 3) or [`default_endpoint`].
    pub endpoint: String,
    /// Signing region; empty where none is known and the signature needs
    /// none (OBS, COS, OSS V1).
    pub region: String,
    /// `path_style=`, else on for IP/`localhost` hosts and for dotted S3
    /// buckets over HTTPS (case 7).
    pub path_style: bool,
    pub signature: SignatureVersion,
    pub credentials: Credentials,
    /// Where the credentials came from (credentials.rs).
    pub credential_source: CredentialSource,
    /// When temporary credentials expire (they are renewed before).
    pub credentials_expire: Option<std::time::SystemTime>,
}

impl MountConfig {
    /// The staging directory of this mount: `cache_dir` (or its default)
    /// joined with a name made of the bucket and a hash of the endpoint and
    /// SOURCE, so a restarted daemon mounting the same source finds what
    /// its predecessor staged, and different sources never share one.
    pub fn staging_dir(&self, env: EnvLookup) -> PathBuf {
        use sha2::Digest;
        let root = self.options.cache_dir.clone().unwrap_or_else(|| {
            // SAFETY: getuid takes no arguments and cannot fail.
            let root_user = unsafe { libc::getuid() } == 0;
            let xdg = env("XDG_CACHE_HOME").filter(|v| !v.is_empty());
            let home = env("HOME").filter(|v| !v.is_empty());
            match (root_user, xdg, home) {
                (true, _, _) => PathBuf::from("/var/cache/bucketfs"),
                (false, Some(x), _) => Path::new(&x).join("bucketfs"),
                (false, None, Some(h)) => Path::new(&h).join(".cache/bucketfs"),
                (false, None, None) => std::env::temp_dir().join("bucketfs"),
            }
        });
        let identity = format!("{}\n{}", self.endpoint, self.source);
        let hash = hex::encode(&sha2::Sha256::digest(identity.as_bytes())[..8]);
        root.join(format!("{}-{hash}", self.source.bucket))
    }

    /// Combines SOURCE, options and credentials (see the module doc for the
    /// rules).
    pub fn build(
        source: Source,
        options: MountOptions,
        env: EnvLookup,
    ) -> Result<MountConfig, ConfigError> {
        MountConfig::build_in(source, options, env, &Places::default())
    }

    /// [`MountConfig::build`] with the system-wide passwd files looked for
    /// under `places` (tests).
    pub fn build_in(
        source: Source,
        options: MountOptions,
        env: EnvLookup,
        places: &Places,
    ) -> Result<MountConfig, ConfigError> {
        let provider = source.provider;
        let pname = provider.name();
        let region_err = |reason: String| ConfigError::Region {
            provider: pname,
            reason,
        };

        let allowed = signatures_for(provider);
        let signature = match options.signature {
            None => allowed[0],
            Some(s) if allowed.contains(&s) => s,
            Some(s) => {
                return Err(ConfigError::Signature {
                    signature: signature_name(s),
                    provider: pname,
                    allowed: allowed
                        .iter()
                        .map(|a| signature_name(*a))
                        .collect::<Vec<_>>()
                        .join(" or "),
                });
            }
        };

        // Case 5: OSS regions are also spelled with their endpoint prefix.
        let given_region = options.region.as_deref().map(|r| match provider {
            Provider::Oss => r.strip_prefix("oss-").unwrap_or(r).to_string(),
            _ => r.to_string(),
        });

        let (endpoint, region) = match &options.endpoint {
            Some(endpoint) => {
                let (scheme, mut host, port) = split_endpoint(endpoint);
                // Case 3: a bucket domain pasted as the endpoint.
                if let Some(rest) = host
                    .strip_prefix(source.bucket.as_str())
                    .and_then(|r| r.strip_prefix('.'))
                    && is_vendor_service_host(rest)
                {
                    host = rest;
                }
                let endpoint = match port {
                    Some(p) => format!("{scheme}://{host}:{p}"),
                    None => format!("{scheme}://{host}"),
                };
                let derived = region_from_host(host);
                let region = match (given_region, derived) {
                    (Some(given), Some(derived)) if given != derived => {
                        return Err(region_err(format!(
                            "region={given} contradicts endpoint host {host}, which is in {derived}"
                        )));
                    }
                    (Some(r), _) | (None, Some(r)) => r,
                    (None, None) => match (provider, signature) {
                        (Provider::S3, _) => DEFAULT_S3_REGION.to_string(),
                        (_, SignatureVersion::OssV4) => {
                            return Err(region_err(format!(
                                "cannot tell the region from endpoint host {host}, and OSS V4 signing needs one: add region=REGION (e.g. region=cn-hangzhou), or signature=oss_v1"
                            )));
                        }
                        // OSS V1, OBS and COS signatures do not use a region.
                        _ => String::new(),
                    },
                };
                (endpoint, region)
            }
            None => {
                let region = match given_region {
                    Some(r) => r,
                    None if provider == Provider::S3 => DEFAULT_S3_REGION.to_string(),
                    None => {
                        return Err(region_err(format!(
                            "needs region=REGION (e.g. region={}) or endpoint=URL",
                            example_region(provider)
                        )));
                    }
                };
                (default_endpoint(provider, &region), region)
            }
        };

        let (scheme, host, _) = split_endpoint(&endpoint);
        let path_style = options.path_style.unwrap_or_else(|| {
            is_ip_or_localhost(host)
                || (provider == Provider::S3 && scheme == "https" && source.bucket.contains('.'))
        });

        let found = credentials::resolve(
            provider,
            &source.bucket,
            &CredentialOptions {
                file: options.credentials_file.clone(),
                process: options.credential_process.clone(),
                profile: options.profile.clone(),
            },
            env,
            places,
        )?;

        Ok(MountConfig {
            source,
            options,
            endpoint,
            region,
            path_style,
            signature,
            credentials: found.credentials,
            credential_source: found.source,
            credentials_expire: found.expires,
        })
    }

    /// The provider's dialect, signed as configured.
    pub fn dialect(&self) -> Dialect {
        Dialect::new(self.source.provider).with_signature(self.signature)
    }

    /// What the HTTP object-store client needs; retry policy and timeouts
    /// keep the client's defaults.
    pub fn http_store_config(&self) -> HttpStoreConfig {
        let mut config = HttpStoreConfig::new(
            &self.endpoint,
            &self.source.bucket,
            self.dialect(),
            self.credentials.clone(),
        );
        config.region = self.region.clone();
        config.path_style = self.path_style;
        if let Some(t) = self.options.read_timeout {
            config.read_timeout = t;
        }
        config.ca_file = self.options.ca_file.clone();
        config.accept_invalid_certs = self.options.no_check_certificate;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::credentials::{
        credentials_from_env, parse_credentials, read_credentials_file,
    };
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A secret that must never show in any message or Debug output.
    const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-SECRET";
    const TOKEN: &str = "FwoGZXIvYXdzEXAMPLE-TOKEN";

    /// Complete credentials for every provider, under each first set's names.
    const ALL_ENV: &[(&str, &str)] = &[
        ("AWS_ACCESS_KEY_ID", "AKIA-S3"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("OSS_ACCESS_KEY_ID", "LTAI-OSS"),
        ("OSS_ACCESS_KEY_SECRET", SECRET),
        ("OBS_ACCESS_KEY_ID", "HW-OBS"),
        ("OBS_SECRET_ACCESS_KEY", SECRET),
        ("COS_SECRET_ID", "AKID-COS"),
        ("COS_SECRET_KEY", SECRET),
    ];

    fn env_from<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn build(source: &str, opts: &[&str]) -> Result<MountConfig, ConfigError> {
        build_env(source, opts, ALL_ENV)
    }

    fn build_env(
        source: &str,
        opts: &[&str],
        env: &[(&str, &str)],
    ) -> Result<MountConfig, ConfigError> {
        let env = env_from(env);
        MountConfig::build(Source::parse(source)?, MountOptions::parse(opts)?, &env)
    }

    /// A file in the temp directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str, mode: u32) -> TempFile {
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "bucketfs-config-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, contents).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            TempFile(path)
        }

        fn option(&self) -> String {
            format!("credentials_file={}", self.0.display())
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn every_source_form_parses() {
        for (given, provider, bucket, prefix) in [
            ("s3://my-bucket", Provider::S3, "my-bucket", ""),
            ("s3://my-bucket/", Provider::S3, "my-bucket", ""),
            (
                "s3://my.bucket.name/a/b",
                Provider::S3,
                "my.bucket.name",
                "a/b/",
            ),
            ("S3://abc/x/", Provider::S3, "abc", "x/"),
            ("oss://bkt//a///b/", Provider::Oss, "bkt", "a/b/"),
            ("oss://bkt///", Provider::Oss, "bkt", ""),
            ("obs://bkt-1/x", Provider::Obs, "bkt-1", "x/"),
            ("obs://obs", Provider::Obs, "obs", ""),
            (
                "cos://examplebucket-1250000000/logs",
                Provider::Cos,
                "examplebucket-1250000000",
                "logs/",
            ),
            // Taken literally: no percent-decoding, any UTF-8, '@' in a prefix.
            ("s3://bkt/a b/ü/", Provider::S3, "bkt", "a b/ü/"),
            ("s3://bkt/%20", Provider::S3, "bkt", "%20/"),
            (
                "s3://bkt/user@example.com",
                Provider::S3,
                "bkt",
                "user@example.com/",
            ),
            ("s3://bkt/.hidden/..x", Provider::S3, "bkt", ".hidden/..x/"),
        ] {
            let s = Source::parse(given).unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(
                (s.provider, s.bucket.as_str(), s.prefix.as_str()),
                (provider, bucket, prefix),
                "{given}"
            );
            // Display gives a SOURCE that parses back to the same thing.
            assert_eq!(Source::parse(&s.to_string()).unwrap(), s, "{given}");
            assert_eq!(given.parse::<Source>().unwrap(), s);
        }
    }

    #[test]
    fn bad_sources_say_why() {
        let long_bucket = format!("s3://{}", "a".repeat(64));
        let long_prefix = format!("s3://bkt/{}", "p".repeat(1100));
        for (given, why) in [
            ("bucket", "expected PROVIDER://BUCKET"),
            ("gs://bkt", "unknown scheme \"gs\""),
            ("https://host/bkt", "names a bucket, not a URL"),
            ("s3://", "no bucket name"),
            ("s3:///prefix", "no bucket name"),
            ("s3://ab", "3 to 63"),
            (long_bucket.as_str(), "3 to 63"),
            ("s3://MyBucket", "lower-case"),
            ("s3://bkt_1", "'_'"),
            ("s3://bkt:9000", "':'"),
            ("s3://-bkt", "start and end"),
            ("s3://bkt.", "start and end"),
            ("s3://a..b", "'..'"),
            ("s3://a.-b", "'..', '.-' or '-.'"),
            ("s3://192.168.1.1", "IP address"),
            ("oss://my.bucket", "oss bucket names have no '.'"),
            ("cos://my.bucket-125", "cos bucket names have no '.'"),
            ("cos://examplebucket", "-APPID"),
            ("cos://examplebucket-12ab", "-APPID"),
            ("s3://bkt/a/../b", "\"..\""),
            ("s3://bkt/./a", "\".\""),
            ("s3://bkt/..", "\"..\""),
            (long_prefix.as_str(), "limited to 1024"),
        ] {
            let err = Source::parse(given).unwrap_err();
            assert!(
                matches!(err, ConfigError::Source { .. }),
                "{given}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(why), "{given}: {msg}");
            assert!(!msg.contains('\n'), "{given}: one line");
        }
    }

    #[test]
    fn credentials_in_source_are_refused_unechoed() {
        for given in [
            "s3://AKIDEXAMPLE:wJalrXUtnFEMI-K7MDENG-SECRET@bkt/p",
            "wJalrXUtnFEMI-K7MDENG-SECRET@bkt",
            "oss://:wJalrXUtnFEMI-K7MDENG-SECRET@bkt",
        ] {
            let err = Source::parse(given).unwrap_err();
            assert_eq!(
                err,
                ConfigError::CredentialsInArgument { what: "SOURCE" },
                "{given}"
            );
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(SECRET) && !shown.contains("AKIDEXAMPLE"));
            assert!(shown.contains("environment"), "{shown}");
        }
    }

    #[test]
    fn defaults_are_documented_values() {
        let o = MountOptions::parse(&[]).unwrap();
        assert_eq!(o, MountOptions::default());
        // SAFETY: as in MountOptions::default.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!((o.uid, o.gid), (uid, gid));
        assert_eq!((o.umask, o.file_mode, o.dir_mode), (0, 0o644, 0o755));
        assert_eq!(
            (o.effective_file_mode(), o.effective_dir_mode()),
            (0o644, 0o755)
        );
        assert_eq!(o.cache_size, 256 << 20);
        assert_eq!(o.part_size, 8 << 20);
        assert_eq!(o.readahead_max, 64 << 20);
        assert_eq!(
            (o.attr_ttl, o.dir_ttl, o.negative_ttl),
            (
                Duration::from_secs(1),
                Duration::from_secs(1),
                Duration::from_secs(1)
            )
        );
        assert_eq!(
            (o.endpoint, o.region, o.path_style, o.signature),
            (None, None, None, None)
        );
        assert!(!o.allow_other && !o.read_only && !o.nonempty && !o.foreground && !o.kernel_cache);
        assert!(o.credentials_file.is_none() && o.ignored.is_empty());
    }

    #[test]
    fn each_option_sets_its_field() {
        let cwd = std::env::current_dir().unwrap();
        // The options given, and how they change the defaults.
        type Case = (&'static [&'static str], fn(&mut MountOptions));
        let cases: &[Case] = &[
            (&["endpoint=https://s3.eu-west-1.amazonaws.com"], |o| {
                o.endpoint = Some("https://s3.eu-west-1.amazonaws.com".into())
            }),
            // Host only means https; a trailing slash and the default port go.
            (&["endpoint=oss-cn-hangzhou.aliyuncs.com"], |o| {
                o.endpoint = Some("https://oss-cn-hangzhou.aliyuncs.com".into())
            }),
            (&["endpoint=http://127.0.0.1:9000/"], |o| {
                o.endpoint = Some("http://127.0.0.1:9000".into())
            }),
            (&["endpoint=https://S3.Example.COM:443"], |o| {
                o.endpoint = Some("https://s3.example.com".into())
            }),
            (&["endpoint=http://[::1]:9000"], |o| {
                o.endpoint = Some("http://[::1]:9000".into())
            }),
            (&["endpoint=localhost:9000"], |o| {
                o.endpoint = Some("https://localhost:9000".into())
            }),
            (&["region=eu-central-1"], |o| {
                o.region = Some("eu-central-1".into())
            }),
            (&["region=CN-Hangzhou"], |o| {
                o.region = Some("cn-hangzhou".into())
            }),
            (&["path_style"], |o| o.path_style = Some(true)),
            (&["path_style=false"], |o| o.path_style = Some(false)),
            (&["path-style=yes"], |o| o.path_style = Some(true)),
            (&["signature=v4"], |o| {
                o.signature = Some(SignatureVersion::S3V4)
            }),
            (&["signature=v2"], |o| {
                o.signature = Some(SignatureVersion::S3V2)
            }),
            (&["signature=oss_v1"], |o| {
                o.signature = Some(SignatureVersion::OssV1)
            }),
            (&["signature=oss-v4"], |o| {
                o.signature = Some(SignatureVersion::OssV4)
            }),
            (&["signature=obs"], |o| {
                o.signature = Some(SignatureVersion::Obs)
            }),
            (&["signature=obs_v2"], |o| {
                o.signature = Some(SignatureVersion::ObsV2)
            }),
            (&["signature=COS"], |o| {
                o.signature = Some(SignatureVersion::Cos)
            }),
            (&["uid=1001"], |o| o.uid = 1001),
            (&["gid=0"], |o| o.gid = 0),
            (&["umask=077"], |o| o.umask = 0o77),
            (&["file_mode=0o600"], |o| o.file_mode = 0o600),
            (&["dir_mode=0700"], |o| o.dir_mode = 0o700),
            (&["allow_other"], |o| o.allow_other = true),
            (&["allow-other"], |o| o.allow_other = true),
            (&["ro"], |o| o.read_only = true),
            (&["ro", "rw"], |o| o.read_only = false),
            (&["rw,ro"], |o| o.read_only = true),
            (&["nonempty"], |o| o.nonempty = true),
            (&["kernel_cache"], |o| o.kernel_cache = true),
            (&["foreground"], |o| o.foreground = true),
            (&["cache_size=2G"], |o| o.cache_size = 2 << 30),
            (&["disk_cache=/var/tmp/b"], |o| {
                o.disk_cache = Some("/var/tmp/b".into())
            }),
            (&["disk_cache=/var/tmp/b,disk_cache_size=4G"], |o| {
                o.disk_cache = Some("/var/tmp/b".into());
                o.disk_cache_size = Some(4 << 30);
            }),
            (&["cache_size=1073741824"], |o| o.cache_size = 1 << 30),
            // An unset readahead follows a small cache down (case 11).
            (&["cache_size=16MiB"], |o| {
                o.cache_size = 16 << 20;
                o.readahead_max = 16 << 20;
            }),
            (&["part_size=16m"], |o| o.part_size = 16 << 20),
            (&["part_size=5M"], |o| o.part_size = 5 << 20),
            (&["part_size=5G"], |o| o.part_size = 5 << 30),
            (&["readahead_max=32M"], |o| o.readahead_max = 32 << 20),
            (&["readahead_max=1024KB"], |o| o.readahead_max = 1 << 20),
            (&["attr_ttl=500ms"], |o| {
                o.attr_ttl = Duration::from_millis(500)
            }),
            (&["attr_ttl=30"], |o| o.attr_ttl = Duration::from_secs(30)),
            (&["dir_ttl=2m"], |o| o.dir_ttl = Duration::from_secs(120)),
            (&["dir_ttl=1h"], |o| o.dir_ttl = Duration::from_secs(3600)),
            (&["negative_ttl=0"], |o| o.negative_ttl = Duration::ZERO),
            (&["negative_ttl=5s"], |o| {
                o.negative_ttl = Duration::from_secs(5)
            }),
            (&["credentials_file=/etc/bucketfs/creds"], |o| {
                o.credentials_file = Some("/etc/bucketfs/creds".into())
            }),
            // Later wins; several -o arguments; empty items skipped.
            (&["uid=1,uid=2"], |o| o.uid = 2),
            (&["uid=1", "gid=3,,", ",uid=4"], |o| {
                o.uid = 4;
                o.gid = 3;
            }),
            // fstab bookkeeping is ignored but remembered for a log line.
            (
                &[
                    "defaults,_netdev,nofail,x-systemd.automount,x-systemd.requires=network-online.target",
                ],
                |o| {
                    o.ignored = vec![
                        "defaults".into(),
                        "_netdev".into(),
                        "nofail".into(),
                        "x-systemd.automount".into(),
                        "x-systemd.requires".into(),
                    ]
                },
            ),
            // What mount(8) and mount.fuse3 pass from fstab lines.
            (
                &["rw,nosuid,nodev,noexec,relatime,_netdev,user,users,noauto,auto"],
                |o| {
                    o.dev = Some(false);
                    o.suid = Some(false);
                    o.exec = Some(false);
                    o.ignored = ["relatime", "_netdev", "user", "users", "noauto", "auto"]
                        .map(String::from)
                        .to_vec();
                },
            ),
            (&["dev,suid,exec,ro"], |o| {
                o.dev = Some(true);
                o.suid = Some(true);
                o.exec = Some(true);
                o.read_only = true;
            }),
            (
                &["passwd_file=/etc/passwd-s3fs,profile=prod,log_level=DEBUG"],
                |o| {
                    o.credentials_file = Some("/etc/passwd-s3fs".into());
                    o.profile = Some("prod".into());
                    o.log_level = Some("debug".into());
                },
            ),
            (&["credential_process=/usr/local/bin/creds --role r"], |o| {
                o.credential_process = Some("/usr/local/bin/creds --role r".into())
            }),
        ];
        for (opts, change) in cases {
            let mut expected = MountOptions::default();
            change(&mut expected);
            let got = MountOptions::parse(opts).unwrap_or_else(|e| panic!("{opts:?}: {e}"));
            assert_eq!(got, expected, "{opts:?}");
        }
        // A relative credentials file is made absolute.
        let o = MountOptions::parse(&["credentials_file=creds"]).unwrap();
        assert_eq!(o.credentials_file, Some(cwd.join("creds")));
        let o = MountOptions::parse(&["umask=027,file_mode=666,dir_mode=777"]).unwrap();
        assert_eq!(
            (o.effective_file_mode(), o.effective_dir_mode()),
            (0o640, 0o750)
        );
    }

    #[test]
    fn bad_options_name_the_option_and_reason() {
        for (opt, name, why) in [
            ("uid", "uid", "needs a value"),
            ("region=", "region", "needs a value"),
            ("uid=abc", "uid", "not a numeric id"),
            ("uid=-1", "uid", "not a numeric id"),
            ("gid=4294967295", "gid", "(uid_t)-1"),
            ("uid=4294967296", "uid", "not a numeric id"),
            ("umask=8", "umask", "not an octal mode"),
            ("umask=+22", "umask", "not an octal mode"),
            ("file_mode=01777", "file_mode", "beyond 0777"),
            ("dir_mode=rwx", "dir_mode", "not an octal mode"),
            ("ro=1", "ro", "takes no value"),
            ("foreground=yes", "foreground", "takes no value"),
            ("path_style=maybe", "path_style", "not true or false"),
            ("signature=v3", "signature", "not one of"),
            ("region=us_east", "region", "not a region id"),
            ("region=-x", "region", "not a region id"),
            ("part_size=1M", "part_size", "outside 5M..5G"),
            ("part_size=6G", "part_size", "outside 5M..5G"),
            ("cache_size=10X", "cache_size", "not a size"),
            ("cache_size=M", "cache_size", "not a size"),
            (
                "cache_size=99999999999999999999",
                "cache_size",
                "not a size",
            ),
            ("cache_size=20000000T", "cache_size", "not a size"),
            ("cache_size=512K", "cache_size", "below the 1M minimum"),
            (
                "disk_cache_size=2G",
                "disk_cache_size",
                "needs disk_cache=DIR",
            ),
            (
                "disk_cache=/tmp/c,disk_cache_size=100K",
                "disk_cache_size",
                "below the 1M minimum",
            ),
            ("disk_cache", "disk_cache", "needs a value"),
            (
                "readahead_max=512K",
                "readahead_max",
                "below the 1M minimum",
            ),
            (
                "cache_size=32M,readahead_max=64M",
                "readahead_max",
                "exceeds cache_size 32M",
            ),
            (
                "readahead_max=2G",
                "readahead_max",
                "exceeds cache_size 256M",
            ),
            ("attr_ttl=1d", "attr_ttl", "not a duration"),
            ("attr_ttl=-1", "attr_ttl", "not a duration"),
            ("dir_ttl=1.5s", "dir_ttl", "not a duration"),
            (
                "negative_ttl=99999999999999999999h",
                "negative_ttl",
                "not a duration",
            ),
            ("endpoint=https://host?x=1", "endpoint", "without a query"),
        ] {
            let err = MountOptions::parse(&[opt]).unwrap_err();
            match &err {
                ConfigError::BadOption { name: n, .. } => assert_eq!(n, name, "{opt}"),
                other => panic!("{opt}: {other:?}"),
            }
            assert!(err.to_string().contains(why), "{opt}: {err}");
        }
        for (opt, why) in [
            ("endpoint=us-west-2", "looks like a region"),
            ("endpoint=ftp://host", "http:// or https://"),
            ("endpoint=https://host/bkt", "must not have a path"),
            ("endpoint=https://", "not a URL"),
        ] {
            let err = MountOptions::parse(&[opt]).unwrap_err();
            assert!(
                matches!(err, ConfigError::Endpoint { .. }),
                "{opt}: {err:?}"
            );
            assert!(err.to_string().contains(why), "{opt}: {err}");
        }
    }

    #[test]
    fn unknown_options_are_named_with_a_hint_where_one_exists() {
        for (opt, name, hint) in [
            ("bogus", "bogus", ""),
            ("bogus=1", "bogus", ""),
            (
                "use_path_request_style",
                "use_path_request_style",
                "(use path_style)",
            ),
            ("url=https://x", "url", "(use endpoint=URL)"),
            ("multipart_size=64", "multipart_size", "part_size=SIZE"),
            ("readonly", "readonly", "(use ro)"),
        ] {
            let err = MountOptions::parse(&["ro", opt]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::UnknownOption { name: n, .. } if n == name),
                "{opt}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&format!("unknown option {name:?}")), "{msg}");
            assert!(msg.contains(hint), "{opt}: {msg}");
            // The value is never shown, only the name.
            assert!(
                !msg.contains("/etc/passwd-s3fs") && !msg.contains("https://x"),
                "{msg}"
            );
        }
    }

    #[test]
    fn secret_carrying_options_are_refused_unechoed() {
        for (opt, name) in [
            ("access_key=AKIDEXAMPLE", "access_key"),
            ("access_key_id=AKIDEXAMPLE", "access_key_id"),
            ("secret_key=wJalrXUtnFEMI-K7MDENG-SECRET", "secret_key"),
            ("secret=wJalrXUtnFEMI-K7MDENG-SECRET", "secret"),
            (
                "secret-access-key=wJalrXUtnFEMI-K7MDENG-SECRET",
                "secret-access-key",
            ),
            ("password=wJalrXUtnFEMI-K7MDENG-SECRET", "password"),
            ("passwd=wJalrXUtnFEMI-K7MDENG-SECRET", "passwd"),
            (
                "session_token=wJalrXUtnFEMI-K7MDENG-SECRET",
                "session_token",
            ),
            (
                "security_token=wJalrXUtnFEMI-K7MDENG-SECRET",
                "security_token",
            ),
            (
                "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI-K7MDENG-SECRET",
                "AWS_SECRET_ACCESS_KEY",
            ),
            ("sk=wJalrXUtnFEMI-K7MDENG-SECRET", "sk"),
            ("ak=AKIDEXAMPLE", "ak"),
            (
                "credentials=AKIDEXAMPLE:wJalrXUtnFEMI-K7MDENG-SECRET",
                "credentials",
            ),
            // Refused even without a value: the user is about to add one.
            ("secret_key", "secret_key"),
        ] {
            let err = MountOptions::parse(&["ro", opt]).unwrap_err();
            assert_eq!(
                err,
                ConfigError::SecretOption {
                    name: name.to_string()
                },
                "{opt}"
            );
            let shown = format!("{err} {err:?}");
            assert!(
                !shown.contains(SECRET) && !shown.contains("AKIDEXAMPLE"),
                "{shown}"
            );
            assert!(shown.contains("environment") && shown.contains("credentials_file"));
        }
        // Endpoints cannot smuggle secrets either, and are not echoed.
        for opt in [
            "endpoint=https://AKIDEXAMPLE:wJalrXUtnFEMI-K7MDENG-SECRET@s3.example.com",
            "endpoint=https://AKIDEXAMPLE:wJalr/XUtnFEMI-K7MDENG-SECRET@s3.example.com",
            "endpoint=https://s3.example.com/?X-Amz-Signature=wJalrXUtnFEMI-K7MDENG-SECRET",
        ] {
            let err = MountOptions::parse(&[opt]).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(
                !shown.contains("SECRET") && !shown.contains("AKIDEXAMPLE"),
                "{shown}"
            );
            assert!(shown.contains("endpoint"), "{shown}");
        }
    }

    #[test]
    fn region_from_host_knows_each_vendor() {
        for (host, region) in [
            ("s3.eu-central-1.amazonaws.com", Some("eu-central-1")),
            ("s3.dualstack.ap-south-1.amazonaws.com", Some("ap-south-1")),
            ("s3-fips.us-gov-west-1.amazonaws.com", Some("us-gov-west-1")),
            ("s3-us-west-2.amazonaws.com", Some("us-west-2")),
            ("s3-external-1.amazonaws.com", Some("us-east-1")),
            ("s3.cn-north-1.amazonaws.com.cn", Some("cn-north-1")),
            ("s3.amazonaws.com", None),
            ("oss-cn-hangzhou.aliyuncs.com", Some("cn-hangzhou")),
            ("oss-cn-shanghai-internal.aliyuncs.com", Some("cn-shanghai")),
            ("s3.oss-cn-beijing.aliyuncs.com", Some("cn-beijing")),
            ("oss-accelerate.aliyuncs.com", None),
            ("ecs.cn-hangzhou.aliyuncs.com", None),
            ("obs.cn-north-4.myhuaweicloud.com", Some("cn-north-4")),
            ("obs.myhuaweicloud.com", None),
            ("cos.ap-guangzhou.myqcloud.com", Some("ap-guangzhou")),
            ("cos.accelerate.myqcloud.com", None),
            ("OBS.CN-NORTH-4.MYHUAWEICLOUD.COM", Some("cn-north-4")),
            ("minio.example.com", None),
            ("127.0.0.1", None),
        ] {
            assert_eq!(region_from_host(host).as_deref(), region, "{host}");
        }
    }

    #[test]
    fn endpoint_region_signature_and_path_style_per_provider() {
        use SignatureVersion::*;
        for (source, opts, endpoint, region, path_style, signature) in [
            // S3: defaults, region, China, derived regions, global host.
            (
                "s3://bkt",
                &[][..],
                "https://s3.us-east-1.amazonaws.com",
                "us-east-1",
                false,
                S3V4,
            ),
            (
                "s3://bkt",
                &["region=eu-west-1"],
                "https://s3.eu-west-1.amazonaws.com",
                "eu-west-1",
                false,
                S3V4,
            ),
            (
                "s3://bkt",
                &["region=cn-north-1"],
                "https://s3.cn-north-1.amazonaws.com.cn",
                "cn-north-1",
                false,
                S3V4,
            ),
            (
                "s3://bkt",
                &["endpoint=https://s3.eu-central-1.amazonaws.com"],
                "https://s3.eu-central-1.amazonaws.com",
                "eu-central-1",
                false,
                S3V4,
            ),
            (
                "s3://bkt",
                &["endpoint=https://s3.amazonaws.com"],
                "https://s3.amazonaws.com",
                "us-east-1",
                false,
                S3V4,
            ),
            (
                "s3://bkt",
                &["endpoint=https://minio.example.com", "signature=v2"],
                "https://minio.example.com",
                "us-east-1",
                false,
                S3V2,
            ),
            (
                "s3://bkt",
                &["endpoint=https://garage.example.com", "region=garage"],
                "https://garage.example.com",
                "garage",
                false,
                S3V4,
            ),
            // s3:// on other vendors' S3-compatible endpoints (case 4).
            (
                "s3://bkt",
                &["endpoint=https://cos.ap-guangzhou.myqcloud.com"],
                "https://cos.ap-guangzhou.myqcloud.com",
                "ap-guangzhou",
                false,
                S3V4,
            ),
            (
                "s3://bkt",
                &["endpoint=https://s3.oss-cn-hangzhou.aliyuncs.com"],
                "https://s3.oss-cn-hangzhou.aliyuncs.com",
                "cn-hangzhou",
                false,
                S3V4,
            ),
            // Path style: IP, localhost, IPv6, dotted bucket over HTTPS, overrides.
            (
                "s3://bkt",
                &["endpoint=http://127.0.0.1:9000"],
                "http://127.0.0.1:9000",
                "us-east-1",
                true,
                S3V4,
            ),
            (
                "s3://bkt",
                &["endpoint=http://localhost:9000"],
                "http://localhost:9000",
                "us-east-1",
                true,
                S3V4,
            ),
            (
                "s3://bkt",
                &["endpoint=http://[::1]:9000"],
                "http://[::1]:9000",
                "us-east-1",
                true,
                S3V4,
            ),
            (
                "s3://bkt",
                &["endpoint=http://127.0.0.1:9000,path_style=false"],
                "http://127.0.0.1:9000",
                "us-east-1",
                false,
                S3V4,
            ),
            (
                "s3://bkt",
                &["path_style"],
                "https://s3.us-east-1.amazonaws.com",
                "us-east-1",
                true,
                S3V4,
            ),
            (
                "s3://my.dotted.bkt",
                &[],
                "https://s3.us-east-1.amazonaws.com",
                "us-east-1",
                true,
                S3V4,
            ),
            (
                "s3://my.dotted.bkt",
                &["endpoint=http://minio.lan:9000"],
                "http://minio.lan:9000",
                "us-east-1",
                false,
                S3V4,
            ),
            // OSS: region spellings, derived regions, V1 without a region.
            (
                "oss://bkt",
                &["region=cn-hangzhou"],
                "https://oss-cn-hangzhou.aliyuncs.com",
                "cn-hangzhou",
                false,
                OssV4,
            ),
            (
                "oss://bkt",
                &["region=oss-cn-beijing"],
                "https://oss-cn-beijing.aliyuncs.com",
                "cn-beijing",
                false,
                OssV4,
            ),
            (
                "oss://bkt",
                &["endpoint=oss-cn-hangzhou.aliyuncs.com"],
                "https://oss-cn-hangzhou.aliyuncs.com",
                "cn-hangzhou",
                false,
                OssV4,
            ),
            (
                "oss://bkt",
                &["endpoint=http://oss-cn-shanghai-internal.aliyuncs.com"],
                "http://oss-cn-shanghai-internal.aliyuncs.com",
                "cn-shanghai",
                false,
                OssV4,
            ),
            (
                "oss://bkt",
                &["endpoint=https://bkt.oss-cn-shenzhen.aliyuncs.com"],
                "https://oss-cn-shenzhen.aliyuncs.com",
                "cn-shenzhen",
                false,
                OssV4,
            ),
            (
                "oss://bkt",
                &["endpoint=http://127.0.0.1:8080", "signature=oss_v1"],
                "http://127.0.0.1:8080",
                "",
                true,
                OssV1,
            ),
            (
                "oss://bkt",
                &["endpoint=http://127.0.0.1:8080", "region=cn-hangzhou"],
                "http://127.0.0.1:8080",
                "cn-hangzhou",
                true,
                OssV4,
            ),
            // OBS: default endpoint, derived region, a bucket named like the service.
            (
                "obs://bkt",
                &["region=cn-north-4"],
                "https://obs.cn-north-4.myhuaweicloud.com",
                "cn-north-4",
                false,
                Obs,
            ),
            (
                "obs://bkt",
                &["endpoint=obs.cn-south-1.myhuaweicloud.com"],
                "https://obs.cn-south-1.myhuaweicloud.com",
                "cn-south-1",
                false,
                Obs,
            ),
            (
                "obs://obs",
                &["endpoint=https://obs.cn-north-4.myhuaweicloud.com"],
                "https://obs.cn-north-4.myhuaweicloud.com",
                "cn-north-4",
                false,
                Obs,
            ),
            (
                "obs://bkt",
                &["endpoint=https://obs.example.internal", "signature=obs_v2"],
                "https://obs.example.internal",
                "",
                false,
                ObsV2,
            ),
            // COS: default endpoint, a pasted bucket domain (case 3).
            (
                "cos://bkt-1250000000",
                &["region=ap-guangzhou"],
                "https://cos.ap-guangzhou.myqcloud.com",
                "ap-guangzhou",
                false,
                Cos,
            ),
            (
                "cos://bkt-1250000000",
                &["endpoint=https://bkt-1250000000.cos.ap-beijing.myqcloud.com"],
                "https://cos.ap-beijing.myqcloud.com",
                "ap-beijing",
                false,
                Cos,
            ),
            (
                "cos://bkt-1250000000",
                &["endpoint=http://127.0.0.1:9001"],
                "http://127.0.0.1:9001",
                "",
                true,
                Cos,
            ),
        ] {
            let c = build(source, opts).unwrap_or_else(|e| panic!("{source} {opts:?}: {e}"));
            assert_eq!(
                (
                    c.endpoint.as_str(),
                    c.region.as_str(),
                    c.path_style,
                    c.signature
                ),
                (endpoint, region, path_style, signature),
                "{source} {opts:?}"
            );
        }
    }

    #[test]
    fn missing_or_contradictory_regions_and_wrong_signatures_are_errors() {
        for (source, opts, why) in [
            (
                "oss://bkt",
                &[][..],
                "needs region=REGION (e.g. region=cn-hangzhou) or endpoint=URL",
            ),
            ("obs://bkt", &[], "region=cn-north-4"),
            ("cos://bkt-125", &[], "region=ap-guangzhou"),
            (
                "oss://bkt",
                &["endpoint=http://127.0.0.1:8080"],
                "OSS V4 signing needs one",
            ),
            (
                "oss://bkt",
                &["endpoint=https://oss.example.com"],
                "signature=oss_v1",
            ),
            (
                "oss://bkt",
                &["endpoint=oss-cn-hangzhou.aliyuncs.com", "region=cn-beijing"],
                "region=cn-beijing contradicts endpoint host oss-cn-hangzhou.aliyuncs.com",
            ),
            (
                "s3://bkt",
                &[
                    "endpoint=https://s3.eu-west-1.amazonaws.com",
                    "region=us-east-1",
                ],
                "contradicts",
            ),
        ] {
            let err = build(source, opts).unwrap_err();
            assert!(
                matches!(err, ConfigError::Region { .. }),
                "{source} {opts:?}: {err:?}"
            );
            assert!(err.to_string().contains(why), "{source} {opts:?}: {err}");
        }
        for (source, sig, allowed) in [
            ("s3://bkt", "cos", "use v4 or v2"),
            ("oss://bkt", "obs", "use oss_v4 or oss_v1"),
            ("obs://bkt", "v4", "use obs or obs_v2"),
            ("cos://bkt-125", "v4", "use cos"),
        ] {
            let err = build(source, &["region=r1", &format!("signature={sig}")]).unwrap_err();
            assert!(matches!(err, ConfigError::Signature { .. }), "{err:?}");
            assert!(err.to_string().contains(allowed), "{err}");
        }
    }

    #[test]
    fn http_store_config_carries_everything() {
        let c = build(
            "oss://bkt/some/prefix",
            &["endpoint=http://127.0.0.1:8080,signature=oss_v1"],
        )
        .unwrap();
        let h = c.http_store_config();
        assert_eq!(h.endpoint, "http://127.0.0.1:8080");
        assert_eq!(h.bucket, "bkt");
        assert_eq!(h.region, "");
        assert!(h.path_style);
        assert_eq!(
            h.dialect,
            Dialect::new(Provider::Oss).with_signature(SignatureVersion::OssV1)
        );
        assert_eq!(h.credentials, Credentials::new("LTAI-OSS", SECRET));
        // The default dialect keeps the provider's own signature.
        let h = build("cos://bkt-125", &["region=ap-shanghai"])
            .unwrap()
            .http_store_config();
        assert_eq!(h.dialect, Dialect::new(Provider::Cos));
        assert_eq!(h.region, "ap-shanghai");
        assert!(!h.path_style);
    }

    #[test]
    fn credentials_from_each_providers_environment() {
        let ok = |id: &str, secret: &str, token: Option<&str>| {
            let c = Credentials::new(id, secret);
            match token {
                Some(t) => c.with_session_token(t),
                None => c,
            }
        };
        for (provider, env, expected) in [
            (
                Provider::S3,
                &[
                    ("AWS_ACCESS_KEY_ID", "AK1"),
                    ("AWS_SECRET_ACCESS_KEY", SECRET),
                    ("AWS_SESSION_TOKEN", TOKEN),
                ][..],
                ok("AK1", SECRET, Some(TOKEN)),
            ),
            // An empty token is no token; whitespace around values is dropped.
            (
                Provider::S3,
                &[
                    ("AWS_ACCESS_KEY_ID", " AK1\n"),
                    ("AWS_SECRET_ACCESS_KEY", SECRET),
                    ("AWS_SESSION_TOKEN", ""),
                ],
                ok("AK1", SECRET, None),
            ),
            (
                Provider::Oss,
                &[
                    ("OSS_ACCESS_KEY_ID", "LTAI"),
                    ("OSS_ACCESS_KEY_SECRET", SECRET),
                    ("OSS_SESSION_TOKEN", TOKEN),
                ],
                ok("LTAI", SECRET, Some(TOKEN)),
            ),
            (
                Provider::Oss,
                &[
                    ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI2"),
                    ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET),
                ],
                ok("LTAI2", SECRET, None),
            ),
            (
                Provider::Obs,
                &[
                    ("OBS_ACCESS_KEY_ID", "HW1"),
                    ("OBS_SECRET_ACCESS_KEY", SECRET),
                    ("OBS_SECURITY_TOKEN", TOKEN),
                ],
                ok("HW1", SECRET, Some(TOKEN)),
            ),
            (
                Provider::Obs,
                &[
                    ("HUAWEICLOUD_SDK_AK", "HW2"),
                    ("HUAWEICLOUD_SDK_SK", SECRET),
                    ("HUAWEICLOUD_SDK_SECURITY_TOKEN", TOKEN),
                ],
                ok("HW2", SECRET, Some(TOKEN)),
            ),
            // The first complete set wins.
            (
                Provider::Obs,
                &[
                    ("HUAWEICLOUD_SDK_AK", "HW2"),
                    ("HUAWEICLOUD_SDK_SK", "other"),
                    ("OBS_ACCESS_KEY_ID", "HW1"),
                    ("OBS_SECRET_ACCESS_KEY", SECRET),
                ],
                ok("HW1", SECRET, None),
            ),
            // A token is never borrowed from another set (case 8).
            (
                Provider::Obs,
                &[
                    ("OBS_SECURITY_TOKEN", TOKEN),
                    ("HUAWEICLOUD_SDK_AK", "HW2"),
                    ("HUAWEICLOUD_SDK_SK", SECRET),
                ],
                ok("HW2", SECRET, None),
            ),
            (
                Provider::Cos,
                &[
                    ("COS_SECRET_ID", "AKID1"),
                    ("COS_SECRET_KEY", SECRET),
                    ("COS_SESSION_TOKEN", TOKEN),
                ],
                ok("AKID1", SECRET, Some(TOKEN)),
            ),
            (
                Provider::Cos,
                &[
                    ("TENCENTCLOUD_SECRET_ID", "AKID2"),
                    ("TENCENTCLOUD_SECRET_KEY", SECRET),
                    ("TENCENTCLOUD_SESSION_TOKEN", TOKEN),
                ],
                ok("AKID2", SECRET, Some(TOKEN)),
            ),
        ] {
            let got = credentials_from_env(provider, &env_from(env))
                .map(|c| c.expect("credentials in the environment"))
                .unwrap_or_else(|e| panic!("{provider:?} {env:?}: {e}"));
            assert_eq!(got, expected, "{provider:?}");
        }
    }

    #[test]
    fn missing_or_partial_environment_credentials_name_the_variables() {
        for (provider, env, why) in [
            (
                Provider::S3,
                &[][..],
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ),
            // Another provider's variables do not count.
            (
                Provider::S3,
                &[
                    ("OSS_ACCESS_KEY_ID", "x"),
                    ("OSS_ACCESS_KEY_SECRET", SECRET),
                ],
                "AWS_ACCESS_KEY_ID",
            ),
            (
                Provider::Oss,
                &[
                    ("AWS_ACCESS_KEY_ID", "x"),
                    ("AWS_SECRET_ACCESS_KEY", SECRET),
                ],
                "OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET",
            ),
            (
                Provider::Obs,
                &[("OBS_ACCESS_KEY_ID", "")],
                "OBS_ACCESS_KEY_ID and OBS_SECRET_ACCESS_KEY (or HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK)",
            ),
            (
                Provider::Cos,
                &[("COS_SESSION_TOKEN", TOKEN)],
                "COS_SECRET_ID and COS_SECRET_KEY (or TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY)",
            ),
        ] {
            let nowhere = crate::mount::credentials::Places {
                etc: std::path::PathBuf::from("/nonexistent/bucketfs-etc"),
            };
            let err = crate::mount::credentials::resolve(
                provider,
                "bkt",
                &Default::default(),
                &env_from(env),
                &nowhere,
            )
            .unwrap_err();
            assert!(
                matches!(err, ConfigError::MissingCredentials { .. }),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(why) && msg.contains("credentials_file"),
                "{msg}"
            );
            assert!(!msg.contains(SECRET) && !msg.contains(TOKEN));
        }
        for (provider, env, set, missing) in [
            (
                Provider::S3,
                &[("AWS_ACCESS_KEY_ID", "AK")][..],
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
            ),
            (
                Provider::S3,
                &[("AWS_SECRET_ACCESS_KEY", SECRET)],
                "AWS_SECRET_ACCESS_KEY",
                "AWS_ACCESS_KEY_ID",
            ),
            // Half a first set is an error even when a later set is complete.
            (
                Provider::Cos,
                &[
                    ("COS_SECRET_ID", "AKID"),
                    ("TENCENTCLOUD_SECRET_ID", "A2"),
                    ("TENCENTCLOUD_SECRET_KEY", SECRET),
                ],
                "COS_SECRET_ID",
                "COS_SECRET_KEY",
            ),
        ] {
            let err = credentials_from_env(provider, &env_from(env)).unwrap_err();
            assert_eq!(err, ConfigError::PartialCredentials { set, missing });
            assert!(!format!("{err} {err:?}").contains(SECRET));
        }
    }

    #[test]
    fn credentials_file_is_parsed_and_wins_over_the_environment() {
        let file = TempFile::new(
            &format!(
                "# bucketfs credentials\n\n  access_key_id = AKFILE\nsecret_access_key=\"{SECRET}\"\nsession_token='{TOKEN}'\n"
            ),
            0o600,
        );
        // ALL_ENV has complete S3 credentials too: the file wins.
        let c = build("s3://bkt", &[&file.option()]).unwrap();
        assert_eq!(
            c.credentials,
            Credentials::new("AKFILE", SECRET).with_session_token(TOKEN)
        );
        // A file given but broken is an error, not a reason to use the env.
        let broken = TempFile::new("access_key_id=AKFILE\n", 0o600);
        let err = build("s3://bkt", &[&broken.option()]).unwrap_err();
        assert!(
            matches!(err, ConfigError::CredentialsFile { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("secret_access_key is missing"),
            "{err}"
        );
        // Without the file, the environment is used.
        let c = build("s3://bkt", &[]).unwrap();
        assert_eq!(c.credentials.access_key_id, "AKIA-S3");
    }

    #[test]
    fn credentials_file_open_to_others_is_refused() {
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
            let file = TempFile::new(
                &format!("access_key_id=A\nsecret_access_key={SECRET}\n"),
                mode,
            );
            let err = read_credentials_file(&file.0, "bkt").unwrap_err();
            let path = file.0.display().to_string();
            assert_eq!(
                err,
                ConfigError::CredentialsFileMode {
                    path: path.clone(),
                    mode
                }
            );
            let msg = err.to_string();
            assert!(msg.contains(&format!("run `chmod 600 {path}`")), "{msg}");
            assert!(msg.contains(&format!("mode {mode:04o}")), "{msg}");
            assert!(!msg.contains(SECRET));
        }
        for mode in [0o600, 0o400] {
            let file = TempFile::new(
                &format!("access_key_id=A\nsecret_access_key={SECRET}\n"),
                mode,
            );
            assert_eq!(
                read_credentials_file(&file.0, "bkt").unwrap(),
                Credentials::new("A", SECRET)
            );
        }
        // Cleanup happened: the last file is gone once dropped.
        let file = TempFile::new("", 0o600);
        let path = file.0.clone();
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn credentials_file_errors_name_lines_never_values() {
        for (text, why) in [
            ("", "access_key_id is missing"),
            ("access_key_id=A\n", "secret_access_key is missing"),
            (
                "secret_access_key=wJalrXUtnFEMI-K7MDENG-SECRET\n",
                "access_key_id is missing",
            ),
            // The s3fs `ACCESS:SECRET` form.
            (
                "AKID:wJalrXUtnFEMI-K7MDENG-SECRET\n",
                "line 1 is not KEY=VALUE",
            ),
            (
                "# c\naccess_key_id=A\nsecret=wJalrXUtnFEMI-K7MDENG-SECRET\n",
                "line 3: unknown key \"secret\"",
            ),
            (
                "AKID:wJalrXUtnFEMI-K7MDENG-SECRET=x\n",
                "line 1: unknown key (expected",
            ),
            (
                "access_key_id=A\naccess_key_id=B\nsecret_access_key=wJalrXUtnFEMI-K7MDENG-SECRET\n",
                "line 2: access_key_id is given twice",
            ),
            (
                "access_key_id=A\nsecret_access_key=\"\"\n",
                "line 2: secret_access_key is empty",
            ),
        ] {
            let err = parse_credentials(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(!err.contains(SECRET), "{err}");
        }
        let missing = Path::new("/nonexistent/bucketfs/creds");
        let err = read_credentials_file(missing, "bkt").unwrap_err();
        assert!(err.to_string().contains("cannot open"), "{err}");
        let err = read_credentials_file(Path::new("~/bucketfs-creds-nope"), "bkt").unwrap_err();
        assert!(err.to_string().contains("`~` is not expanded"), "{err}");
        // A directory is refused as such, before its (1777) mode is looked at.
        let err = read_credentials_file(&std::env::temp_dir(), "bkt").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn no_debug_output_shows_a_secret() {
        let env = [
            ("AWS_ACCESS_KEY_ID", "AKIA-S3"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_SESSION_TOKEN", TOKEN),
        ];
        let c = build_env("s3://bkt/p", &["region=eu-west-1"], &env).unwrap();
        assert_eq!(c.credentials.secret_access_key.expose(), SECRET);
        for shown in [
            format!("{c:?}"),
            format!("{:?}", c.http_store_config()),
            format!("{:?}", c.options),
            format!("{:?}", c.credentials),
        ] {
            assert!(!shown.contains(SECRET) && !shown.contains(TOKEN), "{shown}");
        }
        assert!(
            format!("{c:?}").contains("AKIA-S3"),
            "the key id is not secret"
        );
    }
}
