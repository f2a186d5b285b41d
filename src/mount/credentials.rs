//! Where a mount's credentials come from, in this order (the first source
//! that has any wins):
//!
//! 1. an option: `credentials_file=PATH` (`KEY=VALUE` lines, or the s3fs
//!    passwd format) or `credential_process=COMMAND`; giving both is an
//!    error;
//! 2. the provider's environment variables (`AWS_*`, `OSS_*`/
//!    `ALIBABA_CLOUD_*`, `OBS_*`/`HUAWEICLOUD_SDK_*`, `COS_*`/
//!    `TENCENTCLOUD_*`), session token included;
//! 3. the s3fs family's passwd files in their usual places:
//!    `$HOME/.passwd-TOOL`, then `/etc/passwd-TOOL`, TOOL being s3fs,
//!    ossfs, obsfs or cosfs after the provider;
//! 4. for `s3://` only: the AWS shared files, profile `profile=NAME`, else
//!    `$AWS_PROFILE`, else `default`: static keys from
//!    `~/.aws/credentials` (`$AWS_SHARED_CREDENTIALS_FILE`), or a
//!    `credential_process` from `~/.aws/config` (`$AWS_CONFIG_FILE`).
//!
//! Subtle cases:
//! 1. **Secrets never show.** Errors name files, lines and variables, never
//!    a value; the output of a credential process is not echoed, even when
//!    it does not parse.
//! 2. **A set of variables is whole.** A key id without its secret is an
//!    error, not a reason to use the next source: that would silently pick
//!    another identity. An empty variable counts as unset; a session token
//!    is only taken with the key of its own set.
//! 3. **Files with secrets are private.** Any group or other permission bit
//!    on a credentials or passwd file refuses it, with `chmod 600` in the
//!    message (write access would let another user swap the keys). The
//!    mode is checked on the opened file.
//! 4. **passwd lines.** `AK:SK` is the default; `BUCKET:AK:SK` applies to
//!    that bucket and wins over the default; `AK:SK:TOKEN` is told apart
//!    from `BUCKET:AK:SK` by its third field, a session token being far
//!    longer than any secret key (over 64 characters); four fields are
//!    `BUCKET:AK:SK:TOKEN`. Lines for other buckets are skipped.
//! 5. **Temporary credentials** from a credential process carry an
//!    `Expiration`; the mount runs the process again before it
//!    ([`refresh_due`]) and swaps the new keys in without remounting.

use crate::mount::config::{ConfigError, EnvLookup};
use crate::store::Provider;
use crate::store::credentials::Credentials;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long before its expiry a temporary credential is renewed.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// Longest a credential process may run.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// A session token is longer than this; secret keys are 30 to 40 characters
/// (subtle case 4).
const TOKEN_MIN_LEN: usize = 64;

/// Where the credentials were found (for a log line, and to renew them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    File(PathBuf),
    Environment,
    Passwd(PathBuf),
    AwsProfile { file: PathBuf, profile: String },
    Process(String),
}

impl std::fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::File(p) => write!(f, "credentials file {}", p.display()),
            CredentialSource::Environment => write!(f, "the environment"),
            CredentialSource::Passwd(p) => write!(f, "passwd file {}", p.display()),
            CredentialSource::AwsProfile { file, profile } => {
                write!(f, "profile {profile} of {}", file.display())
            }
            // The command itself may carry arguments nobody needs in a log.
            CredentialSource::Process(_) => write!(f, "a credential process"),
        }
    }
}

/// Credentials as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub credentials: Credentials,
    pub source: CredentialSource,
    /// When temporary credentials stop working.
    pub expires: Option<SystemTime>,
}

/// The credential options of a mount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialOptions {
    pub file: Option<PathBuf>,
    pub process: Option<String>,
    pub profile: Option<String>,
}

/// Where the system-wide passwd files live (`/etc`; tests use another).
#[derive(Clone, Debug)]
pub struct Places {
    pub etc: PathBuf,
}

impl Default for Places {
    fn default() -> Self {
        Places {
            etc: PathBuf::from("/etc"),
        }
    }
}

