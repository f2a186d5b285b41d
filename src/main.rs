//! The `bucketfs` command.
//!
//! `bucketfs mount` mounts a bucket; `bucketfs stats` shows what a mount
//! is doing; `bucketfs umount` unmounts and waits for its uploads; `bucketfs emulator` runs the local object-store server;
//! `bucketfs demo` mounts a sample bucket served by the emulator (the quick
//! start). Started as `mount.bucketfs`, or as `bucketfs SOURCE DIR` by
//! mount.fuse3, it mounts too (`mount::helper`).

use bucketfs::emulator::{self, EmulatorConfig, faults::FaultRule, handler::BucketSpec};
use bucketfs::mount::config::{MountConfig, MountOptions, Source, process_env};
use bucketfs::mount::detach::{ReadyPipe, spawn_detached};
use bucketfs::mount::helper::{Invocation, normalize};
use bucketfs::mount::run::{Readiness, Terminal, run_mount};
use bucketfs::store::Provider;
use bucketfs::store::credentials::Credentials;
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;

/// Mount an object-storage bucket (OSS, OBS, COS, S3) as a filesystem.
#[derive(Parser, Debug)]
#[command(name = "bucketfs", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mount a bucket: SOURCE is s3://BUCKET[/PREFIX], oss://..., obs://...
    /// or cos://BUCKET-APPID[/PREFIX]; credentials come from the provider's
    /// environment variables or -o credentials_file=PATH. Detaches once the
    /// mount is ready unless -f is given.
    Mount(MountArgs),
    /// Show what a mount is doing: pending uploads, staging and cache use,
    /// requests and errors per operation.
    Stats(StatsArgs),
    /// Unmount, then wait until every staged write is uploaded and the
    /// daemon has exited, showing what is left.
    Umount(UmountArgs),
    /// Quick start: serve a sample bucket from the built-in emulator and
    /// mount it (default at $TMPDIR/bucketfs-demo) until Ctrl-C.
    Demo(DemoArgs),
    /// Run a local object-store server (S3, OSS, OBS or COS dialect) for
    /// tests and demos. Prints one line with its URL once ready.
    Emulator(EmulatorArgs),
}

#[derive(clap::Args, Debug)]
struct MountArgs {
    /// What to mount, e.g. s3://bucket/prefix.
    source: String,
    /// An existing, empty directory.
    mount_point: std::path::PathBuf,
    /// Mount options, comma-separated (repeatable): endpoint=URL, region=R,
    /// path_style, signature=..., uid=N, gid=N, umask=OCTAL,
    /// file_mode=OCTAL, dir_mode=OCTAL, allow_other, ro, nonempty,
    /// cache_size=SIZE, attr_ttl=DURATION, dir_ttl=DURATION,
    /// negative_ttl=DURATION, listing_cache_entries=N, part_size=SIZE,
    /// readahead_max=SIZE,
    /// credentials_file=PATH, foreground (see README).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Stay in the foreground (log to stderr) instead of detaching.
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Ignore unknown options (mount(8) -s).
    #[arg(long, hide = true)]
    sloppy: bool,
}

#[derive(clap::Args, Debug)]
struct StatsArgs {
    /// The mount point of a running bucketfs mount.
    mount_point: std::path::PathBuf,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct UmountArgs {
    /// The mount point of a running bucketfs mount.
    mount_point: std::path::PathBuf,
    /// Detach a busy mount (open files are served until closed).
    #[arg(short = 'l', long)]
    lazy: bool,
    /// Stop waiting after this many seconds (the uploads go on).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Where to mount the demo bucket (created if missing; must be empty).
    #[arg(long)]
    mount_point: Option<std::path::PathBuf>,
}

#[derive(clap::Args, Debug)]
struct EmulatorArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Dialect to speak: s3, oss, obs or cos.
    #[arg(long, default_value = "s3", value_parser = parse_provider)]
    dialect: Provider,
    /// A bucket to serve (repeatable): NAME, NAME:hns (OSS hierarchical
    /// namespace) or NAME:pfs (OBS parallel file system).
    #[arg(long = "bucket", value_parser = BucketSpec::parse, default_value = "demo")]
    buckets: Vec<BucketSpec>,
    /// Access key id clients must sign with.
    #[arg(
        long,
        env = "BUCKETFS_EMULATOR_ACCESS_KEY",
        default_value = "bucketfs-demo"
    )]
    access_key: String,
    /// Secret key clients must sign with (prefer the environment variable,
    /// which `ps` does not show).
    #[arg(
        long,
        env = "BUCKETFS_EMULATOR_SECRET_KEY",
        default_value = "bucketfs-demo-secret",
        hide_env_values = true
    )]
    secret_key: String,
    /// A fault rule (repeatable): OPERATION:KIND[:next=N][:p=FRACTION], KIND
    /// one of 500, 503, 403, reset, delay=MS, late=MS, truncate; OPERATION a counter name or
    /// `*`. More can be added at run time with `POST /-/faults`.
    #[arg(long = "fault", value_parser = FaultRule::parse)]
    faults: Vec<FaultRule>,
    /// Seed for the faults that hit a fraction of requests.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep objects in this directory across restarts (default: memory only).
    #[arg(long)]
    data: Option<std::path::PathBuf>,
}

