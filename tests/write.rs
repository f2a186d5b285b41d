//! The write path of `bucketfs mount`, for real: the built binary mounts
//! buckets of the in-process emulator (one per test, on 127.0.0.1) and the
//! tests change them with ordinary tools and file calls.
//!
//! What is covered:
//! 1. Every dialect ([`write_suite`]): `cp`, `dd`, `tar x`, `rsync`, shell
//!    `>>` appends, `truncate` down and up, `mv` of files and directories,
//!    `chmod`/`chown`/`touch -d` then a remount and `stat`, symlinks,
//!    `user.*` xattrs, rmdir of a non-empty directory, unlink of an open
//!    file, `link` refused, RENAME_NOREPLACE and RENAME_EXCHANGE, `fsync`
//!    returning only once the object is in the bucket, writers in parallel,
//!    a reader seeing a writer's bytes; every file checked in the bucket
//!    itself, not only through the mount.
//! 2. Efficiency through the emulator's byte counters: 500 appends of
//!    4 KiB on OSS upload at most 1.1 x 2 MiB; a 1 GiB sequential write on
//!    S3 uploads parts before its `close`; renaming it moves no object data
//!    through the client; `mv` of a directory of 1,000 files; new small
//!    files written by shell redirects cost one PUT each (no empty PUT
//!    first, no HEAD or LIST to learn that their names are free), and
//!    `rm -rf` of them one DELETE each.
//! 3. Crash safety: uploads slowed down by the emulator, files closed, the
//!    daemon SIGKILLed before they are uploaded, a new daemon on the same
//!    cache directory uploads every one of them.
//! 4. A reference-model property test: random create/write/append/
//!    truncate/rename/unlink/mkdir/rmdir sequences applied to the mount and
//!    to a local directory end in the same tree, also after a remount.
//!
//! Needs FUSE, `tar` and `rsync`. Run: `cargo test --test write`.

mod common;

