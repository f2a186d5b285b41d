//! The workloads of issue 13, each run on a freshly mounted filesystem
//! with the page cache dropped (or by the direct client, the ceiling), and
//! timed until its effect is complete on the server: a write until the
//! object has its full size, a create until every file is listed, a `mv`
//! until the old names are gone and the new ones all there.
//!
//! Every workload checks its result (bytes read against the object's MD5,
//! entries listed, sizes on the server), so a fast wrong answer is a
//! failure, not a figure. Each has a deadline: past it the daemon is
//! killed, which fails whatever still waits on the mount.

use super::common::{MountedDaemon, Scratch, object_bytes, on_path, process_cpu, ranged_get};
use super::peers::Fs;
use super::server::{Counters, PARALLEL, PART, Server, multipart_upload};
use bucketfs::store::*;
use bytes::Bytes;
use md5::Digest as _;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Size of each `read` and `write` call of the sequential workloads.
const IO_CALL: usize = 1 << 20;
/// Size of the small files, of each append and of each random read.
const SMALL: usize = 4096;
/// Pause between two checks of whether work has reached the server.
const POLL: Duration = Duration::from_millis(5);

/// Who does a workload: the direct client or a mounted filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Direct,
    Fs(Fs),
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Fs(fs) => fs.name(),
        }
    }
}

/// How a workload's figure reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    MibPerSec,
    Millis,
    Seconds,
    Iops,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::MibPerSec => "MiB/s",
            Unit::Millis => "ms",
            Unit::Seconds => "s",
            Unit::Iops => "IOPS",
        }
    }
}

/// Sizes of the workloads (issue 13's under `cargo bench`, tiny ones in
/// the smoke test).
#[derive(Clone, Debug)]
pub struct Sizes {
    pub big_mib: u64,
    pub small_files: usize,
    pub ls_small: usize,
    pub ls_large: usize,
    pub tree_dirs: usize,
    pub tree_files: usize,
    pub appends: usize,
    pub mv_files: usize,
    pub rm_files: usize,
    pub fio_secs: u64,
    pub cp_dirs: usize,
    pub cp_files_per_dir: usize,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            big_mib: 1024,
            small_files: 1000,
            ls_small: 1000,
            ls_large: 10_000,
            tree_dirs: 100,
            tree_files: 20,
            appends: 500,
            mv_files: 200,
            rm_files: 1000,
            fio_secs: 20,
            cp_dirs: 100,
            cp_files_per_dir: 10,
        }
    }

    pub fn smoke() -> Sizes {
        Sizes {
            big_mib: 16,
            small_files: 200,
            ls_small: 300,
            ls_large: 2500,
            tree_dirs: 5,
            tree_files: 4,
            appends: 50,
            mv_files: 20,
            rm_files: 50,
            fio_secs: 1,
            cp_dirs: 4,
            cp_files_per_dir: 5,
        }
    }
}

/// One workload of the table.
#[derive(Clone, Debug)]
pub struct Workload {
    pub id: &'static str,
    pub title: String,
    pub unit: Unit,
    /// Whether the direct client does it too (as the ceiling).
    pub direct: bool,
    /// Files, objects or appends it makes or reads (0: not counted).
    pub count: usize,
}

