//! OOM storm across replicas: OOM kills of one workload on several nodes close together, split by
//! scope (a cgroup at its limit, or a node out of memory): the two call for different fixes.
use std::collections::BTreeMap;

use memtrace_api::{
    diagnose::{Evidence, Finding, FindingKind, InstanceRef, NodeCount, OomStormEvidence},
    workloads::{OomKill, OomScope},
};

use super::{Fleet, Thresholds, count, distinct};

pub(super) fn oom_storms(fleet: &Fleet<'_>, t: &Thresholds, now_unix_ms: u64) -> Vec<Finding> {
    // A storm is news for as long as the trend window, and at least a storm window: a short
    // `--window` (for a quick leak check) still shows the storm of the last minutes.
    let lookback = t.window.max(t.storm_window);
    let since = now_unix_ms.saturating_sub(lookback.as_millis() as u64);
    let mut groups: BTreeMap<(&str, ScopeKey), Vec<(&str, &OomKill)>> = BTreeMap::new();
    for answer in fleet.nodes {
        for kill in &answer.summary.ooms {
            if kill.timestamp_unix_ms >= since && kill.timestamp_unix_ms <= now_unix_ms {
                groups
                    .entry((kill.workload.as_str(), ScopeKey(kill.scope)))
                    .or_default()
                    .push((answer.node_name(), kill));
            }
        }
    }
    let gap = t.storm_window.as_millis() as u64;
    let mut findings = Vec::new();
    for ((workload, ScopeKey(scope)), mut kills) in groups {
        kills.sort_by_key(|(node, kill)| (kill.timestamp_unix_ms, *node));
        // Episodes: kills with no gap longer than the storm window between them. Any two kills on
        // different nodes in an episode have a pair of neighbours on different nodes within it.
        let mut episodes: Vec<Vec<(&str, &OomKill)>> = Vec::new();
        for kill in kills {
            match episodes.last_mut() {
                Some(episode)
                    if kill.1.timestamp_unix_ms - episode.last().unwrap().1.timestamp_unix_ms
                        <= gap =>
                {
                    episode.push(kill);
                }
                _ => episodes.push(vec![kill]),
            }
        }
        for episode in episodes {
            let nodes = distinct(episode.iter().map(|(node, _)| (*node).to_owned()));
            if nodes.len() < t.storm_min_nodes as usize {
                continue;
            }
            findings.push(storm(workload, scope, &nodes, &episode));
        }
    }
    findings
}

/// `OomScope` ordered for grouping.
#[derive(Clone, Copy, PartialEq, Eq)]
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