use bucketfs::store::Provider;
use common::*;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A scratch directory removed on drop (the local side of a test).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("bucketfs-write-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The object `key` as stored in the bucket.
fn stored(emu: &Emu, key: &str) -> Option<Vec<u8>> {
    emu.get(key)
}

/// Waits until the bucket holds `expected` under `key` (uploads run after
/// close).
fn wait_stored(emu: &Emu, key: &str, expected: &[u8]) {
    let ctx = emu.provider.name();
    wait_until(&format!("{ctx}: {key} uploaded"), || {
        stored(emu, key).is_some_and(|b| b == expected)
    });
}

fn wait_gone(emu: &Emu, key: &str) {
    wait_until(&format!("{key} deleted"), || stored(emu, key).is_none());
}

/// Request body bytes the emulator received for `operation`.
fn bytes_in(emu: &Emu, operation: &str) -> u64 {
    emu.stats().get(operation).map_or(0, |c| c.bytes_in)
}

/// Bytes of object data that reached the emulator in all.
fn uploaded_bytes(emu: &Emu) -> u64 {
    ["PutObject", "AppendObject", "UploadPart", "ModifyObject"]
        .iter()
        .map(|op| bytes_in(emu, op))
        .sum()
}

/// The file `rel` read through the mount; a failure shows the mount's log.
fn read(m: &Mount, rel: &str) -> Vec<u8> {
    fs::read(m.path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}; mount log:\n{}", m.log()))
}

fn sh(script: &str, dir: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "`{script}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIGTERM, then waits for the daemon to finish its uploads and exit 0.
fn unmount(mut m: Mount) {
    signal(m.pid(), libc::SIGTERM);
    let status = m.wait_exit();
    assert!(status.success(), "bucketfs exited {status}:\n{}", m.log());
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn set_xattr(p: &Path, name: &str, value: &[u8], flags: i32) -> std::io::Result<()> {
    let (path, name) = (c_path(p), CString::new(name).unwrap());
    // SAFETY: valid NUL-terminated strings and a buffer with its length.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn get_xattr(p: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let (path, name) = (c_path(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid strings; the buffer is writable for its length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn list_xattr(p: &Path) -> Vec<String> {
    let path = c_path(p);
    let mut buf = vec![0u8; 4096];
    // SAFETY: a valid string; the buffer is writable for its length.
    let n = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr: {}", std::io::Error::last_os_error());
    buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn rename2(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    let (a, b) = (c_path(from), c_path(to));
    // SAFETY: two valid NUL-terminated paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn errno_of(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

// ---------------------------------------------------------------------------
// Every dialect

#[test]
fn s3_mount_writes() {
    write_suite(Provider::S3);
}

fn write_suite(provider: Provider) {
    let ctx = provider.name();
    let emu = Emu::start(provider);
    let local = Scratch::new(ctx);
    let cache = Scratch::new(&format!("{ctx}-cache"));
    let cache_opt = format!("cache_dir={}", cache.0.display());
    let m = emu.mount("", &[&cache_opt]);

    // 1. cp and dd, checked in the bucket.
    let data = random_bytes(3 * MIB + 17, 1);
    fs::write(local.path("src.bin"), &data).unwrap();
    sh(
        &format!("cp {} cp.bin", local.path("src.bin").display()),
        &m.point,
    );
    assert_eq!(md5_of_file(&m.path("cp.bin")), md5_hex(&data), "{ctx}: cp");
    wait_stored(&emu, "cp.bin", &data);
    sh(
        &format!(
            "dd if={} of=dd.bin bs=1M status=none",
            local.path("src.bin").display()
        ),
        &m.point,
    );
    wait_stored(&emu, "dd.bin", &data);

    // 2. tar x of a tree (mtimes come back through utimens).
    let tree = local.path("tree");
    fs::create_dir_all(tree.join("a/b")).unwrap();
    for (i, rel) in ["a/one.txt", "a/b/two.txt", "three.txt"].iter().enumerate() {
        fs::write(tree.join(rel), format!("file {i}\n").repeat(100 * (i + 1))).unwrap();
    }
    sh("touch -d '2021-06-01 12:00:00' a/one.txt", &tree);
    sh(
        &format!(
            "tar cf {} -C {} .",
            local.path("t.tar").display(),
            tree.display()
        ),
        &local.0,
    );
    fs::create_dir(m.path("untar")).unwrap();
    sh(
        &format!("tar xf {}", local.path("t.tar").display()),
        &m.path("untar"),
    );
    for rel in ["a/one.txt", "a/b/two.txt", "three.txt"] {
        let want = fs::read(tree.join(rel)).unwrap();
        assert_eq!(
            fs::read(m.path(&format!("untar/{rel}"))).unwrap(),
            want,
            "{ctx}: tar {rel}"
        );
        wait_stored(&emu, &format!("untar/{rel}"), &want);
    }
    let mtime = fs::metadata(m.path("untar/a/one.txt")).unwrap().mtime();
    assert_eq!(
        mtime,
        fs::metadata(tree.join("a/one.txt")).unwrap().mtime(),
        "{ctx}: tar mtime"
    );

    // 3. rsync of the same tree.
    sh(&format!("rsync -a {}/ rsync/", tree.display()), &m.point);
    for rel in ["a/one.txt", "a/b/two.txt", "three.txt"] {
        wait_stored(
            &emu,
            &format!("rsync/{rel}"),
            &fs::read(tree.join(rel)).unwrap(),
        );
    }

    // 4. Shell appends.
    for i in 0..30 {
        sh(&format!("echo line {i} >> log.txt"), &m.point);
    }
    let expected: String = (0..30).map(|i| format!("line {i}\n")).collect();
    assert_eq!(
        fs::read_to_string(m.path("log.txt")).unwrap(),
        expected,
        "{ctx}: >>"
    );
    wait_stored(&emu, "log.txt", expected.as_bytes());

    // 5. truncate down, then up (zeros).
    sh(
        "truncate -s 1000 cp.bin && truncate -s 1500 cp.bin",
        &m.point,
    );
    let mut cut = data[..1000].to_vec();
    cut.resize(1500, 0);
    assert_eq!(read(&m, "cp.bin"), cut, "{ctx}: truncate");
    wait_stored(&emu, "cp.bin", &cut);

    // 6. mv of a file and of a directory.
    fs::rename(m.path("dd.bin"), m.path("moved.bin")).unwrap();
    assert!(!m.path("dd.bin").exists());
    assert_eq!(
        md5_of_file(&m.path("moved.bin")),
        md5_hex(&data),
        "{ctx}: mv"
    );
    wait_stored(&emu, "moved.bin", &data);
    wait_gone(&emu, "dd.bin");
    fs::rename(m.path("rsync"), m.path("rsync2")).unwrap();
    assert_eq!(
        names(&m.path("rsync2")),
        set(&["a", "three.txt"]),
        "{ctx}: mv dir"
    );
    assert!(!m.path("rsync").exists());
    wait_stored(
        &emu,
        "rsync2/a/b/two.txt",
        &fs::read(tree.join("a/b/two.txt")).unwrap(),
    );
    wait_gone(&emu, "rsync/a/b/two.txt");

    // 7. Metadata, symlinks, xattrs (checked again after a remount).
    fs::write(m.path("meta.txt"), b"meta").unwrap();
    fs::set_permissions(m.path("meta.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(m.path("meta.txt"), Some(1234), Some(5678)).unwrap();
    sh("touch -m -d '2020-02-03 04:05:06 UTC' meta.txt", &m.point);
    std::os::unix::fs::symlink("meta.txt", m.path("link")).unwrap();
    set_xattr(&m.path("meta.txt"), "user.color", b"blue\0bin", 0).unwrap();
    assert_eq!(
        get_xattr(&m.path("meta.txt"), "user.color").unwrap(),
        b"blue\0bin"
    );
    assert_eq!(
        errno_of(set_xattr(
            &m.path("meta.txt"),
            "user.color",
            b"x",
            libc::XATTR_CREATE
        )),
        Some(libc::EEXIST),
        "{ctx}: XATTR_CREATE"
    );
    assert_eq!(
        errno_of(set_xattr(&m.path("meta.txt"), "trusted.x", b"x", 0)),
        Some(libc::EOPNOTSUPP),
        "{ctx}: non-user xattr"
    );
    // Other namespaces are "not supported", which `ls -l` remembers per
    // mount instead of asking about SELinux labels and ACLs for every file.
    for name in ["security.selinux", "system.posix_acl_access"] {
        assert_eq!(
            errno_of(get_xattr(&m.path("meta.txt"), name)),
            Some(libc::EOPNOTSUPP),
            "{ctx}: {name}"
        );
    }
    set_xattr(&m.path("meta.txt"), "user.gone", b"1", 0).unwrap();
    let path = c_path(&m.path("meta.txt"));
    let name = CString::new("user.gone").unwrap();
    // SAFETY: valid NUL-terminated strings.
    assert_eq!(
        unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) },
        0
    );

    // 8. rmdir of a non-empty directory, of an empty one.
    fs::create_dir(m.path("full")).unwrap();
    fs::write(m.path("full/x"), b"x").unwrap();
    assert_eq!(
        errno_of(fs::remove_dir(m.path("full"))),
        Some(libc::ENOTEMPTY),
        "{ctx}"
    );
    fs::create_dir(m.path("empty")).unwrap();
    fs::remove_dir(m.path("empty")).unwrap();
    assert!(!m.path("empty").exists());
    wait_gone(&emu, "empty/");
    assert_eq!(
        errno_of(fs::remove_dir(m.path("untar/a"))),
        Some(libc::ENOTEMPTY),
        "{ctx}: implicit children"
    );

    // 9. Unlink of an open file: readable until closed, then gone.
    let doomed = random_bytes(2 * MIB, 9);
    fs::write(m.path("doomed"), &doomed).unwrap();
    wait_stored(&emu, "doomed", &doomed);
    let mut open = File::open(m.path("doomed")).unwrap();
    fs::remove_file(m.path("doomed")).unwrap();
    assert!(!m.path("doomed").exists(), "{ctx}: name gone at once");
    assert!(!names(&m.point).contains("doomed"));
    let mut back = Vec::new();
    open.read_to_end(&mut back).unwrap();
    assert!(back == doomed, "{ctx}: read after unlink");
    drop(open);
    wait_gone(&emu, "doomed");

    // 10. link, rename flags.
    assert_eq!(
        errno_of(fs::hard_link(m.path("meta.txt"), m.path("hard"))),
        Some(libc::EPERM)
    );
    assert_eq!(
        errno_of(rename2(
            &m.path("log.txt"),
            &m.path("moved.bin"),
            libc::RENAME_NOREPLACE
        )),
        Some(libc::EEXIST),
        "{ctx}: RENAME_NOREPLACE"
    );
    assert_eq!(
        errno_of(rename2(
            &m.path("log.txt"),
            &m.path("moved.bin"),
            libc::RENAME_EXCHANGE
        )),
        Some(libc::EINVAL),
        "{ctx}: RENAME_EXCHANGE"
    );

    // 11. fsync returns once the object is in the bucket.
    let mut f = File::create(m.path("synced")).unwrap();
    f.write_all(b"durable").unwrap();
    f.sync_all().unwrap();
    assert_eq!(
        stored(&emu, "synced").as_deref(),
        Some(&b"durable"[..]),
        "{ctx}: fsync"
    );
    drop(f);

    // 12. Writers in parallel; a reader sees a writer's bytes before close.
    std::thread::scope(|s| {
        for i in 0..4 {
            let path = m.path(&format!("par{i}"));
            s.spawn(move || {
                let body = random_bytes(MIB + i, 40 + i as u64);
                fs::write(&path, &body).unwrap();
                body
            });
        }
    });
    for i in 0..4 {
        wait_stored(
            &emu,
            &format!("par{i}"),
            &random_bytes(MIB + i, 40 + i as u64),
        );
    }
    let mut w = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.path("live"))
        .unwrap();
    w.write_all(b"first part").unwrap();
    let mut r = File::open(m.path("live")).unwrap();
    let mut seen = String::new();
    r.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "first part", "{ctx}: reader of a file being written");
    w.seek(SeekFrom::Start(0)).unwrap();
    w.write_all(b"FIRST").unwrap();
    let mut buf = [0u8; 10];
    r.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"FIRST part");
    drop((w, r));

    // 13. Remount: everything persisted, metadata included.
    unmount(m);
    let m = emu.mount("", &[&cache_opt]);
    let meta = fs::symlink_metadata(m.path("meta.txt")).unwrap();
    assert_eq!(
        (meta.mode(), meta.uid(), meta.gid(), meta.mtime()),
        (0o100640, 1234, 5678, 1_580_702_706),
        "{ctx}: metadata after remount"
    );
    assert_eq!(
        fs::read_link(m.path("link")).unwrap(),
        Path::new("meta.txt"),
        "{ctx}"
    );
    assert_eq!(fs::read(m.path("link")).unwrap(), b"meta");
    assert_eq!(
        get_xattr(&m.path("meta.txt"), "user.color").unwrap(),
        b"blue\0bin",
        "{ctx}"
    );
    assert_eq!(
        list_xattr(&m.path("meta.txt")),
        vec!["user.color".to_string()],
        "{ctx}"
    );
    assert_eq!(fs::read(m.path("cp.bin")).unwrap(), cut);
    assert_eq!(fs::read_to_string(m.path("log.txt")).unwrap(), expected);
    assert_eq!(fs::read(m.path("live")).unwrap(), b"FIRST part");
    let untar_mtime = fs::metadata(m.path("untar/a/one.txt")).unwrap().mtime();
    assert_eq!(
        untar_mtime,
        fs::metadata(tree.join("a/one.txt")).unwrap().mtime(),
        "{ctx}"
    );
    unmount(m);
}

// ---------------------------------------------------------------------------
// Efficiency

#[test]
fn mv_of_a_directory_of_a_thousand_files() {
    let emu = Emu::start(Provider::S3);
    for i in 0..1000 {
        emu.put(&format!("many/f{i:04}"), format!("{i}").into_bytes(), &[]);
    }
    let m = emu.mount("", &[]);
    fs::rename(m.path("many"), m.path("moved")).unwrap();
    assert!(!m.path("many").exists());
    let listed = names(&m.path("moved"));
    assert_eq!(listed.len(), 1000);
    assert_eq!(fs::read_to_string(m.path("moved/f0999")).unwrap(), "999");
    assert!(emu.get("many/f0000").is_none());
    assert_eq!(stored(&emu, "moved/f0500").as_deref(), Some(&b"500"[..]));
    unmount(m);
}

#[test]
fn sync_close_and_the_staging_limit() {
    let emu = Emu::start(Provider::S3);
    // close waits for the upload.
    let m = emu.mount("", &["sync_close"]);
    fs::write(m.path("now"), b"visible at close").unwrap();
    assert_eq!(
        stored(&emu, "now").as_deref(),
        Some(&b"visible at close"[..])
    );
    unmount(m);

    // A write past the staging limit fails whole with ENOSPC; what was
    // staged before is untouched and uploaded.
    let m = emu.mount("", &["staging_max=1M", "sync_close"]);
    let small = random_bytes(MIB / 2, 61);
    fs::write(m.path("fits"), &small).unwrap();
    let mut big = File::create(m.path("too-big")).unwrap();
    let err = big
        .write_all(&random_bytes(2 * MIB, 62))
        .expect_err("over the limit");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(big);
    assert!(read(&m, "fits") == small);
    assert_eq!(stored(&emu, "fits"), Some(small));
    unmount(m);
}

/// A small tmpfs mounted for a test (root only), unmounted on drop.
struct SmallDisk(Scratch);

impl SmallDisk {
    fn new(name: &str, size: &str) -> SmallDisk {
        let dir = Scratch::new(name);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir.0)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs at {}", dir.0.display());
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0.0).status();
    }
}

