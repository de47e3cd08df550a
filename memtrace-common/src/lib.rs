//! Types shared by the eBPF programs (`memtrace-ebpf`) and userspace (`memtrace`).
//!
//! Every type here crosses the kernel/user boundary as raw bytes (ring-buffer records, map keys
//! and values, read-only globals), so each is `#[repr(C)]`, contains only fixed-size integers
//! and byte arrays, and has **no implicit padding**: every struct's size is asserted to equal the
//! sum of its fields below. Flags are `u32`, never `bool`.
#![no_std]
#![warn(clippy::pedantic)]

pub mod alloc;
pub mod sites;

/// Length of a kernel task name (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Bytes of an exec'd filename carried in [`ExecEvent`] (longer names are truncated).
pub const FILENAME_LEN: usize = 96;

/// Ring-buffer event kinds ([`EventHeader::kind`]). Also the bit index in [`Config::event_mask`]
/// and the index of the reserve-failure counter in the `LOSSES` map.
pub mod kind {
    pub const FAULT: u32 = 1;
    pub const MMAP: u32 = 2;
    pub const MUNMAP: u32 = 3;
    pub const BRK: u32 = 4;
    pub const MREMAP: u32 = 5;
    pub const RECLAIM: u32 = 6;
    pub const OOM: u32 = 7;
    pub const EXEC: u32 = 8;
    pub const EXIT: u32 = 9;
    /// One past the largest kind.
    pub const COUNT: u32 = 10;
}

/// Indexes of the kernel loss counters (`LOSSES`, a per-CPU array of `u64`).
///
/// `0..kind::COUNT`: a ring-buffer reserve failed for an event of that kind (ring full).
/// `MAP_FULL_BASE + map`: an insert into that map failed (map full).
pub mod loss {
    pub const MAP_FULL_BASE: u32 = 16;
    pub const MAP_PROC_STATS: u32 = MAP_FULL_BASE;
    pub const MAP_SYSCALL_INFLIGHT: u32 = MAP_FULL_BASE + 1;
    pub const MAP_RECLAIM_INFLIGHT: u32 = MAP_FULL_BASE + 2;
    pub const MAP_MM_OWNER: u32 = MAP_FULL_BASE + 3;
    pub const MAP_FILTER_PIDS: u32 = MAP_FULL_BASE + 4;
    /// Number of slots in `LOSSES`.
    pub const SLOTS: u32 = 32;
}

/// Map names, shared so userspace resizes and opens exactly what the kernel side declares.
pub mod maps {
    pub const PROC_STATS: &str = "PROC_STATS";
    pub const SYSCALL_INFLIGHT: &str = "SYSCALL_INFLIGHT";
    pub const RECLAIM_INFLIGHT: &str = "RECLAIM_INFLIGHT";
    pub const MM_OWNER: &str = "MM_OWNER";
    pub const FILTER_PIDS: &str = "FILTER_PIDS";
    pub const FILTER_COMMS: &str = "FILTER_COMMS";
    pub const FILTER_CGROUPS: &str = "FILTER_CGROUPS";
    pub const LOSSES: &str = "LOSSES";
    pub const SAMPLE_COUNTER: &str = "SAMPLE_COUNTER";
    /// Discrete events (mmap family, reclaim, OOM, exec, exit).
    pub const EVENTS: &str = "EVENTS";
    /// Per-fault events; only carries data while a live trace asks for faults.
    pub const FAULT_EVENTS: &str = "FAULT_EVENTS";
    /// OOM victim's task pid → its memory cgroup id, written by the raw `oom:mark_victim` hook
    /// (the tracepoint's record names the victim only by pid).
    pub const OOM_VICTIM_CGROUPS: &str = "OOM_VICTIM_CGROUPS";
}

/// Names of the read-only globals set at load time.
pub mod globals {
    pub const CONFIG: &str = "CONFIG";
    pub const OFFSETS: &str = "OFFSETS";
}

/// Bits of [`Config::filter_flags`].
pub mod filter {
    /// Only tasks whose tgid is in `FILTER_PIDS` produce filtered events.
    pub const PIDS: u32 = 1 << 0;
    /// Only tasks whose comm is in `FILTER_COMMS` produce filtered events.
    pub const COMMS: u32 = 1 << 1;
    /// Children forked by a task in `FILTER_PIDS` are added to it (for cgroup filters).
    pub const FOLLOW_FORKS: u32 = 1 << 2;
}

