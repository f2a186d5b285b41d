//! `bucketfs mount` for real: the built binary mounts buckets served by the
//! in-process emulator (one per test, on 127.0.0.1) through FUSE, and the
//! tests use the mount with ordinary file calls and tools.
//!
//! What is covered:
//! 1. Every dialect (S3, OSS, OBS, COS), one test each sharing
//!    [`dialect_suite`]: nested trees, directory markers and implicit
//!    directories, a file shadowed by a prefix of the same name, keys with
//!    spaces, unicode, `+` and `%`, keys that cannot be paths (`a//b`, `.`,
//!    `..`, over 255 bytes) skipped without breaking the listing; s3fs
//!    metadata (`mode`, `uid`, `gid`, `mtime`) on a fresh lookup and the
//!    mount defaults without it; s3fs-style symlinks (and OSS/COS native ones);
//!    md5 of files of 0, 1, 1 MiB +- 1 bytes (and 100 MiB for S3);
//!    random-offset reads; concurrent readers; an object replaced under an
//!    open handle (ESTALE or EIO, never the new bytes), then readable anew;
//!    a shared `mmap` of a file; S3 also with `-o kernel_cache` (page cache
//!    kept across opens).
//! 2. Every dialect: a mount of a prefix holding 2500 objects, where `ls -l`
//!    shows all of them (listing pagination) at a cost of 3 LISTs and no
//!    HEAD, with the `file_mode`/`dir_mode` options applied.
//! 3. S3: the mount-time failures (bad secret, dead port, missing bucket,
//!    missing, non-empty or already-mounted mount point), each one line on
//!    stderr without the secret, nothing mounted; `-o nonempty`.
//! 4. S3: detached mode (no `-f`) unmounted by `fusermount3 -u`, SIGTERM and
//!    SIGINT on a foreground mount, `fusermount3 -u` of a foreground mount:
//!    all end the process with status 0 and leave nothing mounted.
//!
//! Needs FUSE (`/dev/fuse`, `fusermount3`) and permission to mount. The
//! emulator runs on a multi-thread Tokio runtime owned by the test, so the
//! test thread can block in file calls while the emulator answers the
//! mount's requests. Every mount is a [`Mount`] guard that unmounts, stops
//! the process and removes its directory on drop, panics included.
//!
//! Run: `cargo test --test mount` (`-- --nocapture` shows the mount logs of
//! failing mounts in the panic messages anyway).

mod common;

use bucketfs::store::Provider;
use bytes::Bytes;
use common::*;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::{Command, ExitStatus};

// ---------------------------------------------------------------------------
// Every dialect: namespace, metadata, symlinks, data

#[test]
fn s3_mount_serves_the_bucket() {
    dialect_suite(Provider::S3);
}

/// Keys with names that must come back exactly; each body is its name.
const ODD_NAMES: [&str; 4] = [
    "with space.txt",
    "ünïcödé 日本.txt",
    "plus+sign",
    "per%20cent",
];