impl Ord for ScopeKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for ScopeKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn storm(
    workload: &str,
    scope: OomScope,
    nodes: &[String],
    episode: &[(&str, &OomKill)],
) -> Finding {
    let first = episode[0].1.timestamp_unix_ms;
    let last = episode[episode.len() - 1].1.timestamp_unix_ms;
    let kills_by_node: Vec<NodeCount> = nodes
        .iter()
        .map(|node| NodeCount {
            node: node.clone(),
            count: episode.iter().filter(|(n, _)| n == node).count() as u32,
        })
        .collect();
    let (what, fix) = match scope {
        OomScope::Memcg => (
            "at their cgroup limit (memcg)",
            "the limit is too small for the load, or every replica leaks",
        ),
        OomScope::Global => (
            "nodes out of memory (global)",
            "the nodes are overcommitted where this workload runs",
        ),
        OomScope::Unknown => ("scope unknown", "check the nodes' OOM records"),
    };
    let spread = humantime::format_duration(std::time::Duration::from_secs((last - first) / 1000));
    Finding {
        kind: FindingKind::OomStorm,
        workload: workload.to_owned(),
        verdict: format!(
            "{workload}: {} on {} ({}) within {spread}, {what}: {fix}",
            count(episode.len(), "OOM kill"),
            count(nodes.len(), "node"),
            nodes.join(", ")
        ),
        nodes: nodes.to_vec(),
        instances: distinct(episode.iter().map(|(node, kill)| InstanceRef {
            node: (*node).to_owned(),
            instance: kill.instance.clone(),
        })),
        evidence: Evidence::OomStorm(OomStormEvidence {
            scope,
            kills: episode.len() as u32,
            first_unix_ms: first,
            last_unix_ms: last,
            kills_by_node,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NodeAnswer, diagnose, fixtures::*};
    use super::*;

    fn storms(nodes: &[NodeAnswer]) -> Vec<Finding> {
        diagnose(nodes, &Thresholds::default(), NOW_MS)
            .into_iter()
            .filter(|f| f.kind == FindingKind::OomStorm)
            .collect()
    }

    fn evidence(f: &Finding) -> &OomStormEvidence {
        match &f.evidence {
            Evidence::OomStorm(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kills_on_two_nodes_within_five_minutes_are_a_storm() {
        let nodes = vec![
            node("a")
                .with_oom("cache", "cache-0", 200, OomScope::Memcg)
                .with_oom("cache", "cache-0", 100, OomScope::Memcg),
            node("b").with_oom("cache", "cache-1", 30, OomScope::Memcg),
            node("c"),
        ];
        let findings = storms(&nodes);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.nodes, ["a", "b"]);
        let e = evidence(f);
        assert_eq!(e.scope, OomScope::Memcg);
        assert_eq!(e.kills, 3);
        assert_eq!(e.last_unix_ms - e.first_unix_ms, 170_000);
        assert_eq!(
            e.kills_by_node,
            [
                NodeCount {
                    node: "a".into(),
                    count: 2
                },
                NodeCount {
                    node: "b".into(),
                    count: 1
                }
            ]
        );
        assert!(
            f.verdict.starts_with(
                "cache: 3 OOM kills on 2 nodes (a, b) within 2m 50s, at their cgroup limit"
            ),
            "{}",
            f.verdict
        );
    }

    #[test]
    fn memcg_and_global_kills_are_separate_storms() {
        let nodes = vec![
            node("a")
                .with_oom("cache", "cache-0", 100, OomScope::Memcg)
                .with_oom("cache", "cache-0", 90, OomScope::Global),
            node("b").with_oom("cache", "cache-1", 80, OomScope::Global),
        ];
        let findings = storms(&nodes);
        assert_eq!(
            findings.len(),
            1,
            "memcg kills on one node only: {findings:#?}"
        );
        assert_eq!(evidence(&findings[0]).scope, OomScope::Global);
        assert!(findings[0].verdict.contains("out of memory (global)"));
    }

    #[test]
    fn kills_far_apart_or_on_one_node_are_not_a_storm() {
        let nodes = vec![
            node("a")
                .with_oom("cache", "cache-0", 1000, OomScope::Memcg)
                .with_oom("cache", "cache-0", 30, OomScope::Memcg),
            node("b").with_oom("cache", "cache-1", 1400, OomScope::Memcg),
            node("c").with_oom("web", "web-1", 10, OomScope::Memcg),
        ];
        assert!(storms(&nodes).is_empty(), "{:#?}", storms(&nodes));
        // Kills older than the window are history, not a storm now.
        let old = vec![
            node("a").with_oom("cache", "cache-0", 7300, OomScope::Memcg),
            node("b").with_oom("cache", "cache-1", 7250, OomScope::Memcg),
        ];
        assert!(storms(&old).is_empty());
    }

    #[test]
    fn a_chain_of_close_kills_is_one_storm() {
        // 4 minutes apart each: one episode of 12 minutes over three nodes.
        let nodes = vec![
            node("a").with_oom("cache", "cache-0", 900, OomScope::Memcg),
            node("b").with_oom("cache", "cache-1", 660, OomScope::Memcg),
            node("c").with_oom("cache", "cache-2", 420, OomScope::Memcg),
        ];
        let findings = storms(&nodes);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].nodes, ["a", "b", "c"]);
    }

    /// A `--window` shorter than the storm window (a quick leak check) still shows the storm of
    /// the last storm window: kills 2 and 4 minutes ago with `--window 45s`.
    #[test]
    fn a_short_trend_window_still_shows_the_last_storm_window() {
        let nodes = vec![
            node("a").with_oom("cache", "cache-0", 240, OomScope::Memcg),
            node("b").with_oom("cache", "cache-1", 120, OomScope::Memcg),
        ];
        let short = Thresholds {
            window: std::time::Duration::from_secs(45),
            ..Thresholds::default()
        };
        let findings: Vec<Finding> = diagnose(&nodes, &short, NOW_MS)
            .into_iter()
            .filter(|f| f.kind == FindingKind::OomStorm)
            .collect();
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].nodes, ["a", "b"]);
    }
}
