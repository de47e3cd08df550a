//! The cross-node diagnostics: pure functions of the nodes' workload summaries.
//!
//! Each diagnostic is one module with one entry point over a [`Fleet`] (the answers with their
//! node names resolved) and the [`Thresholds`]; `diagnose` runs them all. The rules, with their
//! default thresholds, are documented in the README ("Diagnostics"), and the PromQL versions of
//! the ones Prometheus can express are in `deploy/prometheus/memtrace-rules.yml`, with the same
//! defaults.
mod leak;
mod neighbour;
mod pressure;
mod series;
mod skew;
mod storm;
mod thresholds;

#[cfg(test)]
mod fixtures;

use memtrace_api::{
    diagnose::Finding,
    workloads::{InstanceSummary, WorkloadSummary, WorkloadsResponse},
};

pub use self::thresholds::Thresholds;

/// One node's answer: the target it was reached at and what it said.
#[derive(Clone, Debug)]
pub struct NodeAnswer {
    /// The target as given (`host:port` or URL).
    pub target: String,
    pub summary: WorkloadsResponse,
}

impl NodeAnswer {
    /// The node's name: its `--node-name`, else the target it was reached at.
    pub fn node_name(&self) -> &str {
        if self.summary.node.name.is_empty() {
            &self.target
        } else {
            &self.summary.node.name
        }
    }
}

/// Every finding over `nodes`, at wall time `now_unix_ms`, ordered by kind, then workload.
pub fn diagnose(nodes: &[NodeAnswer], thresholds: &Thresholds, now_unix_ms: u64) -> Vec<Finding> {
    let fleet = Fleet {
        nodes,
        now_unix_s: now_unix_ms as f64 / 1000.0,
    };
    let mut findings = Vec::new();
    findings.extend(skew::hot_shards(&fleet, thresholds));
    findings.extend(leak::leaks(&fleet, thresholds));
    findings.extend(storm::oom_storms(&fleet, thresholds, now_unix_ms));
    findings.extend(neighbour::noisy_neighbours(&fleet, thresholds));
    findings.extend(pressure::app_or_node(&fleet, thresholds));
    findings
        .sort_by(|a, b| (a.kind, &a.workload, &a.verdict).cmp(&(b.kind, &b.workload, &b.verdict)));
    findings
}

/// The answers as the diagnostics walk them.
struct Fleet<'a> {
    nodes: &'a [NodeAnswer],
    now_unix_s: f64,
}

/// One instance with where it runs.
struct Placed<'a> {
    node: &'a str,
    answer: &'a NodeAnswer,
    workload: &'a WorkloadSummary,
    instance: &'a InstanceSummary,
}

impl<'a> Fleet<'a> {
    /// Every instance of every node, in node order.
    fn instances(&self) -> impl Iterator<Item = Placed<'a>> + '_ {
        self.nodes.iter().flat_map(|answer| {
            answer.summary.workloads.iter().flat_map(move |workload| {
                workload.instances.iter().map(move |instance| Placed {
                    node: answer.node_name(),
                    answer,
                    workload,
                    instance,
                })
            })
        })
    }

    /// The instances grouped by workload key, workloads in key order.
    fn by_workload(&self) -> std::collections::BTreeMap<&'a str, Vec<Placed<'a>>> {
        let mut groups: std::collections::BTreeMap<&str, Vec<Placed<'a>>> = Default::default();
        for placed in self.instances() {
            groups
                .entry(placed.workload.workload.as_str())
                .or_default()
                .push(placed);
        }
        groups
    }
}

/// `n` things, with the noun in the plural when `n` is not 1.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Distinct values in first-seen order.
fn distinct<T: PartialEq + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}