fn dialect_suite(provider: Provider) {
    let emu = Emu::start(provider);
    let ctx = provider.name();

    // Metadata and symlinks, looked up fresh (never listed first: a listing
    // carries no metadata, DESIGN.md).
    emu.put(
        "meta/exec",
        &b"#!/bin/sh\n"[..],
        &[
            ("mode", "33261"),
            ("uid", "1234"),
            ("gid", "5678"),
            ("mtime", "1700000000"),
        ],
    );
    let plain_put_at = now_secs();
    emu.put("meta/plain", &b"plain"[..], &[]);
    emu.put("meta/link", &b"exec"[..], &[("mode", "41471")]);
    // Native symlinks: the dialects with PutSymlink (OSS, COS).
    let native_symlinks = matches!(provider, Provider::Oss | Provider::Cos);
    if native_symlinks {
        emu.put_symlink("meta/native", "plain");
    }

    // The tree.
    emu.put("tree/a/b/c/file", &b"deep"[..], &[]);
    emu.put("tree/marked/", Bytes::new(), &[]);
    emu.put("tree/implicit/x", &b"x"[..], &[]);
    emu.put("tree/clash", &b"shadowed file"[..], &[]);
    emu.put("tree/clash/inner", &b"inner"[..], &[]);
    for name in ODD_NAMES {
        emu.put(&format!("tree/{name}"), name.as_bytes().to_vec(), &[]);
    }
    emu.put("tree/bad/ok", &b"ok"[..], &[]);
    for invalid in [
        "tree/bad//double".to_string(),
        "tree/./dot".to_string(),
        "tree/../up".to_string(),
        format!("tree/{}", "n".repeat(300)),
    ] {
        emu.put(&invalid, &b"invalid"[..], &[]);
    }

    // Data: sizes around the 1 MiB block, a file for random and concurrent
    // reads, one to replace under an open handle, 100 MiB for S3 only.
    let sizes: &[usize] = match provider {
        Provider::S3 => &[0, 1, MIB - 1, MIB + 1, 100 * MIB],
        _ => &[0, 1, MIB - 1, MIB + 1],
    };
    let mut sized = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let data = random_bytes(len, i as u64);
        sized.push((format!("data/size-{len}"), len, md5_hex(&data)));
        emu.put(&format!("data/size-{len}"), data, &[]);
    }
    let random = random_bytes(16 * MIB + 12_345, 100);
    emu.put("data/random", random.clone(), &[]);
    let victim_len = 64 * MIB;
    let victim = random_bytes(victim_len, 200);
    emu.put("etag/victim", victim.clone(), &[]);

    let uid = format!("uid={DEFAULT_UID}");
    let gid = format!("gid={DEFAULT_GID}");
    let m = emu.mount("", &[&uid, &gid]);

    // 1. Metadata from HEAD on a fresh lookup.
    let exec = fs::symlink_metadata(m.path("meta/exec")).unwrap();
    assert_eq!(
        (exec.mode(), exec.uid(), exec.gid(), exec.mtime()),
        (0o100755, 1234, 5678, 1_700_000_000),
        "{ctx}: meta/exec"
    );
    let plain = fs::symlink_metadata(m.path("meta/plain")).unwrap();
    assert_eq!(
        (plain.mode(), plain.uid(), plain.gid(), plain.len()),
        (0o100644, DEFAULT_UID, DEFAULT_GID, 5),
        "{ctx}: meta/plain has the mount defaults"
    );
    assert!(
        (plain.mtime() - plain_put_at).abs() <= 2,
        "{ctx}: meta/plain mtime {} is not its Last-Modified (~{plain_put_at})",
        plain.mtime()
    );
    let dir = fs::symlink_metadata(m.path("meta")).unwrap();
    assert_eq!(
        (dir.mode(), dir.uid(), dir.gid()),
        (0o040755, DEFAULT_UID, DEFAULT_GID),
        "{ctx}: implicit directory meta"
    );

    // 2. Symlinks: s3fs style (mode S_IFLNK, body = target), native.
    let link = fs::symlink_metadata(m.path("meta/link")).unwrap();
    assert!(link.file_type().is_symlink(), "{ctx}: meta/link {link:?}");
    assert_eq!(
        fs::read_link(m.path("meta/link")).unwrap(),
        Path::new("exec"),
        "{ctx}"
    );
    assert_eq!(
        fs::read(m.path("meta/link")).unwrap(),
        b"#!/bin/sh\n",
        "{ctx}: reading through meta/link"
    );
    if native_symlinks {
        assert_eq!(
            fs::read_link(m.path("meta/native")).unwrap(),
            Path::new("plain"),
            "{ctx}: native symlink"
        );
        assert_eq!(fs::read(m.path("meta/native")).unwrap(), b"plain", "{ctx}");
    }

    // 3. Listings.
    assert_eq!(
        names(&m.point),
        set(&["data", "etag", "meta", "tree"]),
        "{ctx}: root"
    );
    let mut expected_tree = set(&["a", "bad", "clash", "implicit", "marked"]);
    expected_tree.extend(ODD_NAMES.iter().map(|s| s.to_string()));
    assert_eq!(names(&m.path("tree")), expected_tree, "{ctx}: tree/");
    for entry in fs::read_dir(m.path("tree")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let is_dir = !ODD_NAMES.contains(&name.as_str());
        assert_eq!(
            entry.file_type().unwrap().is_dir(),
            is_dir,
            "{ctx}: readdir type of tree/{name}"
        );
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        assert_eq!(meta.is_dir(), is_dir, "{ctx}: stat of tree/{name}");
    }
    for name in ODD_NAMES {
        assert_eq!(
            fs::read(m.path(&format!("tree/{name}"))).unwrap(),
            name.as_bytes(),
            "{ctx}: tree/{name}"
        );
    }
    assert_eq!(names(&m.path("tree/a")), set(&["b"]), "{ctx}");
    assert_eq!(names(&m.path("tree/a/b")), set(&["c"]), "{ctx}");
    assert_eq!(
        fs::read(m.path("tree/a/b/c/file")).unwrap(),
        b"deep",
        "{ctx}"
    );
    assert_eq!(names(&m.path("tree/marked")), set(&[]), "{ctx}: marker dir");
    assert_eq!(names(&m.path("tree/implicit")), set(&["x"]), "{ctx}");
    assert_eq!(names(&m.path("tree/clash")), set(&["inner"]), "{ctx}");
    assert_eq!(
        fs::read(m.path("tree/clash/inner")).unwrap(),
        b"inner",
        "{ctx}"
    );
    assert_eq!(
        names(&m.path("tree/bad")),
        set(&["ok"]),
        "{ctx}: tree/bad//double is skipped"
    );
    assert_eq!(fs::read(m.path("tree/bad/ok")).unwrap(), b"ok", "{ctx}");

    // 4. Whole files.
    for (key, len, md5) in &sized {
        let path = m.path(key);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            *len as u64,
            "{ctx}: {key}"
        );
        assert_eq!(&md5_of_file(&path), md5, "{ctx}: {key}");
    }

    // 5. Random offsets and lengths, block boundaries, end of file.
    let file = File::open(m.path("data/random")).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut reads: Vec<(usize, usize)> = (0..200)
        .map(|_| {
            let offset = rng.usize(0..random.len());
            (offset, rng.usize(1..=(random.len() - offset).min(300_000)))
        })
        .collect();
    reads.extend([
        (MIB - 10, 20),
        (3 * MIB - 1, 2 * MIB + 2),
        (random.len() - 100, 100),
    ]);
    for (offset, len) in reads {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset as u64)
            .unwrap_or_else(|e| panic!("{ctx}: pread {len} at {offset}: {e}"));
        assert!(
            buf == random[offset..offset + len],
            "{ctx}: pread {len} at {offset} returned other bytes"
        );
    }
    let mut buf = [0u8; 16];
    assert_eq!(
        file.read_at(&mut buf, random.len() as u64 + 5).unwrap(),
        0,
        "{ctx}: read past EOF"
    );
    drop(file);

    // 6. Concurrent readers of one file.
    let expected = md5_hex(&random);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..4)
            .map(|_| s.spawn(|| md5_of_file(&m.path("data/random"))))
            .collect();
        for r in readers {
            assert_eq!(r.join().unwrap(), expected, "{ctx}: concurrent reader");
        }
    });

    // 7. The object replaced under an open handle.
    let file = File::open(m.path("etag/victim")).unwrap();
    let mut head = vec![0u8; MIB];
    file.read_exact_at(&mut head, 0).unwrap();
    assert!(head == victim[..MIB], "{ctx}: first MiB of etag/victim");
    let replacement = random_bytes(victim_len, 201);
    emu.put("etag/victim", replacement.clone(), &[]);
    let far = 48 * MIB;
    let mut buf = vec![0u8; MIB];
    match file.read_exact_at(&mut buf, far as u64) {
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::ESTALE | libc::EIO)),
            "{ctx}: read of a replaced object failed with {e:?}, not ESTALE/EIO"
        ),
        Ok(()) if buf == replacement[far..far + MIB] => {
            panic!("{ctx}: a handle opened on the old object returned the new bytes")
        }
        Ok(()) if buf == victim[far..far + MIB] => {
            panic!("{ctx}: the old bytes at 48 MiB were served after the replacement")
        }
        Ok(()) => panic!("{ctx}: read of a replaced object returned unknown bytes"),
    }
    drop(file);
    // A new open sees the new object once the attributes expire (1 s).
    wait_until("the replaced object to be readable", || {
        let Ok(file) = File::open(m.path("etag/victim")) else {
            return false;
        };
        file.read_exact_at(&mut buf, far as u64).is_ok() && buf == replacement[far..far + MIB]
    });

    // 8. A shared read-only mapping of a (direct I/O) file.
    assert!(
        mapped_bytes(&m.path("data/random")) == random,
        "{ctx}: mmap of data/random"
    );

    // 9. The same data through the kernel's page cache (`kernel_cache`),
    // read twice: the second open keeps the cached pages.
    if provider == Provider::S3 {
        drop(m);
        let cached = emu.mount("", &["kernel_cache"]);
        for round in ["first", "second"] {
            assert_eq!(
                md5_of_file(&cached.path("data/random")),
                expected,
                "{ctx}: {round} read with kernel_cache"
            );
        }
        assert!(
            mapped_bytes(&cached.path("data/random")) == random,
            "{ctx}: mmap with kernel_cache"
        );
    }
}