// ---------------------------------------------------------------------------
// Crash safety

// ---------------------------------------------------------------------------
// Reference model

/// One random operation, applied to a directory; errors are part of the
/// outcome (both sides must fail alike).
fn random_op(rng: &mut fastrand::Rng, root: &Path, names: &[String], dirs: &[String]) -> String {
    let pick = |rng: &mut fastrand::Rng, v: &[String]| v[rng.usize(..v.len())].clone();
    let dir = pick(rng, dirs);
    let new_name = format!("{dir}/n{}", rng.u32(..40));
    let outcome = |r: std::io::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("errno {:?}", e.raw_os_error()),
    };
    match rng.u32(..9) {
        0 | 1 => {
            let body = random_bytes(rng.usize(..300_000), rng.u64(..));
            format!(
                "create {new_name}: {}",
                outcome(fs::write(root.join(&new_name), body))
            )
        }
        2 if !names.is_empty() => {
            let target = pick(rng, names);
            let at = rng.u64(..400_000);
            let body = random_bytes(rng.usize(1..50_000), rng.u64(..));
            let r = OpenOptions::new()
                .write(true)
                .open(root.join(&target))
                .and_then(|f| f.write_all_at(&body, at));
            format!("write {target}@{at}: {}", outcome(r))
        }
        3 if !names.is_empty() => {
            let target = pick(rng, names);
            let body = random_bytes(rng.usize(1..20_000), rng.u64(..));
            let r = OpenOptions::new()
                .append(true)
                .open(root.join(&target))
                .and_then(|mut f| f.write_all(&body));
            format!("append {target}: {}", outcome(r))
        }
        4 if !names.is_empty() => {
            let target = pick(rng, names);
            let len = rng.u64(..400_000);
            let r = OpenOptions::new()
                .write(true)
                .open(root.join(&target))
                .and_then(|f| f.set_len(len));
            format!("truncate {target} {len}: {}", outcome(r))
        }
        5 if !names.is_empty() => {
            let target = pick(rng, names);
            format!(
                "rename {target} {new_name}: {}",
                outcome(fs::rename(root.join(&target), root.join(&new_name)))
            )
        }
        6 if !names.is_empty() => {
            let target = pick(rng, names);
            format!(
                "unlink {target}: {}",
                outcome(fs::remove_file(root.join(&target)))
            )
        }
        7 => {
            let d = format!("{dir}/d{}", rng.u32(..6));
            format!("mkdir {d}: {}", outcome(fs::create_dir(root.join(&d))))
        }
        _ => {
            let d = pick(rng, dirs);
            if d == "." {
                return "rmdir .: skipped".into();
            }
            format!("rmdir {d}: {}", outcome(fs::remove_dir(root.join(&d))))
        }
    }
}

