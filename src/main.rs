//! The `bucketfs` command.
//!
//! Today it only describes itself: the object-store client library is the
//! first layer to land. `bucketfs mount` and `bucketfs emulator` arrive with
//! the filesystem and emulator layers (see README, "Status").

use clap::Parser;

/// Mount an object-storage bucket (OSS, OBS, COS, S3) as a filesystem.
#[derive(Parser, Debug)]
#[command(name = "bucketfs", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!(
        "bucketfs {}: the object-store client is built; `mount` and `emulator` are not yet available.\n\
         Run `bucketfs --help` for options.",
        env!("CARGO_PKG_VERSION")
    );
}
