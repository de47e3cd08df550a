//! Recordings of frames over time (`memtrace record`, the daemon's `--record-dir`), read back by
//! `memtrace replay`, `memtrace top --replay` and `memtrace cluster --recordings`.
//!
//! SCAFFOLD (session 21): the read interface below is what `top` builds on; the record branch
//! replaces the body (JSON lines for now) with the real format.
use std::path::{Path, PathBuf};

use memtrace_api::frame::Frame;

/// Why a recording cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("reading recording {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a memtrace recording ({reason})", path.display())]
    Format { path: PathBuf, reason: String },
}

/// A recording read into memory: its frames, oldest first.
#[derive(Debug, Default)]
pub struct Recording {
    frames: Vec<Frame>,
}

impl Recording {
    /// Read every intact frame of the recording at `path`.
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecordError::Io {
            path: path.to_owned(),
            source,
        })?;
        let frames = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<Vec<Frame>, _>>()
            .map_err(|err| RecordError::Format {
                path: path.to_owned(),
                reason: err.to_string(),
            })?;
        Ok(Self { frames })
    }

    /// A recording of `frames` (oldest first), as read.
    pub fn from_frames(frames: Vec<Frame>) -> Self {
        Self { frames }
    }

    /// Oldest first.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// The index of the last frame taken at or before `unix_ms` (the first frame if all are
    /// later); `None` when the recording is empty.
    pub fn index_at(&self, unix_ms: u64) -> Option<usize> {
        if self.frames.is_empty() {
            return None;
        }
        let after = self
            .frames
            .partition_point(|frame| frame.timestamp_unix_ms() <= unix_ms);
        Some(after.saturating_sub(1))
    }
}
