//! Recordings of frames over time (`memtrace record`, the daemon's `--record-dir`), read back by
//! `memtrace replay`, `memtrace top --replay` and `memtrace cluster --recordings`.
//!
//! # Format, version 1
//!
//! A recording (`.mtr`) is an append-only file: a 16-byte header, then one record per frame
//! ([`memtrace_api::frame::Frame`]), oldest first. Integers are little-endian.
//!
//! ```text
//! header  0  8  magic \x89 M T R E C \r \n
//!         8  4  format version (1)
//!        12  4  reserved (0)
//! record  0  4  N: payload length
//!         4  4  frame length (bytes of the frame's JSON)
//!         8  8  frame time, Unix milliseconds (the snapshot's)
//!        16  8  key offset: 0 for a key frame, else the file offset of this frame's key frame
//!        24  N  payload: one zstd frame of the frame's JSON
//!      24+N  4  CRC-32 (IEEE) of bytes 0 .. 24+N of the record
//! ```
//!
//! The payload of a key frame is compressed alone; the payload of every other frame is
//! compressed with the JSON of its key frame as zstd dictionary (raw content). Consecutive frames
//! differ in a few numbers, so a frame costs the bytes of its differences: this is the delta
//! encoding of Meta's below store (`--dict-compress-chunk-size`: the first frame of each chunk
//! is the dictionary of the rest), here with the key frame's offset in each record so a frame
//! never decodes against the wrong dictionary. A key frame starts every 16 frames by default
//! ([`writer::DEFAULT_KEY_INTERVAL`]), after a failed write and at the start of each file.
//!
//! The frame is the API's JSON, not a binary encoding: frames stay readable by any JSON
//! consumer after decompression, follow the snapshot's compatibility rule (fields are added, an
//! older reader ignores them), and zstd against the key frame removes JSON's repetition anyway.
//!
//! ## Crash safety
//!
//! Each record is written with one `write` and checked by its CRC on read. A record cut short by
//! a crash (or a power loss) is the file's torn tail: reported and ignored, every frame before it
//! is read. A record damaged inside the file is reported with its offset and the bytes skipped;
//! reading resumes at the next intact record (found by its CRC), and frames whose key frame was
//! lost are counted, never decoded against another dictionary. A failed write is cut off the
//! file (`ftruncate`) and the next frame is a key frame.
//!
//! `fsync` policy: the file is synced (`fdatasync`) after each key frame and when it is closed,
//! so a power loss loses at most one key interval (16 s at 1 s); a crash of memtrace alone
//! loses nothing written.
//!
//! A bad magic or another format version is an error naming the file and offset.
pub mod format;
mod reader;
pub mod store;
mod timeline;
mod writer;

use std::path::{Path, PathBuf};

use memtrace_api::frame::Frame;

pub use self::reader::{Damage, DamageKind, Entry, Reader, RecordError};
pub use self::timeline::Timeline;
pub use self::writer::{
    DEFAULT_KEY_INTERVAL, DEFAULT_LEVEL, RecordWriter, WriteError, WriterOptions,
};

/// A recording read into memory: its frames, oldest first, and what could not be read.
#[derive(Debug, Default)]
pub struct Recording {
    path: Option<PathBuf>,
    frames: Vec<Frame>,
    damage: Vec<Damage>,
}

