//! `GET /api/v1/workloads`: one node's compact per-workload summary, the input of the fan-out
//! (`memtrace cluster`).
//!
//! A **workload** is what runs the same code on every node: its key ([`WorkloadSummary::workload`])
//! is the same string wherever it runs (see [`WorkloadKind`] for how it is derived), so a client
//! can line up the replicas of one workload across nodes. An **instance** is one running copy on
//! this node: a pod, a container, a systemd unit, or (for a bare process) the process. An instance
//! that restarts is a new instance (new key or new `started_unix_ms`), so a history never spans a
//! restart.
//!
//! Sizes are bounded so that a fan-out to thousands of nodes stays cheap: the daemon caps the
//! number of workloads (the rest are counted in [`WorkloadsResponse::omitted_workloads`]), and
//! each instance's history is downsampled (one point per
//! [`HistorySpec::step_seconds`], at most [`HistorySpec::max_points`]); the client chooses how
//! much of it to receive with `?history=DURATION` (`0` for none). The daemon gzips the body
//! when the client sends `Accept-Encoding: gzip`.
//!
//! Same compatibility rule as the snapshot (see the crate documentation); the golden fixture is
//! `tests/fixtures/workloads-v1.json`.
use serde::{Deserialize, Serialize};

use crate::{FamilySet, LeakHint, PsiView, Rates};

/// Version of the workloads schema, carried in every response.
pub const WORKLOADS_SCHEMA_VERSION: u32 = 1;

/// The body of `GET /api/v1/workloads`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadsResponse {
    pub schema_version: u32,
    pub node: NodeSummary,
    pub timestamp_unix_ms: u64,
    /// Window over which the instances' `rates` are computed.
    pub rate_window_seconds: f64,
    pub history: HistorySpec,
    /// Workloads on this node, highest pressure score first; pinned workloads (`--pin`) are
    /// always included.
    pub workloads: Vec<WorkloadSummary>,
    /// Workloads left out by the daemon's cap (never pinned ones).
    pub omitted_workloads: u32,
    /// OOM kills this daemon saw within its retention window, newest first.
    pub ooms: Vec<OomKill>,
}

/// The node as a whole: who it is and how its memory is doing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeSummary {
    /// `--node-name` (default `$NODE_NAME`, else the hostname): the name the fleet knows it by.
    pub name: String,
    pub hostname: String,
    pub boot_id: String,
    pub kernel_release: String,
    /// Version of the memtrace daemon answering.
    pub memtrace_version: String,
    /// `--cgroup-root`, when the daemon's model is limited to a cgroup subtree. Then the memory
    /// figures below are that cgroup's (its limit stands for the node's RAM) where it has a limit.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup_root: Option<String>,
    /// What `/readyz` says: every requested probe family attached.
    pub ready: bool,
    #[serde(default)]
    pub families: FamilySet,
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub psi: Option<PsiView>,
    /// Unusable free space index (0 = none, 1 = all free memory in too-small blocks).
    pub fragmentation_index_order3: f64,
    pub fragmentation_index_order9: f64,
    /// Seconds stalled in reclaim per second, summed over every process in scope.
    pub reclaim_stall_seconds_per_sec: f64,
    /// The highest pressure score of any process in scope (0–100).
    pub pressure_score: f64,
    /// Processes in scope.
    pub processes: u32,
}

/// How a workload's key was derived, most specific first.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// `namespace/Kind/name` of the pod's controller (a ReplicaSet's hash stripped to its
    /// `Deployment`, a CronJob's Job to its `CronJob`), or `namespace/Pod/name` for a pod without
    /// a controller; `pod/<uid>` when only the pod uid from the cgroup path is known (no
    /// Kubernetes metadata).
    Kubernetes,
    /// The systemd service, e.g. `redis-server.service`; a template's instances
    /// (`redis-server@6379.service`, …) are one workload `redis-server@.service`.
    Systemd,
    /// The container's name or image, where the runtime's cgroup path reveals it.
    Container,
    /// None of the above: the process's command name.
    #[default]
    Comm,
}

/// One workload on this node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSummary {
    pub workload: String,
    pub kind: WorkloadKind,
    /// Matched a `--pin` pattern: always has its own Prometheus series and is never omitted.
    #[serde(default)]
    pub pinned: bool,
    pub instances: Vec<InstanceSummary>,
    /// Instances left out by the daemon's per-workload cap (the ones with the least pressure);
    /// absent when none were (and from older daemons).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub omitted_instances: Option<u32>,
}

/// One running copy of a workload on this node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSummary {
    /// Unique on this node while it lives: the pod name (or uid), the container id, the unit, or
    /// `pid/<pid>` for a bare process.
    pub instance: String,
    /// When memtrace first saw it (a restart is a new instance).
    pub started_unix_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup: Option<String>,
    pub processes: u32,
    pub rss_anon_bytes: u64,
    pub rss_file_bytes: u64,
    pub rss_shmem_bytes: u64,
    pub swap_bytes: u64,
    pub rates: Rates,
    /// The highest pressure score of its processes (0–100).
    pub pressure_score: f64,
    /// Its cgroup's memory limit (`None`: unlimited or unknown).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub limit_bytes: Option<u64>,
    /// OOM kills of its processes within the daemon's retention window, by scope.
    pub oom_kills: OomKillCounts,
    /// Downsampled history, oldest first (empty with `?history=0`).
    pub history: InstanceHistory,
    /// RSS change per second over the growth window (`--growth-window`, default 60 s), from the
    /// model's history: positive while growing. Absent until the instance has
    /// been watched for a whole window, and from daemons older than the growth model.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rss_growth_bytes_per_sec: Option<f64>,
    /// Set while the growth looks like a leak (see [`LeakHint`]); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub leak_hint: Option<LeakHint>,
}

/// OOM kills split by what ran out of memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomKillCounts {
    /// A cgroup reached its memory limit.
    pub memcg: u64,
    /// The node ran out of memory.
    pub global: u64,
}

/// The daemon's history resolution (`--history-step`, `--history-points`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistorySpec {
    pub step_seconds: u32,
    pub max_points: u32,
    /// Instances that keep a history at most (the daemon's memory bound); absent from older
    /// daemons.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_instances: Option<u32>,
    /// Instances that went without a history because `max_instances` were kept (the ones with
    /// the lowest pressure, then the smallest RSS), since the daemon started.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub evicted_instances: Option<u64>,
}

/// One instance's downsampled history: columns of equal length, point `i` at
/// `start_unix_s + i * step_seconds` (the step of [`WorkloadsResponse::history`]). Each point is
/// the value at the end of its step (gauges) or the mean rate over it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceHistory {
    pub start_unix_s: u64,
    pub rss_anon_bytes: Vec<u64>,
    /// anon + file + shmem.
    pub rss_bytes: Vec<u64>,
    pub reclaim_stall_seconds_per_sec: Vec<f64>,
}

/// Why the OOM killer ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OomScope {
    /// A cgroup reached its memory limit.
    Memcg,
    /// The node ran out of memory.
    Global,
    #[default]
    Unknown,
}

/// An OOM kill, in the summary's terms.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OomKill {
    pub timestamp_unix_ms: u64,
    pub workload: String,
    pub instance: String,
    pub victim_pid: u32,
    pub victim_comm: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub victim_cgroup: Option<String>,
    pub scope: OomScope,
    /// anon + file + shmem at the kill, where the kernel reported it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup_limit_bytes: Option<u64>,
}