/// Loader-set configuration (a read-only global: the verifier sees constants, so disabled
/// features cost nothing on the hot path).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Bit `1 << kind` set: events of that kind go to the ring buffers.
    pub event_mask: u32,
    /// [`filter`] bits applied to high-volume events (faults, mmap family, reclaim).
    pub filter_flags: u32,
    /// Stream one fault event per this many faults (per CPU); 0 disables the fault stream.
    pub fault_sample_every: u32,
    /// The kernel's page size: mmap-family byte counters are page-aligned like the kernel's own.
    pub page_size: u32,
    /// mmap-family calls of at least this many bytes become events.
    pub mmap_min_bytes: u64,
    /// Reclaim stalls at least this long become events.
    pub reclaim_min_ns: u64,
    /// [`config_flag`] bits.
    pub flags: u32,
    pub reserved: u32,
}
const _: () = assert!(size_of::<Config>() == 4 * 4 + 2 * 8 + 2 * 4);

/// Bits of [`Config::flags`].
pub mod config_flag {
    /// Wake the reader of the discrete-event ring only when it is a quarter full (it also drains
    /// on a timer, `memtrace::pipeline::DRAIN_EVERY_DAEMON`). A wake-up per event costs an IRQ work item and a self-IPI (microseconds in a
    /// VM): right for the daemon. Without it, each event wakes an idle reader at once, so a live
    /// trace sees (and can enrich from /proc) events of processes about to exit.
    pub const BATCH_WAKEUPS: u32 = 1 << 0;
    /// Count each reclaim stall in its latency bucket (`ProcStats::reclaim_hist`): the daemon's
    /// histogram. Without it the reclaim-end program does not walk the bucketing at all.
    pub const RECLAIM_HISTOGRAM: u32 = 1 << 1;
}

impl Config {
    #[must_use]
    pub const fn wants(&self, kind: u32) -> bool {
        self.event_mask & (1 << kind) != 0
    }
}

/// Marker for a tracepoint field this kernel's format does not have.
pub const FIELD_ABSENT: u32 = u32::MAX;

/// Byte offsets of the fields the programs read from `syscalls:sys_enter_*` records.
/// Entry 0..6 are the syscall's arguments in declaration order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallEnterOffsets {
    pub args: [u32; 6],
}
const _: () = assert!(size_of::<SyscallEnterOffsets>() == 24);

/// Offsets in `oom:mark_victim`. Absent fields are [`FIELD_ABSENT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomOffsets {
    pub pid: u32,
    /// `__data_loc char[] comm` (a u32: offset | len << 16), or absent.
    pub comm: u32,
    pub total_vm: u32,
    pub anon_rss: u32,
    pub file_rss: u32,
    pub shmem_rss: u32,
    pub uid: u32,
    pub pgtables: u32,
    pub oom_score_adj: u32,
    pub reserved: u32,
}
const _: () = assert!(size_of::<OomOffsets>() == 40);

/// Offsets for RSS tracking: the classic `kmem:rss_stat` record's fields, and the kernel struct
/// layout (from vmlinux BTF) that the raw-tracepoint variant reads instead of the record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RssOffsets {
    pub mm_id: u32,
    pub curr: u32,
    pub member: u32,
    pub size: u32,
    /// `offsetof(struct task_struct, mm)`.
    pub task_mm: u32,
    /// `offsetof(struct mm_struct, rss_stat)`.
    pub mm_rss_stat: u32,
    /// `sizeof(struct percpu_counter)` (8 with [`rss_flag::ATOMIC_COUNTERS`]).
    pub counter_size: u32,
    /// `offsetof(struct percpu_counter, count)` (0 with [`rss_flag::ATOMIC_COUNTERS`]).
    pub counter_count: u32,
    /// [`rss_flag`] bits.
    pub flags: u32,
}
const _: () = assert!(size_of::<RssOffsets>() == 36);

/// [`RssOffsets::flags`].
pub mod rss_flag {
    /// `mm->rss_stat` is `struct mm_rss_stat { atomic_long_t count[]; }` (before Linux 6.2): the
    /// counters are exact, each thread adds its changes in batches of up to 64 faults
    /// (`TASK_RSS_EVENTS_THRESH`), so every `rss_stat` call carries a batch; and the BTF
    /// verifier of those kernels refuses a typed load from an `atomic_long_t` array, so they are
    /// read with `bpf_probe_read_kernel`.
    pub const ATOMIC_COUNTERS: u32 = 1;
}