/// Finds the credentials of a mount of `bucket` at `provider` (see the
/// module doc for the order).
pub fn resolve(
    provider: Provider,
    bucket: &str,
    options: &CredentialOptions,
    env: EnvLookup,
    places: &Places,
) -> Result<Resolved, ConfigError> {
    // 1. Options.
    match (&options.file, &options.process) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::BadOption {
                name: "credential_process".into(),
                reason: "give credentials_file= or credential_process=, not both".into(),
            });
        }
        (Some(path), None) => {
            return Ok(Resolved {
                credentials: read_credentials_file(path, bucket)?,
                source: CredentialSource::File(path.clone()),
                expires: None,
            });
        }
        (None, Some(command)) => return run_process(command),
        (None, None) => {}
    }
    // 2. The environment.
    if let Some(credentials) = credentials_from_env(provider, env)? {
        return Ok(Resolved {
            credentials,
            source: CredentialSource::Environment,
            expires: None,
        });
    }
    // 3. passwd files.
    let home = env("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    let tool = passwd_tool(provider);
    let mut passwd = Vec::new();
    if let Some(home) = &home {
        passwd.push(home.join(format!(".passwd-{tool}")));
    }
    passwd.push(places.etc.join(format!("passwd-{tool}")));
    for path in passwd {
        if !path.exists() {
            continue;
        }
        let text = read_private_file(&path)?;
        let found = parse_passwd(&text, bucket).map_err(|reason| ConfigError::CredentialsFile {
            path: path.display().to_string(),
            reason,
        })?;
        if let Some(credentials) = found {
            return Ok(Resolved {
                credentials,
                source: CredentialSource::Passwd(path),
                expires: None,
            });
        }
    }
    // 4. AWS shared files.
    if provider == Provider::S3
        && let Some(found) = aws_profile(options.profile.as_deref(), env, home.as_deref())?
    {
        return Ok(found);
    }
    if let Some(profile) = &options.profile {
        return Err(ConfigError::BadOption {
            name: "profile".into(),
            reason: format!("no AWS profile {profile:?} with credentials was found"),
        });
    }
    Err(ConfigError::MissingCredentials {
        provider: provider.name(),
        vars: env_names(provider),
        passwd: format!("~/.passwd-{tool} or /etc/passwd-{tool}"),
    })
}

/// Runs the credential source again (a credential process before its
/// credentials expire).
pub fn renew(source: &CredentialSource, env: EnvLookup) -> Result<Resolved, ConfigError> {
    match source {
        CredentialSource::Process(command) => run_process(command),
        CredentialSource::AwsProfile { profile, .. } => {
            let home = env("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
            aws_profile(Some(profile), env, home.as_deref())?.ok_or_else(|| {
                ConfigError::BadOption {
                    name: "profile".into(),
                    reason: format!("AWS profile {profile:?} is gone"),
                }
            })
        }
        other => Err(ConfigError::BadOption {
            name: "credentials".into(),
            reason: format!("credentials from {other} do not expire"),
        }),
    }
}

/// When to renew credentials that expire at `expires`, seen `now`.
pub fn refresh_due(expires: SystemTime, now: SystemTime) -> Duration {
    expires
        .checked_sub(REFRESH_BEFORE_EXPIRY)
        .and_then(|at| at.duration_since(now).ok())
        .unwrap_or(Duration::ZERO)
}

/// The s3fs-family tool whose passwd file a provider uses.
fn passwd_tool(provider: Provider) -> &'static str {
    match provider {
        Provider::S3 => "s3fs",
        Provider::Oss => "ossfs",
        Provider::Obs => "obsfs",
        Provider::Cos => "cosfs",
    }
}

