//! Decoding ring-buffer records into typed events.
//!
//! Records are the `#[repr(C)]` structs of `memtrace-common`; a record is accepted only if its
//! length is exactly its kind's struct size, so a kernel/userspace mismatch is a counted decode
//! error, never a misread.
mod format;
pub mod render;

use std::mem::size_of;

pub use crate::counters::counters_json;
pub use format::{
    EventKindSet, FAULT_ERROR_CODE_NAMES, FlagName, KIND_NAMES, MMAP_FLAG_NAMES, MREMAP_FLAG_NAMES,
    PROT_NAMES, comm_str, flag_names, kind_name, parse_kind,
};
use memtrace_common::{
    EventHeader, ExecEvent, ExitEvent, FaultEvent, MemSyscallEvent, OomEvent, ReclaimEvent, kind,
};

/// One decoded event. Variants hold the kernel's records as they are (`Copy`, no allocation:
/// decoding is on the hot path of the live trace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "Copy and allocation-free by design: an exit carries the process's whole counters \
              (the reclaim-stall histogram's 128 bytes included), and exits are rare"
)]
pub enum Event {
    Fault(FaultEvent),
    /// mmap, munmap, brk or mremap (see `header.kind`).
    MemSyscall(MemSyscallEvent),
    Reclaim(ReclaimEvent),
    Oom(OomEvent),
    Exec(ExecEvent),
    Exit(ExitEvent),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than an event header ({header} bytes)")]
    Short { len: usize, header: usize },
    #[error("record kind {kind} is unknown")]
    UnknownKind { kind: u32 },
    #[error("{kind} record is {len} bytes, expected {expected}")]
    Size {
        kind: &'static str,
        len: usize,
        expected: usize,
    },
}

/// Read a `T` from the front of `bytes` if `bytes` is exactly `T`'s size.
fn read_exact<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    if bytes.len() != size_of::<T>() {
        return Err(DecodeError::Size {
            kind: kind_name(kind),
            len: bytes.len(),
            expected: size_of::<T>(),
        });
    }
    // SAFETY: length checked; `T` is a plain-old-data `#[repr(C)]` record (every bit pattern
    // valid); the ring buffer gives no alignment guarantee beyond 8, hence read_unaligned.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

impl Event {
    /// Decode one ring-buffer record.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < size_of::<EventHeader>() {
            return Err(DecodeError::Short {
                len: bytes.len(),
                header: size_of::<EventHeader>(),
            });
        }
        let kind = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        Ok(match kind {
            kind::FAULT => Event::Fault(read_exact(bytes, kind)?),
            kind::MMAP | kind::MUNMAP | kind::BRK | kind::MREMAP => {
                Event::MemSyscall(read_exact(bytes, kind)?)
            }
            kind::RECLAIM => Event::Reclaim(read_exact(bytes, kind)?),
            kind::OOM => Event::Oom(read_exact(bytes, kind)?),
            kind::EXEC => Event::Exec(read_exact(bytes, kind)?),
            kind::EXIT => Event::Exit(read_exact(bytes, kind)?),
            kind => return Err(DecodeError::UnknownKind { kind }),
        })
    }

    pub fn header(&self) -> &EventHeader {
        match self {
            Event::Fault(e) => &e.header,
            Event::MemSyscall(e) => &e.header,
            Event::Reclaim(e) => &e.header,
            Event::Oom(e) => &e.header,
            Event::Exec(e) => &e.header,
            Event::Exit(e) => &e.header,
        }
    }

    pub fn kind(&self) -> u32 {
        self.header().kind
    }

    /// The process the event is about: for OOM kills the victim, otherwise the task that
    /// produced it.
    pub fn subject_pid(&self) -> u32 {
        match self {
            Event::Oom(e) => e.victim_pid,
            other => other.header().pid,
        }
    }
}

#[cfg(test)]
mod tests {
    use memtrace_common::{COMM_LEN, FILENAME_LEN, ProcStats};

    use super::*;

    fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: test-only view of a POD record.
        unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>())
        }
        .to_vec()
    }

    fn header(kind: u32) -> EventHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..6].copy_from_slice(b"stress");
        EventHeader {
            kind,
            pid: 42,
            tid: 43,
            cpu: 1,
            ts_ns: 123_456_789,
            comm,
        }
    }

    #[test]
    fn decodes_every_kind_exactly() {
        let mmap = MemSyscallEvent {
            header: header(kind::MMAP),
            addr: 0x7f00_0000_0000,
            len: 1 << 20,
            ret: 0x7f00_0000_0000,
            fd: -1,
            ..Default::default()
        };
        assert_eq!(Event::decode(&bytes_of(&mmap)), Ok(Event::MemSyscall(mmap)));

        let fault = FaultEvent {
            header: header(kind::FAULT),
            address: 0x1000,
            ip: 0x401000,
            error_code: 6,
            user: 1,
            reserved: 0,
        };
        assert_eq!(Event::decode(&bytes_of(&fault)), Ok(Event::Fault(fault)));

        let oom = OomEvent {
            header: header(kind::OOM),
            victim_pid: 77,
            anon_rss_kb: 65_536,
            ..Default::default()
        };
        let decoded = Event::decode(&bytes_of(&oom)).unwrap();
        assert_eq!(decoded, Event::Oom(oom));
        assert_eq!(
            decoded.subject_pid(),
            77,
            "an OOM event is about its victim"
        );

        let exit = ExitEvent {
            header: header(kind::EXIT),
            stats: ProcStats {
                faults_user: 10,
                faults_major: 2,
                ..Default::default()
            },
            tracked: 1,
            ..ExitEvent::default()
        };
        let Event::Exit(decoded) = Event::decode(&bytes_of(&exit)).unwrap() else {
            panic!("not an exit")
        };
        assert_eq!(decoded.stats.faults_minor(), 8);

        let exec = ExecEvent {
            header: header(kind::EXEC),
            old_pid: 42,
            filename_len: 0,
            filename: [0; FILENAME_LEN],
        };
        assert_eq!(Event::decode(&bytes_of(&exec)), Ok(Event::Exec(exec)));

        let reclaim = ReclaimEvent {
            header: header(kind::RECLAIM),
            duration_ns: 5_000_000,
            ..Default::default()
        };
        assert_eq!(
            Event::decode(&bytes_of(&reclaim)),
            Ok(Event::Reclaim(reclaim))
        );
    }

    #[test]
    fn rejects_wrong_sizes_and_kinds() {
        let mmap = MemSyscallEvent {
            header: header(kind::MMAP),
            ..Default::default()
        };
        let mut bytes = bytes_of(&mmap);
        bytes.push(0);
        assert_eq!(
            Event::decode(&bytes),
            Err(DecodeError::Size {
                kind: "mmap",
                len: size_of::<MemSyscallEvent>() + 1,
                expected: size_of::<MemSyscallEvent>()
            })
        );
        assert_eq!(
            Event::decode(&[0u8; 8]),
            Err(DecodeError::Short {
                len: 8,
                header: size_of::<EventHeader>()
            })
        );
        let unknown = EventHeader {
            kind: 999,
            ..header(0)
        };
        assert_eq!(
            Event::decode(&bytes_of(&unknown)),
            Err(DecodeError::UnknownKind { kind: 999 })
        );
    }
}
