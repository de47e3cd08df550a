//! The JSON snapshot schema (`GET /api/v1/snapshot`, `GET /api/v1/oom`), version 1.
//!
//! This is a published contract (the cluster mode consumes it from many nodes): fields are only
//! ever added (see the crate documentation); a removal or a change of meaning bumps
//! [`SCHEMA_VERSION`]. Every type here is self-contained (no reader types leak in) and
//! round-trips through serde.
use serde::{Deserialize, Serialize};

use crate::{Counters, FamilySet};

/// Version of this schema, carried in every snapshot.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub schema_version: u32,
    pub node: NodeIdentityView,
    /// RFC 3339 wall-clock time the snapshot was taken.
    pub timestamp: String,
    pub timestamp_unix_ms: u64,
    /// Window over which the `rates` are computed.
    pub rate_window_seconds: f64,
    /// Processes, highest pressure score first.
    pub processes: Vec<ProcessView>,
    /// Cgroups, highest pressure score first.
    pub cgroups: Vec<CgroupView>,
    pub node_memory: NodeMemoryView,
    /// Most recent OOM kills, newest first (without flight recordings; see `/api/v1/oom`).
    pub recent_ooms: Vec<OomRecord>,
    pub pipeline: PipelineView,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentityView {
    /// `--node-name` (default `$NODE_NAME`, else the hostname): the name the fleet knows the node
    /// by. Absent from daemons older than the cross-node mode.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    pub hostname: String,
    pub boot_id: String,
    pub kernel_release: String,
}

/// Who a cgroup belongs to (parsed from its path).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerView {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pod_uid: Option<String>,
    /// Kubernetes QoS class: Guaranteed, Burstable, BestEffort.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub qos: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub systemd_unit: Option<String>,
}

/// Per-second rates derived from two cumulative samples `rate_window_seconds` apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub faults_minor_per_sec: f64,
    pub faults_major_per_sec: f64,
    pub mmap_bytes_per_sec: f64,
    pub munmap_bytes_per_sec: f64,
    pub brk_grow_bytes_per_sec: f64,
    /// Seconds stalled in reclaim per second of wall time (0–N for N threads).
    pub reclaim_stall_seconds_per_sec: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessView {
    pub pid: u32,
    pub comm: String,
    /// Truncated command line.
    pub cmdline: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup: Option<String>,
    pub owner: OwnerView,
    /// The workload key, the same string on every node the workload runs on (see
    /// [`crate::workloads::WorkloadKind`] for the rules).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workload_kind: Option<crate::workloads::WorkloadKind>,
    /// The running copy of the workload this process belongs to: a pod name (or uid), a short
    /// container id, a systemd unit, or `pid/<pid>`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub instance: Option<String>,
    /// Cumulative kernel counters since memtrace started watching the process.
    pub counters: Counters,
    pub rates: Rates,
    /// anon + file + shmem.
    pub rss_bytes: u64,
    /// 0–100, see README "Memory-pressure score".
    pub pressure_score: f64,
    pub oom_kills_as_victim: u64,
    pub oom_kills_as_trigger: u64,
    /// RSS change per second over the growth window (`--growth-window`, default 60 s), from the
    /// model's history: positive while growing. Absent until the process (cgroup, instance) has
    /// been watched for a whole window, and from daemons older than the growth model.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rss_growth_bytes_per_sec: Option<f64>,
    /// Set while the growth looks like a leak (see [`LeakHint`]); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub leak_hint: Option<LeakHint>,
    /// Reclaim stalls by duration (see [`RECLAIM_STALL_BUCKET_BOUNDS_SECONDS`]), since memtrace
    /// started watching the process. Absent when it never stalled, and from daemons older than
    /// the histogram.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reclaim_stall_buckets: Option<Vec<u64>>,
}

/// Upper bounds (inclusive, seconds) of the reclaim-stall latency buckets
/// (`reclaim_stall_buckets` of processes and cgroups): powers of two of microseconds from 64 µs
/// to 1.048576 s. `reclaim_stall_buckets[i]` counts the stalls of at most bound `i` and more
/// than bound `i − 1` (per bucket, not cumulative); one more entry than bounds counts those
/// longer than the last bound. Their sum is the stall count (`counters.reclaim_stalls`, where the
/// daemon counts buckets; a live trace does not).
pub const RECLAIM_STALL_BUCKET_BOUNDS_SECONDS: [f64; 15] = [
    0.000_064, 0.000_128, 0.000_256, 0.000_512, 0.001_024, 0.002_048, 0.004_096, 0.008_192,
    0.016_384, 0.032_768, 0.065_536, 0.131_072, 0.262_144, 0.524_288, 1.048_576,
];