impl Recording {
    /// Read every intact frame of the recording at `path`, or of every recording in the
    /// directory at `path` (a daemon's `--record-dir`) as one, in time order. Damage after a
    /// header (a torn tail, a corrupted record) is no error: see [`Recording::damage`].
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        if !path.is_dir() {
            return Ok(Self::read(Reader::open(path)?));
        }
        let mut frames = Vec::new();
        let mut damage = Vec::new();
        // Each file on its own (its key frames and their losses), then merged in time order.
        for file in timeline::directory_files(path)? {
            let recording = Self::read(Reader::open(&file.path)?);
            frames.extend(recording.frames);
            damage.extend(recording.damage);
        }
        frames.sort_by_key(Frame::timestamp_unix_ms);
        Ok(Self {
            path: Some(path.to_owned()),
            frames,
            damage,
        })
    }

    /// Every frame `reader` can decode, and what it cannot.
    pub fn read(mut reader: Reader) -> Self {
        let path = reader.path().to_owned();
        let path = path.as_path();
        let mut damage = reader.damage().to_vec();
        let mut frames = Vec::with_capacity(reader.entries().len());
        // The frames of a key frame that does not decode are counted once, as lost with it:
        // (key offset, first such frame, frames).
        let mut failed_key: Option<(u64, u64, u64)> = None;
        for index in 0..reader.entries().len() {
            let entry = reader.entries()[index];
            if let Some((key, first, frames)) = &mut failed_key
                && *key == entry.header.key_offset
            {
                if *frames == 0 {
                    *first = entry.offset;
                }
                *frames += 1;
                continue;
            }
            if let Some(lost) = failed_key.take() {
                damage.extend(lost_key(path, lost));
            }
            match reader.decode(index) {
                Ok(frame) => frames.push(frame),
                Err(err) => {
                    if entry.header.is_key() {
                        failed_key = Some((entry.offset, entry.offset, 0));
                    }
                    damage.push(err);
                }
            }
        }
        if let Some(lost) = failed_key {
            damage.extend(lost_key(path, lost));
        }
        damage.sort_by_key(|d| d.offset);
        Self {
            path: Some(path.to_owned()),
            frames,
            damage,
        }
    }

    /// A recording of `frames` (oldest first), as read.
    pub fn from_frames(frames: Vec<Frame>) -> Self {
        Self {
            path: None,
            frames,
            damage: Vec::new(),
        }
    }

    /// The file it was read from (`None` for [`Recording::from_frames`]).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Oldest first.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// What could not be read, by offset: each says so in one line (show them).
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// The index of the last frame taken at or before `unix_ms` (the first frame if all are
    /// later); `None` when the recording is empty.
    pub fn index_at(&self, unix_ms: u64) -> Option<usize> {
        index_at(&self.frames, unix_ms, Frame::timestamp_unix_ms)
    }
}

/// The damage of `frames` lost with the key frame at `key_offset`, from `first` on.
fn lost_key(path: &Path, (key_offset, first, frames): (u64, u64, u64)) -> Option<Damage> {
    (frames > 0).then(|| Damage {
        path: path.to_owned(),
        offset: first,
        kind: DamageKind::LostKey { frames, key_offset },
    })
}

/// The index of the last of `items` (in time order) at or before `unix_ms`, else the first.
pub fn index_at<T>(items: &[T], unix_ms: u64, time: impl Fn(&T) -> u64) -> Option<usize> {
    if items.is_empty() {
        return None;
    }
    let after = items.partition_point(|item| time(item) <= unix_ms);
    Some(after.saturating_sub(1))
}

/// `--at TIME` of `memtrace replay`, `memtrace top --replay` and `memtrace cluster
/// --recordings`, as Unix milliseconds: RFC 3339 (`2026-11-30T03:12:00Z`, `2026-11-30
/// 03:12:00.5`, UTC), a time of day in UTC on the first frame's day (`03:12`, `03:12:30`), Unix
/// seconds, or relative to the recording: `-5m` before its last frame, `+90s` after its first.
pub fn resolve_time(spec: &str, first_unix_ms: u64, last_unix_ms: u64) -> Result<u64, String> {
    let spec = spec.trim();
    if let Ok(seconds) = spec.parse::<u64>() {
        return Ok(seconds.saturating_mul(1000));
    }
    let midnight = first_unix_ms - first_unix_ms % 86_400_000;
    let clock: Option<Vec<u64>> = spec.split(':').map(|part| part.parse().ok()).collect();
    match clock.as_deref() {
        Some([h, m]) if *h < 24 && *m < 60 => return Ok(midnight + (h * 3600 + m * 60) * 1000),
        Some([h, m, s]) if *h < 24 && *m < 60 && *s < 60 => {
            return Ok(midnight + (h * 3600 + m * 60 + s) * 1000);
        }
        _ => {}
    }
    let relative = |text: &str| {
        crate::units::parse_duration(text).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    if let Some(before_end) = spec.strip_prefix('-') {
        return Ok(last_unix_ms.saturating_sub(relative(before_end)?));
    }
    if let Some(after_start) = spec.strip_prefix('+') {
        return Ok(first_unix_ms.saturating_add(relative(after_start)?));
    }
    let time = humantime::parse_rfc3339_weak(spec).map_err(|err| {
        format!(
            "invalid time '{spec}' ({err}; give RFC 3339 such as 2026-11-30T03:12:00Z, a time \
             of day such as 03:12, -5m before the end or +90s after the start)"
        )
    })?;
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("invalid time '{spec}': before 1970"))?;
    Ok(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
pub(crate) mod tests;