/// The bytes of `path` read through a `MAP_SHARED` read-only mapping.
fn mapped_bytes(path: &Path) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a fresh read-only mapping of an open file, checked for
    // failure, read within its length and unmapped before returning.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(
            addr,
            libc::MAP_FAILED,
            "mmap {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        let bytes = std::slice::from_raw_parts(addr as *const u8, len).to_vec();
        libc::munmap(addr, len);
        bytes
    }
}

// ---------------------------------------------------------------------------
// Every dialect: `ls -l` of 2500 objects

#[test]
fn s3_ls_l_of_2500_objects() {
    ls_l_suite(Provider::S3);
}

/// `ls -l` of 2500 objects shows them all (listing pagination) at a cost of
/// 3 LISTs and no HEAD (counted on the emulator).
fn ls_l_suite(provider: Provider) {
    const N: usize = 2500;
    let expected: Vec<String> = (0..N).map(|i| format!("f{i:04}")).collect();
    let ctx = provider.name();
    let emu = Emu::start(provider);
    for name in &expected {
        emu.put(&format!("many/{name}"), &b"x"[..], &[]);
    }
    emu.put("elsewhere", &b"not in the mount"[..], &[]);
    // Long TTLs: the count must not depend on how fast `ls` is.
    let m = emu.mount(
        "many",
        &[
            "file_mode=0640",
            "dir_mode=0750",
            "attr_ttl=60",
            "dir_ttl=60",
        ],
    );
    assert_eq!(
        fs::metadata(&m.point).unwrap().mode(),
        0o040750,
        "{ctx}: mount root with dir_mode=0750"
    );
    emu.reset_stats();

    let out = Command::new("ls")
        .arg("-l")
        .arg(&m.point)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{ctx}: ls -l: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), N + 1, "{ctx}: ls -l lines (total + entries)");
    assert!(lines[0].starts_with("total"), "{ctx}: {}", lines[0]);
    for line in &lines[1..] {
        assert!(line.starts_with("-rw-r----- "), "{ctx}: {line}");
    }
    let shown: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(shown, expected, "{ctx}: names shown by ls -l");
    // The request counts need the emulator's counters.
    if emu.is_emulator() {
        let lists = emu.requests("ListObjectsV2") + emu.requests("ListObjects");
        assert_eq!(
            (lists, emu.requests("HeadObject")),
            (3, 0),
            "{ctx}: (LIST, HEAD) requests of ls -l"
        );
    }
    assert_eq!(
        names(&m.point),
        expected.iter().cloned().collect::<BTreeSet<_>>(),
        "{ctx}: readdir"
    );
}