/// The workloads, in the order they run and are reported.
pub fn workloads(sizes: &Sizes) -> Vec<Workload> {
    let s = sizes;
    let rows = [
        (
            "seq_write",
            format!(
                "sequential write of {} MiB (until on the server)",
                s.big_mib
            ),
            Unit::MibPerSec,
            true,
            0,
        ),
        (
            "seq_read",
            format!("cold sequential read of {} MiB (MD5 checked)", s.big_mib),
            Unit::MibPerSec,
            true,
            0,
        ),
        (
            "ttfb",
            "time to first byte (open + 4 KiB read)".into(),
            Unit::Millis,
            true,
            0,
        ),
        (
            "create_1",
            format!("create {} files of 4 KiB, 1 writer", s.small_files),
            Unit::Seconds,
            true,
            s.small_files,
        ),
        (
            "create_8",
            format!("create {} files of 4 KiB, 8 writers", s.small_files),
            Unit::Seconds,
            true,
            s.small_files,
        ),
        (
            "ls_small",
            format!("`ls -l` cold, {} objects", s.ls_small),
            Unit::Seconds,
            false,
            s.ls_small,
        ),
        (
            "ls_large",
            format!("`ls -l` cold, {} objects", s.ls_large),
            Unit::Seconds,
            false,
            s.ls_large,
        ),
        (
            "find",
            format!(
                "`find` over {} directories x {} files",
                s.tree_dirs, s.tree_files
            ),
            Unit::Seconds,
            false,
            s.tree_dirs * s.tree_files,
        ),
        (
            "append",
            format!("{} shell appends of 4 KiB to one file", s.appends),
            Unit::Seconds,
            false,
            s.appends,
        ),
        (
            "mv_dir",
            format!("`mv` of a directory of {} files", s.mv_files),
            Unit::Seconds,
            false,
            s.mv_files,
        ),
        (
            "rm_rf",
            format!("`rm -rf` of {} files", s.rm_files),
            Unit::Seconds,
            false,
            s.rm_files,
        ),
        (
            "fio_randread",
            format!(
                "fio 4 KiB random read of the {} MiB file, {} s",
                s.big_mib, s.fio_secs
            ),
            Unit::Iops,
            true,
            0,
        ),
        (
            "cp_r",
            format!(
                "`cp -r` of {} files of 4 KiB in {} directories",
                s.cp_dirs * s.cp_files_per_dir,
                s.cp_dirs
            ),
            Unit::Seconds,
            false,
            s.cp_dirs * s.cp_files_per_dir,
        ),
    ];
    rows.into_iter()
        .map(|(id, title, unit, direct, count)| Workload {
            id,
            title,
            unit,
            direct,
            count,
        })
        .collect()
}

/// The outcome of one run of a workload.
#[derive(Clone, Debug)]
pub struct Measure {
    /// Wall time until the work was complete on the server.
    pub seconds: f64,
    /// The figure, in the workload's unit.
    pub value: f64,
    /// The emulator's counters for the run (`None` on other servers).
    pub counters: Option<Counters>,
    /// CPU seconds of the filesystem daemon during the run.
    pub daemon_cpu: Option<f64>,
}

/// Shared state of the runs against one server.
pub struct Bench<'a> {
    pub server: &'a Server,
    pub scratch: &'a Scratch,
    pub sizes: Sizes,
    pub timeout: Duration,
    data: Bytes,
    data_md5: String,
    /// Page-aligned reads, as cp, cat and dd make them.
    read_buf: Vec<u8>,
    mounts: usize,
    cp_source: PathBuf,
    /// False when the page cache cannot be dropped (not root).
    pub drops_cache: bool,
}