/// Files and directories under `root`, relative, with file contents.
fn tree(root: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let mut files = BTreeMap::new();
    let mut dirs = vec![".".to_string()];
    let mut stack = vec![PathBuf::from(".")];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(root.join(&rel))
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let child = rel.join(e.file_name());
            let name = child.to_string_lossy().trim_start_matches("./").to_string();
            if e.file_type().unwrap().is_dir() {
                dirs.push(name);
                stack.push(child);
            } else {
                files.insert(name, fs::read(root.join(&child)).unwrap());
            }
        }
    }
    dirs.sort();
    (files, dirs)
}

fn model_test(provider: Provider, seed: u64, steps: usize) {
    let ctx = provider.name();
    let emu = Emu::start(provider);
    let local = Scratch::new(&format!("model-{ctx}"));
    let m = emu.mount("", &[]);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut log = Vec::new();
    for step in 0..steps {
        let (files, dirs) = tree(&local.0);
        let names: Vec<String> = files.keys().cloned().collect();
        let state = rng.get_seed();
        let on_local = random_op(&mut rng, &local.0, &names, &dirs);
        rng.seed(state);
        let on_mount = random_op(&mut rng, &m.point, &names, &dirs);
        log.push(on_local.clone());
        assert_eq!(
            on_mount,
            on_local,
            "{ctx} step {step} diverged; ops so far:\n{}",
            log.join("\n")
        );
    }
    let (want_files, want_dirs) = tree(&local.0);
    let (got_files, got_dirs) = tree(&m.point);
    assert_eq!(
        got_dirs,
        want_dirs,
        "{ctx}: directories; ops:\n{}",
        log.join("\n")
    );
    assert_eq!(
        got_files.keys().collect::<Vec<_>>(),
        want_files.keys().collect::<Vec<_>>(),
        "{ctx}: files; ops:\n{}",
        log.join("\n")
    );
    for (name, body) in &want_files {
        assert!(
            got_files[name] == *body,
            "{ctx}: content of {name}; ops:\n{}",
            log.join("\n")
        );
    }
    // After a remount everything came from the bucket.
    unmount(m);
    let m = emu.mount("", &[]);
    let (after_files, _) = tree(&m.point);
    for (name, body) in &want_files {
        assert!(
            after_files.get(name).is_some_and(|b| b == body),
            "{ctx}: {name} after remount; ops:\n{}",
            log.join("\n")
        );
    }
    assert_eq!(
        after_files.len(),
        want_files.len(),
        "{ctx}: file count after remount"
    );
    unmount(m);
    let _ = Duration::ZERO;
}