// ---------------------------------------------------------------------------
// S3: mount errors and the process's life

/// A failed mount: non-zero exit, one line on stderr containing one of
/// `words` (case-insensitive), no secret, nothing mounted at `point`.
fn assert_mount_fails(
    (status, stderr): (ExitStatus, String),
    point: &Path,
    words: &[&str],
    case: &str,
) {
    assert!(
        !status.success(),
        "{case}: exit {status}, stderr {stderr:?}"
    );
    let text = stderr.trim_end();
    assert_eq!(
        text.lines().count(),
        1,
        "{case}: expected one line on stderr, got {stderr:?}"
    );
    let lower = text.to_lowercase();
    assert!(
        words.iter().any(|w| lower.contains(&w.to_lowercase())),
        "{case}: {text:?} mentions none of {words:?}"
    );
    assert!(
        !text.contains(SK) && !text.contains(WRONG_SECRET),
        "{case}: a secret in {text:?}"
    );
    assert!(!is_mounted(point), "{case}: mounted anyway");
}

const WRONG_SECRET: &str = "wrong-secret-Hv7Lp0Qa";

#[test]
fn mount_errors_are_one_line_and_mount_nothing() {
    let emu = Emu::start(Provider::S3);
    emu.put("hello", &b"hello"[..], &[]);
    let source = emu.source("");

    // Wrong secret.
    let m = Mount::new();
    let mut cmd = emu.command(&source, &m.point, &[]);
    cmd.env("AWS_SECRET_ACCESS_KEY", WRONG_SECRET);
    assert_mount_fails(
        run(cmd, &m),
        &m.point,
        &["SignatureDoesNotMatch", "credentials"],
        "wrong secret",
    );
    assert_eq!(names(&m.point), set(&[]), "mount point untouched");

    // Nothing listening on the endpoint's port.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("endpoint=http://127.0.0.1:{dead_port}");
    let cmd = emu.command(&source, &m.point, &[&dead]);
    assert_mount_fails(run(cmd, &m), &m.point, &["connect"], "dead port");

    // A bucket the server does not have.
    let cmd = emu.command("s3://missing-bucket", &m.point, &[]);
    let (status, stderr) = run(cmd, &m);
    assert!(stderr.contains("missing-bucket"), "{stderr:?}");
    assert_mount_fails(
        (status, stderr),
        &m.point,
        &["NoSuchBucket", "does not exist"],
        "missing bucket",
    );

    // A mount point that does not exist.
    let absent = m.base.join("absent");
    let cmd = emu.command(&source, &absent, &[]);
    assert_mount_fails(
        run(cmd, &m),
        &absent,
        &["does not exist"],
        "missing mount point",
    );
    assert!(!absent.exists(), "the missing mount point was created");

    // A non-empty mount point, then the same with -o nonempty.
    fs::write(m.path("existing.txt"), b"local").unwrap();
    let cmd = emu.command(&source, &m.point, &[]);
    assert_mount_fails(
        run(cmd, &m),
        &m.point,
        &["nonempty"],
        "non-empty mount point",
    );
    assert_eq!(names(&m.point), set(&["existing.txt"]), "untouched");
    let cmd = emu.command(&source, &m.point, &["nonempty"]);
    let (status, stderr) = run(cmd, &m);
    assert!(status.success(), "-o nonempty: {status} {stderr:?}");
    assert!(is_mounted(&m.point), "-o nonempty: not mounted");
    assert_eq!(names(&m.point), set(&["hello"]), "the bucket over the dir");
    drop(m);

    // A mount point that is already mounted.
    let mounted = emu.mount("", &[]);
    let cmd = emu.command(&source, &mounted.point, &[]);
    let failed = run(cmd, &mounted);
    assert!(!failed.0.success(), "second mount: {failed:?}");
    let text = failed.1.trim_end();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.to_lowercase().contains("already"), "{text:?}");
    assert_eq!(
        fs::read(mounted.path("hello")).unwrap(),
        b"hello",
        "the first mount still works"
    );
}

