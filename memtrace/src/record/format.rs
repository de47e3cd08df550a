//! The bytes of a recording (format version 1); see the module documentation of
//! [`crate::record`] for the layout. One place says how a header and a record are laid out, so
//! the writer and the reader cannot disagree.

/// The first eight bytes of every recording. The high first byte and the CR LF catch a file
/// mangled by a text-mode transfer, as PNG's signature does.
pub const MAGIC: [u8; 8] = *b"\x89MTREC\r\n";

/// The format version this memtrace writes and reads.
pub const VERSION: u32 = 1;

/// Magic, version (u32 LE), reserved (u32 LE, 0).
pub const FILE_HEADER_LEN: usize = 16;

/// Payload length (u32), uncompressed length (u32), timestamp (u64), key offset (u64).
pub const RECORD_HEADER_LEN: usize = 24;

/// The CRC-32 after the payload.
pub const RECORD_TRAILER_LEN: usize = 4;

/// A frame larger than this uncompressed is refused on write and taken for corruption on read
/// (a 10k-process frame is a few MiB of JSON).
pub const MAX_FRAME_BYTES: u32 = 256 << 20;

/// The file header of a new recording.
pub fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut header = [0; FILE_HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// What the first bytes of a file say.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// A recording of [`VERSION`].
    Valid,
    /// Shorter than a header, but what there is matches: a recording torn before its first
    /// frame.
    Torn,
    NotARecording,
    /// A recording of another version.
    Version(u32),
    /// The reserved word is not zero: a writer this version does not know.
    Reserved(u32),
}

pub fn read_file_header(bytes: &[u8]) -> Header {
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Header::NotARecording;
    }
    if bytes.len() < FILE_HEADER_LEN {
        return Header::Torn;
    }
    match (u32_at(bytes, 8), u32_at(bytes, 12)) {
        (VERSION, 0) => Header::Valid,
        (VERSION, reserved) => Header::Reserved(reserved),
        (other, _) => Header::Version(other),
    }
}

/// The fixed part of a record before its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Compressed bytes of the frame.
    pub payload_len: u32,
    /// Bytes of the frame's JSON.
    pub frame_len: u32,
    pub timestamp_unix_ms: u64,
    /// `0`: a key frame, compressed alone. Else the file offset of the key frame record whose
    /// frame (its JSON) is this one's zstd dictionary.
    pub key_offset: u64,
}

impl RecordHeader {
    pub fn is_key(&self) -> bool {
        self.key_offset == 0
    }

    /// Bytes of the whole record: header, payload, checksum.
    pub fn record_len(&self) -> usize {
        RECORD_HEADER_LEN + self.payload_len as usize + RECORD_TRAILER_LEN
    }

    fn to_bytes(self) -> [u8; RECORD_HEADER_LEN] {
        let mut bytes = [0; RECORD_HEADER_LEN];
        bytes[0..4].copy_from_slice(&self.payload_len.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.frame_len.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.timestamp_unix_ms.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.key_offset.to_le_bytes());
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            payload_len: u32_at(bytes, 0),
            frame_len: u32_at(bytes, 4),
            timestamp_unix_ms: u64_at(bytes, 8),
            key_offset: u64_at(bytes, 16),
        }
    }
}

/// A whole record (header, `payload`, checksum) appended to `out`.
pub fn encode_record(header: RecordHeader, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Why the bytes at an offset are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The file ends inside the record (header or payload or checksum).
    Truncated,
    /// A length or key offset no writer makes.
    Implausible,
    Checksum,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Truncated => "the file ends inside a record",
            Self::Implausible => "a record header with impossible lengths",
            Self::Checksum => "a record whose checksum does not match",
        })
    }
}

/// The record at `offset` of `file` (the whole file), checked: its header and payload.
pub fn decode_record(file: &[u8], offset: usize) -> Result<(RecordHeader, &[u8]), Invalid> {
    let rest = &file[offset..];
    if rest.len() < RECORD_HEADER_LEN {
        return Err(Invalid::Truncated);
    }
    let header = RecordHeader::from_bytes(rest);
    let plausible = header.frame_len <= MAX_FRAME_BYTES
        && header.payload_len <= MAX_FRAME_BYTES
        && (header.is_key()
            || (header.key_offset >= FILE_HEADER_LEN as u64 && header.key_offset < offset as u64));
    if !plausible {
        return Err(Invalid::Implausible);
    }
    let len = header.record_len();
    if rest.len() < len {
        return Err(Invalid::Truncated);
    }
    let body_len = len - RECORD_TRAILER_LEN;
    if crc32fast::hash(&rest[..body_len]) != u32_at(rest, body_len) {
        return Err(Invalid::Checksum);
    }
    Ok((header, &rest[RECORD_HEADER_LEN..body_len]))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_any_flipped_byte_is_caught() {
        let mut file = file_header().to_vec();
        let header = RecordHeader {
            payload_len: 5,
            frame_len: 9,
            timestamp_unix_ms: 1_700_000_000_000,
            key_offset: 0,
        };
        encode_record(header, b"hello", &mut file);
        assert_eq!(read_file_header(&file), Header::Valid);
        assert_eq!(
            decode_record(&file, FILE_HEADER_LEN),
            Ok((header, &b"hello"[..]))
        );
        for at in FILE_HEADER_LEN..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x10;
            assert!(decode_record(&bad, FILE_HEADER_LEN).is_err(), "byte {at}");
        }
        for cut in FILE_HEADER_LEN..file.len() {
            assert_eq!(
                decode_record(&file[..cut], FILE_HEADER_LEN),
                Err(Invalid::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn headers_tell_torn_foreign_and_future_files_apart() {
        let header = file_header();
        assert_eq!(read_file_header(&header[..0]), Header::Torn);
        assert_eq!(read_file_header(&header[..11]), Header::Torn);
        assert_eq!(read_file_header(b"{\"snapshot\""), Header::NotARecording);
        let mut future = header;
        future[8] = 2;
        assert_eq!(read_file_header(&future), Header::Version(2));
        let mut flagged = header;
        flagged[13] = 1;
        assert_eq!(read_file_header(&flagged), Header::Reserved(256));
    }
}
