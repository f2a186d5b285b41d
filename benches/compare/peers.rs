//! The filesystems compared: bucketfs (this crate's binary), s3fs and
//! rclone mount, each mounted in the foreground as a child process with
//! the server's credentials (and no other) in its environment, a staging
//! or cache directory of its own, and otherwise its defaults.

use super::common::{MountedDaemon, Scratch, on_path};
use super::server::Server;
use bucketfs::mount::credentials::env_var_names;
use bucketfs::store::Provider;
use std::process::Command;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fs {
    Bucketfs,
    S3fs,
    Rclone,
}

impl Fs {
    pub const ALL: [Fs; 3] = [Fs::Bucketfs, Fs::S3fs, Fs::Rclone];

    pub fn name(self) -> &'static str {
        match self {
            Fs::Bucketfs => "bucketfs",
            Fs::S3fs => "s3fs",
            Fs::Rclone => "rclone",
        }
    }

    /// Why this filesystem cannot run here (and how to get it), if so.
    pub fn missing(self, server: &Server) -> Option<String> {
        let (program, package) = match self {
            Fs::Bucketfs => return None,
            Fs::S3fs => ("s3fs", "s3fs"),
            Fs::Rclone => ("rclone", "rclone"),
        };
        if server.provider != Provider::S3 {
            return Some(format!(
                "{program} is not run against the {} dialect (it speaks S3)",
                server.provider.name()
            ));
        }
        (!on_path(program)).then(|| {
            format!("{program} not found: install it with `apt-get install {package}` (Debian, Ubuntu) to compare with it")
        })
    }

    /// Mounts the server's bucket on a new mount point `mnt-N` in
    /// `scratch`, with a fresh cache directory, and waits until it is up.
    pub fn mount(
        self,
        server: &Server,
        scratch: &Scratch,
        n: usize,
    ) -> Result<MountedDaemon, String> {
        let mnt = scratch.subdir(&format!("mnt-{n}"));
        let cache = scratch.subdir(&format!("cache-{n}"));
        let log = scratch.dir.join(format!("{}-{n}.log", self.name()));
        let mut env: Vec<(&str, &str)> = Vec::new();
        let (id, secret) = (server.key_id.as_str(), server.secret.as_str());
        let command =
            match self {
                Fs::Bucketfs => {
                    let scheme = server.provider.name();
                    let mut command = Command::new(env!("CARGO_BIN_EXE_bucketfs"));
                    command
                        .arg("mount")
                        .arg(format!("{scheme}://{}", server.bucket))
                        .arg(&mnt)
                        .arg("-f")
                        .arg("-o")
                        .arg(format!(
                            "endpoint={},region={},cache_dir={}",
                            server.url,
                            server.region,
                            cache.display()
                        ));
                    if let Ok(extra) = std::env::var("BENCH_MOUNT_OPTIONS") {
                        command.arg("-o").arg(extra);
                    }
                    let (id_var, secret_var) = env_var_names(server.provider);
                    env.extend([(id_var, id), (secret_var, secret)]);
                    command
                }
                Fs::S3fs => {
                    let passwd = scratch.dir.join(format!("s3fs-passwd-{n}"));
                    write_private(&passwd, &format!("{}:{}\n", server.key_id, server.secret))?;
                    let mut command = Command::new("s3fs");
                    command.arg(&server.bucket).arg(&mnt).arg("-f").arg("-o").arg(format!(
                    // s3fs's `endpoint` is the signing region.
                    "url={},use_path_request_style,endpoint={},passwd_file={},dbglevel=warn",
                    server.url,
                    server.region,
                    passwd.display()
                ));
                    command
                }
                Fs::Rclone => {
                    let config = scratch.dir.join(format!("rclone-{n}.conf"));
                    write_private(&config, "")?;
                    let mut command = Command::new("rclone");
                    command
                        .arg("mount")
                        .arg(format!(":s3:{}", server.bucket))
                        .arg(&mnt)
                        .arg("--config")
                        .arg(&config)
                        .arg("--cache-dir")
                        .arg(&cache)
                        .args(["--vfs-cache-mode", "writes", "--s3-provider", "Other"])
                        // The bucket exists; without this rclone first tries
                        // to create it (an operation the emulator lacks).
                        .arg("--s3-no-check-bucket")
                        .arg("--s3-endpoint")
                        .arg(&server.url)
                        .arg("--s3-region")
                        .arg(&server.region);
                    env.extend([
                        ("RCLONE_S3_ACCESS_KEY_ID", id),
                        ("RCLONE_S3_SECRET_ACCESS_KEY", secret),
                    ]);
                    command
                }
            };
        // The credentials go by environment or a 0600 file, never on the
        // command line (`ps` shows it).
        MountedDaemon::start(command, &mnt, &log, &env)
    }
}

fn write_private(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}