#[test]
fn detached_mounts_and_signals_unmount_cleanly() {
    let emu = Emu::start(Provider::S3);
    let body = random_bytes(3 * MIB + 7, 9);
    emu.put("dir/file", body.clone(), &[]);
    let md5 = md5_hex(&body);

    // Detached: mounted when the command returns; fusermount3 -u ends it.
    let m = Mount::new();
    let (status, stderr) = run(emu.command(&emu.source(""), &m.point, &[]), &m);
    assert!(status.success(), "detached mount: {status} {stderr:?}");
    assert!(
        is_mounted(&m.point),
        "not mounted when the command returned"
    );
    assert_eq!(md5_of_file(&m.path("dir/file")), md5);
    assert!(
        !mount_processes(&m.point).is_empty(),
        "no daemon process serves the detached mount"
    );
    let unmount = Command::new("fusermount3")
        .arg("-u")
        .arg(&m.point)
        .status()
        .unwrap();
    assert!(unmount.success(), "fusermount3 -u: {unmount}");
    assert!(!is_mounted(&m.point));
    wait_until("the detached daemon to exit", || {
        mount_processes(&m.point).is_empty()
    });
    drop(m);

    // Foreground: SIGTERM, SIGINT and an external unmount end it with 0.
    for how in ["SIGTERM", "SIGINT", "fusermount3 -u"] {
        let mut m = emu.mount("", &[]);
        assert_eq!(md5_of_file(&m.path("dir/file")), md5, "{how}");
        match how {
            "SIGTERM" => signal(m.pid(), libc::SIGTERM),
            "SIGINT" => signal(m.pid(), libc::SIGINT),
            _ => {
                let s = Command::new("fusermount3")
                    .arg("-u")
                    .arg(&m.point)
                    .status()
                    .unwrap();
                assert!(s.success(), "fusermount3 -u: {s}");
            }
        }
        let status = m.wait_exit();
        assert_eq!(status.code(), Some(0), "{how}: {status}\n{}", m.log());
        assert!(!is_mounted(&m.point), "{how}: still mounted");
    }
}