/// Sustained growth: RSS rose at least `--leak-min-growth` (default 1 MiB/min) over the whole
/// `--leak-window` (default 10 min) and never fell by more than the model's tolerance meanwhile.
/// A hint, not a verdict: caches and warm-ups grow too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeakHint {
    /// When the sustained growth began (the start of the window it was first seen over).
    pub since_unix_ms: u64,
    /// The window it was judged over.
    pub window_seconds: f64,
    /// Mean growth over that window.
    pub growth_bytes_per_sec: f64,
    /// RSS added since `since_unix_ms`.
    pub growth_bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PsiView {
    pub some_avg10: f64,
    pub some_avg60: f64,
    pub some_total_us: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub full_avg10: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub full_avg60: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub full_total_us: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupView {
    /// As in `/proc/<pid>/cgroup` (the memory controller's hierarchy on hybrid hosts).
    pub path: String,
    pub owner: OwnerView,
    /// The workload key when the cgroup itself names the workload (a pod, a container, a systemd
    /// service); absent when only its processes' comms do.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workload: Option<String>,
    pub processes: u32,
    /// Sum of its live processes' counters plus those of its processes that exited.
    pub counters: Counters,
    pub rates: Rates,
    pub rss_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub usage_bytes: Option<u64>,
    /// `None`: unlimited.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub psi: Option<PsiView>,
    /// cgroup v2 memory.events `oom_kill`, or v1 memory.oom_control `oom_kill`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kernel_oom_kills: Option<u64>,
    /// OOM kills memtrace saw in this cgroup.
    pub oom_kills: u64,
    pub pressure_score: f64,
    /// RSS change per second over the growth window (`--growth-window`, default 60 s), from the
    /// model's history: positive while growing. Absent until the process (cgroup, instance) has
    /// been watched for a whole window, and from daemons older than the growth model.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rss_growth_bytes_per_sec: Option<f64>,
    /// Reclaim stalls of its processes by duration, exited ones included (see
    /// [`ProcessView::reclaim_stall_buckets`]). Absent when none stalled.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reclaim_stall_buckets: Option<Vec<u64>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeMemoryView {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub psi: Option<PsiView>,
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    pub mem_free_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    pub anon_bytes: u64,
    pub page_cache_bytes: u64,
    /// Unusable free space index (0 = none, 1 = all free memory in too-small blocks).
    pub fragmentation_index_order3: f64,
    pub fragmentation_index_order9: f64,
    pub pgfault_total: u64,
    pub pgmajfault_total: u64,
    pub allocstall_total: u64,
    pub compact_stall_total: u64,
    pub compact_fail_total: u64,
    pub oom_kill_total: u64,
    pub pgscan_direct_total: u64,
    pub workingset_refault_total: u64,
}

/// One second of a victim's history before an OOM kill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlightSample {
    /// Seconds relative to the kill (≤ 0).
    pub offset_seconds: f64,
    pub rss_anon_bytes: u64,
    pub rss_file_bytes: u64,
    pub rss_shmem_bytes: u64,
    pub faults_minor_per_sec: f64,
    pub faults_major_per_sec: f64,
    pub reclaim_stall_seconds_per_sec: f64,
    /// The victim's cgroup usage at that time, where known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup_usage_bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OomRecord {
    pub timestamp: String,
    pub timestamp_unix_ms: u64,
    pub victim_pid: u32,
    pub victim_comm: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub victim_cgroup: Option<String>,
    pub victim_owner: OwnerView,
    /// The victim's workload key (see [`ProcessView::workload`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub victim_workload: Option<String>,
    pub trigger_pid: u32,
    pub trigger_comm: String,
    /// From the kernel's oom:mark_victim (absent where the kernel does not report them).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub anon_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shmem_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub total_vm_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pgtables_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub oom_score_adj: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup_limit_bytes: Option<u64>,
    /// Up to 60 s of per-second history before the kill, oldest first (empty in snapshots). The
    /// last sample is taken when the daemon receives the kill (offset ≈ 0), so the final
    /// moments' rates are in it.
    #[serde(default)]
    pub flight_recording: Vec<FlightSample>,
    /// The victim's cgroup usage read when the daemon received the kill (absent when the cgroup
    /// is unknown or already gone).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup_usage_at_kill_bytes: Option<u64>,
    /// What the victim's cgroup's memory was made of at the kill (`memory.stat`, hierarchical),
    /// absent when it could not be read.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup_memory_stat: Option<CgroupMemoryStat>,
    /// The cgroup's other live processes at the kill, largest RSS first (at most 20).
    #[serde(default)]
    pub cgroup_processes: Vec<CgroupProcess>,
}

