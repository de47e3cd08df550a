//! The findings of `memtrace cluster diagnose` (`-o json`, and `memtrace cluster serve`).
//!
//! Every finding names its workload, the nodes and instances involved and a one-line verdict, and
//! carries its [`Evidence`]: the numbers the rule compared with its thresholds (sizes in bytes,
//! rates per hour or per second as their names say), so a reader can check the verdict.
use serde::{Deserialize, Serialize};

use crate::{cluster::Coverage, workloads::OomScope};

/// `memtrace cluster diagnose -o json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiagnoseReport {
    pub schema_version: u32,
    pub generated_unix_ms: u64,
    pub coverage: Coverage,
    pub findings: Vec<Finding>,
}

/// One diagnosis with its evidence.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub workload: String,
    /// One line a human acts on.
    pub verdict: String,
    /// Nodes involved.
    pub nodes: Vec<String>,
    /// Instances involved.
    pub instances: Vec<InstanceRef>,
    /// The numbers behind the verdict, one shape per [`FindingKind`].
    pub evidence: Evidence,
}

/// What was found.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    #[default]
    HotShard,
    Leak,
    OomStorm,
    NoisyNeighbour,
    AppOrNode,
}

/// An instance on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceRef {
    pub node: String,
    pub instance: String,
}

/// The evidence of a finding, keyed by its kind: `{"hot_shard": {…}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    HotShard(HotShardEvidence),
    Leak(LeakEvidence),
    OomStorm(OomStormEvidence),
    NoisyNeighbour(NoisyNeighbourEvidence),
    AppOrNode(AppOrNodeEvidence),
}

impl Default for Evidence {
    /// The evidence of the default [`FindingKind`].
    fn default() -> Self {
        Self::HotShard(HotShardEvidence::default())
    }
}

impl Evidence {
    /// The kind of finding this evidence belongs to.
    pub fn kind(&self) -> FindingKind {
        match self {
            Self::HotShard(_) => FindingKind::HotShard,
            Self::Leak(_) => FindingKind::Leak,
            Self::OomStorm(_) => FindingKind::OomStorm,
            Self::NoisyNeighbour(_) => FindingKind::NoisyNeighbour,
            Self::AppOrNode(_) => FindingKind::AppOrNode,
        }
    }
}

/// Replica skew: one instance holds far more anon RSS than the workload's median.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HotShardEvidence {
    /// Instances of the workload compared, and the nodes they run on.
    pub instance_count: u32,
    pub node_count: u32,
    pub median_rss_anon_bytes: u64,
    pub max_rss_anon_bytes: u64,
    /// max / median (the median counted as at least one byte).
    pub ratio: f64,
    /// Every instance at or above the ratio and the minimum size, largest first (the first is
    /// the one the verdict names).
    pub outliers: Vec<InstanceBytes>,
}

/// An instance and a size.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceBytes {
    pub node: String,
    pub instance: String,
    pub bytes: u64,
}

/// How widespread a leak is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakClass {
    /// At least the `all` share of the instances leak: a code regression.
    #[default]
    All,
    /// Some instances leak: they are named.
    Subset,
    /// The leaking instances changed since the previous window.
    Migrating,
}

/// Leak localisation over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeakEvidence {
    pub class: LeakClass,
    pub window_seconds: f64,
    /// Instances with enough history in the window to be judged.
    pub judged_instances: u32,
    /// The leaking instances of this window, fastest first.
    pub leaking: Vec<InstanceGrowth>,
    /// The instances that leaked in the window before (for `migrating`; empty otherwise).
    pub previously_leaking: Vec<InstanceGrowth>,
}

/// One instance's RSS growth over a window (least-squares slope of its history).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceGrowth {
    pub node: String,
    pub instance: String,
    pub growth_bytes_per_hour: f64,
    /// The growth relative to the fitted RSS at the start of the window (0.1 = 10 %/h).
    pub growth_ratio_per_hour: f64,
    pub rss_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub limit_bytes: Option<u64>,
}

/// OOM kills of one workload on several nodes close together.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OomStormEvidence {
    pub scope: OomScope,
    pub kills: u32,
    pub first_unix_ms: u64,
    pub last_unix_ms: u64,
    /// Kills per node, in node order.
    pub kills_by_node: Vec<NodeCount>,
}

/// A node and a count.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeCount {
    pub node: String,
    pub count: u32,
}

/// One workload grew while the others on its node stalled in reclaim.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NoisyNeighbourEvidence {
    pub window_seconds: f64,
    /// One entry per node where the workload is the culprit.
    pub per_node: Vec<NeighbourNode>,
    /// The culprit was found on at least the configured number of nodes (default 2).
    pub fleet_wide: bool,
}

/// The culprit's growth on one node and the workloads that stalled there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NeighbourNode {
    pub node: String,
    pub culprit_growth_rss_anon_bytes: u64,
    pub victims: Vec<WorkloadStall>,
}

/// A workload's mean reclaim stall over the window (its instances on one node summed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadStall {
    pub workload: String,
    pub reclaim_stall_seconds_per_sec: f64,
}

/// Is the pressure the application's or the node's?
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PressureSource {
    /// Under pressure on every node it runs on.
    #[default]
    App,
    /// Under pressure on one of its nodes only, where other workloads are under pressure too.
    Node,
}

/// The workload's pressure on each of its nodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppOrNodeEvidence {
    pub source: PressureSource,
    /// The score from which a workload counts as under pressure.
    pub pressure_threshold: f64,
    /// The workload's highest instance pressure score per node, in node order.
    pub pressure_by_node: Vec<NodePressure>,
    /// For `node`: the other workloads under pressure on that node.
    pub others_under_pressure: Vec<String>,
}

/// A pressure score on a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodePressure {
    pub node: String,
    pub pressure_score: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON a client reads: the evidence keyed by its kind, enums in snake_case, and back.
    #[test]
    fn a_finding_in_json() {
        let finding = Finding {
            kind: FindingKind::OomStorm,
            workload: "cache".into(),
            verdict: "cache: 2 OOM kills on 2 nodes".into(),
            nodes: vec!["a".into(), "b".into()],
            instances: vec![InstanceRef {
                node: "a".into(),
                instance: "cache-0".into(),
            }],
            evidence: Evidence::OomStorm(OomStormEvidence {
                scope: OomScope::Memcg,
                kills: 2,
                first_unix_ms: 1,
                last_unix_ms: 2,
                kills_by_node: vec![NodeCount {
                    node: "a".into(),
                    count: 2,
                }],
            }),
        };
        let json = serde_json::to_value(&finding).unwrap();
        assert_eq!(json["kind"], "oom_storm");
        assert_eq!(json["evidence"]["oom_storm"]["scope"], "memcg");
        assert_eq!(
            json["evidence"]["oom_storm"]["kills_by_node"][0]["count"],
            2
        );
        assert_eq!(finding.evidence.kind(), finding.kind);
        let back: Finding = serde_json::from_value(json).unwrap();
        assert_eq!(back, finding);
    }
}
