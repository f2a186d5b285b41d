//! The write path: files with data the bucket does not have yet, staged on
//! local disk, and how they get uploaded.
//!
//! * `dirty`: one [`dirty::DirtyFile`] per file being written: its staging
//!   file, which byte ranges are dirty, its size and metadata;
//! * `plan`: the cheapest upload for a snapshot of a dirty file (pure);
//! * `upload`: carrying a plan out against the object store;
//! * `stream`: multipart uploads that start while a large file is written;
//! * `meta`: file metadata as s3fs-compatible object metadata;
//! * this module: [`Writes`], the mount's registry of dirty files (by inode,
//!   and by key for files recovered from the journal of a previous run).
//!
//! The filesystem core (`fs::filesystem`) decides when files become dirty,
//! when uploads are scheduled and what `close`, `fsync` and unmount wait
//! for; see its write-path module for the semantics.

pub mod dirty;
pub mod meta;
pub mod plan;
pub mod stream;
pub mod upload;

use crate::staging::StagingArea;
use crate::staging::journal::BaseObject;
use crate::store::{ObjectMeta, ObjectType};
use dirty::DirtyFile;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use upload::Uploader;

/// The object a HEAD described, as the base of a dirty file.
pub fn base_of(head: &ObjectMeta) -> BaseObject {
    BaseObject {
        etag: head.etag.clone(),
        size: head.size,
        appendable: head.object_type == ObjectType::Appendable,
    }
}

/// Tuning of the write path, from the mount options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteConfig {
    /// `close` waits for the upload and reports its failure.
    pub sync_close: bool,
}

/// The mount's dirty files.
#[derive(Debug)]
pub struct Writes {
    pub staging: Arc<StagingArea>,
    pub uploader: Uploader,
    pub config: WriteConfig,
    by_ino: Mutex<HashMap<u64, Arc<DirtyFile>>>,
    recovered: Mutex<HashMap<String, Arc<DirtyFile>>>,
}

impl Writes {
    pub fn new(staging: Arc<StagingArea>, uploader: Uploader, config: WriteConfig) -> Writes {
        Writes {
            staging,
            uploader,
            config,
            by_ino: Mutex::new(HashMap::new()),
            recovered: Mutex::new(HashMap::new()),
        }
    }

    /// The dirty file of inode `ino`.
    pub fn get(&self, ino: u64) -> Option<Arc<DirtyFile>> {
        self.by_ino.lock().get(&ino).cloned()
    }

    /// The dirty file of `ino` with one more holder (`handles`). Counted
    /// under the registry lock, so [`Writes::remove_if_idle`] cannot retire
    /// the file between the lookup and the count: a write through a
    /// retired file would go to a staging file already deleted, and the
    /// next open would start from an object about to change.
    pub fn get_held(&self, ino: u64) -> Option<Arc<DirtyFile>> {
        let by_ino = self.by_ino.lock();
        let file = by_ino.get(&ino)?.clone();
        file.with(|st| st.handles += 1);
        Some(file)
    }

    pub fn insert(&self, ino: u64, file: Arc<DirtyFile>) {
        self.by_ino.lock().insert(ino, file);
    }

    /// Registers `file` for `ino` unless one is there already, which is
    /// returned as the error. The registered file gets one more holder
    /// (as [`Writes::get_held`]).
    pub fn insert_held(
        &self,
        ino: u64,
        file: Arc<DirtyFile>,
    ) -> Result<Arc<DirtyFile>, Arc<DirtyFile>> {
        let mut by_ino = self.by_ino.lock();
        if let Some(existing) = by_ino.get(&ino) {
            existing.with(|st| st.handles += 1);
            return Err(existing.clone());
        }
        file.with(|st| st.handles += 1);
        by_ino.insert(ino, file.clone());
        Ok(file)
    }

    /// Forgets the dirty file of `ino` if it is still `file`, no handle
    /// holds it and it has nothing left to upload (or was unlinked). The
    /// check and the removal happen under the registry lock that
    /// [`Writes::get_held`] counts holders under.
    pub fn remove_if_idle(&self, ino: u64, file: &Arc<DirtyFile>) -> bool {
        let mut by_ino = self.by_ino.lock();
        if by_ino.get(&ino).is_some_and(|f| Arc::ptr_eq(f, file)) && file.is_idle() {
            by_ino.remove(&ino);
            return true;
        }
        false
    }

    /// Every dirty file bound to an inode.
    pub fn all(&self) -> Vec<(u64, Arc<DirtyFile>)> {
        self.by_ino
            .lock()
            .iter()
            .map(|(ino, f)| (*ino, f.clone()))
            .collect()
    }

    /// A file recovered from the journal, by key.
    pub fn recovered(&self, key: &str) -> Option<Arc<DirtyFile>> {
        self.recovered.lock().get(key).cloned()
    }

    /// Recovered files whose key starts with `prefix`.
    pub fn recovered_under(&self, prefix: &str) -> Vec<Arc<DirtyFile>> {
        self.recovered
            .lock()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, f)| f.clone())
            .collect()
    }

    pub fn insert_recovered(&self, file: Arc<DirtyFile>) {
        self.recovered.lock().insert(file.key(), file);
    }

    pub fn remove_recovered(&self, file: &Arc<DirtyFile>) {
        let mut recovered = self.recovered.lock();
        recovered.retain(|_, f| !Arc::ptr_eq(f, file));
    }

    /// Files with uploads still owed (for unmount).
    pub fn pending(&self) -> Vec<Arc<DirtyFile>> {
        let mut out: Vec<Arc<DirtyFile>> = self
            .by_ino
            .lock()
            .values()
            .filter(|f| !f.is_clean() && !f.with(|st| st.unlinked))
            .cloned()
            .collect();
        out.extend(self.recovered.lock().values().cloned());
        out
    }

    /// The journal records of every file whose upload is still owed.
    pub fn owed_records(&self) -> Vec<crate::staging::journal::StagedState> {
        let mut files: Vec<Arc<DirtyFile>> = self.by_ino.lock().values().cloned().collect();
        files.extend(self.recovered.lock().values().cloned());
        files.iter().filter_map(|f| f.owed_record()).collect()
    }

    /// Whether no dirty file is left at all (the journal may be emptied).
    pub fn is_empty(&self) -> bool {
        self.by_ino.lock().is_empty() && self.recovered.lock().is_empty()
    }
}
