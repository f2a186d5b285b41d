//! The calling conventions bucketfs is started under besides its own:
//!
//! * **mount(8) helper.** `mount -t bucketfs SOURCE DIR` and fstab lines of
//!   type `bucketfs` run `/sbin/mount.bucketfs SOURCE DIR [-sfnv] [-N NS]
//!   [-o OPTIONS] [-t TYPE]`: the same binary, recognised by the name it
//!   was started under (a symlink). `-s` (sloppy) ignores unknown options,
//!   `-f` (fake) checks the configuration and mounts nothing, `-n` and `-v`
//!   are accepted, `-N` (another mount namespace) is refused.
//! * **mount.fuse3.** fstab lines of type `fuse.bucketfs` make mount.fuse3
//!   run `bucketfs SOURCE DIR -o OPTIONS`: a first argument holding `://`
//!   is a SOURCE, and `mount` is implied.
//!
//! Both become `bucketfs mount SOURCE DIR -o OPTIONS [--sloppy]`, which is
//! also what a detaching mount starts again (detach.rs).

use std::ffi::{OsStr, OsString};

/// Names this program answers to as a mount(8) helper.
const HELPER_NAMES: [&str; 2] = ["mount.bucketfs", "mount.fuse.bucketfs"];

/// The command line as `bucketfs` subcommand arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// Arguments after the program name, starting with the subcommand.
    pub args: Vec<OsString>,
    /// mount(8) `-f`: check, mount nothing, exit 0.
    pub fake: bool,
}

/// Turns `argv0` and the arguments after it into an [`Invocation`]; an
/// error is a one-line message for the user.
pub fn normalize(argv0: &OsStr, args: Vec<OsString>) -> Result<Invocation, String> {
    let name = std::path::Path::new(argv0)
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or_default();
    if HELPER_NAMES.contains(&name) {
        return from_mount8(args);
    }
    let first_is_source = args
        .first()
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.contains("://"));
    let mut out = args;
    if first_is_source {
        out.insert(0, OsString::from("mount"));
    }
    Ok(Invocation {
        args: out,
        fake: false,
    })
}

/// mount(8)'s helper arguments (see the module doc).
fn from_mount8(args: Vec<OsString>) -> Result<Invocation, String> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let (mut sloppy, mut fake) = (false, false);
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let Some(text) = arg.to_str() else {
            positional.push(arg);
            continue;
        };
        match text {
            "-o" => options.push(it.next().ok_or("-o needs a value")?),
            "-t" => {
                it.next().ok_or("-t needs a value")?;
            }
            "-N" => return Err("-N (another mount namespace) is not supported".into()),
            flags if flags.starts_with('-') && flags.len() > 1 => {
                for flag in flags[1..].chars() {
                    match flag {
                        's' => sloppy = true,
                        'f' => fake = true,
                        'n' | 'v' => {}
                        other => return Err(format!("unknown mount helper flag -{other}")),
                    }
                }
            }
            _ => positional.push(arg),
        }
    }
    let [source, dir]: [OsString; 2] = positional
        .try_into()
        .map_err(|_| "usage: mount.bucketfs SOURCE DIR [-sfnv] [-o OPTIONS]".to_string())?;
    let mut out = vec![OsString::from("mount"), source, dir];
    for o in options {
        out.push(OsString::from("-o"));
        out.push(o);
    }
    if sloppy {
        out.push(OsString::from("--sloppy"));
    }
    Ok(Invocation { args: out, fake })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn mount8_helper_arguments() {
        let got = normalize(
            OsStr::new("/sbin/mount.bucketfs"),
            os(&[
                "s3://b/p",
                "/mnt/x",
                "-n",
                "-o",
                "rw,_netdev,endpoint=http://h",
                "-sv",
            ]),
        )
        .unwrap();
        assert_eq!(
            got.args,
            os(&[
                "mount",
                "s3://b/p",
                "/mnt/x",
                "-o",
                "rw,_netdev,endpoint=http://h",
                "--sloppy"
            ])
        );
        assert!(!got.fake);
        let fake = normalize(OsStr::new("mount.bucketfs"), os(&["oss://b", "/m", "-f"])).unwrap();
        assert!(fake.fake);
        for bad in [
            &["oss://b"][..],
            &["a", "b", "c"],
            &["a", "b", "-x"],
            &["a", "b", "-N", "1"],
        ] {
            assert!(
                normalize(OsStr::new("mount.bucketfs"), os(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mount_fuse3_form_implies_mount() {
        let got = normalize(
            OsStr::new("/usr/local/bin/bucketfs"),
            os(&["cos://b-125/p", "/mnt", "-o", "allow_other"]),
        )
        .unwrap();
        assert_eq!(
            got.args,
            os(&["mount", "cos://b-125/p", "/mnt", "-o", "allow_other"])
        );
        let plain =
            normalize(OsStr::new("bucketfs"), os(&["emulator", "--dialect", "s3"])).unwrap();
        assert_eq!(plain.args, os(&["emulator", "--dialect", "s3"]));
    }
}
