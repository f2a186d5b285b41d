//! The staging journal: an append-only log of what the staged files hold
//! and which uploads have finished, so a restarted daemon knows what it
//! still owes the bucket.
//!
//! One record per line, JSON. A record is appended with a single `write`,
//! so a daemon killed at any moment (SIGKILL included) leaves whole records
//! behind it, the kernel having the bytes; at worst the last line is torn
//! by a machine crash, and a line that does not parse is ignored at replay.
//!
//! Subtle cases:
//! 1. **Latest wins.** A staged file is described again each time it is
//!    closed after new writes, with a growing generation; replay keeps the
//!    latest description of each file, and an `Uploaded` record finishes it
//!    only if it covers that generation.
//! 2. **Compaction.** Opening the journal replays it, then rewrites it with
//!    only the live records (to a temporary file, synced, renamed over the
//!    journal), so it does not grow across restarts. While running, it is
//!    emptied whenever nothing is left pending, and rewritten the same way
//!    when it grows past a size (a file kept open and fsynced for days).
//! 3. **Durability.** Records are not fsynced one by one: the promise is
//!    that a killed daemon loses nothing `close` returned for, and the
//!    kernel keeps written bytes across a process's death. `sync` exists for
//!    callers that want more (fsync).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// The object a staged file was derived from: bytes the staged file does
/// not hold come from it (while it still has this ETag).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseObject {
    pub etag: String,
    pub size: u64,
    /// Created by AppendObject, so further appends are allowed.
    pub appendable: bool,
}

/// The metadata a file is uploaded with (s3fs-compatible names, see
/// `fs::namespace`), plus its `user.*` extended attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Whole `st_mode`, file type included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// An mtime set explicitly (utimens), as seconds and nanoseconds since
    /// the epoch; `None` lets the object's Last-Modified stand for it.
    #[serde(default)]
    pub mtime: Option<(i64, u32)>,
    /// `user.*` extended attributes, name to value.
    #[serde(default)]
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Other user metadata of the object, kept as found.
    #[serde(default)]
    pub other: BTreeMap<String, String>,
}

/// What one staged file holds: enough to upload it again from scratch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedState {
    /// Names the staging file (`files/<id>`).
    pub id: u64,
    /// Grows with every description of the same file (subtle case 1).
    pub generation: u64,
    pub key: String,
    pub size: u64,
    pub base: Option<BaseObject>,
    /// Bytes below this offset that are not dirty come from `base`; above
    /// it every byte is dirty (written, or a hole that reads as zeros).
    pub base_valid: u64,
    /// Ranges held by the staging file, as `[start, end)` pairs.
    pub dirty: Vec<(u64, u64)>,
    pub meta: FileMeta,
}

/// One journal line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Record {
    /// A staged file and what it holds.
    Staged(StagedState),
    /// The upload of generation `generation` (or a later one) of file `id`
    /// finished; its staging file may go.
    Uploaded {
        id: u64,
        generation: u64,
    },
    /// File `id` will not be uploaded (deleted before it was); its staging
    /// file may go.
    Dropped {
        id: u64,
    },
    /// A multipart upload was started (aborted at recovery if the daemon
    /// dies before it ends).
    MultipartStarted {
        key: String,
        upload_id: String,
    },
    MultipartEnded {
        upload_id: String,
    },
}

/// What replay found still pending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// Staged files whose latest description was not uploaded, by id.
    pub staged: Vec<StagedState>,
    /// Ids of staging files that are finished (their files may linger).
    pub finished: Vec<u64>,
    /// Multipart uploads started and never ended: (key, upload id).
    pub multipart: Vec<(String, String)>,
    /// The next free staging id.
    pub next_id: u64,
}

/// The journal file, open for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes in the file (for compaction).
    len: u64,
    /// Multipart uploads started and not ended: upload id to key (kept
    /// across a compaction).
    multipart: BTreeMap<String, String>,
}