/// Offsets in the `vmscan` reclaim begin/end records.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReclaimOffsets {
    pub begin_order: u32,
    pub begin_gfp_flags: u32,
    pub end_nr_reclaimed: u32,
    /// 8 (`unsigned long`), or 4 where the record has a `gfp_t` (Linux 5.10).
    pub begin_gfp_flags_size: u32,
}

/// Offsets in `sched:sched_process_{exec,exit,fork}`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedOffsets {
    /// `__data_loc char[] filename` in `sched_process_exec`.
    pub exec_filename: u32,
    pub exec_old_pid: u32,
    pub exit_pid: u32,
    /// `group_dead` (newer kernels); absent: the leader's exit (pid == tgid) ends the process.
    pub exit_group_dead: u32,
    pub fork_parent_pid: u32,
    pub fork_child_pid: u32,
}

/// Kernel struct layout (from vmlinux BTF) read by the task sampler (`task_sampler`, a BPF task
/// iterator) and by `sched_process_exit` for a process's final fault counts. `task_min_flt ==
/// FIELD_ABSENT`: not available (no BTF), and the fault counters come from the fault hooks.
/// The sampler also reads `mm->rss_stat` at the [`RssOffsets`] layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    /// `task_struct.flags` (`PF_*`).
    pub task_flags: u32,
    pub task_min_flt: u32,
    pub task_maj_flt: u32,
    pub task_mm: u32,
    pub task_signal: u32,
    pub task_group_leader: u32,
    /// `task_struct.start_time` (monotonic ns): tells a reused pid from the process it had.
    pub task_start_time: u32,
    /// `signal_struct.{min,maj}_flt`: faults of the group's threads already reaped.
    pub signal_min_flt: u32,
    pub signal_maj_flt: u32,
    /// `signal_struct.thread_head` and `task_struct.thread_node`: the list of a process's
    /// threads not yet reaped (Linux 6.7+; absent before, and the exit hook counts only the
    /// exiting thread and the leader).
    pub signal_thread_head: u32,
    pub task_thread_node: u32,
    /// `task_struct.comm`. Unlike the rest, set whenever kernel BTF is there (not only with the
    /// task sampler): every program that reads the comm uses it, see `current_comm`.
    pub task_comm: u32,
    /// `mm_struct.total_vm` (pages mapped: the process's virtual size).
    pub mm_total_vm: u32,
    /// `signal_struct.live` (`atomic_t`): the group's threads not yet past `do_exit`'s
    /// decrement. Kernels whose `sched_process_exit` has no `group_dead` field (6.12 and older
    /// among those measured) run the tracepoint after that decrement, so 0 there means the
    /// process is ending.
    pub signal_live: u32,
}
const _: () = assert!(size_of::<TaskOffsets>() == 64);

