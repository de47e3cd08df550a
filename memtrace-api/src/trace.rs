//! The lines of `memtrace trace --output json`, version 1: one JSON object per line, its `kind`
//! naming its type ([`TraceLine`]). Events stream as they happen; the per-process `summary`
//! lines and one `losses` line follow at the end (and every `--interval`).
//!
//! # Naming convention
//!
//! One convention for the trace's JSON, the snapshot API ([`crate::Snapshot`],
//! [`crate::OomRecord`]) and the Prometheus metrics, so a script reads every output the same way:
//!
//! - **One name per thing, everywhere**: `pid`, `tid`, `comm`, `cgroup` (the path as in
//!   `/proc/<pid>/cgroup`, the memory controller's on cgroup v1 hosts; omitted when unknown),
//!   `victim_pid`, `victim_comm`, `trigger_pid`, `trigger_comm`, `uid`, `oom_score_adj`. A
//!   process's cumulative counters are [`Counters`] under the key `counters`. Metric labels use
//!   the same words (`comm`, `cgroup`).
//! - **Base units, named by suffix**: `_bytes` (never KiB), `_ns`, `_us`, `_seconds`, `_pages`;
//!   counts are plural nouns (`reclaim_stalls`, `mmap_calls`); metrics add `_total` to counters.
//!   The one exception: the arguments of a system call keep the name its man page gives them
//!   (`addr`, `len` in bytes, `prot`, `flags`, `fd`, and `ret`, the raw return value: an address
//!   or `-errno`), prefixed `old_`/`new_` where a call has both (mremap, brk).
//! - **Addresses** are numbers under a name that is or ends in `addr` (or `ip`), each with its
//!   `0x…` form in `<name>_hex`: a JSON reader may keep numbers as doubles, exact only to 2^53,
//!   and `/proc/<pid>/maps` prints hex.
//! - **Bit sets with a stable user-visible ABI** (`prot`, the mmap and mremap `flags`, the x86
//!   page-fault `error_code`) keep the raw integer under their name and add `<name>_names`: the
//!   set bits as lowercase words in bit order (`"prot": 3, "prot_names": ["read", "write"]`),
//!   then the bits without a name, together, as one `0x…` value. `gfp_flags` is only raw: its bit layout is internal to
//!   the kernel and differs between kernel versions and configurations.
//! - **Booleans** are JSON booleans (`failed`, `grew`, `user`, `memcg`, `exited`), never 0/1.
//! - **Time**: every line, `summary` and `losses` included, has `ts` (wall clock, RFC 3339 UTC
//!   with nanoseconds) and `ts_ns` (CLOCK_MONOTONIC nanoseconds, as the kernel stamps events:
//!   for ordering and differences).
//! - **Losses** are `lost_<stage>`, as in the snapshot's [`crate::PipelineView`].
//! - Fields whose value a kernel may not report are omitted rather than zero (`Option`).
//!
//! Compatibility: as for the snapshot, fields are only added within a version; readers must
//! ignore fields they do not know (these types do).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Counters;

/// One line of `memtrace trace -o json`, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TraceLine {
    Fault(FaultLine),
    Mmap(MmapLine),
    Munmap(MunmapLine),
    Brk(BrkLine),
    Mremap(MremapLine),
    Reclaim(ReclaimLine),
    Oom(OomLine),
    Exec(ExecLine),
    Exit(ExitLine),
    Summary(SummaryLine),
    Losses(LossesLine),
}

impl TraceLine {
    /// The `kind` this line is written with.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fault(_) => "fault",
            Self::Mmap(_) => "mmap",
            Self::Munmap(_) => "munmap",
            Self::Brk(_) => "brk",
            Self::Mremap(_) => "mremap",
            Self::Reclaim(_) => "reclaim",
            Self::Oom(_) => "oom",
            Self::Exec(_) => "exec",
            Self::Exit(_) => "exit",
            Self::Summary(_) => "summary",
            Self::Losses(_) => "losses",
        }
    }
}

