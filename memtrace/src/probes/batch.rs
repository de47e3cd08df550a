//! Reading the whole `PROC_STATS` map with `BPF_MAP_LOOKUP_BATCH`.
//!
//! aya's map iterator costs two `bpf(2)` calls per entry (`GET_NEXT_KEY`, then `LOOKUP_ELEM`):
//! 20,000 system calls per sampling tick with 10,000 processes, which was most of an idle
//! daemon's CPU time. One `BPF_MAP_LOOKUP_BATCH` call copies up to [`CHUNK`] entries, so a tick
//! takes about ten. Kernels without batch operations for hash maps (before 5.6) answer `EINVAL`
//! (or `ENOTSUPP`); [`ProcStatsReader`] then falls back to the per-key walk, for good.
use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};

use memtrace_common::ProcStats;

/// Entries asked for per batch call.
pub const CHUNK: usize = 1024;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// The kernel's internal "not supported" (`ENOTSUPP`, not `EOPNOTSUPP`), which some paths leak.
const ENOTSUPP: i32 = 524;

/// `union bpf_attr` as used by the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `union bpf_attr` as used by `BPF_MAP_LOOKUP_ELEM` and `BPF_MAP_GET_NEXT_KEY`.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    /// `value` for a lookup, `next_key` for get-next-key.
    value_or_next_key: u64,
    flags: u64,
}

/// `bpf(cmd, attr, size_of(attr))`.
///
/// # Safety
///
/// Every pointer in `attr` must be valid for what `cmd` reads and writes through it.
unsafe fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    // SAFETY: `attr` is a live, writable `bpf_attr` prefix of the size passed; the pointers it
    // holds are the caller's responsibility.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn map_fd_u32(fd: BorrowedFd<'_>) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))
}

/// The file descriptor of a loaded map (for [`lookup_all`]); `None` for a map type that is not
/// a plain hash map.
pub fn map_fd(map: &aya::maps::Map) -> Option<BorrowedFd<'_>> {
    match map {
        aya::maps::Map::HashMap(data) | aya::maps::Map::LruHashMap(data) => Some(data.fd().as_fd()),
        _ => None,
    }
}

/// Every entry of a `u32 → ProcStats` hash map. See [`ProcStatsReader`] (which also keeps its
/// buffers between calls).
pub fn lookup_all(map_fd: BorrowedFd<'_>) -> io::Result<Vec<(u32, ProcStats)>> {
    let mut out = Vec::new();
    ProcStatsReader::default().read(map_fd, &mut out)?;
    Ok(out)
}

/// Reads a `u32 → ProcStats` hash map whole: with `BPF_MAP_LOOKUP_BATCH` in chunks of [`CHUNK`],
/// or, where the kernel lacks it, key by key. Entries that vanish while reading (a process
/// exited) are skipped. Keeps its buffers, and what it learnt about the kernel, between calls.
#[derive(Debug)]
pub struct ProcStatsReader {
    keys: Vec<u32>,
    values: Vec<ProcStats>,
    batch: bool,
}

impl Default for ProcStatsReader {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
            batch: true,
        }
    }
}

impl ProcStatsReader {
    /// Whether batch lookups are (still) used: `false` once the kernel refused one.
    pub fn batched(&self) -> bool {
        self.batch
    }

    /// Replaces `out`'s contents with every entry of the map.
    pub fn read(
        &mut self,
        map_fd: BorrowedFd<'_>,
        out: &mut Vec<(u32, ProcStats)>,
    ) -> io::Result<()> {
        out.clear();
        if self.batch {
            match self.read_batched(map_fd, out) {
                Ok(()) => return Ok(()),
                Err(err) if is_unsupported(&err) => {
                    tracing::debug!("BPF_MAP_LOOKUP_BATCH unsupported ({err}): reading key by key");
                    self.batch = false;
                    out.clear();
                }
                Err(err) => return Err(err),
            }
        }
        read_per_key(map_fd, out)
    }

    fn read_batched(
        &mut self,
        map_fd: BorrowedFd<'_>,
        out: &mut Vec<(u32, ProcStats)>,
    ) -> io::Result<()> {
        let fd = map_fd_u32(map_fd)?;
        let mut chunk = CHUNK;
        // The kernel's cursor (a bucket index for hash maps); u64 leaves room whatever its size.
        let mut cursor = 0u64;
        let mut next = 0u64;
        let mut first = true;
        loop {
            if self.keys.len() < chunk {
                self.keys.resize(chunk, 0);
                self.values.resize(chunk, ProcStats::default());
            }
            let mut attr = BatchAttr {
                in_batch: if first {
                    0
                } else {
                    std::ptr::from_mut(&mut cursor) as u64
                },
                out_batch: std::ptr::from_mut(&mut next) as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: chunk as u32,
                map_fd: fd,
                ..BatchAttr::default()
            };
            // SAFETY: `keys` and `values` hold at least `count` entries of the map's key and
            // value types; `cursor` and `next` are 8 writable bytes each.
            let result = unsafe { sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
            let done = match result {
                Ok(()) => false,
                // End of the map; `count` still says how many entries this last call copied.
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => true,
                // One bucket holds more entries than fit: retry the same position, bigger.
                Err(err) if err.raw_os_error() == Some(libc::ENOSPC) && chunk < (1 << 20) => {
                    chunk *= 2;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let copied = (attr.count as usize).min(chunk);
            out.extend(
                self.keys[..copied]
                    .iter()
                    .copied()
                    .zip(self.values[..copied].iter().copied()),
            );
            if done {
                return Ok(());
            }
            cursor = next;
            first = false;
        }
    }
}

/// Batch operations are missing (old kernel) or not offered for this map type.
fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | ENOTSUPP)
    )
}