/// Parses an s3fs passwd file for `bucket` (subtle case 4): the bucket's
/// line if any, else the default line; `None` when neither exists.
pub fn parse_passwd(text: &str, bucket: &str) -> Result<Option<Credentials>, String> {
    let mut default = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').map(str::trim).collect();
        if fields.iter().any(|f| f.is_empty()) {
            return Err(format!("line {} has an empty field", n + 1));
        }
        let (for_bucket, id, secret, token) = match fields.as_slice() {
            [id, secret] => (None, id, secret, None),
            [a, b, c] if *a == bucket => (Some(*a), b, c, None),
            [id, secret, token] if token.len() > TOKEN_MIN_LEN => (None, id, secret, Some(*token)),
            [other, _, _] => (Some(*other), &"", &"", None),
            [b, id, secret, token] => (Some(*b), id, secret, Some(*token)),
            _ => {
                return Err(format!(
                    "line {} is not AK:SK, BUCKET:AK:SK or AK:SK:TOKEN",
                    n + 1
                ));
            }
        };
        let make = || {
            let c = Credentials::new(*id, *secret);
            match token {
                Some(t) => c.with_session_token(t),
                None => c,
            }
        };
        match for_bucket {
            Some(b) if b == bucket => return Ok(Some(make())),
            Some(_) => {}
            None if default.is_none() => default = Some(make()),
            None => {}
        }
    }
    Ok(default)
}

/// The AWS shared files' credentials for `profile` (subtle case 5 for a
/// `credential_process`).
fn aws_profile(
    profile: Option<&str>,
    env: EnvLookup,
    home: Option<&Path>,
) -> Result<Option<Resolved>, ConfigError> {
    let name = profile
        .map(str::to_string)
        .or_else(|| env("AWS_PROFILE").filter(|p| !p.is_empty()))
        .unwrap_or_else(|| "default".to_string());
    let file_in = |var: &str, rel: &str| {
        env(var)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.map(|h| h.join(rel)))
    };
    if let Some(path) = file_in("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials")
        && path.exists()
    {
        let ini = load_ini(&path)?;
        if let Some(section) = ini.section(Some(name.as_str())) {
            let get = |k: &str| section.get(k).map(str::trim).filter(|v| !v.is_empty());
            if let (Some(id), Some(secret)) =
                (get("aws_access_key_id"), get("aws_secret_access_key"))
            {
                let c = Credentials::new(id, secret);
                let credentials = match get("aws_session_token") {
                    Some(t) => c.with_session_token(t),
                    None => c,
                };
                return Ok(Some(Resolved {
                    credentials,
                    source: CredentialSource::AwsProfile {
                        file: path,
                        profile: name,
                    },
                    expires: None,
                }));
            }
        }
    }
    if let Some(path) = file_in("AWS_CONFIG_FILE", ".aws/config")
        && path.exists()
    {
        // The config file may hold no secret itself: no mode check.
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::CredentialsFile {
            path: path.display().to_string(),
            reason: format!("cannot read: {e}"),
        })?;
        let ini = ini::Ini::load_from_str(&text).map_err(|e| ConfigError::CredentialsFile {
            path: path.display().to_string(),
            reason: format!("not an INI file (line {})", e.line),
        })?;
        let section_name = if name == "default" {
            "default".to_string()
        } else {
            format!("profile {name}")
        };
        if let Some(command) = ini
            .section(Some(section_name.as_str()))
            .and_then(|s| s.get("credential_process"))
        {
            let mut found = run_process(command)?;
            if found.expires.is_some() {
                found.source = CredentialSource::AwsProfile {
                    file: path,
                    profile: name,
                };
            }
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn load_ini(path: &Path) -> Result<ini::Ini, ConfigError> {
    let text = read_private_file(path)?;
    ini::Ini::load_from_str(&text).map_err(|e| ConfigError::CredentialsFile {
        path: path.display().to_string(),
        reason: format!("not an INI file (line {})", e.line),
    })
}

/// What a credential process prints (the AWS CLI's format).
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessOutput {
    version: u32,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    expiration: Option<String>,
}

/// Runs `command` with `sh -c` and reads its credentials (subtle cases 1
/// and 5). Its stderr is passed through; its stdout is never echoed.
fn run_process(command: &str) -> Result<Resolved, ConfigError> {
    let fail = |reason: String| ConfigError::CredentialProcess { reason };
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot start it: {e}")))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > PROCESS_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "did not finish within {}s",
                    PROCESS_TIMEOUT.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(fail(format!("cannot wait for it: {e}"))),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(fail(format!("exited with {status}")));
    }
    let parsed: ProcessOutput = serde_json::from_slice(&out).map_err(|e| {
        fail(format!(
            "its output is not the expected JSON ({})",
            json_problem(&e)
        ))
    })?;
    if parsed.version != 1 {
        return Err(fail(format!(
            "output Version {} (expected 1)",
            parsed.version
        )));
    }
    let expires = match &parsed.expiration {
        Some(text) => Some(
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map(SystemTime::from)
                .map_err(|_| fail("its Expiration is not an RFC 3339 time".into()))?,
        ),
        None => None,
    };
    let credentials = Credentials::new(parsed.access_key_id, parsed.secret_access_key);
    Ok(Resolved {
        credentials: match parsed.session_token {
            Some(t) => credentials.with_session_token(t),
            None => credentials,
        },
        source: CredentialSource::Process(command.to_string()),
        expires,
    })
}

