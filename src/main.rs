//! The `bucketfs` command.
//!
//! `bucketfs mount` mounts a bucket; `bucketfs emulator` runs the local
//! object-store server; `bucketfs demo` mounts a sample bucket served by
//! the emulator (the quick start).

use bucketfs::emulator::{self, EmulatorConfig, faults::FaultRule, handler::BucketSpec};
use bucketfs::mount::config::{MountConfig, MountOptions, Source, process_env};
use bucketfs::mount::detach::{ReadyPipe, spawn_detached};
use bucketfs::mount::run::{Readiness, Terminal, run_mount};
use bucketfs::store::Provider;
use bucketfs::store::credentials::Credentials;
use clap::{Parser, Subcommand};
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
    /// negative_ttl=DURATION, part_size=SIZE, readahead_max=SIZE,
    /// credentials_file=PATH, foreground (see README).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Stay in the foreground (log to stderr) instead of detaching.
    #[arg(short = 'f', long)]
    foreground: bool,
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
    /// one of 500, 503, reset, delay=MS, truncate; OPERATION a counter name or
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
    let cli = Cli::parse();
    match cli.command {
        Command::Mount(args) => mount_command(args),
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
fn mount_command(args: MountArgs) -> ExitCode {
    // Before any thread exists (it edits the environment).
    let ready_pipe = ReadyPipe::from_env();
    let fail = |message: String| {
        eprintln!("bucketfs: {message}");
        ExitCode::FAILURE
    };
    let option_strs: Vec<&str> = args.options.iter().map(String::as_str).collect();
    let options = match MountOptions::parse(&option_strs) {
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
    if !foreground {
        let own_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        return match spawn_detached(&own_args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => fail(message),
        };
    }
    init_logging();
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