#[test]
fn s3_random_operations_match_a_local_directory() {
    model_test(Provider::S3, 11, 250);
}

/// What only the emulator has: the OSS, OBS and COS dialects, request
/// counters, fault injection, PFS and hierarchical buckets, its raw store
/// (tests/garage/run.sh filters this module out).
mod emulator_only {
    use super::*;

    #[test]
    fn oss_mount_writes() {
        write_suite(Provider::Oss);
    }

    #[test]
    fn obs_mount_writes() {
        write_suite(Provider::Obs);
    }

    #[test]
    fn cos_mount_writes() {
        write_suite(Provider::Cos);
    }

    #[test]
    fn oss_random_operations_match_a_local_directory() {
        model_test(Provider::Oss, 12, 250);
    }

    #[test]
    fn appends_on_oss_upload_only_the_appended_bytes() {
        let emu = Emu::start(Provider::Oss);
        let m = emu.mount("", &[]);
        let chunk = vec![b'a'; 4096];
        for _ in 0..500 {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(m.path("app.log"))
                .unwrap();
            f.write_all(&chunk).unwrap();
        }
        let total = 500 * 4096;
        wait_until("the appends to be uploaded", || {
            stored(&emu, "app.log").is_some_and(|b| b.len() == total)
        });
        let sent = uploaded_bytes(&emu);
        assert!(
            sent as f64 <= 1.1 * total as f64,
            "500 appends of 4 KiB uploaded {sent} bytes (limit {}): {:?}; mount log:\n{}",
            1.1 * total as f64,
            emu.stats(),
            m.log()
        );
        assert!(emu.requests("AppendObject") > 0);
        unmount(m);
    }

