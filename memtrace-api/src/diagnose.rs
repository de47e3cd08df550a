//! The findings of `memtrace cluster diagnose` (`-o json`, and `memtrace cluster serve`).
use serde::{Deserialize, Serialize};

use crate::cluster::Coverage;

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
