//! `--data DIR`: keeps the emulator's objects across restarts.
//!
//! Each object is two files in `DIR/<bucket>/`, named by the SHA-256 of its
//! key (keys can be 1024 bytes, longer than a file name may be): `<hash>.data`
//! holds the body, `<hash>.json` the key and attributes. Subtle cases:
//! 1. Both are written to a temporary name and renamed into place, data
//!    first, so a crash leaves either the old object or the new one; a
//!    `.json` whose recorded size does not match its `.data` is skipped at
//!    load (logged), never served as a mix.
//! 2. Only objects are kept: open multipart uploads are lost on restart, as
//!    a server that restarts may also abort them.
//! 3. Changes are saved after each request, from the keys the bucket's
//!    [`MemoryStore`] noted as changed.

use crate::store::ObjectType;
use crate::store::memory::{MemoryStore, ObjectRecord};
use crate::store::types::Metadata;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The `.json` side of a saved object.
#[derive(Serialize, Deserialize)]
struct Saved {
    key: String,
    size: u64,
    etag: String,
    /// Nanoseconds since the Unix epoch.
    last_modified_ns: u64,
    content_type: Option<String>,
    metadata: Metadata,
    object_type: String,
    symlink_target: Option<String>,
}

/// Objects of every bucket saved under one directory.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn open(root: &Path) -> io::Result<DataDir> {
        std::fs::create_dir_all(root)?;
        Ok(DataDir {
            root: root.to_path_buf(),
        })
    }

    fn paths(&self, bucket: &str, key: &str) -> (PathBuf, PathBuf) {
        use sha2::Digest;
        let stem = hex::encode(sha2::Sha256::digest(key.as_bytes()));
        let dir = self.root.join(bucket);
        (
            dir.join(format!("{stem}.data")),
            dir.join(format!("{stem}.json")),
        )
    }

    /// Loads every saved object of `bucket` into `store`; returns how many.
    pub fn load(&self, bucket: &str, store: &MemoryStore) -> io::Result<usize> {
        let dir = self.root.join(bucket);
        std::fs::create_dir_all(&dir)?;
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match read_saved(&path) {
                Ok((key, record)) => {
                    store.import_object(&key, record);
                    loaded += 1;
                }
                Err(e) => tracing::warn!("skipping saved object {}: {e}", path.display()),
            }
        }
        Ok(loaded)
    }

    /// Writes (or removes) every object of `bucket` that changed.
    pub fn save_changes(&self, bucket: &str, store: &MemoryStore) -> io::Result<()> {
        let changes = store.take_changes();
        if !changes.is_empty() {
            std::fs::create_dir_all(self.root.join(bucket))?;
        }
        for key in changes {
            let (data, json) = self.paths(bucket, &key);
            match store.export_object(&key) {
                Some(record) => {
                    let saved = Saved {
                        key: key.clone(),
                        size: record.body.len() as u64,
                        etag: record.etag.clone(),
                        last_modified_ns: record
                            .last_modified
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map(|d| d.as_nanos() as u64)
                            .unwrap_or(0),
                        content_type: record.content_type.clone(),
                        metadata: record.metadata.clone(),
                        object_type: format!("{:?}", record.object_type),
                        symlink_target: record.symlink_target.clone(),
                    };
                    let text = serde_json::to_vec(&saved).map_err(io::Error::other)?;
                    write_replacing(&data, &record.body)?;
                    write_replacing(&json, &text)?;
                }
                None => {
                    remove_if_present(&json)?;
                    remove_if_present(&data)?;
                }
            }
        }
        Ok(())
    }
}

fn read_saved(json: &Path) -> io::Result<(String, ObjectRecord)> {
    let saved: Saved = serde_json::from_slice(&std::fs::read(json)?).map_err(io::Error::other)?;
    let body = std::fs::read(json.with_extension("data"))?;
    if body.len() as u64 != saved.size {
        return Err(io::Error::other(format!(
            "body has {} bytes, record says {}",
            body.len(),
            saved.size
        )));
    }
    let object_type = match saved.object_type.as_str() {
        "Appendable" => ObjectType::Appendable,
        "Multipart" => ObjectType::Multipart,
        "Symlink" => ObjectType::Symlink,
        _ => ObjectType::Normal,
    };
    let record = ObjectRecord {
        body: Bytes::from(body),
        etag: saved.etag,
        last_modified: SystemTime::UNIX_EPOCH + Duration::from_nanos(saved.last_modified_ns),
        content_type: saved.content_type,
        metadata: saved.metadata,
        object_type,
        symlink_target: saved.symlink_target,
    };
    Ok((saved.key, record))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
fn write_replacing(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Dialect, ObjectAttributes, ObjectStore, Provider, PutRequest};

    #[tokio::test]
    async fn objects_survive_a_save_and_load_and_deletions_too() {
        let dir = std::env::temp_dir().join(format!("bucketfs-persist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data = DataDir::open(&dir).unwrap();
        let store = MemoryStore::new(Dialect::new(Provider::Oss), "b").track_changes();
        let mut attributes = ObjectAttributes::default();
        attributes.metadata.insert("mode".into(), "100640".into());
        for key in ["a", "dir/long-".repeat(60).as_str(), "gone"] {
            store
                .put_object(&PutRequest {
                    key: key.to_string(),
                    body: Bytes::from(format!("body of {key}")),
                    attributes: attributes.clone(),
                })
                .await
                .unwrap();
        }
        store.delete_object("gone").await.unwrap();
        data.save_changes("b", &store).unwrap();

        let again = MemoryStore::new(Dialect::new(Provider::Oss), "b");
        assert_eq!(data.load("b", &again).unwrap(), 2);
        assert_eq!(again.keys(), store.keys());
        let before = store.export_object("a").unwrap();
        let after = again.export_object("a").unwrap();
        assert_eq!(after, before, "body, ETag, time and metadata all kept");

        // A torn write (record and body disagree) is skipped, not served.
        let (body_path, _) = data.paths("b", "a");
        std::fs::write(&body_path, b"torn").unwrap();
        let third = MemoryStore::new(Dialect::new(Provider::Oss), "b");
        assert_eq!(data.load("b", &third).unwrap(), 1);
        assert!(third.export_object("a").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
