//! One timeline over a recording file or a directory of them (a daemon's `--record-dir`): the
//! intact records of every file, oldest first, decoded on demand.
use std::path::{Path, PathBuf};

use memtrace_api::frame::Frame;

use super::store;
use super::{Damage, Entry, Reader, RecordError};

/// The records of one file or of every recording in a directory, in time order.
///
/// A directory's files are read whole (the store keeps them under `--record-max-bytes`); a
/// frame is decoded only when asked for.
pub struct Timeline {
    path: PathBuf,
    readers: Vec<Reader>,
    /// (reader, entry) of every intact record, oldest first (file order breaks ties).
    order: Vec<(usize, usize)>,
}

impl Timeline {
    /// The recording at `path`, or every `memtrace-*.mtr` in the directory at `path`.
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let readers = if path.is_dir() {
            directory_files(path)?
                .iter()
                .map(|file| Reader::open(&file.path))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![Reader::open(path)?]
        };
        Ok(Self::from_readers(path, readers))
    }

    /// The records of `readers` as one timeline named `path`.
    pub fn from_readers(path: &Path, readers: Vec<Reader>) -> Self {
        let mut order: Vec<(usize, usize)> = readers
            .iter()
            .enumerate()
            .flat_map(|(r, reader)| (0..reader.entries().len()).map(move |e| (r, e)))
            .collect();
        order.sort_by_key(|&(r, e)| readers[r].entries()[e].timestamp_unix_ms());
        Self {
            path: path.to_owned(),
            readers,
            order,
        }
    }

    /// The file or directory it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Intact records, every file's.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The record `index` (in time order).
    pub fn entry(&self, index: usize) -> &Entry {
        let (r, e) = self.order[index];
        &self.readers[r].entries()[e]
    }

    pub fn timestamp_unix_ms(&self, index: usize) -> u64 {
        self.entry(index).timestamp_unix_ms()
    }

    /// The index of the last record taken at or before `unix_ms` (the first if all are later);
    /// `None` when there is none.
    pub fn index_at(&self, unix_ms: u64) -> Option<usize> {
        super::index_at(&self.order, unix_ms, |&(r, e)| {
            self.readers[r].entries()[e].timestamp_unix_ms()
        })
    }

    /// The frame of record `index`.
    pub fn decode(&mut self, index: usize) -> Result<Frame, Damage> {
        let (r, e) = self.order[index];
        self.readers[r].decode(e)
    }

    /// What could not be read while indexing, every file's (decoding adds its own damage to
    /// what [`Timeline::decode`] returns).
    pub fn damage(&self) -> Vec<Damage> {
        self.readers
            .iter()
            .flat_map(|reader| reader.damage().iter().cloned())
            .collect()
    }
}

/// The recordings in the directory `dir`, least recently written first; an error if there is
/// none.
pub(super) fn directory_files(dir: &Path) -> Result<Vec<store::StoredFile>, RecordError> {
    let files = store::recordings(dir).map_err(|source| RecordError::Io {
        path: dir.to_owned(),
        source,
    })?;
    if files.is_empty() {
        return Err(RecordError::Format {
            path: dir.to_owned(),
            offset: 0,
            reason: "no recordings (memtrace-*.mtr) in this directory".to_owned(),
        });
    }
    Ok(files)
}