/// What is wrong with a credential process's output, without quoting it.
fn json_problem(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "missing or wrong fields",
        serde_json::error::Category::Eof => "cut short",
    }
}

/// One set of environment variables for one identity.
struct EnvSet {
    id: &'static str,
    secret: &'static str,
    token: &'static str,
}

/// The provider's variables, in the order they are tried (case 2).
fn env_sets(provider: Provider) -> &'static [EnvSet] {
    match provider {
        Provider::S3 => &[EnvSet {
            id: "AWS_ACCESS_KEY_ID",
            secret: "AWS_SECRET_ACCESS_KEY",
            token: "AWS_SESSION_TOKEN",
        }],
        Provider::Oss => &[
            EnvSet {
                id: "OSS_ACCESS_KEY_ID",
                secret: "OSS_ACCESS_KEY_SECRET",
                token: "OSS_SESSION_TOKEN",
            },
            // The Alibaba Cloud credentials SDKs' names.
            EnvSet {
                id: "ALIBABA_CLOUD_ACCESS_KEY_ID",
                secret: "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
                token: "ALIBABA_CLOUD_SECURITY_TOKEN",
            },
        ],
        Provider::Obs => &[
            EnvSet {
                id: "OBS_ACCESS_KEY_ID",
                secret: "OBS_SECRET_ACCESS_KEY",
                token: "OBS_SECURITY_TOKEN",
            },
            // The Huawei Cloud SDKs' and KooCLI's names.
            EnvSet {
                id: "HUAWEICLOUD_SDK_AK",
                secret: "HUAWEICLOUD_SDK_SK",
                token: "HUAWEICLOUD_SDK_SECURITY_TOKEN",
            },
        ],
        Provider::Cos => &[
            EnvSet {
                id: "COS_SECRET_ID",
                secret: "COS_SECRET_KEY",
                token: "COS_SESSION_TOKEN",
            },
            // The Tencent Cloud SDKs' names.
            EnvSet {
                id: "TENCENTCLOUD_SECRET_ID",
                secret: "TENCENTCLOUD_SECRET_KEY",
                token: "TENCENTCLOUD_SESSION_TOKEN",
            },
        ],
    }
}

/// The names of the provider's own key ID and secret variables (the
/// first of the sets tried), for tools that start a mount.
pub fn env_var_names(provider: Provider) -> (&'static str, &'static str) {
    let first = &env_sets(provider)[0];
    (first.id, first.secret)
}