    #[test]
    fn a_new_small_file_costs_one_put_and_its_removal_one_delete() {
        const FILES: u64 = 300;
        let emu = Emu::emulator(Provider::S3, "needs the emulator's request counters");
        let m = emu.mount("", &[]);
        emu.reset_stats();
        // A shell redirect, as `cp` and scripts do it: the shell closes a
        // duplicate of the new file's descriptor before writing to it.
        let script = format!(
            "mkdir {dir} && for i in $(seq 1 {FILES}); do printf 'file %s' $i > {dir}/f$i; done",
            dir = m.path("small").display()
        );
        let status = Command::new("sh").arg("-c").arg(&script).status().unwrap();
        assert!(status.success());
        wait_until("the files to be uploaded", || {
            stored(&emu, &format!("small/f{FILES}")).is_some() && emu.requests("PutObject") > FILES
        });
        assert_eq!(
            stored(&emu, "small/f7").as_deref(),
            Some(&b"file 7"[..]),
            "content"
        );
        let lookups = emu.requests("HeadObject") + emu.requests("ListObjectsV2");
        let puts = emu.requests("PutObject");
        let total: u64 = emu.stats().values().map(|c| c.requests).sum();
        assert!(
            puts == FILES + 1 && total as f64 <= 1.1 * FILES as f64,
            "{FILES} new files and their directory cost {puts} PUTs, {lookups} HEADs and LISTs, \
             {total} requests in all (limit 1.1 a file): {:?}",
            emu.stats()
        );
        // Removed from a fresh mount: one DELETE a file, plus the listing.
        unmount(m);
        let m = emu.mount("", &[]);
        emu.reset_stats();
        fs::remove_dir_all(m.path("small")).unwrap();
        let deletes = emu.requests("DeleteObject");
        let total: u64 = emu.stats().values().map(|c| c.requests).sum();
        assert!(
            deletes == FILES + 1 && total as f64 <= 1.1 * FILES as f64,
            "rm -rf of {FILES} files cost {total} requests: {:?}",
            emu.stats()
        );
        assert!(emu.store().keys().iter().all(|k| !k.starts_with("small/")));
        unmount(m);
    }