/// Kernel struct layout (from vmlinux BTF) to a task's cgroup id: `task->cgroups` (a
/// `css_set`), then the memory controller's cgroup (`->subsys[memory_cgrp_id]->cgroup`, cgroup
/// v1 and hybrid hosts, where the memory controller and its OOM kills live) or the default
/// hierarchy's (`->dfl_cgrp`, unified-only hosts), then `->kn->id`. That id is the inode number
/// of the cgroup's directory, which userspace resolves to a path. `task_cgroups ==
/// FIELD_ABSENT`: not available (no BTF), and the cgroup is looked up in `/proc` instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupOffsets {
    /// `task_struct.cgroups`.
    pub task_cgroups: u32,
    /// In `css_set`: `subsys[memory_cgrp_id]` (with `css_cgroup`) or `dfl_cgrp`.
    pub cset_link: u32,
    /// `cgroup_subsys_state.cgroup`; [`FIELD_ABSENT`] when `cset_link` is `dfl_cgrp` (already a
    /// `struct cgroup *`).
    pub css_cgroup: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id`.
    pub kn_id: u32,
    pub reserved: u32,
}
const _: () = assert!(size_of::<CgroupOffsets>() == 24);

impl CgroupOffsets {
    pub const ABSENT: Self = Self {
        task_cgroups: FIELD_ABSENT,
        cset_link: FIELD_ABSENT,
        css_cgroup: FIELD_ABSENT,
        cgroup_kn: FIELD_ABSENT,
        kn_id: FIELD_ABSENT,
        reserved: 0,
    };
}

/// Offsets in `cgroup:cgroup_attach_task`, and the hierarchy of the live trace's cgroup filter:
/// a task moved into a filtered cgroup (`FILTER_CGROUPS`) of that hierarchy joins `FILTER_PIDS`
/// at once, before it can exec.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachOffsets {
    pub dst_root: u32,
    pub dst_id: u32,
    pub pid: u32,
    /// The filter's hierarchy id (`dst_root`: the v1 hierarchy's number in `/proc/cgroups`, 0
    /// for the unified one); [`FIELD_ABSENT`]: no cgroup filter.
    pub filter_root: u32,
}
const _: () = assert!(size_of::<AttachOffsets>() == 16);

/// All tracepoint field offsets, parsed from tracefs `format` files at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub mmap_enter: SyscallEnterOffsets,
    pub munmap_enter: SyscallEnterOffsets,
    pub brk_enter: SyscallEnterOffsets,
    pub mremap_enter: SyscallEnterOffsets,
    /// `ret` in `syscalls:sys_exit_*` (one layout for all of them).
    pub syscall_exit_ret: u32,
    /// Non-zero: the exit programs read the arguments from the task's saved registers, and the
    /// entry programs are not attached (x86-64 with BTF).
    pub syscall_args_from_regs: u32,
    pub oom: OomOffsets,
    pub rss: RssOffsets,
    pub reclaim: ReclaimOffsets,
    pub sched: SchedOffsets,
    pub task: TaskOffsets,
    /// `syscalls:sys_enter_madvise`: `start`, `len_in`, `behavior` (counted only, no event).
    pub madvise_enter: SyscallEnterOffsets,
    /// A task's cgroup id (exit and OOM events).
    pub cgroup: CgroupOffsets,
    pub attach: AttachOffsets,
    /// [`helper_flag`] bits: the BPF helpers this kernel has, of those some paths need.
    pub helpers: u32,
}
const _: () =
    assert!(size_of::<Offsets>() == 4 * 24 + 8 + 40 + 36 + 16 + 24 + 64 + 24 + 24 + 16 + 4);

/// [`Offsets::helpers`]: BPF helpers newer than the oldest kernels memtrace loads on. Programs
/// call them only on a branch the flag enables; `OFFSETS` is read-only, so on a kernel without
/// one the verifier never walks (and never refuses) the call.
pub mod helper_flag {
    /// `bpf_get_current_task_btf` (Linux 5.11): BTF-typed loads from the current task.
    pub const CURRENT_TASK_BTF: u32 = 1;
    /// `bpf_task_pt_regs` (Linux 5.15): the current task's user registers as a BTF pointer.
    pub const TASK_PT_REGS: u32 = 1 << 1;
}

impl Offsets {
    /// All fields absent: programs that need a field check for [`FIELD_ABSENT`] and skip.
    pub const ABSENT: Self = Self {
        mmap_enter: SyscallEnterOffsets {
            args: [FIELD_ABSENT; 6],
        },
        munmap_enter: SyscallEnterOffsets {
            args: [FIELD_ABSENT; 6],
        },
        brk_enter: SyscallEnterOffsets {
            args: [FIELD_ABSENT; 6],
        },
        mremap_enter: SyscallEnterOffsets {
            args: [FIELD_ABSENT; 6],
        },
        syscall_exit_ret: FIELD_ABSENT,
        syscall_args_from_regs: 0,
        oom: OomOffsets {
            pid: FIELD_ABSENT,
            comm: FIELD_ABSENT,
            total_vm: FIELD_ABSENT,
            anon_rss: FIELD_ABSENT,
            file_rss: FIELD_ABSENT,
            shmem_rss: FIELD_ABSENT,
            uid: FIELD_ABSENT,
            pgtables: FIELD_ABSENT,
            oom_score_adj: FIELD_ABSENT,
            reserved: 0,
        },
        rss: RssOffsets {
            mm_id: FIELD_ABSENT,
            curr: FIELD_ABSENT,
            member: FIELD_ABSENT,
            size: FIELD_ABSENT,
            task_mm: FIELD_ABSENT,
            mm_rss_stat: FIELD_ABSENT,
            counter_size: FIELD_ABSENT,
            counter_count: FIELD_ABSENT,
            flags: 0,
        },
        reclaim: ReclaimOffsets {
            begin_order: FIELD_ABSENT,
            begin_gfp_flags: FIELD_ABSENT,
            end_nr_reclaimed: FIELD_ABSENT,
            begin_gfp_flags_size: 0,
        },
        sched: SchedOffsets {
            exec_filename: FIELD_ABSENT,
            exec_old_pid: FIELD_ABSENT,
            exit_pid: FIELD_ABSENT,
            exit_group_dead: FIELD_ABSENT,
            fork_parent_pid: FIELD_ABSENT,
            fork_child_pid: FIELD_ABSENT,
        },
        task: TaskOffsets {
            task_pid: FIELD_ABSENT,
            task_tgid: FIELD_ABSENT,
            task_flags: FIELD_ABSENT,
            task_min_flt: FIELD_ABSENT,
            task_maj_flt: FIELD_ABSENT,
            task_mm: FIELD_ABSENT,
            task_signal: FIELD_ABSENT,
            task_group_leader: FIELD_ABSENT,
            task_start_time: FIELD_ABSENT,
            signal_min_flt: FIELD_ABSENT,
            signal_maj_flt: FIELD_ABSENT,
            signal_thread_head: FIELD_ABSENT,
            task_thread_node: FIELD_ABSENT,
            task_comm: FIELD_ABSENT,
            mm_total_vm: FIELD_ABSENT,
            signal_live: FIELD_ABSENT,
        },
        madvise_enter: SyscallEnterOffsets {
            args: [FIELD_ABSENT; 6],
        },
        cgroup: CgroupOffsets::ABSENT,
        attach: AttachOffsets {
            dst_root: FIELD_ABSENT,
            dst_id: FIELD_ABSENT,
            pid: FIELD_ABSENT,
            filter_root: FIELD_ABSENT,
        },
        helpers: 0,
    };
}

/// `kmem:rss_stat` `member` values (`MM_FILEPAGES`…): index into [`ProcStats::rss`].
pub mod rss_member {
    pub const FILE: usize = 0;
    pub const ANON: usize = 1;
    pub const SWAP: usize = 2;
    pub const SHMEM: usize = 3;
    pub const COUNT: usize = 4;
}

/// Per-process (tgid) cumulative counters kept in the `PROC_STATS` kernel map, and carried whole
/// in [`ExitEvent`] so short-lived processes are not lost. Counters only grow; rates are derived
/// in userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStats {
    /// Page faults taken in user mode (`exceptions:page_fault_user`).
    pub faults_user: u64,
    /// Page faults taken in kernel mode on behalf of the process (`page_fault_kernel`).
    pub faults_kernel: u64,
    /// Major faults (perf `PAGE_FAULTS_MAJ`). Minor = user + kernel − major.
    pub faults_major: u64,
    pub mmap_calls: u64,
    pub mmap_bytes: u64,
    pub munmap_calls: u64,
    pub munmap_bytes: u64,
    pub brk_calls: u64,
    pub brk_grow_bytes: u64,
    pub brk_shrink_bytes: u64,
    pub mremap_calls: u64,
    pub mremap_grow_bytes: u64,
    pub mremap_shrink_bytes: u64,
    /// mmap-family calls that returned an error (not counted in the byte counters).
    pub failed_calls: u64,
    pub reclaim_stalls: u64,
    pub reclaim_ns: u64,
    /// Current RSS in bytes by [`rss_member`] (last `kmem:rss_stat` value).
    pub rss: [u64; rss_member::COUNT],
    /// Last known program break (0: not yet seen); brk growth is measured against it.
    pub brk_current: u64,
    /// The process's mm as `kmem:rss_stat` identifies it (the `mm_struct` address with the raw
    /// tracepoint, the hashed `mm_id` with the classic one), to attribute updates made from
    /// another task's context.
    pub mm_key: u64,
    /// [`proc_flag`] bits.
    pub flags: u64,
    /// Virtual memory size in bytes (`mm->total_vm`), with [`proc_flag::TASK_COUNTERS`] (the
    /// task sampler reads it each tick; no hook maintains it). The daemon's measure of how much
    /// a process maps, whichever call maps it, without a program on the mmap path.
    pub vm_bytes: u64,
    /// Bytes given back with `madvise(MADV_DONTNEED)` (successful calls, page-aligned length as
    /// the kernel applies it): the pages are dropped at once, so RSS falls without a munmap.
    pub madvise_dontneed_bytes: u64,
    /// Bytes marked `madvise(MADV_FREE)` (likewise): reclaimable lazily, RSS falls under
    /// memory pressure.
    pub madvise_free_bytes: u64,
    /// Reclaim stalls by duration, slot [`reclaim_bucket::slot`] (with
    /// [`config_flag::RECLAIM_HISTOGRAM`]; zero otherwise). They add up to `reclaim_stalls`.
    pub reclaim_hist: [u64; reclaim_bucket::COUNT],
}
const _: () = assert!(
    size_of::<ProcStats>() == 16 * 8 + 4 * 8 + 8 + 8 + 8 + 8 + 2 * 8 + reclaim_bucket::COUNT * 8
);

/// The reclaim-stall latency histogram's buckets (`ProcStats::reclaim_hist`): powers of two of
/// microseconds, as bpftrace's `hist()` of a duration in µs, from 64 µs to 1.048576 s. Slot 0
/// holds the stalls of at most 64 µs, slot `i` (1..=14) those over `64·2^(i−1)` and at most
/// `64·2^i` µs, the last slot those over 1.048576 s. Bounded: 16 slots (128 bytes a process).
pub mod reclaim_bucket {
    /// Slots, the two open-ended ones included.
    pub const COUNT: usize = 16;
    /// Upper bound of slot 0, in nanoseconds.
    pub const FIRST_BOUND_NS: u64 = 64_000;

    /// Upper bound (inclusive) of slot `i` in nanoseconds; `None` for the last (unbounded).
    #[must_use]
    pub const fn upper_bound_ns(i: usize) -> Option<u64> {
        if i + 1 >= COUNT {
            None
        } else {
            Some(FIRST_BOUND_NS << i)
        }
    }

    /// The slot of a stall of `duration_ns`: the first whose upper bound it does not exceed.
    /// Branches only (no loop, no table): it runs in the reclaim-end program.
    #[must_use]
    #[inline]
    pub const fn slot(duration_ns: u64) -> usize {
        if duration_ns <= FIRST_BOUND_NS {
            return 0;
        }
        // ⌈d / 64 µs⌉ > 2^k ⇔ (d − 1) / 64 µs ≥ 2^k: the slot is 1 + ⌊log2((d − 1) / 64 µs)⌋.
        let mut q = (duration_ns - 1) / FIRST_BOUND_NS;
        if q >= 1 << 16 {
            return COUNT - 1;
        }
        let mut log = 0;
        if q >= 1 << 8 {
            q >>= 8;
            log += 8;
        }
        if q >= 1 << 4 {
            q >>= 4;
            log += 4;
        }
        if q >= 1 << 2 {
            q >>= 2;
            log += 2;
        }
        if q >= 1 << 1 {
            log += 1;
        }
        if log + 1 >= COUNT { COUNT - 1 } else { log + 1 }
    }
}

/// Bits of [`ProcStats::flags`].
pub mod proc_flag {
    /// Faults and RSS come from the kernel's own per-task counters (`min_flt`, `maj_flt`,
    /// `mm->rss_stat`, sampled by the task iterator), not from the fault hooks: the counts are
    /// exact, but the kernel does not split them by mode, so `faults_user` holds all faults
    /// and `faults_kernel` is 0 and meaningless.
    pub const TASK_COUNTERS: u64 = 1 << 0;
}

impl ProcStats {
    #[must_use]
    pub const fn faults_minor(&self) -> u64 {
        // Saturating: the counters come from the kernel (an exit record, a map), not from us.
        self.faults_user
            .saturating_add(self.faults_kernel)
            .saturating_sub(self.faults_major)
    }
}

/// First field of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// Process id (tgid) of the task the event is about (for OOM: the task that triggered it).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub cpu: u32,
    /// `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`).
    pub ts_ns: u64,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<EventHeader>() == 4 * 4 + 8 + COMM_LEN);

/// `FAULT_EVENTS`: one sampled page fault.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultEvent {
    pub header: EventHeader,
    pub address: u64,
    pub ip: u64,
    pub error_code: u64,
    /// 1: taken in user mode; 0: in kernel mode.
    pub user: u32,
    pub reserved: u32,
}
const _: () = assert!(size_of::<FaultEvent>() == size_of::<EventHeader>() + 3 * 8 + 8);

/// mmap, munmap, brk and mremap (told apart by `header.kind`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemSyscallEvent {
    pub header: EventHeader,
    /// mmap: the mapped address; munmap: the address; brk: the new break; mremap: the new address.
    pub addr: u64,
    /// mmap/munmap: length; brk: absolute change of the break; mremap: new length.
    pub len: u64,
    /// mremap: old address; brk: the old break (0 if unknown).
    pub old_addr: u64,
    /// mremap: old length.
    pub old_len: u64,
    /// Raw syscall return value (negative errno on failure).
    pub ret: i64,
    /// mmap `prot`; mremap `flags`.
    pub prot: u32,
    /// mmap `flags`.
    pub flags: u32,
    /// mmap `fd` (-1 for anonymous maps).
    pub fd: i32,
    /// brk: 1 if the break grew, 0 if it shrank.
    pub grew: u32,
}
const _: () = assert!(size_of::<MemSyscallEvent>() == size_of::<EventHeader>() + 5 * 8 + 4 * 4);

/// A direct (or memcg) reclaim stall.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimEvent {
    pub header: EventHeader,
    pub duration_ns: u64,
    pub nr_reclaimed: u64,
    pub gfp_flags: u64,
    pub order: i32,
    /// 1: memory-cgroup reclaim (limit hit); 0: global direct reclaim.
    pub memcg: u32,
}
const _: () = assert!(size_of::<ReclaimEvent>() == size_of::<EventHeader>() + 3 * 8 + 8);

/// Bits of [`OomEvent::present`]: which victim fields this kernel's tracepoint provided.
pub mod oom_field {
    pub const COMM: u32 = 1 << 0;
    pub const TOTAL_VM: u32 = 1 << 1;
    pub const ANON_RSS: u32 = 1 << 2;
    pub const FILE_RSS: u32 = 1 << 3;
    pub const SHMEM_RSS: u32 = 1 << 4;
    pub const UID: u32 = 1 << 5;
    pub const PGTABLES: u32 = 1 << 6;
    pub const OOM_SCORE_ADJ: u32 = 1 << 7;
}

/// `oom:mark_victim`: one task chosen by the OOM killer. The header names the *triggering*
/// task (the one whose allocation invoked the OOM killer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomEvent {
    pub header: EventHeader,
    pub victim_pid: u32,
    pub victim_uid: u32,
    /// The sizes are in KiB, as the tracepoint reports them.
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    pub oom_score_adj: i32,
    /// [`oom_field`] bits.
    pub present: u32,
    pub victim_comm: [u8; COMM_LEN],
    /// The victim's and the trigger's cgroup ids (see [`CgroupOffsets`]); 0: unknown.
    pub victim_cgroup_id: u64,
    pub trigger_cgroup_id: u64,
}
const _: () =
    assert!(size_of::<OomEvent>() == size_of::<EventHeader>() + 8 + 5 * 8 + 8 + COMM_LEN + 16);

/// `sched:sched_process_exec`; `header.comm` is the new comm.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub old_pid: u32,
    pub filename_len: u32,
    pub filename: [u8; FILENAME_LEN],
}
const _: () = assert!(size_of::<ExecEvent>() == size_of::<EventHeader>() + 8 + FILENAME_LEN);

/// The process (thread group) ended; carries its final counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitEvent {
    pub header: EventHeader,
    pub stats: ProcStats,
    /// 1 if the process had a `PROC_STATS` entry (0: it was never seen, or the map was full).
    pub tracked: u32,
    /// 1 if `task_faults_*` are set (the kernel has BTF for the task layout).
    pub task_counters: u32,
    /// The process's minor and major faults by the kernel's own per-task counters, at the exit
    /// of its last thread (what `/proc/<pid>/stat` would say): the final values for the task
    /// sampler, which has no `PROC_STATS` fault counts.
    pub task_faults_minor: u64,
    pub task_faults_major: u64,
    /// The process's cgroup id at its exit (see [`CgroupOffsets`]); 0: unknown. `header.comm`
    /// is the thread-group leader's name, whichever thread exits last.
    pub cgroup_id: u64,
}
const _: () =
    assert!(size_of::<ExitEvent>() == size_of::<EventHeader>() + size_of::<ProcStats>() + 32);

/// One task (thread) as the task sampler (`task_sampler`, a BPF task iterator) writes it to its
/// seq file. Userspace sums the threads of each process. Kernel threads are not written. With
/// [`task_sample_flag::HOOK_STATS`] set, the process's `PROC_STATS` entry follows the record as
/// a [`ProcStats`], so one pass carries every per-process counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskSample {
    pub tgid: u32,
    pub tid: u32,
    /// This thread's own `min_flt` / `maj_flt`; 0 for a non-leader thread already exiting (its
    /// counts are moving to the group's, below).
    pub min_flt: u64,
    pub maj_flt: u64,
    /// Group leader only (`tid == tgid`; 0 otherwise): the faults of threads already reaped
    /// (`signal->min_flt`, `maj_flt`) and the process start time (monotonic ns).
    pub group_min_flt: u64,
    pub group_maj_flt: u64,
    pub start_time_ns: u64,
    /// RSS in pages by [`rss_member`] (`mm->rss_stat`), and the mm's address as a key; 0 for a
    /// thread without an mm (an exited leader's zombie).
    pub rss_pages: [u64; rss_member::COUNT],
    pub mm: u64,
    /// [`task_sample_flag`] bits.
    pub flags: u64,
    /// `mm->total_vm` in pages, with `rss_pages` (0 without an mm).
    pub total_vm_pages: u64,
}
const _: () = assert!(size_of::<TaskSample>() == 8 + 5 * 8 + 4 * 8 + 8 + 8 + 8);

/// Bits of [`TaskSample::flags`].
pub mod task_sample_flag {
    /// A [`super::ProcStats`] (the process's hook counters: mmap family, reclaim) follows this
    /// record. Set on group leaders that have a `PROC_STATS` entry.
    pub const HOOK_STATS: u64 = 1 << 0;
}

/// `SYSCALL_INFLIGHT` value: the arguments an mmap-family entry saw, used at exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallArgs {
    /// The call's event [`kind`]; for a call that is only counted (madvise), a tag no event
    /// kind has (`kind::COUNT`).
    pub kind: u32,
    pub reserved: u32,
    pub args: [u64; 5],
}
const _: () = assert!(size_of::<SyscallArgs>() == 8 + 5 * 8);

/// `RECLAIM_INFLIGHT` value: a stall that began.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimStart {
    pub ts_ns: u64,
    pub gfp_flags: u64,
    pub order: i32,
    pub memcg: u32,
}
const _: () = assert!(size_of::<ReclaimStart>() == 24);

#[cfg(feature = "user")]
mod pod {
    use super::{Config, Offsets, ProcStats, ReclaimStart, SyscallArgs, TaskSample};
    // SAFETY (all): `#[repr(C)]`, integer/array fields only, no padding (asserted above).
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for Offsets {}
    unsafe impl aya::Pod for ProcStats {}
    unsafe impl aya::Pod for TaskSample {}
    unsafe impl aya::Pod for SyscallArgs {}
    unsafe impl aya::Pod for ReclaimStart {}
}