/// Credentials from the provider's environment variables (case 2).
pub fn credentials_from_env(
    provider: Provider,
    env: EnvLookup,
) -> Result<Option<Credentials>, ConfigError> {
    // Surrounding whitespace is never part of a key (a pasted newline is).
    let get = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    for set in env_sets(provider) {
        match (get(set.id), get(set.secret)) {
            (Some(id), Some(secret)) => {
                let creds = Credentials::new(id, secret);
                return Ok(Some(match get(set.token) {
                    Some(token) => creds.with_session_token(token),
                    None => creds,
                }));
            }
            (Some(_), None) => {
                return Err(ConfigError::PartialCredentials {
                    set: set.id,
                    missing: set.secret,
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::PartialCredentials {
                    set: set.secret,
                    missing: set.id,
                });
            }
            (None, None) => {}
        }
    }
    Ok(None)
}

/// The provider's variables as a person would list them.
fn env_names(provider: Provider) -> String {
    let mut sets = env_sets(provider)
        .iter()
        .map(|s| format!("{} and {}", s.id, s.secret));
    let first = sets.next().unwrap_or_default();
    let rest: Vec<String> = sets.collect();
    if rest.is_empty() {
        first
    } else {
        format!("{first} (or {})", rest.join(", or "))
    }
}

/// Reads a file holding secrets: refused if open to group/others (case 3,
/// checked on the opened handle, so the file checked is the file read).
pub fn read_private_file(path: &Path) -> Result<String, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let file_err = |reason: String| ConfigError::CredentialsFile {
        path: shown.clone(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| {
        let tilde = if shown.starts_with('~') {
            " (`~` is not expanded here; give the full path)"
        } else {
            ""
        };
        file_err(format!("cannot open: {e}{tilde}"))
    })?;
    let meta = file
        .metadata()
        .map_err(|e| file_err(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(file_err("is not a regular file".to_string()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::CredentialsFileMode {
            path: shown.clone(),
            mode,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| file_err(format!("cannot read: {e}")))?;
    Ok(text)
}

/// Reads a `credentials_file=`: `KEY=VALUE` lines ([`parse_credentials`])
/// or, if no line has a `=`, the s3fs passwd format ([`parse_passwd`]).
pub fn read_credentials_file(path: &Path, bucket: &str) -> Result<Credentials, ConfigError> {
    let text = read_private_file(path)?;
    let file_err = |reason: String| ConfigError::CredentialsFile {
        path: path.display().to_string(),
        reason,
    };
    let lines = || {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
    };
    if lines().next().is_some() && lines().all(|l| !l.contains('=')) {
        return parse_passwd(&text, bucket)
            .map_err(file_err)?
            .ok_or_else(|| file_err(format!("no line for bucket {bucket} and no default line")));
    }
    parse_credentials(&text).map_err(file_err)
}

/// Parses `KEY=VALUE` lines: `access_key_id`, `secret_access_key`, optional
/// `session_token`; blank lines and `#` comments skipped; values may be
/// quoted. Errors name the line and key, never a value.
pub fn parse_credentials(text: &str) -> Result<Credentials, String> {
    let mut id = None;
    let mut secret = None;
    let mut token = None;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            // Likely the s3fs `ACCESS:SECRET` form: do not show it.
            return Err(format!(
                "line {n} is not KEY=VALUE (expected access_key_id=, secret_access_key=, session_token=)"
            ));
        };
        let key = key.trim();
        let value = unquote(value.trim());
        let slot = match key {
            "access_key_id" => &mut id,
            "secret_access_key" => &mut secret,
            "session_token" => &mut token,
            _ => {
                // A key name is not secret, but a line like `AK:SK=x` would
                // put one in the name; show it only when it is a plain word.
                let shown = if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    format!(" {key:?}")
                } else {
                    String::new()
                };
                return Err(format!(
                    "line {n}: unknown key{shown} (expected access_key_id, secret_access_key, session_token)"
                ));
            }
        };
        if value.is_empty() {
            return Err(format!("line {n}: {key} is empty"));
        }
        if slot.is_some() {
            return Err(format!("line {n}: {key} is given twice"));
        }
        *slot = Some(value.to_string());
    }
    let id = id.ok_or("access_key_id is missing")?;
    let secret = secret.ok_or("secret_access_key is missing")?;
    let creds = Credentials::new(id, secret);
    Ok(match token {
        Some(t) => creds.with_session_token(t),
        None => creds,
    })
}

fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-SECRET";
    const TOKEN: &str =
        "IQoJb3JpZ2luX2VjEJr-a-session-token-that-is-much-longer-than-any-secret-key-0123456789";

    /// A home and an /etc of our own, and an environment pointing at them.
    struct World {
        dir: PathBuf,
        vars: HashMap<String, String>,
    }

    impl World {
        fn new(name: &str) -> World {
            let dir =
                std::env::temp_dir().join(format!("bucketfs-creds-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("home/.aws")).unwrap();
            std::fs::create_dir_all(dir.join("etc")).unwrap();
            let mut vars = HashMap::new();
            vars.insert("HOME".to_string(), dir.join("home").display().to_string());
            World { dir, vars }
        }

        fn write(&self, rel: &str, text: &str, mode: u32) -> PathBuf {
            let path = self.dir.join(rel);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }

        fn resolve(
            &self,
            provider: Provider,
            options: &CredentialOptions,
        ) -> Result<Resolved, ConfigError> {
            let places = Places {
                etc: self.dir.join("etc"),
            };
            resolve(
                provider,
                "bkt",
                options,
                &|k| self.vars.get(k).cloned(),
                &places,
            )
        }
    }

    impl Drop for World {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn id(r: &Result<Resolved, ConfigError>) -> String {
        r.as_ref()
            .map(|r| r.credentials.access_key_id.clone())
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn sources_are_tried_in_order() {
        let mut w = World::new("order");
        let none = CredentialOptions::default();
        assert!(matches!(
            w.resolve(Provider::S3, &none),
            Err(ConfigError::MissingCredentials { .. })
        ));
        // 4. The AWS profile (S3 only).
        w.write(
            "home/.aws/credentials",
            &format!("[default]\naws_access_key_id = AKPROFILE\naws_secret_access_key = {SECRET}\n[other]\naws_access_key_id=AKOTHER\naws_secret_access_key={SECRET}\naws_session_token={TOKEN}\n"),
            0o600,
        );
        assert_eq!(id(&w.resolve(Provider::S3, &none)), "AKPROFILE");
        assert!(matches!(
            w.resolve(Provider::Oss, &none),
            Err(ConfigError::MissingCredentials { .. })
        ));
        w.vars.insert("AWS_PROFILE".into(), "other".into());
        let r = w.resolve(Provider::S3, &none).unwrap();
        assert_eq!(
            r.credentials.session_token.as_ref().map(|t| t.expose()),
            Some(TOKEN)
        );
        let named = CredentialOptions {
            profile: Some("default".into()),
            ..Default::default()
        };
        assert_eq!(id(&w.resolve(Provider::S3, &named)), "AKPROFILE");
        let missing = CredentialOptions {
            profile: Some("nope".into()),
            ..Default::default()
        };
        assert!(id(&w.resolve(Provider::Oss, &missing)).contains("no AWS profile \"nope\""));
        // 3. passwd files: /etc, then the home one wins.
        w.write("etc/passwd-s3fs", &format!("AKETC:{SECRET}\n"), 0o600);
        assert_eq!(id(&w.resolve(Provider::S3, &none)), "AKETC");
        w.write("home/.passwd-s3fs", &format!("AKHOME:{SECRET}\n"), 0o600);
        assert_eq!(id(&w.resolve(Provider::S3, &none)), "AKHOME");
        w.write("etc/passwd-ossfs", &format!("AKOSS:{SECRET}\n"), 0o600);
        assert_eq!(id(&w.resolve(Provider::Oss, &none)), "AKOSS");
        // 2. The environment.
        w.vars.insert("AWS_ACCESS_KEY_ID".into(), "AKENV".into());
        w.vars.insert("AWS_SECRET_ACCESS_KEY".into(), SECRET.into());
        let r = w.resolve(Provider::S3, &none).unwrap();
        assert_eq!(
            (r.credentials.access_key_id.as_str(), &r.source),
            ("AKENV", &CredentialSource::Environment)
        );
        // 1. The option.
        let file = w.write(
            "mine",
            &format!("access_key_id=AKFILE\nsecret_access_key={SECRET}\n"),
            0o600,
        );
        let opt = CredentialOptions {
            file: Some(file),
            ..Default::default()
        };
        assert_eq!(id(&w.resolve(Provider::S3, &opt)), "AKFILE");
    }

    #[test]
    fn passwd_files_open_to_others_are_refused_with_the_fix() {
        let w = World::new("mode");
        let path = w.write("etc/passwd-cosfs", &format!("AK:{SECRET}\n"), 0o640);
        let err = w
            .resolve(Provider::Cos, &CredentialOptions::default())
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
        assert!(!msg.contains(SECRET));
    }

    #[test]
    fn passwd_lines_in_every_format() {
        let text = format!(
            "# comment\nother-bucket:AKOTHER:{SECRET}\nAKDEF:{SECRET}\nbkt:AKBKT:{SECRET}\n"
        );
        assert_eq!(
            parse_passwd(&text, "bkt").unwrap().unwrap().access_key_id,
            "AKBKT"
        );
        assert_eq!(
            parse_passwd(&text, "zzz").unwrap().unwrap().access_key_id,
            "AKDEF"
        );
        let t = parse_passwd(&format!("AKTOK:{SECRET}:{TOKEN}\n"), "bkt")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                t.access_key_id.as_str(),
                t.session_token.as_ref().map(|s| s.expose())
            ),
            ("AKTOK", Some(TOKEN))
        );
        let t = parse_passwd(&format!("bkt:AK4:{SECRET}:{TOKEN}\n"), "bkt")
            .unwrap()
            .unwrap();
        assert_eq!(t.access_key_id, "AK4");
        assert_eq!(
            parse_passwd(&format!("other:AK:{SECRET}\n"), "bkt").unwrap(),
            None
        );
        let err = parse_passwd(&format!("AK::{SECRET}\n"), "bkt").unwrap_err();
        assert!(err.contains("line 1") && !err.contains(SECRET), "{err}");
        // A credentials_file= in the passwd format works too.
        let w = World::new("passwd-file");
        let path = w.write("creds", &format!("bkt:AKFILE:{SECRET}\n"), 0o600);
        assert_eq!(
            read_credentials_file(&path, "bkt").unwrap().access_key_id,
            "AKFILE"
        );
    }

    #[test]
    fn a_credential_process_gives_expiring_credentials_and_is_never_echoed() {
        let w = World::new("process");
        let json = format!(
            r#"{{"Version":1,"AccessKeyId":"AKTEMP","SecretAccessKey":"{SECRET}","SessionToken":"{TOKEN}","Expiration":"2030-01-02T03:04:05Z"}}"#
        );
        let script = w.write(
            "cred.sh",
            &format!("#!/bin/sh\ncat <<'EOF'\n{json}\nEOF\n"),
            0o700,
        );
        let opt = CredentialOptions {
            process: Some(script.display().to_string()),
            ..Default::default()
        };
        let r = w.resolve(Provider::S3, &opt).unwrap();
        assert_eq!(r.credentials.access_key_id, "AKTEMP");
        let expires = r.expires.unwrap();
        assert_eq!(
            expires
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_893_553_445
        );
        // Renewal runs the same command again, five minutes early.
        assert_eq!(
            renew(&r.source, &|_| None)
                .unwrap()
                .credentials
                .access_key_id,
            "AKTEMP"
        );
        let now = expires - Duration::from_secs(600);
        assert_eq!(refresh_due(expires, now), Duration::from_secs(300));
        assert_eq!(refresh_due(expires, expires), Duration::ZERO);
        // A process that prints garbage (with a secret in it) or fails.
        let bad = w.write(
            "bad.sh",
            &format!("#!/bin/sh\necho 'not json {SECRET}'\n"),
            0o700,
        );
        let err = w
            .resolve(
                Provider::S3,
                &CredentialOptions {
                    process: Some(bad.display().to_string()),
                    ..Default::default()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("not JSON") && !err.contains(SECRET), "{err}");
        let err = w
            .resolve(
                Provider::S3,
                &CredentialOptions {
                    process: Some("exit 3".into()),
                    ..Default::default()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        // From ~/.aws/config too.
        w.write(
            "home/.aws/config",
            &format!(
                "[profile temp]\ncredential_process = {}\n",
                script.display()
            ),
            0o644,
        );
        let from_config = w
            .resolve(
                Provider::S3,
                &CredentialOptions {
                    profile: Some("temp".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(from_config.credentials.access_key_id, "AKTEMP");
        assert!(matches!(
            from_config.source,
            CredentialSource::AwsProfile { .. }
        ));
    }
}
