//! The merged views of one [`Round`]: pure functions, the same for the one-shot commands and the
//! relay.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use memtrace_api::cluster::{
    CLUSTER_SCHEMA_VERSION, NodeOomKill, NodeStatus, NodesView, OomStorm, OomView, TopView,
    WorkloadAcrossNodes,
};
use memtrace_api::diagnose::{DiagnoseReport, InstanceRef};
use memtrace_api::workloads::{OomScope, WorkloadKind};

use super::diagnose::{NodeAnswer, Thresholds, diagnose};
use super::fanout::Round;

/// The storm rule of `cluster oom`, the same as the diagnostics' (`--storm-window`,
/// `--storm-min-nodes`): kills of one workload, for one reason, with no gap longer than `window`
/// between them, on at least `min_nodes` nodes (issue 11: ≥ 2 nodes within 5 min).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StormRule {
    pub window: Duration,
    pub min_nodes: u32,
}

impl From<&crate::cluster::diagnose::Thresholds> for StormRule {
    fn from(t: &crate::cluster::diagnose::Thresholds) -> Self {
        Self {
            window: t.storm_window,
            min_nodes: t.storm_min_nodes,
        }
    }
}

impl Default for StormRule {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            min_nodes: 2,
        }
    }
}

/// The node name an answer goes by: what it calls itself, else its target.
pub fn node_name(answer: &NodeAnswer) -> &str {
    if answer.summary.node.name.is_empty() {
        &answer.target
    } else {
        &answer.summary.node.name
    }
}

pub fn top(round: &Round) -> TopView {
    struct Acc {
        kind: WorkloadKind,
        nodes: BTreeSet<String>,
        anon: Vec<u64>,
        row: WorkloadAcrossNodes,
    }
    let mut by_workload: BTreeMap<&str, Acc> = BTreeMap::new();
    for answer in &round.answers {
        let node = node_name(answer);
        for workload in &answer.summary.workloads {
            let acc = by_workload
                .entry(&workload.workload)
                .or_insert_with(|| Acc {
                    kind: workload.kind,
                    nodes: BTreeSet::new(),
                    anon: Vec::new(),
                    row: WorkloadAcrossNodes::default(),
                });
            for instance in &workload.instances {
                let rss =
                    instance.rss_anon_bytes + instance.rss_file_bytes + instance.rss_shmem_bytes;
                acc.nodes.insert(node.to_owned());
                acc.anon.push(instance.rss_anon_bytes);
                let row = &mut acc.row;
                row.instances += 1;
                row.rss_bytes_total += rss;
                if row.largest.is_none() || rss > row.rss_bytes_max {
                    row.rss_bytes_max = rss;
                    row.largest = Some(InstanceRef {
                        node: node.to_owned(),
                        instance: instance.instance.clone(),
                    });
                }
                row.pressure_score_max = row.pressure_score_max.max(instance.pressure_score);
                row.oom_kills.memcg += instance.oom_kills.memcg;
                row.oom_kills.global += instance.oom_kills.global;
            }
        }
    }
    let mut workloads: Vec<WorkloadAcrossNodes> = by_workload
        .into_iter()
        .map(|(workload, mut acc)| WorkloadAcrossNodes {
            workload: workload.to_owned(),
            kind: acc.kind,
            nodes: u32::try_from(acc.nodes.len()).unwrap_or(u32::MAX),
            anon_skew: skew(&mut acc.anon),
            ..acc.row
        })
        .collect();
    workloads.sort_by(|a, b| {
        b.pressure_score_max
            .total_cmp(&a.pressure_score_max)
            .then(b.rss_bytes_total.cmp(&a.rss_bytes_total))
            .then_with(|| a.workload.cmp(&b.workload))
    });
    TopView {
        schema_version: CLUSTER_SCHEMA_VERSION,
        generated_unix_ms: round.generated_unix_ms,
        coverage: round.coverage.clone(),
        workloads,
    }
}

