//! Unwinding copied user-stack snapshots from `.eh_frame`, with framehop.
//!
//! Debian's binaries and glibc have no frame pointers, so the kernel's frame-pointer walk
//! (`bpf_get_stackid`) loses frames; a collector instead copies the registers and the top of the
//! user stack at the event, and this module unwinds that copy with each module's DWARF call frame
//! information, as perf and samply do. framehop falls back to frame pointers inside a known
//! module where an address has no CFI entry. An address in no module with unwind information
//! (JIT code, an anonymous mapping, a file stripped of `.eh_frame`) ends the walk as
//! [`StackEnd::NoUnwindInfo`]: its frame is kept, no guessed frame follows.
//!
//! Per process the executable mappings are read from `/proc/PID/maps` once, and again when an
//! address falls outside every known mapping (a library `dlopen`ed since; at most once a second,
//! as JIT code is in none); each file's sections
//! are read once per (device, inode) through `/proc/PID/map_files`, so a deleted or
//! containerised file still unwinds.
mod modules;

use std::collections::HashMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{Error as FramehopError, FrameAddress, Module, Unwinder as _};

pub use modules::ModuleError;
use modules::{Bytes, ModuleFiles, executable_mappings};

use crate::profile::capture::StackEnd;

/// How often a process's mappings may be read again for an address in none of them: a JIT's
/// every sample would otherwise re-read them.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The registers an unwind starts from, as the kernel captured them at the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// The unwinding state of one process.
struct Process {
    unwinder: UnwinderX86_64<Bytes>,
    /// Executable file mappings, with whether the file has unwind information; sorted.
    mappings: Vec<(Range<u64>, bool)>,
    read_at: Instant,
}

impl Process {
    /// Whether `address` is in a mapped file with unwind information (`Some(false)`: mapped,
    /// without; `None`: in no executable file mapping known).
    fn has_unwind_info(&self, address: u64) -> Option<bool> {
        let index = self
            .mappings
            .partition_point(|(range, _)| range.end <= address);
        self.mappings
            .get(index)
            .filter(|(range, _)| range.contains(&address))
            .map(|&(_, has_info)| has_info)
    }
}

/// Unwinds stack snapshots of any number of processes, caching modules across calls.
pub struct Unwinder {
    processes: HashMap<u32, Process>,
    files: ModuleFiles,
    cache: CacheX86_64,
}

impl Default for Unwinder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Unwinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unwinder")
            .field("processes", &self.processes.len())
            .finish_non_exhaustive()
    }
}

impl Unwinder {
    pub fn new() -> Self {
        Self {
            processes: HashMap::new(),
            files: ModuleFiles::default(),
            cache: CacheX86_64::new(),
        }
    }

    /// Unwinds `stack` (a copy of `pid`'s user memory from `regs.sp` up) into at most
    /// `max_depth` addresses, leaf (`regs.ip`) first, the rest return addresses as the stack
    /// holds them, and says why the walk ended.
    pub fn unwind(
        &mut self,
        pid: u32,
        regs: UserRegs,
        stack: &[u8],
        max_depth: usize,
    ) -> (Vec<u64>, StackEnd) {
        if max_depth == 0 {
            return (Vec::new(), StackEnd::DepthLimit);
        }
        if !self.processes.contains_key(&pid) {
            self.refresh(pid);
        }
        loop {
            let Some(process) = self.processes.get(&pid) else {
                let why = format!("the mappings of pid {pid} cannot be read");
                return (vec![regs.ip], StackEnd::Other(why));
            };
            let walk = walk(process, &mut self.cache, regs, stack, max_depth);
            if walk.in_unknown_mapping && process.read_at.elapsed() >= REFRESH_INTERVAL {
                // Maybe a library mapped since the maps were read: read them again, and walk
                // again with them.
                self.refresh(pid);
                continue;
            }
            return (walk.addresses, walk.end);
        }
    }

    /// Reads `pid`'s mappings again; a process that is gone is forgotten.
    fn refresh(&mut self, pid: u32) {
        let mappings = match executable_mappings(pid) {
            Ok(mappings) => mappings,
            Err(error) => {
                tracing::debug!("{error}");
                self.processes.remove(&pid);
                return;
            }
        };
        let mut unwinder = UnwinderX86_64::new();
        let mut ranges = Vec::with_capacity(mappings.len());
        for mapping in &mappings {
            let file = self.files.get(mapping);
            let bias = file
                .as_ref()
                .and_then(|file| file.bias(mapping.range.start, mapping.offset));
            let has_info = match (&file, bias) {
                (Some(file), Some(bias)) if file.has_unwind_info() => {
                    unwinder.add_module(Module::new(
                        mapping.path.to_string_lossy().into_owned(),
                        mapping.range.clone(),
                        bias,
                        file.section_info(),
                    ));
                    true
                }
                _ => false,
            };
            ranges.push((mapping.range.clone(), has_info));
        }
        ranges.sort_by_key(|(range, _)| range.start);
        self.processes.insert(
            pid,
            Process {
                unwinder,
                mappings: ranges,
                read_at: Instant::now(),
            },
        );
    }

    /// Forgets a process (it exited): its modules stay cached by file.
    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }
}

struct Walk {
    addresses: Vec<u64>,
    end: StackEnd,
    /// The walk stopped at an address in no known executable mapping.
    in_unknown_mapping: bool,
}

/// One walk over the process's known modules.
fn walk(
    process: &Process,
    cache: &mut CacheX86_64,
    regs: UserRegs,
    stack: &[u8],
    max_depth: usize,
) -> Walk {
    let snapshot = regs.sp..regs.sp.saturating_add(stack.len() as u64);
    let mut read_stack = |address: u64| -> Result<u64, ()> {
        if address < snapshot.start || address.saturating_add(8) > snapshot.end {
            return Err(());
        }
        let offset = usize::try_from(address - snapshot.start).map_err(|_| ())?;
        let bytes = stack.get(offset..offset + 8).ok_or(())?;
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
    };
    let mut frames = process.unwinder.iter_frames(
        regs.ip,
        UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp),
        cache,
        &mut read_stack,
    );
    let mut addresses = Vec::new();
    let end = |addresses, end| Walk {
        addresses,
        end,
        in_unknown_mapping: false,
    };
    loop {
        let frame: FrameAddress = match frames.next() {
            Ok(Some(frame)) => frame,
            Ok(None) => return end(addresses, StackEnd::Complete),
            Err(FramehopError::CouldNotReadStack(address)) if address >= snapshot.end => {
                return end(addresses, StackEnd::SnapshotEnd);
            }
            Err(error) => {
                return end(
                    addresses,
                    StackEnd::Other(format!("unwinding stopped: {error}")),
                );
            }
        };
        if addresses.len() == max_depth {
            return end(addresses, StackEnd::DepthLimit);
        }
        addresses.push(frame.address());
        match process.has_unwind_info(frame.address_for_lookup()) {
            Some(true) => {}
            has_info => {
                return Walk {
                    addresses,
                    end: StackEnd::NoUnwindInfo {
                        address: frame.address(),
                    },
                    in_unknown_mapping: has_info.is_none(),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests;
