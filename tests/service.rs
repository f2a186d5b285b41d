//! bucketfs as a system service, for real: fstab lines mounted by
//! `mount -a` (through mount.fuse3 and through the `mount.bucketfs`
//! helper), the systemd readiness protocol, `bucketfs stats`, secrets kept
//! out of logs and `ps`, and the one-line failures for a missing FUSE, a
//! missing fusermount3, a file as mount point, an untrusted TLS
//! certificate and a denied bucket.
//!
//! Root is needed for part of it (installing the helper symlink, mounting
//! tmpfs over /dev in a private namespace, switching to `nobody`): those
//! tests are `#[ignore]`d with the reason, so that a run as another user
//! reports them as not run; `.ci/run` runs them as root. The TLS check
//! needs `openssl` (which `.ci/run` installs) and fails without it.
//!
//! Run: `cargo test --test service` (as root: `-- --include-ignored`).

mod common;

use bucketfs::emulator::faults::FaultRule;
use bucketfs::store::Provider;
use common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bucketfs")
}

/// A credentials file (mode 600) with the emulator's keys, in `dir`.
fn credentials_file(dir: &Path) -> PathBuf {
    let path = dir.join("creds");
    fs::write(
        &path,
        format!("access_key_id={AK}\nsecret_access_key={SK}\n"),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A symlink to the built binary at a system path (`/sbin/mount.bucketfs`
/// for mount(8), `/usr/local/bin/bucketfs` for mount.fuse3, which runs
/// `bucketfs` from the standard PATH whatever ours is), removed on drop if
/// the test made it.
struct BinLink(Option<PathBuf>);

impl BinLink {
    fn install(path: &str) -> BinLink {
        let link = PathBuf::from(path);
        match fs::canonicalize(&link) {
            Ok(target) if target == fs::canonicalize(bin()).unwrap() => BinLink(None),
            Ok(target) => panic!(
                "{path} is another bucketfs ({}), not the one under test: \
                 remove it to run this test",
                target.display()
            ),
            Err(_) => {
                let _ = fs::remove_file(&link);
                std::os::unix::fs::symlink(bin(), &link)
                    .unwrap_or_else(|e| panic!("cannot link {path} to {}: {e}", bin()));
                BinLink(Some(link))
            }
        }
    }
}

impl Drop for BinLink {
    fn drop(&mut self) {
        if let Some(link) = &self.0 {
            let _ = fs::remove_file(link);
        }
    }
}

#[test]
#[ignore = "needs root: mount -a and links in /sbin and /usr/local/bin"]
fn fstab_lines_of_both_forms_mount_with_mount_a() {
    require_root("mount -a");
    let _helper = BinLink::install("/sbin/mount.bucketfs");
    let _bin = BinLink::install("/usr/local/bin/bucketfs");
    let emu = Emu::emulator(Provider::S3, "the service tests run against the emulator");
    emu.put("hello.txt", &b"hello from the bucket"[..], &[]);
    let (a, b) = (Mount::new(), Mount::new());
    let creds = credentials_file(&a.base);
    let common = format!(
        "endpoint={},region=local,credentials_file={}",
        emu.url(),
        creds.display()
    );
    let fstab = a.base.join("fstab");
    fs::write(
        &fstab,
        format!(
            "# both forms, with the bookkeeping options mount(8) and systemd use\n\
             s3://bucket {} fuse.bucketfs _netdev,nofail,nodev,nosuid,{common},cache_dir={} 0 0\n\
             s3://bucket {} bucketfs defaults,_netdev,x-systemd.requires=network-online.target,noexec,{common},cache_dir={} 0 0\n",
            a.point.display(),
            a.base.join("cache").display(),
            b.point.display(),
            b.base.join("cache").display(),
        ),
    )
    .unwrap();
    let out = Command::new("mount")
        .args(["-a", "-T"])
        .arg(&fstab)
        .output()
        .expect("mount runs");
    assert!(
        out.status.success(),
        "mount -a failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for m in [&a, &b] {
        wait_until("the fstab mount", || is_mounted(&m.point));
        assert_eq!(
            fs::read_to_string(m.path("hello.txt")).unwrap(),
            "hello from the bucket"
        );
    }
    // noexec reached the kernel for the helper form.
    let options = mount_options(&b.point);
    assert!(options.contains("noexec"), "{options}");
    fs::write(a.path("written.txt"), b"through fstab").unwrap();
    for m in [&a, &b] {
        let status = Command::new("umount").arg(&m.point).status().unwrap();
        assert!(status.success(), "umount {}", m.point.display());
        wait_until("the daemon to finish", || {
            mount_processes(&m.point).is_empty()
        });
    }
    // Unmount waited for the upload.
    assert_eq!(
        emu.store()
            .export_object("written.txt")
            .map(|o| o.body.to_vec()),
        Some(b"through fstab".to_vec())
    );
    // mount(8)'s fake mode checks and mounts nothing.
    let status = Command::new("/sbin/mount.bucketfs")
        .arg("s3://bucket")
        .arg(&a.point)
        .args(["-f", "-o", &common])
        .status()
        .unwrap();
    assert!(status.success() && !is_mounted(&a.point));
}

/// The mount options of the mount at `point`, from /proc/self/mounts.
fn mount_options(point: &Path) -> String {
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(point.to_str().unwrap()))
        .and_then(|l| l.split(' ').nth(3))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn systemd_hears_ready_once_the_mount_answers_and_stopping_at_the_end() {
    use std::os::unix::net::UnixDatagram;
    let emu = Emu::emulator(Provider::S3, "the service tests run against the emulator");
    let mut m = Mount::new();
    let socket_path = m.base.join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut cmd = emu.command(&emu.source(""), &m.point, &[]);
    cmd.arg("-f")
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(m.log_file());
    m.child = Some(cmd.spawn().unwrap());
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification");
    let message = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(message.contains("READY=1"), "{message}");
    assert!(is_mounted(&m.point), "READY came before the mount answered");
    assert!(message.contains("STATUS=mounted at"), "{message}");
    signal(m.pid(), libc::SIGTERM);
    let n = socket.recv(&mut buf).expect("a notification at stop");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(m.wait_exit().success(), "{}", m.log());
}

#[test]
fn stats_show_pending_uploads_and_requests() {
    let emu = Emu::emulator(Provider::S3, "the service tests run against the emulator");
    let m = emu.mount("", &[]);
    emu.faults()
        .add(vec![FaultRule::parse("PutObject:delay=3000").unwrap()]);
    fs::write(m.path("slow.txt"), b"waiting").unwrap();
    let out = Command::new(bin())
        .arg("stats")
        .arg(&m.point)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("pending uploads 1 file(s)"), "{text}");
    assert!(text.contains("bucket          bucket"), "{text}");
    wait_until_within("the slow upload", Duration::from_secs(30), || {
        emu.get("slow.txt").is_some()
    });
    let out = Command::new(bin())
        .args(["stats", "--json"])
        .arg(&m.point)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["pending_uploads"], 0);
    assert!(json["requests"]["PutObject"]["requests"].as_u64().unwrap() >= 1);
    assert!(
        json["requests"]["ListObjectsV2"]["requests"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // Not a bucketfs mount: a clear error.
    let out = Command::new(bin()).args(["stats", "/"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a bucketfs mount point"));
}

#[test]
fn secrets_reach_neither_logs_nor_ps() {
    let emu = Emu::emulator(Provider::Oss, "the service tests run against the emulator");
    let mut m = Mount::new();
    let log = m.base.join("daemon.log");
    let log_opt = format!("log_file={}", log.display());
    let mut cmd = emu.command(&emu.source(""), &m.point, &[&log_opt, "log_level=trace"]);
    // log_level=trace applies only without RUST_LOG.
    cmd.env_remove("RUST_LOG").arg("-f").stderr(m.log_file());
    m.child = Some(cmd.spawn().unwrap());
    m.wait_mounted();
    // Failures too: their errors are logged at length.
    emu.faults()
        .add(vec![FaultRule::parse("PutObject:500:next=2").unwrap()]);
    fs::write(m.path("a.txt"), b"some data").unwrap();
    fs::rename(m.path("a.txt"), m.path("b.txt")).unwrap();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.path("b.txt"))
        .unwrap();
    f.write_all(b" more").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let _ = fs::read_dir(&m.point).unwrap().count();
    // The staging journal, read while a file is held there by a failing
    // server: neither the secret nor anything but its own keys.
    emu.faults()
        .add(vec![FaultRule::parse("PutObject:500").unwrap()]);
    fs::write(m.path("held.txt"), b"held while the server fails").unwrap();
    let cache = m.base.join("cache");
    let mut staged = 0;
    for file in files_under(&cache) {
        let bytes = fs::read(&file).unwrap();
        staged += bytes.len();
        assert!(
            !bytes.windows(SK.len()).any(|w| w == SK.as_bytes()),
            "the secret is in {}",
            file.display()
        );
    }
    assert!(staged > 0, "nothing staged under {}", cache.display());
    emu.faults().clear();
    let cmdline = fs::read(format!("/proc/{}/cmdline", m.pid())).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(SK),
        "the secret is in ps"
    );
    signal(m.pid(), libc::SIGTERM);
    assert!(m.wait_exit().success(), "{}", m.log());
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("TRACE") || text.contains("DEBUG"),
        "debug logging was on"
    );
    assert!(!text.contains(SK), "the secret reached the log");
}

/// Every regular file below `dir`, at any depth.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

/// Runs a mount that must fail; returns its stderr.
fn failing(mut cmd: Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("bucketfs runs");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "expected a failure, got success: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    assert!(!err.contains(SK), "the secret shows: {err}");
    err
}

#[test]
fn failures_are_one_line_and_mount_nothing() {
    let emu = Emu::emulator(Provider::S3, "the service tests run against the emulator");
    let m = Mount::new();

    // A file as the mount point.
    let file = m.base.join("a-file");
    fs::write(&file, b"x").unwrap();
    let err = failing(emu.command(&emu.source(""), &file, &[]));
    assert!(err.contains("is not a directory"), "{err}");

    // Access denied by the bucket.
    emu.faults()
        .add(vec![FaultRule::parse("ListObjectsV2:403:next=2").unwrap()]);
    let err = failing(emu.command(&emu.source(""), &m.point, &[]));
    assert!(
        err.contains("access to bucket bucket") && err.contains("is denied"),
        "{err}"
    );
    assert!(!is_mounted(&m.point));

    // An endpoint whose TLS certificate nobody vouches for.
    let server = TlsServer::start(&m.base);
    let endpoint = format!("endpoint=https://127.0.0.1:{}", server.port);
    let err = failing(emu.command(&emu.source(""), &m.point, &[&endpoint]));
    assert!(
        err.contains("TLS certificate of https://127.0.0.1"),
        "{err}"
    );
    assert!(err.contains("is not trusted"), "{err}");
}

#[test]
#[ignore = "needs root: a private mount namespace and user nobody"]
fn without_fuse_or_fusermount3_the_failure_names_what_to_install() {
    require_root("hiding /dev/fuse and switching to nobody");
    let emu = Emu::emulator(Provider::S3, "the service tests run against the emulator");
    let m = Mount::new();
    // No /dev/fuse: tmpfs over /dev in a private mount namespace.
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs none /dev && exec \"$0\" \"$@\"")
        .arg(bin());
    let inner = emu.command(&emu.source(""), &m.point, &[]);
    // In the foreground (detaching needs /dev/null), without log lines.
    cmd.args(inner.get_args()).arg("-f");
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env("RUST_LOG", "off");
    let err = failing(cmd);
    assert!(
        err.contains("FUSE is not available: /dev/fuse is missing"),
        "{err}"
    );

    // Not root and no fusermount3: the package to install. The binary is
    // copied beside the mount point, since nobody may not reach the build
    // directory.
    fs::set_permissions(&m.base, fs::Permissions::from_mode(0o755)).unwrap();
    let copy = m.base.join("bucketfs");
    fs::copy(bin(), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        others_can_run(&copy),
        "user nobody cannot reach {}: a directory above it is closed to others",
        copy.display()
    );
    let nobody = m.base.join("nobody-mnt");
    fs::create_dir(&nobody).unwrap();
    std::os::unix::fs::chown(&nobody, Some(65534), Some(65534)).unwrap();
    let inner = emu.command(&emu.source(""), &nobody, &[]);
    let mut cmd = Command::new("/usr/bin/setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(inner.get_args())
        .env("PATH", "/nonexistent");
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env("PATH", "/nonexistent");
    let err = failing(cmd);
    assert!(
        err.contains("fusermount3 is not installed") && err.contains("fuse3 package"),
        "{err}"
    );
}

/// Whether every directory above `path`, and `path` itself, let others in.
fn others_can_run(path: &Path) -> bool {
    path.ancestors()
        .all(|p| fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// `openssl s_server` with a fresh self-signed certificate on a free port.
struct TlsServer {
    child: std::process::Child,
    port: u16,
}

impl TlsServer {
    /// Fails the test when openssl is missing (`.ci/run` installs it).
    fn start(dir: &Path) -> TlsServer {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "openssl cannot make a certificate: install openssl (Debian package openssl)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-accept",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        let server = TlsServer { child, port };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < DEADLINE,
                "openssl s_server did not listen on 127.0.0.1:{port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
