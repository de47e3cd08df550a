//! What `memtrace cluster` prints with `-o json` and `memtrace cluster serve` serves: the merged
//! views of a fleet's daemons and the diagnostics' findings.
//!
//! Every view carries its [`Coverage`]: which nodes answered and why the others did not, so a
//! partial result is always stated, never silent.
use serde::{Deserialize, Serialize};

use crate::diagnose::InstanceRef;
use crate::workloads::{NodeSummary, OomKill, OomKillCounts, OomScope, WorkloadKind};

/// Version of the cluster views' schema.
pub const CLUSTER_SCHEMA_VERSION: u32 = 1;

/// Which of the asked nodes answered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Targets asked.
    pub asked: u32,
    /// Targets that answered with a summary memtrace could read.
    pub answered: u32,
    /// One entry per target that did not, in target order.
    pub failures: Vec<NodeFailure>,
}

/// A target that did not answer usefully, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFailure {
    /// The target as given (`host:port` or URL).
    pub target: String,
    /// The node's name, when it is known (from an earlier answer or the discovery).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub node: Option<String>,
    /// One line: what went wrong, e.g. `connection refused`, `timed out after 2.0 s`,
    /// `unsupported schema_version 7 (this memtrace reads 1)`.
    pub error: String,
    /// How long the attempt took before it was given up.
    pub elapsed_seconds: f64,
}

/// `memtrace cluster top -o json` and the relay's `/api/v1/cluster/top`: every workload across
/// the nodes that answered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopView {
    pub schema_version: u32,
    pub generated_unix_ms: u64,
    pub coverage: Coverage,
    /// Highest pressure first, then largest total RSS.
    pub workloads: Vec<WorkloadAcrossNodes>,
}

/// One workload summed over the nodes it runs on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadAcrossNodes {
    pub workload: String,
    pub kind: WorkloadKind,
    /// Nodes it has at least one instance on.
    pub nodes: u32,
    pub instances: u32,
    /// anon + file + shmem, summed over every instance.
    pub rss_bytes_total: u64,
    /// The largest instance's anon + file + shmem.
    pub rss_bytes_max: u64,
    /// That largest instance.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub largest: Option<InstanceRef>,
    /// Max over median anon RSS of its instances (1 = even); absent below two instances or when
    /// the median is 0.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub anon_skew: Option<f64>,
    /// The highest pressure score of any instance (0–100).
    pub pressure_score_max: f64,
    /// OOM kills within the daemons' retention windows, summed.
    pub oom_kills: OomKillCounts,
}

/// `memtrace cluster nodes -o json` and `/api/v1/cluster/nodes`: one row per target, answered or
/// not.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodesView {
    pub schema_version: u32,
    pub generated_unix_ms: u64,
    pub coverage: Coverage,
    /// Answered nodes by name, then the targets that failed in target order.
    pub nodes: Vec<NodeStatus>,
}

/// A target and what it said: its node summary, or why it did not answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The target as given.
    pub target: String,
    /// Present when it answered.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub node: Option<NodeSummary>,
    /// Workloads it reported, and those its cap left out.
    pub workloads: u32,
    pub omitted_workloads: u32,
    /// Present when it did not answer.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// How long the attempt took.
    pub elapsed_seconds: f64,
}

/// `memtrace cluster oom -o json` and `/api/v1/cluster/oom`: every node's OOM kills merged by
/// time, with the storms among them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OomView {
    pub schema_version: u32,
    pub generated_unix_ms: u64,
    pub coverage: Coverage,
    /// The storm rule's window: kills of one workload and scope on at least
    /// [`OomView::storm_min_nodes`] nodes within this many seconds of the first are a storm.
    pub storm_window_seconds: f64,
    pub storm_min_nodes: u32,
    /// Newest first.
    pub kills: Vec<NodeOomKill>,
    /// Newest first.
    pub storms: Vec<OomStorm>,
}

/// An OOM kill and the node it happened on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeOomKill {
    pub node: String,
    #[serde(flatten)]
    pub kill: OomKill,
    /// Index into [`OomView::storms`] when the kill is part of a storm.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub storm: Option<u32>,
}

/// OOM kills of one workload, for one reason, on several nodes at about the same time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OomStorm {
    pub workload: String,
    pub scope: OomScope,
    pub first_unix_ms: u64,
    pub last_unix_ms: u64,
    pub kills: u32,
    /// Sorted.
    pub nodes: Vec<String>,
}