/// The OSS, OBS and COS dialects: the emulator's alone (tests/garage/run.sh
/// filters this module out).
mod emulator_only {
    use super::*;

    #[test]
    fn oss_mount_serves_the_bucket() {
        dialect_suite(Provider::Oss);
    }

    #[test]
    fn obs_mount_serves_the_bucket() {
        dialect_suite(Provider::Obs);
    }

    #[test]
    fn cos_mount_serves_the_bucket() {
        dialect_suite(Provider::Cos);
    }

    #[test]
    fn oss_ls_l_of_2500_objects() {
        ls_l_suite(Provider::Oss);
    }

    #[test]
    fn obs_ls_l_of_2500_objects() {
        ls_l_suite(Provider::Obs);
    }

    #[test]
    fn cos_ls_l_of_2500_objects() {
        ls_l_suite(Provider::Cos);
    }

    /// `-o disk_cache`: a file read twice, or read at random after its
    /// blocks left a 4 MiB memory cache, is downloaded once; the cache's
    /// directory goes with the mount.
    #[test]
    fn with_a_disk_cache_a_file_is_downloaded_once() {
        let emu = Emu::emulator(Provider::S3, "needs the emulator's request counters");
        let body = random_bytes(24 * MIB + 5, 3);
        emu.put("big", Bytes::from(body.clone()), &[]);
        let dir = std::env::temp_dir().join(format!("bucketfs-disk-cache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let option = format!("disk_cache={},cache_size=4M", dir.display());
        let m = emu.mount("", &[&option]);
        let on_disk = || -> u64 {
            let Ok(mounts) = fs::read_dir(&dir) else {
                return 0;
            };
            mounts
                .flatten()
                .flat_map(|d| fs::read_dir(d.path()).into_iter().flatten().flatten())
                .filter_map(|f| f.metadata().ok())
                .map(|meta| meta.len())
                .sum()
        };

        emu.reset_stats();
        assert_eq!(md5_hex(&fs::read(m.path("big")).unwrap()), md5_hex(&body));
        let fetched = emu
            .stats()
            .get("GetObject")
            .map(|c| (c.requests, c.bytes_out));
        // A block evicted from the 4 MiB of memory before its disk write
        // landed may have been fetched twice; once on disk, never again.
        let (gets, bytes) = fetched.expect("the first read fetches");
        assert!(
            bytes >= body.len() as u64,
            "the first read fetches the file"
        );
        wait_until("every block on disk", || on_disk() == body.len() as u64);

        assert_eq!(md5_hex(&fs::read(m.path("big")).unwrap()), md5_hex(&body));
        let f = File::open(m.path("big")).unwrap();
        let mut rng = fastrand::Rng::with_seed(9);
        let mut buf = [0u8; 4096];
        for _ in 0..300 {
            let offset = rng.usize(..body.len() - buf.len());
            f.read_exact_at(&mut buf, offset as u64).unwrap();
            assert_eq!(&buf[..], &body[offset..offset + buf.len()], "at {offset}");
        }
        let again = emu
            .stats()
            .get("GetObject")
            .map(|c| (c.requests, c.bytes_out));
        assert_eq!(again, Some((gets, bytes)), "nothing downloaded twice");

        drop(f);
        drop(m);
        wait_until("the mount's cache directory to go", || {
            fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none())
        });
        fs::remove_dir_all(&dir).unwrap();
    }
}