/// The fallback: `GET_NEXT_KEY` then `LOOKUP_ELEM` for every entry (what aya's iterator does).
fn read_per_key(map_fd: BorrowedFd<'_>, out: &mut Vec<(u32, ProcStats)>) -> io::Result<()> {
    let fd = map_fd_u32(map_fd)?;
    let mut key = 0u32;
    let mut next = 0u32;
    let mut first = true;
    loop {
        let mut attr = ElemAttr {
            map_fd: fd,
            key: if first {
                0
            } else {
                std::ptr::from_mut(&mut key) as u64
            },
            value_or_next_key: std::ptr::from_mut(&mut next) as u64,
            ..ElemAttr::default()
        };
        // SAFETY: `key` and `next` are the map's 4-byte key type.
        match unsafe { sys_bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(err) => return Err(err),
        }
        first = false;
        key = next;
        let mut value = ProcStats::default();
        let mut attr = ElemAttr {
            map_fd: fd,
            key: std::ptr::from_mut(&mut key) as u64,
            value_or_next_key: std::ptr::from_mut(&mut value) as u64,
            ..ElemAttr::default()
        };
        // SAFETY: `key` is the map's key type and `value` its value type.
        match unsafe { sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
            Ok(()) => out.push((key, value)),
            // Deleted since we got its key (the process exited): skip it.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd as _, OwnedFd};

    use super::*;

    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    const BPF_MAP_TYPE_HASH: u32 = 1;

    #[repr(C)]
    #[derive(Default)]
    struct CreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }

    fn create(max_entries: u32) -> io::Result<OwnedFd> {
        let mut attr = CreateAttr {
            map_type: BPF_MAP_TYPE_HASH,
            key_size: 4,
            value_size: std::mem::size_of::<ProcStats>() as u32,
            max_entries,
            ..CreateAttr::default()
        };
        // SAFETY: a map-create attribute holds no pointers.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_CREATE,
                std::ptr::from_mut(&mut attr).cast::<libc::c_void>(),
                std::mem::size_of::<CreateAttr>() as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    fn stats(pid: u32) -> ProcStats {
        ProcStats {
            faults_user: u64::from(pid) * 3,
            mmap_bytes: u64::from(pid) << 20,
            reclaim_ns: u64::MAX - u64::from(pid),
            ..ProcStats::default()
        }
    }

    /// Creates a real BPF map: needs root (or CAP_BPF), which `cargo xtask test` requires; without
    /// it this test fails rather than skips.
    #[test]
    fn batch_and_per_key_reads_agree() {
        let map = create(32768).expect("BPF_MAP_CREATE failed: this test needs root or CAP_BPF (run `cargo xtask test` as root)");
        let fd = map.as_fd();
        let raw = map_fd_u32(fd).expect("fd");
        let mut reader = ProcStatsReader::default();
        let mut out = Vec::new();
        reader.read(fd, &mut out).expect("empty map");
        assert!(out.is_empty());
        for n in [1u32, 1023, 1024, 1025, 10_000, 32_768] {
            for pid in 1..=n {
                let mut key = pid;
                let mut value = stats(pid);
                let mut attr = ElemAttr {
                    map_fd: raw,
                    key: std::ptr::from_mut(&mut key) as u64,
                    value_or_next_key: std::ptr::from_mut(&mut value) as u64,
                    ..ElemAttr::default()
                };
                // SAFETY: key and value of the map's types.
                unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.expect("update");
            }
            reader.read(fd, &mut out).expect("batched read");
            assert!(reader.batched(), "this kernel has batch lookups");
            out.sort_by_key(|(pid, _)| *pid);
            let want: Vec<_> = (1..=n).map(|pid| (pid, stats(pid))).collect();
            assert_eq!(out, want, "batched, {n} entries");

            let mut slow = Vec::new();
            read_per_key(fd, &mut slow).expect("per-key read");
            slow.sort_by_key(|(pid, _)| *pid);
            assert_eq!(slow, want, "per key, {n} entries");

            let started = std::time::Instant::now();
            let all = lookup_all(fd).expect("lookup_all");
            let batched = started.elapsed();
            let started = std::time::Instant::now();
            read_per_key(fd, &mut slow).expect("per-key read");
            let per_key = started.elapsed();
            assert_eq!(all.len(), n as usize);
            eprintln!("{n} entries: batched {batched:?}, per key {per_key:?}");

            for pid in 1..=n {
                let mut key = pid;
                let mut attr = ElemAttr {
                    map_fd: raw,
                    key: std::ptr::from_mut(&mut key) as u64,
                    ..ElemAttr::default()
                };
                // SAFETY: a key of the map's type.
                unsafe { sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr) }.expect("delete");
            }
        }
    }
}
