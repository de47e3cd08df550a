//! The cross-node diagnostics: pure functions of the nodes' workload summaries.
//!
//! Each diagnostic is one module with one entry point over a `Fleet` (the answers with their
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
mod trend;

#[cfg(test)]
mod fixtures;

use memtrace_api::{
    diagnose::{Evidence, Finding, FindingKind, PressureSource},
    workloads::{InstanceSummary, WorkloadSummary, WorkloadsResponse},
};

use std::borrow::Cow;

pub use self::thresholds::Thresholds;
use self::trend::InstanceTrend;
pub use self::trend::Trends;

/// One node's answer: the target it was reached at and what it said.
#[derive(Clone, Debug)]
pub struct NodeAnswer {
    /// The target as given (`host:port` or URL).
    pub target: String,
    pub summary: WorkloadsResponse,
    /// What the diagnostics need of the histories, when [`NodeAnswer::reduced`] took it and
    /// dropped them; `None`: `diagnose` takes it from the histories still in `summary`.
    pub trends: Option<Trends>,
}

impl NodeAnswer {
    /// An answer with its histories reduced to their [`Trends`] over the windows of `t` ending at
    /// `now_unix_ms`, and dropped: what an aggregator keeps of a node (see [`Trends`]).
    pub fn reduced(
        target: String,
        mut summary: WorkloadsResponse,
        t: &Thresholds,
        now_unix_ms: u64,
    ) -> Self {
        let trends = Trends::of(&summary, t, now_unix_ms as f64 / 1000.0);
        trend::drop_histories(&mut summary);
        Self {
            target,
            summary,
            trends: Some(trends),
        }
    }

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
    let now_unix_s = now_unix_ms as f64 / 1000.0;
    let trends = nodes
        .iter()
        .map(|answer| match &answer.trends {
            Some(trends) if trends.fit(&answer.summary) => Cow::Borrowed(trends),
            _ => Cow::Owned(Trends::of(&answer.summary, thresholds, now_unix_s)),
        })
        .collect();
    let fleet = Fleet { nodes, trends };
    let mut findings = Vec::new();
    findings.extend(skew::hot_shards(&fleet, thresholds));
    findings.extend(leak::leaks(&fleet, thresholds));
    findings.extend(storm::oom_storms(&fleet, thresholds, now_unix_ms));
    findings.extend(neighbour::noisy_neighbours(&fleet, thresholds));
    let app_or_node: Vec<Finding> = pressure::app_or_node(&fleet, thresholds)
        .into_iter()
        .filter(|f| !explained_elsewhere(f, &findings))
        .collect();
    findings.extend(app_or_node);
    findings
        .sort_by(|a, b| (a.kind, &a.workload, &a.verdict).cmp(&(b.kind, &b.workload, &b.verdict)));
    findings
}

/// An app-or-node verdict that a more specific finding already explains: pressure on every node
/// of a workload in an OOM storm, or pressure on a node where a noisy neighbour was found.
fn explained_elsewhere(verdict: &Finding, others: &[Finding]) -> bool {
    let Evidence::AppOrNode(evidence) = &verdict.evidence else {
        return false;
    };
    others
        .iter()
        .any(|other| match (evidence.source, other.kind) {
            (PressureSource::App, FindingKind::OomStorm) => other.workload == verdict.workload,
            (PressureSource::Node, FindingKind::NoisyNeighbour) => {
                let nodes: std::collections::HashSet<&String> = verdict.nodes.iter().collect();
                other.nodes.iter().any(|n| nodes.contains(n))
            }
            _ => false,
        })
}

/// The answers as the diagnostics walk them, each with its trends (`nodes[i]`: `trends[i]`).
struct Fleet<'a> {
    nodes: &'a [NodeAnswer],
    trends: Vec<Cow<'a, Trends>>,
}

/// One instance with where it runs.
struct Placed<'a> {
    node: &'a str,
    workload: &'a WorkloadSummary,
    instance: &'a InstanceSummary,
    trend: &'a InstanceTrend,
}

impl Fleet<'_> {
    /// Every instance of every node, in node order.
    fn instances(&self) -> impl Iterator<Item = Placed<'_>> + '_ {
        self.nodes
            .iter()
            .zip(&self.trends)
            .flat_map(|(answer, trends)| {
                answer
                    .summary
                    .workloads
                    .iter()
                    .zip(&trends.per_workload)
                    .flat_map(move |(workload, trends)| {
                        workload
                            .instances
                            .iter()
                            .zip(trends)
                            .map(move |(instance, trend)| Placed {
                                node: answer.node_name(),
                                workload,
                                instance,
                                trend,
                            })
                    })
            })
    }

    /// The instances grouped by workload key, workloads in key order.
    fn by_workload(&self) -> std::collections::BTreeMap<&str, Vec<Placed<'_>>> {
        let mut groups: std::collections::BTreeMap<&str, Vec<Placed<'_>>> = Default::default();
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