/// Declares the event lines: the fields every event shares, then its own; a line marked
/// `[collapsible]` also has the fields of a `--collapse` run.
macro_rules! event_lines {
    ($(
        $(#[$meta:meta])*
        $name:ident $([$collapsible:ident])? { $( $(#[$field_meta:meta])* $field:ident : $ty:ty ),* $(,)? }
    )*) => {$(
        event_line! {
            $(#[$meta])*
            $name $([$collapsible])? { $( $(#[$field_meta])* $field: $ty, )* }
        }
    )*};
}

macro_rules! event_line {
    (
        $(#[$meta:meta])*
        $name:ident [collapsible] { $( $(#[$field_meta:meta])* $field:ident : $ty:ty, )* }
    ) => {
        event_line! {
            $(#[$meta])*
            $name {
                $( $(#[$field_meta])* $field: $ty, )*
                /// With `--collapse`: how many identical events this line stands for (same
                /// process, kind, size, flags; the first one's fields are shown), absent for a
                /// single event.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                events: Option<u64>,
                /// With `events`: when the last of them happened.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                last_ts: Option<String>,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                last_ts_ns: Option<u64>,
            }
        }
    };
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$field_meta:meta])* $field:ident : $ty:ty, )* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            /// Wall-clock time, RFC 3339 UTC with nanoseconds.
            pub ts: String,
            /// CLOCK_MONOTONIC nanoseconds, as the kernel stamped the event.
            pub ts_ns: u64,
            /// The task that produced the event (for `oom`, the one that triggered the kill).
            pub pid: u32,
            pub tid: u32,
            pub comm: String,
            pub cpu: u32,
            /// Cgroup of the process the event is about (the victim, for `oom`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub cgroup: Option<String>,
            $( $(#[$field_meta])* pub $field: $ty, )*
        }
    };
}

event_lines! {
    /// A page fault (with `--faults`, one in `--sample N` per CPU).
    FaultLine [collapsible] {
        /// The faulting address.
        addr: u64,
        addr_hex: String,
        /// The instruction that faulted.
        ip: u64,
        ip_hex: String,
        /// x86 page-fault error code: `present`, `write`, `user`, `reserved`, `fetch`, `pkey`,
        /// `shadow_stack`, `sgx`.
        error_code: u64,
        error_code_names: Vec<String>,
        /// Taken in user mode (the exceptions:page_fault_user tracepoint).
        user: bool,
    }

    /// An mmap returned (failed calls too).
    MmapLine [collapsible] {
        /// The mapping's address (the result; 0 when the call failed).
        addr: u64,
        addr_hex: String,
        len: u64,
        prot: u32,
        /// `read`, `write`, `exec`, …
        prot_names: Vec<String>,
        flags: u32,
        /// `shared`, `private`, `fixed`, `anonymous`, …
        flags_names: Vec<String>,
        fd: i32,
        ret: i64,
        failed: bool,
    }

    /// A munmap returned.
    MunmapLine [collapsible] {
        addr: u64,
        addr_hex: String,
        len: u64,
        ret: i64,
        failed: bool,
    }

    /// The program break moved (or a move failed).
    BrkLine [collapsible] {
        /// The break before the call. This, `old_addr_hex`, `len` and `grew` are absent when it
        /// is not known: the process's first brk since the trace attached.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old_addr: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old_addr_hex: Option<String>,
        new_addr: u64,
        new_addr_hex: String,
        /// How far it moved (asked to move, when refused).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        len: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grew: Option<bool>,
        ret: i64,
        failed: bool,
    }

    /// An mremap returned.
    MremapLine [collapsible] {
        old_addr: u64,
        old_addr_hex: String,
        old_len: u64,
        new_addr: u64,
        new_addr_hex: String,
        new_len: u64,
        flags: u32,
        /// `maymove`, `fixed`, `dontunmap`.
        flags_names: Vec<String>,
        ret: i64,
        failed: bool,
    }

    /// A direct or memcg reclaim stall ended.
    ReclaimLine [collapsible] {
        duration_ns: u64,
        reclaimed_pages: u64,
        order: i32,
        /// Raw: the bit layout is the kernel's own and changes between versions.
        gfp_flags: u64,
        /// Reclaim in a cgroup at its limit (else global direct reclaim).
        memcg: bool,
    }

    /// The OOM killer marked a victim (one line per task, also for memory.oom.group).
    OomLine {
        victim_pid: u32,
        victim_comm: String,
        /// The victim's owner; this and the sizes only where the kernel reports them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total_vm_bytes: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        anon_rss_bytes: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_rss_bytes: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shmem_rss_bytes: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pgtables_bytes: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        oom_score_adj: Option<i32>,
        /// The task whose allocation invoked the OOM killer.
        trigger_pid: u32,
        trigger_comm: String,
    }

    /// A process called exec.
    ExecLine {
        filename: String,
        /// The pid before exec (differs when a thread other than the leader called it).
        old_pid: u32,
    }

    /// A process (thread group) ended.
    ExitLine {
        /// Whether the kernel kept counters for it (false: never seen, or its map was full).
        tracked: bool,
        /// Its final counters.
        counters: Counters,
    }
}

/// One process (or, with `--by`, one group of processes) in the summary, most page faults first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryLine {
    /// When the summary was taken.
    pub ts: String,
    pub ts_ns: u64,
    pub pid: u32,
    pub comm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Ended during the trace (its counters are final); in a group, all of its processes.
    pub exited: bool,
    pub counters: Counters,
    /// RSS growth (anon + file + shmem) over the last few seconds of the trace's samples, bytes
    /// per second; absent until two samples of the row exist, and for exited processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_growth_bytes_per_sec: Option<f64>,
    /// With `--by comm|cgroup|workload`: what the row groups by, and its key (`pid`, `comm`
    /// and `cgroup` are then those of the group's first process, most page faults first;
    /// `counters` are the group's sums, its RSS that of the processes still running, or the
    /// largest RSS at exit when all have exited). Absent
    /// with `--by pid`, the default: one row per process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// With `group_by`: the processes in the group, and how many of them exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_processes: Option<u32>,
}

/// Where events were lost, by stage, since the trace started; follows each summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossesLine {
    pub ts: String,
    pub ts_ns: u64,
    /// Events the kernel could not put in a full ring buffer…
    pub lost_kernel_ring_full: u64,
    /// … by event kind (every kind, zeros included).
    pub lost_kernel_ring_full_by_kind: BTreeMap<String, u64>,
    /// Updates lost to a full kernel map (per-process counters, in-flight calls, filters).
    pub lost_kernel_map_full: u64,
    /// Decoded events dropped because the output fell behind.
    pub lost_userspace_queue: u64,
    /// Malformed records.
    pub lost_decode: u64,
    /// Records read from the rings and decoded.
    pub events_received: u64,
    /// Events handed to the output (before the `--pid`/`--comm`/`--cgroup`/`--event` selection).
    pub events_delivered: u64,
    /// Event lines written (after the selection; a collapsed run is one line).
    #[serde(default)]
    pub events_shown: u64,
}
