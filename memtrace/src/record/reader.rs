//! Reading a recording back: an index of its intact records (checked, not yet decompressed), what
//! was damaged, and each frame decoded on demand.
use std::path::{Path, PathBuf};

use memtrace_api::frame::Frame;

use super::format::{self, FILE_HEADER_LEN, Header, Invalid, RecordHeader};

/// Why a recording cannot be read at all. Damage after a valid header is not an error: the
/// frames around it are read and the damage listed ([`Damage`]).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("reading recording {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: offset {offset}: {reason}", path.display())]
    Format {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

/// A part of a recording that could not be read, said in one line naming the file and offset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: offset {offset}: {kind}", path.display())]
pub struct Damage {
    pub path: PathBuf,
    pub offset: u64,
    pub kind: DamageKind,
}

impl Damage {
    /// An unfinished last write (what a crash leaves), as opposed to damage inside the file.
    pub fn is_torn_tail(&self) -> bool {
        matches!(
            self.kind,
            DamageKind::TornTail { .. } | DamageKind::TornHeader { .. }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DamageKind {
    #[error("the file ends inside its header ({bytes} of 16 bytes): no frame was written")]
    TornHeader { bytes: u64 },
    #[error(
        "the last {bytes} bytes are not a whole record ({reason}: a write cut short by a crash, \
         or damage); ignored, every frame before is read"
    )]
    TornTail { bytes: u64, reason: Invalid },
    #[error(
        "{reason}; {bytes} bytes skipped, reading resumed at offset {resumed_at} (the frames in \
         them are lost)"
    )]
    Corrupt {
        reason: Invalid,
        bytes: u64,
        resumed_at: u64,
    },
    #[error("{frames} frames skipped: their key frame (offset {key_offset}) is lost")]
    LostKey { frames: u64, key_offset: u64 },
    #[error("a frame with a valid checksum does not decode ({reason}); skipped")]
    Undecodable { reason: String },
}

/// One intact record.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub offset: u64,
    pub header: RecordHeader,
}

impl Entry {
    pub fn timestamp_unix_ms(&self) -> u64 {
        self.header.timestamp_unix_ms
    }
}

/// A recording's bytes and the index of its intact records, in file order.
pub struct Reader {
    path: PathBuf,
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    damage: Vec<Damage>,
    plain: zstd::bulk::Decompressor<'static>,
    with_key: zstd::bulk::Decompressor<'static>,
    /// The key frame (offset, JSON) loaded into `with_key`.
    key: Option<(u64, Vec<u8>)>,
}

impl Reader {
    /// Reads the file at `path` and indexes it.
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let bytes = std::fs::read(path).map_err(|source| RecordError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(path, bytes)
    }