/// Distinct values in first-seen order. Hashed: a workload on every node of a 5,000-node fleet
/// makes a linear scan per item quadratic.
fn distinct<T: Eq + std::hash::Hash + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(item.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use memtrace_api::{
        diagnose::{InstanceRef, LeakClass},
        workloads::{InstanceSummary, OomScope},
    };

    use super::{fixtures::*, *};

    fn under_pressure(mut instance: InstanceSummary, score: f64) -> InstanceSummary {
        instance.pressure_score = score;
        instance
    }

    /// The fleet of the issue's end-to-end test: redis replicas on every node with one holding
    /// 4× the data, a slow leaker in one replica of api, cache OOM-killed on two nodes, a hog
    /// next to a victim on one node; web and the other replicas healthy.
    fn fleet() -> Vec<NodeAnswer> {
        let victim = |name: &str| under_pressure(instance(name, |_| 80 * MIB, 0.2), 50.0);
        let hog = instance(
            "hog-0",
            |ago| if ago > 30.0 { 20 * MIB } else { 300 * MIB },
            0.0,
        );
        vec![
            node("node-a")
                .with("redis", flat("redis-a", 100 * MIB))
                .with("api", flat("api-a", 200 * MIB))
                .with("web", flat("web-a", 50 * MIB))
                .with("cache", under_pressure(flat("cache-a", 60 * MIB), 60.0))
                .with_oom("cache", "cache-a", 200, OomScope::Memcg)
                .with_oom("cache", "cache-a", 120, OomScope::Memcg),
            node("node-b")
                .with("redis", flat("redis-b", 400 * MIB))
                .with("api", growing("api-b", 200 * MIB, 60 * MIB))
                .with("web", flat("web-b", 50 * MIB))
                .with("cache", under_pressure(flat("cache-b", 60 * MIB), 60.0))
                .with_oom("cache", "cache-b", 60, OomScope::Memcg),
            node("node-c")
                .with("redis", flat("redis-c", 110 * MIB))
                .with("api", flat("api-c", 200 * MIB))
                .with("web", under_pressure(flat("web-c", 50 * MIB), 45.0))
                .with("hog", under_pressure(hog, 45.0))
                .with("victim", victim("victim-0")),
        ]
    }

    #[test]
    fn the_issues_fleet_gets_exactly_its_findings() {
        let findings = diagnose(&fleet(), &Thresholds::default(), NOW_MS);
        let summary: Vec<(FindingKind, &str, Vec<InstanceRef>)> = findings
            .iter()
            .map(|f| (f.kind, f.workload.as_str(), f.instances.clone()))
            .collect();
        let at = |node: &str, instance: &str| InstanceRef {
            node: node.into(),
            instance: instance.into(),
        };
        assert_eq!(
            summary,
            [
                (
                    FindingKind::HotShard,
                    "redis",
                    vec![at("node-b", "redis-b")]
                ),
                (FindingKind::Leak, "api", vec![at("node-b", "api-b")]),
                (
                    FindingKind::OomStorm,
                    "cache",
                    vec![at("node-a", "cache-a"), at("node-b", "cache-b")]
                ),
                (
                    FindingKind::NoisyNeighbour,
                    "hog",
                    vec![at("node-c", "hog-0")]
                ),
            ],
            "{findings:#?}"
        );
        let Evidence::Leak(leak) = &findings[1].evidence else {
            panic!("{findings:#?}")
        };
        assert_eq!(leak.class, LeakClass::Subset);
        // cache's pressure on both its nodes is its OOM storm; web's on node-c is the hog's.
        assert!(findings.iter().all(|f| f.kind != FindingKind::AppOrNode));
    }

    #[test]
    fn app_or_node_speaks_when_nothing_more_specific_does() {
        let mut nodes = fleet();
        // Without the hog, web's pressure on node-c (shared with victim) is node-c's.
        nodes[2].summary.workloads.retain(|w| w.workload != "hog");
        let findings = diagnose(&nodes, &Thresholds::default(), NOW_MS);
        let verdicts: Vec<(&str, &[String])> = findings
            .iter()
            .filter(|f| f.kind == FindingKind::AppOrNode)
            .map(|f| (f.workload.as_str(), f.nodes.as_slice()))
            .collect();
        assert_eq!(verdicts, [("web", &["node-c".to_owned()][..])]);
    }

    #[test]
    fn a_node_without_a_name_is_known_by_its_target() {
        let mut nameless = node("x");
        nameless.summary.node.name.clear();
        assert_eq!(nameless.node_name(), "x:9847");
    }
}