impl Journal {
    /// Opens (creating) the journal at `path`, replays it and compacts it
    /// (subtle case 2).
    pub fn open(path: &Path) -> std::io::Result<(Journal, Replay)> {
        let replay = match File::open(path) {
            Ok(file) => replay(BufReader::new(file))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Replay::default(),
            Err(e) => return Err(e),
        };
        let multipart = replay
            .multipart
            .iter()
            .map(|(key, id)| (id.clone(), key.clone()))
            .collect();
        let (file, len) = write_compacted(path, &replay.staged, &multipart)?;
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                len,
                multipart,
            },
            replay,
        ))
    }

    /// Appends one record with a single write (see the module doc).
    pub fn append(&mut self, record: &Record) -> std::io::Result<()> {
        let text = line(record);
        self.file.write_all(text.as_bytes())?;
        self.len += text.len() as u64;
        match record {
            Record::MultipartStarted { key, upload_id } => {
                self.multipart.insert(upload_id.clone(), key.clone());
            }
            Record::MultipartEnded { upload_id } => {
                self.multipart.remove(upload_id);
            }
            _ => {}
        }
        Ok(())
    }

    /// Forgets every record: called when nothing is pending any more.
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        self.multipart.clear();
        Ok(())
    }

    /// Bytes in the journal file.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Replaces the journal with `staged` (the latest record of every file
    /// still owed) and the open multipart uploads (subtle case 2, while
    /// running).
    pub fn rewrite(&mut self, staged: &[StagedState]) -> std::io::Result<()> {
        let (file, len) = write_compacted(&self.path, staged, &self.multipart)?;
        self.file = file;
        self.len = len;
        Ok(())
    }

    /// Makes the records written so far durable on disk.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes `staged` and `multipart` (upload id to key) to a temporary file,