/// A cgroup's `memory.stat` breakdown (hierarchical: descendants included), in bytes. cgroup v1
/// and v2 name things differently; each field says where it comes from, and is absent where the
/// cgroup version or kernel does not report it. `anon + file + kernel` is about the usage
/// (v2 also charges `sock` on top), and `lru_anon + lru_file + unevictable + kernel` is even while
/// a killed process's memory is being freed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupMemoryStat {
    /// cgroup version the figures come from: 1 or 2.
    pub version: u8,
    /// Anonymous memory: v2 `anon`, v1 `total_rss`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub anon_bytes: Option<u64>,
    /// Page cache (shmem and tmpfs included): v2 `file`, v1 `total_cache`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file_bytes: Option<u64>,
    /// Shared memory and tmpfs (part of `file_bytes`): v2 `shmem`, v1 `total_shmem`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shmem_bytes: Option<u64>,
    /// Page cache mapped into processes (part of `file_bytes`): v2 `file_mapped`, v1
    /// `total_mapped_file`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file_mapped_bytes: Option<u64>,
    /// All kernel memory charged to the cgroup: v2 `kernel` (Linux 5.18+; before, the sum of
    /// `kernel_stack`, `pagetables`, `percpu` and `slab`), v1 `memory.kmem.usage_in_bytes`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kernel_bytes: Option<u64>,
    /// v2 `kernel_stack`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kernel_stack_bytes: Option<u64>,
    /// v2 `pagetables`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pagetables_bytes: Option<u64>,
    /// v2 `slab`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub slab_bytes: Option<u64>,
    /// Network buffers: v2 `sock`, v1 `memory.kmem.tcp.usage_in_bytes`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sock_bytes: Option<u64>,
    /// Swapped out: v1 `total_swap`, v2 `memory.swap.current`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub swap_bytes: Option<u64>,
    /// Anonymous pages on the LRU lists (`active_anon + inactive_anon`, v1 with `total_`). Unlike
    /// `anon_bytes` (mapped pages) they stay until the pages are freed and uncharged, so while a
    /// killed victim's memory is being torn down these, not `anon_bytes`, add up to the usage.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lru_anon_bytes: Option<u64>,
    /// Page cache on the LRU lists (`active_file + inactive_file`, v1 with `total_`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lru_file_bytes: Option<u64>,
    /// Unevictable pages (mlocked, ramfs): `unevictable`, v1 `total_unevictable`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unevictable_bytes: Option<u64>,
}

/// A process of an OOM victim's cgroup at the kill.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupProcess {
    pub pid: u32,
    pub comm: String,
    /// anon + file + shmem.
    pub rss_bytes: u64,
}

/// The daemon's own health: what attached and what was lost where.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineView {
    /// Probe families attached (see `memtrace daemon --help`): which counters are live. The
    /// mmap-family call counters, for one, are only counted with `mmap`.
    #[serde(default)]
    pub families: FamilySet,
    pub probes_attached: u32,
    pub probes_failed: u32,
    pub tracked_processes: u64,
    pub events_received: u64,
    pub lost_kernel_ring_full: u64,
    pub lost_kernel_map_full: u64,
    pub lost_userspace_queue: u64,
    pub lost_decode: u64,
    /// The rolling on-disk store (`memtrace daemon --record-dir`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingView>,
}

/// What the daemon's recording store has written, failed to write, and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingView {
    /// Frames written since the daemon started.
    pub frames_written: u64,
    /// Frames (or file operations: creating, closing, removing old files) that failed, e.g. a
    /// full disk. The daemon runs on.
    pub write_errors: u64,
    /// Frames dropped because the writer was still busy with earlier ones (a slow disk).
    pub frames_dropped: u64,
}

/// `GET /api/v1/oom`: the daemon's OOM history, newest first, each with its flight recording.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OomResponse {
    pub schema_version: u32,
    pub ooms: Vec<OomRecord>,
}

/// The body of a 404: what the daemon serves instead.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotFound {
    pub error: String,
    pub routes: Vec<String>,
}
