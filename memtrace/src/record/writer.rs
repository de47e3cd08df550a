//! Appending frames to a recording: each one serialized, compressed against the last key frame
//! and written as one checksummed record.
use std::{
    fs::File,
    io::{Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
};

use memtrace_api::{Snapshot, frame::Frame, workloads::WorkloadsResponse};
use serde::Serialize;

use super::format::{self, MAX_FRAME_BYTES, RecordHeader};

/// Frames between two key frames, the key included: the default of `memtrace record` and the
/// daemon's store. Measured on a 4-minute recording of this machine at 1 s (BENCHMARKS.md,
/// "Recording size"): 16 gives the smallest file (165 KB against 182 KB at 8, 171 KB at 30, 188 KB
/// at 60 and 302 KB at 300: frames drift from an older key, and a key costs four deltas), as
/// below's documentation suggests. It is also the most a corrupted key frame takes with it, and
/// the most a power loss takes (see the fsync policy in the module documentation).
pub const DEFAULT_KEY_INTERVAL: u32 = 16;

/// zstd's default level: at a frame a second the compressor's time does not matter, and higher
/// levels gain little on frames compressed against a dictionary this close to them.
pub const DEFAULT_LEVEL: i32 = 3;

/// How frames are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    pub key_interval: u32,
    pub level: i32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            key_interval: DEFAULT_KEY_INTERVAL,
            level: DEFAULT_LEVEL,
        }
    }
}

/// Why a frame could not be written; the file keeps every frame written before it.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{}: {what}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: a frame of {bytes} bytes is larger than the format's {MAX_FRAME_BYTES}", path.display())]
    TooLarge { path: PathBuf, bytes: usize },
    #[error("serializing a frame")]
    Serialize(#[source] serde_json::Error),
}

/// The frame as [`Frame`] serializes, from borrowed parts: the daemon writes the views it
/// already built for this tick without copying them.
#[derive(Serialize)]
struct FrameRef<'a> {
    snapshot: &'a Snapshot,
    #[serde(skip_serializing_if = "Option::is_none")]
    workloads: Option<&'a WorkloadsResponse>,
}

/// An open recording being appended to.
pub struct RecordWriter {
    file: File,
    path: PathBuf,
    options: WriterOptions,
    /// Bytes of the file that hold whole records: where the next one goes, and where a failed
    /// write is cut back to.
    len: u64,
    /// The compressor, with the last key frame's JSON loaded as its dictionary when `key` is set.
    compressor: zstd::bulk::Compressor<'static>,
    key: Option<u64>,
    /// Frames written since the key frame, the key included.
    since_key: u32,
    frames: u64,
    record: Vec<u8>,
}

impl RecordWriter {
    /// Creates (or empties) the recording at `path` and writes its header.
    pub fn create(path: &Path, options: WriterOptions) -> Result<Self, WriteError> {
        let io = |what| {
            move |source| WriteError::Io {
                path: path.to_owned(),
                what,
                source,
            }
        };
        let mut file = File::create(path).map_err(io("creating"))?;
        file.write_all(&format::file_header())
            .map_err(io("writing the header"))?;
        let compressor = zstd::bulk::Compressor::new(options.level).map_err(io("starting zstd"))?;
        Ok(Self {
            file,
            path: path.to_owned(),
            options: WriterOptions {
                key_interval: options.key_interval.max(1),
                ..options
            },
            len: format::FILE_HEADER_LEN as u64,
            compressor,
            key: None,
            since_key: 0,
            frames: 0,
            record: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written, header included.
    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// Frames written.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn append(&mut self, frame: &Frame) -> Result<(), WriteError> {
        self.append_parts(&frame.snapshot, frame.workloads.as_ref())
    }

    /// Appends the frame of `snapshot` and `workloads` as one record. On an error the file is
    /// cut back to the records before it and the next frame is a key frame.
    pub fn append_parts(
        &mut self,
        snapshot: &Snapshot,
        workloads: Option<&WorkloadsResponse>,
    ) -> Result<(), WriteError> {
        let json = serde_json::to_vec(&FrameRef {
            snapshot,
            workloads,
        })
        .map_err(WriteError::Serialize)?;
        let frame_len = u32::try_from(json.len())
            .ok()
            .filter(|len| *len <= MAX_FRAME_BYTES)
            .ok_or_else(|| WriteError::TooLarge {
                path: self.path.clone(),
                bytes: json.len(),
            })?;
        let result = self.write_record(&json, frame_len, snapshot.timestamp_unix_ms);
        if result.is_err() {
            // Whatever part of the record reached the file would read as corruption before the
            // next one: cut it off. If even that fails the reader still stops at it (checksum).
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            self.key = None;
        }
        result
    }

    fn write_record(
        &mut self,
        json: &[u8],
        frame_len: u32,
        timestamp_unix_ms: u64,
    ) -> Result<(), WriteError> {
        let path = self.path.clone();
        let io = move |what: &'static str| {
            let path = path.clone();
            move |source| WriteError::Io { path, what, source }
        };
        let key_offset = match self.key {
            Some(offset) if self.since_key < self.options.key_interval => offset,
            _ => {
                // A key frame: compressed alone.
                self.compressor
                    .set_dictionary(self.options.level, &[])
                    .map_err(io("resetting zstd"))?;
                0
            }
        };
        let payload = self
            .compressor
            .compress(json)
            .map_err(io("compressing a frame"))?;
        let header = RecordHeader {
            payload_len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            frame_len,
            timestamp_unix_ms,
            key_offset,
        };
        self.record.clear();
        format::encode_record(header, &payload, &mut self.record);
        self.file
            .write_all(&self.record)
            .map_err(io("writing a frame"))?;
        let offset = self.len;
        self.len += self.record.len() as u64;
        self.frames += 1;
        if header.is_key() {
            self.compressor
                .set_dictionary(self.options.level, json)
                .map_err(io("loading the key frame into zstd"))?;
            self.key = Some(offset);
            self.since_key = 1;
            // Durable at each key frame: a power loss takes at most one key interval.
            self.file.sync_data().map_err(io("syncing the key frame"))?;
        } else {
            self.since_key += 1;
        }
        Ok(())
    }

    /// Syncs the file to disk and closes it.
    pub fn finish(self) -> Result<(), WriteError> {
        self.file.sync_all().map_err(|source| WriteError::Io {
            path: self.path.clone(),
            what: "syncing",
            source,
        })
    }
}