/// syncs it and renames it over `path`; returns the new file, open for
/// appending, and its length.
fn write_compacted(
    path: &Path,
    staged: &[StagedState],
    multipart: &BTreeMap<String, String>,
) -> std::io::Result<(File, u64)> {
    let tmp = path.with_extension("compacting");
    let mut text = String::new();
    for state in staged {
        text.push_str(&line(&Record::Staged(state.clone())));
    }
    for (upload_id, key) in multipart {
        text.push_str(&line(&Record::MultipartStarted {
            key: key.clone(),
            upload_id: upload_id.clone(),
        }));
    }
    {
        let mut out = File::create(&tmp)?;
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    let file = OpenOptions::new().append(true).open(path)?;
    Ok((file, text.len() as u64))
}

fn line(record: &Record) -> String {
    let mut text = serde_json::to_string(record).expect("journal records always serialize");
    text.push('\n');
    text
}

/// Reads records until the end, skipping lines that do not parse.
fn replay(reader: impl BufRead) -> std::io::Result<Replay> {
    let mut latest: BTreeMap<u64, StagedState> = BTreeMap::new();
    let mut finished: BTreeMap<u64, u64> = BTreeMap::new();
    let mut multipart: BTreeMap<String, String> = BTreeMap::new();
    let mut next_id = 1;
    for text in reader.split(b'\n') {
        let text = text?;
        let Ok(record) = serde_json::from_slice::<Record>(&text) else {
            if !text.iter().all(u8::is_ascii_whitespace) {
                tracing::warn!("staging journal: skipped a line that does not parse");
            }
            continue;
        };
        match record {
            Record::Staged(state) => {
                next_id = next_id.max(state.id + 1);
                let newer = latest
                    .get(&state.id)
                    .is_none_or(|old| old.generation <= state.generation);
                if newer {
                    latest.insert(state.id, state);
                }
            }
            Record::Uploaded { id, generation } => {
                next_id = next_id.max(id + 1);
                let done = finished.entry(id).or_insert(0);
                *done = (*done).max(generation);
            }
            Record::Dropped { id } => {
                next_id = next_id.max(id + 1);
                finished.insert(id, u64::MAX);
            }
            Record::MultipartStarted { key, upload_id } => {
                multipart.insert(upload_id, key);
            }
            Record::MultipartEnded { upload_id } => {
                multipart.remove(&upload_id);
            }
        }
    }
    let mut out = Replay {
        next_id,
        ..Replay::default()
    };
    for (id, state) in latest {
        match finished.get(&id) {
            Some(&done) if done >= state.generation => out.finished.push(id),
            _ => out.staged.push(state),
        }
    }
    let more: Vec<u64> = finished
        .keys()
        .filter(|id| !out.finished.contains(id) && !out.staged.iter().any(|s| s.id == **id))
        .copied()
        .collect();
    out.finished.extend(more);
    out.finished.sort_unstable();
    out.multipart = multipart
        .into_iter()
        .map(|(upload_id, key)| (key, upload_id))
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: u64, generation: u64, key: &str) -> StagedState {
        StagedState {
            id,
            generation,
            key: key.into(),
            size: 10,
            base: Some(BaseObject {
                etag: "e".into(),
                size: 4,
                appendable: true,
            }),
            base_valid: 4,
            dirty: vec![(4, 10)],
            meta: FileMeta {
                mode: 0o100644,
                xattrs: BTreeMap::from([("user.a".to_string(), b"\x00\xff".to_vec())]),
                ..FileMeta::default()
            },
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "bucketfs-journal-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replay_keeps_what_is_still_owed() {
        let dir = temp_dir("owed");
        let path = dir.join("journal");
        {
            let (mut j, replay) = Journal::open(&path).unwrap();
            assert_eq!(replay, Replay::default());
            j.append(&Record::Staged(state(1, 1, "a"))).unwrap();
            j.append(&Record::Staged(state(2, 1, "b"))).unwrap();
            j.append(&Record::Uploaded {
                id: 2,
                generation: 1,
            })
            .unwrap();
            // Rewritten after an upload of generation 1 had finished.
            j.append(&Record::Staged(state(1, 2, "a"))).unwrap();
            j.append(&Record::Uploaded {
                id: 1,
                generation: 1,
            })
            .unwrap();
            j.append(&Record::Staged(state(3, 1, "c"))).unwrap();
            j.append(&Record::Dropped { id: 3 }).unwrap();
            j.append(&Record::MultipartStarted {
                key: "big".into(),
                upload_id: "u1".into(),
            })
            .unwrap();
            j.append(&Record::MultipartStarted {
                key: "big2".into(),
                upload_id: "u2".into(),
            })
            .unwrap();
            j.append(&Record::MultipartEnded {
                upload_id: "u2".into(),
            })
            .unwrap();
        }
        // A torn last line, as a machine crash could leave.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"op\":\"staged\",\"id\":9,\"gen").unwrap();
        drop(f);

        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.staged, vec![state(1, 2, "a")]);
        assert_eq!(replay.finished, vec![2, 3]);
        assert_eq!(replay.multipart, vec![("big".into(), "u1".into())]);
        assert_eq!(replay.next_id, 4);

        // Compacted: a second replay finds the same pending work, and the
        // file holds only live records.
        let (_, again) = Journal::open(&path).unwrap();
        assert_eq!(again.staged, replay.staged);
        assert_eq!(again.multipart, replay.multipart);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_rewrite_keeps_what_is_given_and_the_open_uploads() {
        let dir = temp_dir("rewrite");
        let path = dir.join("journal");
        let (mut j, _) = Journal::open(&path).unwrap();
        for g in 1..100 {
            j.append(&Record::Staged(state(1, g, "a"))).unwrap();
        }
        j.append(&Record::MultipartStarted {
            key: "big".into(),
            upload_id: "u9".into(),
        })
        .unwrap();
        let long = j.len();
        j.rewrite(&[state(1, 99, "a")]).unwrap();
        assert!(j.len() < long / 10, "{} of {long}", j.len());
        // Appends go on after the rewrite.
        j.append(&Record::Staged(state(2, 1, "b"))).unwrap();
        drop(j);
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.staged, vec![state(1, 99, "a"), state(2, 1, "b")]);
        assert_eq!(replay.multipart, vec![("big".into(), "u9".into())]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn clear_forgets_everything() {
        let dir = temp_dir("clear");
        let path = dir.join("journal");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append(&Record::Staged(state(5, 1, "x"))).unwrap();
        j.clear().unwrap();
        j.append(&Record::Staged(state(6, 1, "y"))).unwrap();
        drop(j);
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.staged, vec![state(6, 1, "y")]);
        assert_eq!(replay.next_id, 7);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