impl<'a> Bench<'a> {
    /// Seeds the objects the read-only workloads use and builds the local
    /// tree `cp -r` copies.
    pub fn prepare(
        server: &'a Server,
        scratch: &'a Scratch,
        sizes: Sizes,
        timeout: Duration,
        ids: &[&str],
    ) -> Bench<'a> {
        let size = sizes.big_mib << 20;
        let data = object_bytes(size);
        let data_md5 = hex_md5(&data);
        let wants = |id: &str| ids.contains(&id);
        if wants("seq_read") || wants("ttfb") || wants("fio_randread") {
            server.seed(&["seed/big".to_string()], &data);
        }
        let small = data.slice(..SMALL);
        if wants("ls_small") {
            server.seed(&numbered("ls-small/f", sizes.ls_small), &small);
        }
        if wants("ls_large") {
            server.seed(&numbered("ls-large/f", sizes.ls_large), &small);
        }
        if wants("find") {
            let mut keys = Vec::new();
            for d in 0..sizes.tree_dirs {
                keys.push(format!("tree/d{d:03}/"));
                keys.extend(numbered(&format!("tree/d{d:03}/f"), sizes.tree_files));
            }
            server.seed(&keys, &small);
        }
        let cp_source = scratch.subdir("cp-source");
        for d in 0..sizes.cp_dirs {
            let dir = cp_source.join(format!("d{d:03}"));
            std::fs::create_dir_all(&dir).expect("local tree");
            for f in 0..sizes.cp_files_per_dir {
                std::fs::write(dir.join(format!("f{f:03}")), &small[..]).expect("local file");
            }
        }
        let mut read_buf = vec![1u8; size as usize + PAGE];
        let aligned = read_buf.as_ptr().align_offset(PAGE);
        read_buf.drain(..aligned);
        Bench {
            server,
            scratch,
            sizes,
            timeout,
            data,
            data_md5,
            read_buf,
            mounts: 0,
            cp_source,
            drops_cache: drop_page_cache(),
        }
    }

    /// Why `w` cannot run here, if so.
    pub fn unavailable(&self, w: &Workload) -> Option<String> {
        (w.id == "fio_randread" && !on_path("fio")).then(|| {
            "fio not found: install it with `apt-get install fio` to run this workload".into()
        })
    }

    /// Runs `w` once by `target`; `tag` makes its keys unique.
    pub fn run(&mut self, w: &Workload, target: Target, tag: &str) -> Result<Measure, String> {
        match target {
            Target::Direct => self.run_direct(w, tag),
            Target::Fs(fs) => self.run_fs(w, fs, tag),
        }
    }

    fn run_fs(&mut self, w: &Workload, fs: Fs, tag: &str) -> Result<Measure, String> {
        let s = self.sizes.clone();
        let size = self.data.len();
        let server = self.server;
        match w.id {
            "seq_write" => {
                let key = format!("seqw-{tag}");
                let data = self.data.clone();
                let name = key.clone();
                let m = self.on_mount(
                    fs,
                    move |mnt, _| {
                        let mut file = File::create(mnt.join(&name)).map_err(io("create"))?;
                        for chunk in data.chunks(IO_CALL) {
                            file.write_all(chunk).map_err(io("write"))?;
                        }
                        close_checked(file).map_err(io("close"))?;
                        Ok(None)
                    },
                    |server| server.size_of(&key) == Some(size as u64),
                );
                server.delete_under(&format!("seqw-{tag}"));
                m.map(|m| {
                    let value = size as f64 / (1 << 20) as f64 / m.seconds;
                    m.with_value(value)
                })
            }
            "seq_read" => {
                let m = self.on_mount(
                    fs,
                    move |mnt, buf| {
                        let n = read_whole(&mnt.join("seed/big"), &mut buf[..size])?;
                        if n != size {
                            return Err(format!("read {n} bytes of {size}"));
                        }
                        Ok(None)
                    },
                    |_| true,
                )?;
                let got = hex_md5(&self.read_buf[..size]);
                if got != self.data_md5 {
                    return Err(format!(
                        "read bytes with MD5 {got}, the object's is {}",
                        self.data_md5
                    ));
                }
                let value = size as f64 / (1 << 20) as f64 / m.seconds;
                Ok(m.with_value(value))
            }
            "ttfb" => {
                let first = self.data.slice(..SMALL);
                self.on_mount(
                    fs,
                    move |mnt, _| {
                        let started = Instant::now();
                        let mut file = File::open(mnt.join("seed/big")).map_err(io("open"))?;
                        let mut got = [0u8; SMALL];
                        file.read_exact(&mut got).map_err(io("read"))?;
                        let took = started.elapsed();
                        if got[..] != first[..] {
                            return Err("wrong first bytes".into());
                        }
                        Ok(Some(took.as_secs_f64() * 1e3))
                    },
                    |_| true,
                )
            }
            "create_1" | "create_8" => {
                let writers = if w.id == "create_1" { 1 } else { 8 };
                let dir = format!("{}/{tag}", w.id);
                let body = self.data.slice(..SMALL);
                let count = s.small_files;
                let rel = dir.clone();
                let m = self.on_mount(
                    fs,
                    move |mnt, _| {
                        let dir = mnt.join(&rel);
                        std::fs::create_dir_all(&dir).map_err(io("mkdir"))?;
                        create_files(&dir, count, writers, &body)?;
                        Ok(None)
                    },
                    |server| server.files_under(&format!("{dir}/")).len() == count,
                );
                server.delete_under(&format!("{}/{tag}/", w.id));
                m
            }
            "ls_small" | "ls_large" => {
                let (dir, count) = if w.id == "ls_small" {
                    ("ls-small", s.ls_small)
                } else {
                    ("ls-large", s.ls_large)
                };
                self.on_mount(
                    fs,
                    move |mnt, _| {
                        let out = run(Command::new("ls").arg("-l").arg(mnt.join(dir)))?;
                        // `ls -l` starts with a "total" line.
                        expect_lines(&out, count + 1, "lines of ls -l")
                    },
                    |_| true,
                )
            }
            "find" => {
                let files = s.tree_dirs * s.tree_files;
                self.on_mount(
                    fs,
                    move |mnt, _| {
                        let out = run(Command::new("find")
                            .arg(mnt.join("tree"))
                            .args(["-type", "f"]))?;
                        expect_lines(&out, files, "files found")
                    },
                    |_| true,
                )
            }
            "append" => {
                let key = format!("append-{tag}");
                let total = s.appends * SMALL;
                let data = self.data.slice(..total.min(size));
                let name = key.clone();
                let appends = s.appends;
                let m = self.on_mount(
                    fs,
                    move |mnt, _| {
                        let path = mnt.join(&name);
                        for i in 0..appends {
                            // What a shell's `>>` does: open, write, close.
                            let mut file = std::fs::OpenOptions::new()
                                .append(true)
                                .create(true)
                                .open(&path)
                                .map_err(io("open for append"))?;
                            let chunk = &data[(i * SMALL) % data.len()..][..SMALL];
                            file.write_all(chunk).map_err(io("append"))?;
                            close_checked(file).map_err(io("close"))?;
                        }
                        Ok(None)
                    },
                    |server| server.size_of(&key) == Some(total as u64),
                );
                server.delete_under(&format!("append-{tag}"));
                m
            }
            "mv_dir" => {
                let base = format!("mv/{tag}");
                let mut keys = vec![format!("{base}/src/")];
                keys.extend(numbered(&format!("{base}/src/f"), s.mv_files));
                server.seed(&keys, &self.data.slice(..SMALL));
                let rel = base.clone();
                let files = s.mv_files;
                let m = self.on_mount(
                    fs,
                    move |mnt, _| {
                        let dir = mnt.join(&rel);
                        run(Command::new("mv").arg(dir.join("src")).arg(dir.join("dst")))?;
                        Ok(None)
                    },
                    |server| {
                        server.files_under(&format!("{base}/src/")).is_empty()
                            && server.files_under(&format!("{base}/dst/")).len() == files
                    },
                );
                server.delete_under(&format!("mv/{tag}/"));
                m
            }
            "rm_rf" => {
                let base = format!("rm/{tag}/");
                let mut keys = vec![base.clone()];
                keys.extend(numbered(&format!("{base}f"), s.rm_files));
                server.seed(&keys, &self.data.slice(..SMALL));
                let rel = format!("rm/{tag}");
                let m = self.on_mount(
                    fs,
                    move |mnt, _| {
                        run(Command::new("rm").arg("-rf").arg(mnt.join(&rel)))?;
                        Ok(None)
                    },
                    |server| server.files_under(&base).is_empty(),
                );
                server.delete_under(&format!("rm/{tag}/"));
                m
            }
            "fio_randread" => {
                let secs = s.fio_secs;
                let mib = s.big_mib;
                self.on_mount(
                    fs,
                    move |mnt, _| {
                        let out = run(Command::new("fio")
                            .arg("--name=randread")
                            .arg(format!("--filename={}", mnt.join("seed/big").display()))
                            .args(["--readonly", "--rw=randread", "--bs=4k", "--ioengine=psync"])
                            .arg(format!("--size={mib}M"))
                            .arg(format!("--runtime={secs}"))
                            .args(["--time_based", "--output-format=json"]))?;
                        let json: serde_json::Value =
                            serde_json::from_str(&out).map_err(|e| format!("fio's JSON: {e}"))?;
                        let iops = json["jobs"][0]["read"]["iops"]
                            .as_f64()
                            .ok_or("no IOPS in fio's output")?;
                        Ok(Some(iops))
                    },
                    |_| true,
                )
            }
            "cp_r" => {
                let dest = format!("cp-{tag}");
                let files = s.cp_dirs * s.cp_files_per_dir;
                let source = self.cp_source.clone();
                let rel = dest.clone();
                let m = self.on_mount(
                    fs,
                    move |mnt, _| {
                        run(Command::new("cp")
                            .arg("-r")
                            .arg(&source)
                            .arg(mnt.join(&rel)))?;
                        Ok(None)
                    },
                    |server| server.files_under(&format!("{dest}/")).len() == files,
                );
                server.delete_under(&format!("cp-{tag}/"));
                m
            }
            other => Err(format!("no workload {other}")),
        }
    }

    /// Mounts `fs` fresh, drops the page cache, resets the counters, runs
    /// `act` (given the mount point and the read buffer) and then waits
    /// until `done` says the server has the result, all within the
    /// deadline. The figure is what `act` returns, else the seconds taken.
    fn on_mount(
        &mut self,
        fs: Fs,
        act: impl FnOnce(&Path, &mut [u8]) -> Result<Option<f64>, String> + Send,
        done: impl Fn(&Server) -> bool,
    ) -> Result<Measure, String> {
        self.mounts += 1;
        let n = self.mounts;
        let mut mount = fs.mount(self.server, self.scratch, n)?;
        drop_page_cache();
        self.server.reset_counters();
        let pid = mount.pid();
        let cpu_before = process_cpu(pid);
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        let started = Instant::now();
        let mnt = mount.mnt.clone();
        let buf = &mut self.read_buf[..];
        let acted = std::thread::scope(|scope| {
            let worker = scope.spawn(move || act(&mnt, buf));
            while !worker.is_finished() {
                if Instant::now() > deadline {
                    // Fails every request still waiting on the mount.
                    mount.kill();
                    let _ = worker.join();
                    return Err(format!("timed out after {timeout:?}"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            worker
                .join()
                .unwrap_or_else(|_| Err("the workload panicked".into()))
        });
        let figure = match acted {
            Ok(figure) => figure,
            Err(e) => return Err(with_log(e, &mount)),
        };
        while !done(self.server) {
            if Instant::now() > deadline {
                return Err(with_log(
                    format!("not complete on the server after {timeout:?}"),
                    &mount,
                ));
            }
            std::thread::sleep(POLL);
        }
        let seconds = started.elapsed().as_secs_f64();
        let counters = self.server.counters();
        let daemon_cpu = Some(process_cpu(pid) - cpu_before);
        drop(mount);
        let _ = std::fs::remove_dir_all(self.scratch.dir.join(format!("cache-{n}")));
        Ok(Measure {
            seconds,
            value: figure.unwrap_or(seconds),
            counters,
            daemon_cpu,
        })
    }

    fn run_direct(&mut self, w: &Workload, tag: &str) -> Result<Measure, String> {
        let server = self.server;
        let size = self.data.len();
        let mib = size as f64 / (1 << 20) as f64;
        let started = Instant::now();
        server.reset_counters();
        let value = match w.id {
            "seq_write" => {
                let key = format!("seqw-{tag}");
                server.runtime.block_on(multipart_upload(
                    server.client.clone(),
                    &key,
                    self.data.clone(),
                    &ObjectAttributes::default(),
                ));
                let took = started.elapsed().as_secs_f64();
                server.delete_under(&key);
                mib / took
            }
            "seq_read" => {
                let buf = &mut self.read_buf[..size];
                server
                    .runtime
                    .block_on(download(server.client.clone(), "seed/big", buf));
                let took = started.elapsed().as_secs_f64();
                let got = hex_md5(buf);
                if got != self.data_md5 {
                    return Err(format!("downloaded bytes with MD5 {got}"));
                }
                mib / took
            }
            "ttfb" => {
                // A new client that has checked the bucket, as a mount has.
                let client = server.fresh_client();
                server.runtime.block_on(async {
                    let _ = client.head_bucket().await;
                    let started = Instant::now();
                    ranged_get(&*client, "seed/big", 0..SMALL as u64).await;
                    started.elapsed().as_secs_f64() * 1e3
                })
            }
            "create_1" | "create_8" => {
                let writers = if w.id == "create_1" { 1 } else { 8 };
                let keys = numbered(&format!("{}/{tag}/f", w.id), self.sizes.small_files);
                let body = self.data.slice(..SMALL);
                server
                    .runtime
                    .block_on(put_all(server.client.clone(), keys, body, writers));
                let took = started.elapsed().as_secs_f64();
                server.delete_under(&format!("{}/{tag}/", w.id));
                took
            }
            "fio_randread" => {
                let secs = self.sizes.fio_secs;
                server
                    .runtime
                    .block_on(random_reads(server.client.clone(), size as u64, secs))
            }
            other => return Err(format!("the direct client does not do {other}")),
        };
        Ok(Measure {
            seconds: started.elapsed().as_secs_f64(),
            value,
            counters: server.counters(),
            daemon_cpu: None,
        })
    }
}

impl Measure {
    fn with_value(mut self, value: f64) -> Measure {
        self.value = value;
        self
    }
}

const PAGE: usize = 4096;

fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i:05}")).collect()
}

fn hex_md5(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn with_log(error: String, mount: &MountedDaemon) -> String {
    let log = mount.log_text();
    let tail: Vec<&str> = log.lines().rev().take(10).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("{error}; the daemon's last log lines:\n{}", tail.join("\n"))
}

/// Drops clean pages from the page cache; false when not allowed.
fn drop_page_cache() -> bool {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Closes `file` and reports the error a close returns (where a FUSE
/// filesystem that uploads at close reports a failed upload).
fn close_checked(file: File) -> std::io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just released by `file`, so it is closed once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs `command`, returns its stdout; a failure carries its stderr.
fn run(command: &mut Command) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}",
            command.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn expect_lines(out: &str, expected: usize, what: &str) -> Result<Option<f64>, String> {
    let got = out.lines().count();
    if got == expected {
        Ok(None)
    } else {
        Err(format!("{what}: {got}, expected {expected}"))
    }
}

/// Reads `path` whole with `IO_CALL`-sized reads into `buf`; returns the
/// bytes read (one more than `buf` holds if the file is longer).
fn read_whole(path: &Path, buf: &mut [u8]) -> Result<usize, String> {
    let mut file = File::open(path).map_err(io("open"))?;
    let mut filled = 0;
    loop {
        let end = (filled + IO_CALL).min(buf.len());
        if filled == buf.len() {
            let mut extra = [0u8; 1];
            return Ok(filled + file.read(&mut extra).map_err(io("read"))?);
        }
        let n = file.read(&mut buf[filled..end]).map_err(io("read"))?;
        if n == 0 {
            return Ok(filled);
        }
        filled += n;
    }
}

/// Writes `count` files `f00000...` of `body` in `dir`, by `writers`
/// threads each taking every `writers`-th name.
fn create_files(dir: &Path, count: usize, writers: usize, body: &[u8]) -> Result<(), String> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..writers)
            .map(|first| {
                scope.spawn(move || -> Result<(), String> {
                    for i in (first..count).step_by(writers) {
                        let mut file =
                            File::create(dir.join(format!("f{i:05}"))).map_err(io("create"))?;
                        file.write_all(body).map_err(io("write"))?;
                        close_checked(file).map_err(io("close"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|_| Err("a writer panicked".into())))
    })
}

/// Downloads `key` into `buf` as `PART`-sized ranged GETs, `PARALLEL` in
/// flight.
async fn download(store: Arc<impl ObjectStore + 'static>, key: &str, buf: &mut [u8]) {
    let size = buf.len() as u64;
    let mut ranges = (0..size)
        .step_by(PART as usize)
        .map(|s| s..(s + PART).min(size));
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        while in_flight.len() < PARALLEL {
            let Some(range) = ranges.next() else { break };
            let (store, key) = (store.clone(), key.to_string());
            in_flight.spawn(async move { (range.start, ranged_get(&*store, &key, range).await) });
        }
        match in_flight.join_next().await {
            Some(done) => {
                let (start, body) = done.expect("GET task");
                buf[start as usize..][..body.len()].copy_from_slice(&body);
            }
            None => break,
        }
    }
}

/// PUTs `body` at every key, `writers` requests in flight.
async fn put_all(
    store: Arc<impl ObjectStore + 'static>,
    keys: Vec<String>,
    body: Bytes,
    writers: usize,
) {
    let mut keys = keys.into_iter();
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        while in_flight.len() < writers {
            let Some(key) = keys.next() else { break };
            let (store, body) = (store.clone(), body.clone());
            in_flight.spawn(async move {
                let request = PutRequest {
                    key,
                    body,
                    attributes: ObjectAttributes::default(),
                };
                store.put_object(&request).await.expect("PUT")
            });
        }
        match in_flight.join_next().await {
            Some(done) => {
                done.expect("PUT task");
            }
            None => break,
        }
    }
}

/// 4 KiB ranged GETs at random aligned offsets of `seed/big`, one at a
/// time for `secs` seconds (what fio's psync job does); returns IOPS.
async fn random_reads(store: Arc<impl ObjectStore + 'static>, size: u64, secs: u64) -> f64 {
    let blocks = size / SMALL as u64;
    let started = Instant::now();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut reads = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        // xorshift64: a fixed sequence, the same every run.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let start = (state % blocks) * SMALL as u64;
        ranged_get(&*store, "seed/big", start..start + SMALL as u64).await;
        reads += 1;
    }
    reads as f64 / started.elapsed().as_secs_f64()
}