/// Max over median; `None` below two values or with a zero median.
fn skew(values: &mut [u64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    let median = if values.len().is_multiple_of(2) {
        (values[mid - 1] as f64 + values[mid] as f64) / 2.0
    } else {
        values[mid] as f64
    };
    let max = *values.last()? as f64;
    (median > 0.0).then(|| max / median)
}

pub fn nodes(round: &Round) -> NodesView {
    let mut answered: Vec<NodeStatus> = round
        .answers
        .iter()
        .map(|answer| NodeStatus {
            target: answer.target.clone(),
            node: Some(answer.summary.node.clone()),
            workloads: u32::try_from(answer.summary.workloads.len()).unwrap_or(u32::MAX),
            omitted_workloads: answer.summary.omitted_workloads,
            error: None,
            elapsed_seconds: 0.0,
        })
        .collect();
    answered.sort_by(|a, b| {
        let name = |s: &NodeStatus| s.node.as_ref().map(|n| n.name.clone()).unwrap_or_default();
        name(a).cmp(&name(b)).then_with(|| a.target.cmp(&b.target))
    });
    let failed = round.coverage.failures.iter().map(|failure| NodeStatus {
        target: failure.target.clone(),
        node: None,
        workloads: 0,
        omitted_workloads: 0,
        error: Some(failure.error.clone()),
        elapsed_seconds: failure.elapsed_seconds,
    });
    NodesView {
        schema_version: CLUSTER_SCHEMA_VERSION,
        generated_unix_ms: round.generated_unix_ms,
        coverage: round.coverage.clone(),
        nodes: answered.into_iter().chain(failed).collect(),
    }
}

pub fn oom(round: &Round, rule: StormRule) -> OomView {
    let mut kills: Vec<NodeOomKill> = round
        .answers
        .iter()
        .flat_map(|answer| {
            let node = node_name(answer);
            answer.summary.ooms.iter().map(move |kill| NodeOomKill {
                node: node.to_owned(),
                kill: kill.clone(),
                storm: None,
            })
        })
        .collect();
    // Oldest first while the storms are found.
    kills.sort_by(|a, b| {
        a.kill
            .timestamp_unix_ms
            .cmp(&b.kill.timestamp_unix_ms)
            .then_with(|| a.node.cmp(&b.node))
    });
    let window_ms = u64::try_from(rule.window.as_millis()).unwrap_or(u64::MAX);
    let mut groups: BTreeMap<(String, ScopeKey), Vec<usize>> = BTreeMap::new();
    for (index, kill) in kills.iter().enumerate() {
        groups
            .entry((kill.kill.workload.clone(), ScopeKey(kill.kill.scope)))
            .or_default()
            .push(index);
    }
    let mut storms: Vec<(OomStorm, Vec<usize>)> = Vec::new();
    for ((workload, ScopeKey(scope)), members) in groups {
        let mut start = 0;
        while start < members.len() {
            let first = kills[members[start]].kill.timestamp_unix_ms;
            // An episode: no gap longer than the window between consecutive kills (the
            // diagnostics' storm rule, `diagnose::storm`).
            let end = (start + 1..members.len())
                .find(|&m| {
                    kills[members[m]].kill.timestamp_unix_ms
                        - kills[members[m - 1]].kill.timestamp_unix_ms
                        > window_ms
                })
                .unwrap_or(members.len());
            let burst = &members[start..end];
            let nodes: BTreeSet<&str> = burst.iter().map(|&i| kills[i].node.as_str()).collect();
            if nodes.len() >= rule.min_nodes as usize {
                storms.push((
                    OomStorm {
                        workload: workload.clone(),
                        scope,
                        first_unix_ms: first,
                        last_unix_ms: kills[burst[burst.len() - 1]].kill.timestamp_unix_ms,
                        kills: u32::try_from(burst.len()).unwrap_or(u32::MAX),
                        nodes: nodes.into_iter().map(str::to_owned).collect(),
                    },
                    burst.to_vec(),
                ));
            }
            start = end;
        }
    }
    storms.sort_by_key(|storm| std::cmp::Reverse(storm.0.last_unix_ms));
    for (id, (_, members)) in storms.iter().enumerate() {
        for &i in members {
            kills[i].storm = Some(u32::try_from(id).unwrap_or(u32::MAX));
        }
    }
    kills.reverse();
    OomView {
        schema_version: CLUSTER_SCHEMA_VERSION,
        generated_unix_ms: round.generated_unix_ms,
        coverage: round.coverage.clone(),
        storm_window_seconds: rule.window.as_secs_f64(),
        storm_min_nodes: rule.min_nodes,
        kills,
        storms: storms.into_iter().map(|(storm, _)| storm).collect(),
    }
}

/// [`OomScope`] ordered, for grouping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ScopeKey(OomScope);

impl ScopeKey {
    fn rank(self) -> u8 {
        match self.0 {
            OomScope::Memcg => 0,
            OomScope::Global => 1,
            OomScope::Unknown => 2,
        }
    }
}

impl PartialOrd for ScopeKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ScopeKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

pub fn diagnose_report(round: &Round, thresholds: &Thresholds) -> DiagnoseReport {
    DiagnoseReport {
        schema_version: CLUSTER_SCHEMA_VERSION,
        generated_unix_ms: round.generated_unix_ms,
        coverage: round.coverage.clone(),
        findings: diagnose(&round.answers, thresholds, round.generated_unix_ms),
    }
}