    #[test]
    fn a_gibibyte_streams_before_close_and_renames_server_side() {
        let emu = Emu::emulator(
            Provider::S3,
            "needs the emulator's request counters (parts uploaded before close, bytes moved by rename)",
        );
        let m = emu.mount("", &[]);
        let block = random_bytes(MIB, 77);
        let mut f = File::create(m.path("big")).unwrap();
        for _ in 0..1023 {
            f.write_all(&block).unwrap();
        }
        // With 1023 MiB written and the file still open, parts go out: waiting
        // for 16 of them passes only if uploads start before close (however
        // slowly the machine runs them).
        wait_until("16 parts uploaded before close", || {
            emu.requests("UploadPart") >= 16
        });
        let before_close = emu.requests("UploadPart");
        f.write_all(&block).unwrap();
        drop(f);
        let size = 1024 * MIB;
        wait_until_within("the 1 GiB upload", Duration::from_secs(180), || {
            emu.store()
                .export_object("big")
                .is_some_and(|o| o.body.len() == size)
        });
        assert!(
            before_close >= 16,
            "only {before_close} parts were uploaded before close"
        );

        // Renaming it moves no object data through the client.
        emu.reset_stats();
        fs::rename(m.path("big"), m.path("big2")).unwrap();
        assert_eq!(uploaded_bytes(&emu), 0, "rename uploaded data");
        let read: u64 = emu.stats().get("GetObject").map_or(0, |c| c.bytes_out);
        assert_eq!(read, 0, "rename downloaded data");
        let moved = emu.get("big2").expect("big2 exists");
        assert_eq!(moved.len(), size);
        assert!(moved[..MIB] == block[..] && moved[size - MIB..] == block[..]);
        assert!(emu.get("big").is_none());
        unmount(m);
    }

    #[test]
    fn native_operations_of_pfs_and_hierarchical_buckets() {
        // OBS parallel file system: a small write into a large object is a
        // modify at its offset; nothing is uploaded again or copied.
        let emu = Emu::start_bucket(Provider::Obs, "pfs");
        let m = emu.mount("", &[]);
        let mut data = random_bytes(20 * MIB, 51);
        fs::write(m.path("pfs.bin"), &data).unwrap();
        wait_stored(&emu, "pfs.bin", &data);
        emu.reset_stats();
        let f = OpenOptions::new()
            .write(true)
            .open(m.path("pfs.bin"))
            .unwrap();
        f.write_all_at(b"in place", 12 * MIB as u64).unwrap();
        drop(f);
        data[12 * MIB..12 * MIB + 8].copy_from_slice(b"in place");
        wait_stored(&emu, "pfs.bin", &data);
        // The emulator counts a request once it has answered it: a moment
        // after the change is visible.
        wait_until("the modify to be counted", || {
            emu.requests("ModifyObject") >= 1
        });
        assert_eq!(uploaded_bytes(&emu), 8, "only the changed bytes travel");
        fs::rename(m.path("pfs.bin"), m.path("renamed.bin")).unwrap();
        assert!(emu.requests("RenameObject") >= 1 && emu.requests("CopyObject") == 0);
        wait_stored(&emu, "renamed.bin", &data);
        unmount(m);

        // OSS hierarchical namespace: renames are native, files and
        // directories alike.
        let emu = Emu::start_bucket(Provider::Oss, "hns");
        emu.put("d/a", &b"a"[..], &[]);
        emu.put("d/sub/b", &b"b"[..], &[]);
        emu.put("f", &b"f"[..], &[]);
        let m = emu.mount("", &[]);
        fs::rename(m.path("f"), m.path("g")).unwrap();
        fs::rename(m.path("d"), m.path("e")).unwrap();
        assert_eq!(emu.requests("CopyObject"), 0);
        assert!(emu.requests("RenameObject") >= 2);
        assert_eq!(fs::read(m.path("e/sub/b")).unwrap(), b"b");
        assert_eq!(stored(&emu, "g").as_deref(), Some(&b"f"[..]));
        assert!(stored(&emu, "d/a").is_none() && stored(&emu, "e/a").is_some());
        unmount(m);
    }

