//! The cross-node diagnostics: pure functions of the nodes' workload summaries.
use memtrace_api::{diagnose::Finding, workloads::WorkloadsResponse};

/// One node's answer: the target it was reached at and what it said.
#[derive(Clone, Debug)]
pub struct NodeAnswer {
    /// The target as given (`host:port` or URL).
    pub target: String,
    pub summary: WorkloadsResponse,
}

/// Thresholds of the diagnostics (flags of `memtrace cluster diagnose` and `serve`; the defaults
/// are documented in the README).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Thresholds {}

/// Every finding over `nodes`, at wall time `now_unix_ms`.
pub fn diagnose(nodes: &[NodeAnswer], thresholds: &Thresholds, now_unix_ms: u64) -> Vec<Finding> {
    let _ = (nodes, thresholds, now_unix_ms);
    Vec::new()
}