    /// Indexes `bytes`, read from `path` (named in errors and damage).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, RecordError> {
        let format_error = |offset, reason: String| RecordError::Format {
            path: path.to_owned(),
            offset,
            reason,
        };
        let mut damage = Vec::new();
        match format::read_file_header(&bytes) {
            Header::Valid => {}
            Header::Torn => damage.push(Damage {
                path: path.to_owned(),
                offset: 0,
                kind: DamageKind::TornHeader {
                    bytes: bytes.len() as u64,
                },
            }),
            Header::NotARecording => {
                return Err(format_error(
                    0,
                    format!(
                        "not a memtrace recording (it starts with {}, a recording with \
                         \\x89MTREC\\r\\n)",
                        preview(&bytes)
                    ),
                ));
            }
            Header::Reserved(word) => {
                return Err(format_error(
                    12,
                    format!(
                        "reserved header word {word:#x} is not 0 (written by a newer memtrace?); \
                         this memtrace reads version {} recordings",
                        format::VERSION
                    ),
                ));
            }
            Header::Version(version) => {
                return Err(format_error(
                    8,
                    format!(
                        "recording format version {version}; this memtrace reads version {}",
                        format::VERSION
                    ),
                ));
            }
        }
        let entries = if damage.is_empty() {
            index(path, &bytes, &mut damage)
        } else {
            Vec::new()
        };
        let io = |source| RecordError::Io {
            path: path.to_owned(),
            source,
        };
        Ok(Self {
            path: path.to_owned(),
            bytes,
            entries,
            damage,
            plain: zstd::bulk::Decompressor::new().map_err(io)?,
            with_key: zstd::bulk::Decompressor::new().map_err(io)?,
            key: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The intact records, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// What could not be read while indexing (decoding may add to it, see [`Reader::decode`]).
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// The frame of entry `index`.
    pub fn decode(&mut self, index: usize) -> Result<Frame, Damage> {
        let entry = self.entries[index];
        let path = self.path.clone();
        let undecodable = |reason: String| Damage {
            path: path.clone(),
            offset: entry.offset,
            kind: DamageKind::Undecodable { reason },
        };
        let json = if entry.header.is_key() {
            let json = self.decompress(entry, false).map_err(undecodable)?;
            self.load_key(entry.offset, &json).map_err(undecodable)?;
            json
        } else {
            if self.key.as_ref().map(|(offset, _)| *offset) != Some(entry.header.key_offset) {
                let key = self
                    .entries
                    .binary_search_by_key(&entry.header.key_offset, |e| e.offset)
                    .map_err(|_| undecodable("its key frame is not in the index".to_owned()))?;
                let key_json = self
                    .decompress(self.entries[key], false)
                    .map_err(|reason| undecodable(format!("its key frame: {reason}")))?;
                self.load_key(entry.header.key_offset, &key_json)
                    .map_err(undecodable)?;
            }
            self.decompress(entry, true).map_err(undecodable)?
        };
        serde_json::from_slice(&json).map_err(|err| undecodable(format!("not a frame: {err}")))
    }

    fn load_key(&mut self, offset: u64, json: &[u8]) -> Result<(), String> {
        self.with_key
            .set_dictionary(json)
            .map_err(|err| format!("loading the key frame: {err}"))?;
        self.key = Some((offset, json.to_vec()));
        Ok(())
    }

    fn decompress(&mut self, entry: Entry, with_key: bool) -> Result<Vec<u8>, String> {
        let start = entry.offset as usize + format::RECORD_HEADER_LEN;
        let payload = &self.bytes[start..start + entry.header.payload_len as usize];
        let decompressor = if with_key {
            &mut self.with_key
        } else {
            &mut self.plain
        };
        let json = decompressor
            .decompress(payload, entry.header.frame_len as usize)
            .map_err(|err| format!("zstd: {err}"))?;
        if json.len() != entry.header.frame_len as usize {
            return Err(format!(
                "{} bytes decompressed, the record says {}",
                json.len(),
                entry.header.frame_len
            ));
        }
        Ok(json)
    }
}

/// The intact records of `bytes` after the file header; what is not one goes to `damage`.
fn index(path: &Path, bytes: &[u8], damage: &mut Vec<Damage>) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    let mut lost: Option<(u64, u64, u64)> = None; // first offset, key offset, frames
    let flush_lost = |lost: &mut Option<(u64, u64, u64)>, damage: &mut Vec<Damage>| {
        if let Some((offset, key_offset, frames)) = lost.take() {
            damage.push(Damage {
                path: path.to_owned(),
                offset,
                kind: DamageKind::LostKey { frames, key_offset },
            });
        }
    };
    let mut at = FILE_HEADER_LEN;
    while at < bytes.len() {
        match format::decode_record(bytes, at) {
            Ok((header, _)) => {
                let offset = at as u64;
                at += header.record_len();
                if header.is_key() {
                    keys.insert(offset);
                } else if !keys.contains(&header.key_offset) {
                    match &mut lost {
                        Some((_, key, frames)) if *key == header.key_offset => *frames += 1,
                        _ => {
                            flush_lost(&mut lost, damage);
                            lost = Some((offset, header.key_offset, 1));
                        }
                    }
                    continue;
                }
                flush_lost(&mut lost, damage);
                entries.push(Entry { offset, header });
            }
            Err(reason) => {
                flush_lost(&mut lost, damage);
                let kind = match resync(bytes, at + 1) {
                    Some(next) => {
                        let kind = DamageKind::Corrupt {
                            reason,
                            bytes: (next - at) as u64,
                            resumed_at: next as u64,
                        };
                        damage.push(Damage {
                            path: path.to_owned(),
                            offset: at as u64,
                            kind,
                        });
                        at = next;
                        continue;
                    }
                    None => DamageKind::TornTail {
                        bytes: (bytes.len() - at) as u64,
                        reason,
                    },
                };
                damage.push(Damage {
                    path: path.to_owned(),
                    offset: at as u64,
                    kind,
                });
                break;
            }
        }
    }
    flush_lost(&mut lost, damage);
    entries
}

/// The offset of the next intact record at or after `from`. A false match needs a record header
/// with possible lengths and a CRC-32 that matches by chance (one in 2^32).
fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find(|&at| format::decode_record(bytes, at).is_ok())
}

/// The first bytes of a file, escaped for a terminal.
fn preview(bytes: &[u8]) -> String {
    let head = crate::escape::escape_bytes(&bytes[..bytes.len().min(8)]);
    format!("\"{}\"", crate::escape::terminal(&head))
}