    #[test]
    fn failed_uploads_are_retried_and_fsync_reports_them() {
        use bucketfs::emulator::faults::FaultRule;
        let emu = Emu::emulator(Provider::S3, "needs fault injection (failing uploads)");
        let m = emu.mount("", &[]);
        // Every attempt of the first upload fails (the client tries 6 times).
        emu.faults()
            .add(vec![FaultRule::parse("PutObject:500:next=6").unwrap()]);
        let mut f = File::create(m.path("retried")).unwrap();
        f.write_all(b"keep me").unwrap();
        let err = f.sync_all().expect_err("fsync reports the failed upload");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        drop(f);
        // The data stays staged and the next attempt lands it.
        wait_until_within("the retried upload", Duration::from_secs(60), || {
            stored(&emu, "retried").as_deref() == Some(&b"keep me"[..])
        });
        unmount(m);
    }

    #[test]
    fn a_full_staging_disk_gives_enospc_and_keeps_what_was_staged() {
        let emu = Emu::emulator(Provider::S3, "needs fault injection (stalled uploads)");
        let disk = SmallDisk::new("full-disk", "8m");
        // Uploads stall, so staged files stay on the small disk.
        emu.faults().add(vec![
            bucketfs::emulator::faults::FaultRule::parse("PutObject:delay=4000").unwrap(),
        ]);
        let m = emu.mount("", &[&format!("cache_dir={}", disk.0.0.display())]);
        let first = random_bytes(3 * MIB, 71);
        fs::write(m.path("first"), &first).unwrap();
        let mut second = File::create(m.path("second")).unwrap();
        let mut written = 0;
        let err = loop {
            match second.write_all(&random_bytes(MIB, 72)) {
                Ok(()) => written += MIB,
                Err(e) => break e,
            }
            assert!(written < 16 * MIB, "an 8 MiB disk took {written} bytes");
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        drop(second);
        assert!(
            read(&m, "first") == first,
            "what was staged before is intact"
        );
        emu.faults().clear();
        wait_stored(&emu, "first", &first);
        unmount(m);
    }

    #[test]
    fn a_killed_daemon_loses_nothing_that_close_returned_for() {
        for provider in [Provider::S3, Provider::Oss, Provider::Obs, Provider::Cos] {
            let emu = Emu::emulator(
                provider,
                "needs fault injection (uploads slowed until the kill)",
            );
            let cache = Scratch::new(&format!("crash-{}", provider.name()));
            let cache_opt = format!("cache_dir={}", cache.0.display());
            // Every upload request waits 3 s: the kill comes first.
            emu.faults().add(vec![
                bucketfs::emulator::faults::FaultRule::parse("PutObject:delay=3000").unwrap(),
                bucketfs::emulator::faults::FaultRule::parse("AppendObject:delay=3000").unwrap(),
                bucketfs::emulator::faults::FaultRule::parse("UploadPart:delay=3000").unwrap(),
                bucketfs::emulator::faults::FaultRule::parse("CreateMultipartUpload:delay=3000")
                    .unwrap(),
            ]);
            let mut files = BTreeMap::new();
            let mut m = emu.mount("", &[&cache_opt]);
            fs::create_dir(m.path("dir")).unwrap();
            for (i, len) in [0usize, 1, 4096, 3 * MIB, 20 * MIB].into_iter().enumerate() {
                let body = random_bytes(len, 300 + i as u64);
                let rel = format!("dir/file{i}");
                fs::write(m.path(&rel), &body).unwrap();
                files.insert(rel, body);
            }
            // An append to an uploaded file, and a rewrite.
            let pid = m.pid();
            signal(pid, libc::SIGKILL);
            let _ = m.wait_exit();
            detach(&m.point);
            for rel in files.keys() {
                assert!(
                    stored(&emu, rel).is_none(),
                    "{rel} was uploaded before the kill"
                );
            }
            emu.faults().clear();
            let m2 = emu.mount("", &[&cache_opt]);
            for (rel, body) in &files {
                wait_stored(&emu, rel, body);
                assert_eq!(
                    md5_of_file(&m2.path(rel)),
                    md5_hex(body),
                    "{rel} through the mount"
                );
            }
            unmount(m2);
            drop(m);
        }
    }
}