fn parse_provider(s: &str) -> Result<Provider, String> {
    Provider::parse(s).ok_or_else(|| format!("unknown dialect {s:?} (use s3, oss, obs or cos)"))
}

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_default();
    let invocation = match normalize(&argv0, argv.collect()) {
        Ok(i) => i,
        Err(message) => {
            eprintln!("bucketfs: {message}");
            return ExitCode::FAILURE;
        }
    };
    let cli =
        Cli::parse_from(std::iter::once(OsString::from("bucketfs")).chain(invocation.args.clone()));
    match cli.command {
        Command::Mount(args) => mount_command(args, &invocation),
        Command::Stats(args) => stats_command(args),
        Command::Umount(args) => {
            let req = bucketfs::mount::umount::UmountRequest {
                mount_point: args.mount_point,
                lazy: args.lazy,
                timeout: args.timeout.map(std::time::Duration::from_secs),
            };
            match bucketfs::mount::umount::umount(&req) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("bucketfs umount: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo(args) => {
            init_logging();
            let at = args
                .mount_point
                .unwrap_or_else(bucketfs::demo::default_mount_point);
            match bucketfs::demo::run_demo(&at) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("bucketfs demo: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Emulator(args) => run_emulator(args),
    }
}

/// `bucketfs mount`: configuration errors are reported here, before a
/// detached child is started; everything else by the mounting process.
fn mount_command(args: MountArgs, invocation: &Invocation) -> ExitCode {
    // Before any thread exists (it edits the environment).
    let ready_pipe = ReadyPipe::from_env();
    let fail = |message: String| {
        eprintln!("bucketfs: {message}");
        ExitCode::FAILURE
    };
    let option_strs: Vec<&str> = args.options.iter().map(String::as_str).collect();
    let options = match MountOptions::parse_with(&option_strs, args.sloppy) {
        Ok(o) => o,
        Err(e) => return fail(e.to_string()),
    };
    let foreground = args.foreground || options.foreground;
    let source = match Source::parse(&args.source) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let config = match MountConfig::build(source, options, &process_env) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    if invocation.fake {
        // mount(8) -f: the configuration is fine; mount nothing.
        return ExitCode::SUCCESS;
    }
    if !foreground {
        return match spawn_detached(&invocation.args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => fail(message),
        };
    }
    let detached = ready_pipe.is_some();
    if let Err(message) = init_mount_logging(&config, detached) {
        return fail(message);
    }
    tracing::info!("credentials from {}", config.credential_source);
    if !config.options.ignored.is_empty() {
        tracing::debug!(
            "ignored fstab options: {}",
            config.options.ignored.join(",")
        );
    }
    let mut terminal = Terminal;
    let mut pipe = ready_pipe;
    let readiness: &mut dyn Readiness = match pipe.as_mut() {
        Some(p) => p,
        None => &mut terminal,
    };
    match run_mount(config, &args.mount_point, readiness) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(message),
    }
}

/// Human-readable logs to stderr, level from `RUST_LOG` (default info).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Logging of a mount: `RUST_LOG` if set, else `log_level=` (default
/// info); to `log_file=` if given, else to stderr in the foreground, else
/// (detached, stderr is gone) to the journal when there is one.
fn init_mount_logging(config: &MountConfig, detached: bool) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let level = config.options.log_level.as_deref().unwrap_or("info");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let registry = tracing_subscriber::registry().with(filter);
    if let Some(path) = &config.options.log_file {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("option log_file: cannot open {}: {e}", path.display()))?;
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file));
        let _ = registry.with(layer).try_init();
    } else if !detached {
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        let _ = registry.with(layer).try_init();
    } else if let Ok(journald) = tracing_journald::layer() {
        let _ = registry
            .with(journald.with_syslog_identifier("bucketfs".into()))
            .try_init();
    }
    Ok(())
}

/// `bucketfs stats MOUNTPOINT`: the mount's statistics, read from the
/// `user.bucketfs.stats` attribute of its root (fs/filesystem/stats.rs).
fn stats_command(args: StatsArgs) -> ExitCode {
    match bucketfs::fs::stats::read_from_mount(&args.mount_point) {
        Ok(json) if args.json => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Ok(json) => {
            print!("{}", bucketfs::fs::stats::render(&json));
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("bucketfs stats: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_emulator(args: EmulatorArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bucketfs emulator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let config = EmulatorConfig {
            listen: args.listen,
            provider: args.dialect,
            buckets: args.buckets,
            credentials: Credentials::new(args.access_key, args.secret_key),
            faults: args.faults,
            seed: args.seed,
            data_dir: args.data.clone(),
        };
        let buckets: Vec<String> = config.buckets.iter().map(|b| b.name.clone()).collect();
        let running = match emulator::start(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("bucketfs emulator: cannot start on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        println!(
            "bucketfs emulator ({}) listening on {} with bucket(s) {}",
            args.dialect.name(),
            running.url,
            buckets.join(", ")
        );
        wait_for_shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
