//! Every map and read-only global the programs share. Names are the userspace contract
//! (`memtrace_common::maps`, `memtrace_common::globals`): userspace resizes and opens them by name.
//! Sizes are defaults; the loader resizes them (`map_max_entries`) from its options.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use memtrace_common::{COMM_LEN, Config, Offsets, ProcStats, ReclaimStart, SyscallArgs, loss};

use crate::rss::RssLast;

#[unsafe(no_mangle)]
pub static CONFIG: Global<Config> = Global::new(Config {
    event_mask: 0,
    filter_flags: 0,
    fault_sample_every: 0,
    page_size: 4096,
    mmap_min_bytes: u64::MAX,
    reclaim_min_ns: u64::MAX,
    flags: 0,
    reserved: 0,
});

#[unsafe(no_mangle)]
pub static OFFSETS: Global<Offsets> = Global::new(Offsets::ABSENT);

/// One part of `OFFSETS`, e.g. `offset!(task.task_mm)`: programs read `OFFSETS` only through
/// this. `OFFSETS.load()` would be a volatile copy of the whole struct (about 300 bytes of stack
/// and as many loads); this reads only what a program uses.
macro_rules! offset {
    ($($field:tt)+) => {
        // SAFETY: `Global` is `repr(transparent)` over an initialised `Offsets`; a volatile read
        // of one of its fields, like `Global::load` of the whole.
        unsafe {
            core::ptr::read_volatile(
                &raw const (*(&raw const $crate::maps::OFFSETS).cast::<memtrace_common::Offsets>())
                    .$($field)+,
            )
        }
    };
}
pub(crate) use offset;

/// OOM victim's task pid → its memory cgroup id (`oom::oom_mark_victim_task`). LRU: only the
/// last few kills matter, userspace reads each within a tick of the kill.
#[map]
pub static OOM_VICTIM_CGROUPS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(256, 0);

/// Kernels whose `sched_process_exit` has no `group_dead`: tgid → start time of the process
/// whose end was reported, so that of the threads dying together (each may find
/// `signal->live` at 0) only the first reports it (`lifecycle::process_ends_here`). LRU: a
/// claim matters for the microseconds its threads take to exit.
#[map]
pub static EXIT_CLAIMS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1024, 0);

/// Per-process counters. Full: new processes are not tracked (counted in `LOSSES`), existing
/// ones keep counting; entries are removed when a process exits.
#[map]
pub static PROC_STATS: HashMap<u32, ProcStats> = HashMap::with_max_entries(32768, 0);
/// mmap-family arguments between syscall entry and exit, per thread.
#[map]
pub static SYSCALL_INFLIGHT: HashMap<u64, SyscallArgs> = HashMap::with_max_entries(8192, 0);
/// Reclaim stalls in progress, per thread.
#[map]
pub static RECLAIM_INFLIGHT: HashMap<u64, ReclaimStart> = HashMap::with_max_entries(8192, 0);
/// `kmem:rss_stat` `mm_id` → tgid, to attribute RSS changes made from another task's context
/// (reclaim, the OOM reaper, page migration).
#[map]
pub static MM_OWNER: HashMap<u64, u32> = HashMap::with_max_entries(32768, 0);
/// Live-trace filter: tgids (and, with `FOLLOW_FORKS`, their descendants' task ids).
#[map]
pub static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(8192, 0);
/// Live-trace filter: cgroup ids (of the filter's hierarchy) whose new members join
/// `FILTER_PIDS` as they are moved in (`cgroup:cgroup_attach_task`).
#[map]
pub static FILTER_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(4096, 0);
/// Live-trace filter: task names, zero-padded to 16 bytes.
#[map]
pub static FILTER_COMMS: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(64, 0);
/// Loss counters, indexed by `memtrace_common::loss`.
#[map]
pub static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::SLOTS, 0);
/// Per-CPU: the (mm, type) of the last RSS update, to thin bursts (see `rss::rss_stat_raw`).
#[map]
pub static RSS_LAST: PerCpuArray<RssLast> = PerCpuArray::with_max_entries(1, 0);
/// A zeroed [`ProcStats`], never written: a new `PROC_STATS` entry is copied from it. Built on the
/// stack instead (~490 bytes), it made the mmap programs' combined stack too large for verifiers
/// without private stacks (before 6.13: "combined stack size of 2 calls is 544").
#[map]
pub static ZERO_PROC_STATS: PerCpuArray<ProcStats> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU fault counter for 1-in-N sampling of the fault stream.
#[map]
pub static SAMPLE_COUNTER: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
/// Page-sized until a live trace with `--faults` resizes it.
#[map]
pub static FAULT_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);