#[cfg(test)]
mod tests {
    use super::{ProcStats, reclaim_bucket};

    #[test]
    fn reclaim_buckets_are_powers_of_two_of_microseconds_with_inclusive_upper_bounds() {
        use reclaim_bucket::{COUNT, slot, upper_bound_ns};
        assert_eq!(slot(0), 0);
        assert_eq!(slot(1), 0);
        assert_eq!(slot(64_000), 0, "64 µs is in le=64µs");
        assert_eq!(slot(64_001), 1);
        assert_eq!(slot(128_000), 1);
        assert_eq!(slot(128_001), 2);
        assert_eq!(upper_bound_ns(14), Some(1_048_576_000));
        assert_eq!(upper_bound_ns(15), None);
        assert_eq!(slot(1_048_576_000), 14);
        assert_eq!(slot(1_048_576_001), 15);
        assert_eq!(slot(u64::MAX), COUNT - 1);
        // Every bound and its neighbours, against the definition.
        for i in 0..COUNT - 1 {
            let bound = upper_bound_ns(i).unwrap();
            assert_eq!(slot(bound), i, "{bound}");
            assert_eq!(slot(bound + 1), i + 1, "{bound}+1");
            assert_eq!(
                slot(bound - 1),
                if bound - 1 <= 64_000 { 0 } else { i },
                "{bound}-1"
            );
        }
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let d = state >> (state % 40);
            let expected = (0..COUNT - 1)
                .find(|&i| d <= upper_bound_ns(i).unwrap())
                .unwrap_or(COUNT - 1);
            assert_eq!(slot(d), expected, "{d}");
        }
    }

    /// Found by the `event_decode` fuzz target: an exit record's counters near `u64::MAX`
    /// overflowed the sum of user and kernel faults while rendering the exit line.
    #[test]
    fn faults_minor_saturates_on_kernel_counters() {
        let stats = ProcStats {
            faults_user: u64::MAX,
            faults_kernel: 0x2924_0000,
            faults_major: 7,
            ..ProcStats::default()
        };
        assert_eq!(stats.faults_minor(), u64::MAX - 7);
        let usual = ProcStats {
            faults_user: 100,
            faults_kernel: 20,
            faults_major: 5,
            ..ProcStats::default()
        };
        assert_eq!(usual.faults_minor(), 115);
    }
}
