//! Noisy neighbour: on a node, other workloads stall in reclaim while one workload's anon RSS
//! grew most; a culprit found on several nodes is fleet-wide (the workload itself needs a bound).
use std::collections::BTreeMap;

use memtrace_api::diagnose::{
    Evidence, Finding, FindingKind, InstanceRef, NeighbourNode, NoisyNeighbourEvidence,
    WorkloadStall,
};

use super::{Fleet, NodeAnswer, Thresholds, Trends, count};
use crate::units::human_bytes;

/// One workload on one node over the window.
struct Activity<'a> {
    workload: &'a str,
    instances: Vec<&'a str>,
    growth_anon: i128,
    stall: f64,
}

/// A culprit's instances and evidence on one node.
struct CulpritOnNode<'a> {
    instances: Vec<&'a str>,
    evidence: NeighbourNode,
}

pub(super) fn noisy_neighbours(fleet: &Fleet<'_>, t: &Thresholds) -> Vec<Finding> {
    let span = t.window.as_secs_f64();
    // Culprit workload → where it is one, in node order.
    let mut culprits: BTreeMap<&str, Vec<CulpritOnNode<'_>>> = BTreeMap::new();
    for (answer, trends) in fleet.nodes.iter().zip(&fleet.trends) {
        let activity = activity(answer, trends);
        let Some(culprit) = activity
            .iter()
            .filter(|a| a.growth_anon >= i128::from(t.culprit_min_growth))
            .max_by(|a, b| {
                a.growth_anon
                    .cmp(&b.growth_anon)
                    .then(b.workload.cmp(a.workload))
            })
        else {
            continue;
        };
        let mut victims: Vec<WorkloadStall> = activity
            .iter()
            .filter(|a| a.workload != culprit.workload && a.stall >= t.stall_rate)
            .map(|a| WorkloadStall {
                workload: a.workload.to_owned(),
                reclaim_stall_seconds_per_sec: a.stall,
            })
            .collect();
        if victims.is_empty() {
            continue;
        }
        victims.sort_by(|a, b| {
            b.reclaim_stall_seconds_per_sec
                .total_cmp(&a.reclaim_stall_seconds_per_sec)
        });
        culprits
            .entry(culprit.workload)
            .or_default()
            .push(CulpritOnNode {
                instances: culprit.instances.clone(),
                evidence: NeighbourNode {
                    node: answer.node_name().to_owned(),
                    culprit_growth_rss_anon_bytes: culprit.growth_anon as u64,
                    victims,
                },
            });
    }
    culprits
        .into_iter()
        .map(|(workload, per_node)| {
            let fleet_wide = per_node.len() >= t.culprit_min_nodes as usize;
            let first = &per_node[0].evidence;
            let first_node = &first.node;
            let victims: Vec<String> = first
                .victims
                .iter()
                .map(|v| format!("{} {:.2} s/s", v.workload, v.reclaim_stall_seconds_per_sec))
                .collect();
            let verdict = format!(
                "{workload} on {first_node} grew its anon RSS by {} while {} stalled in reclaim ({}): {workload} is the noisy neighbour{}",
                human_bytes(first.culprit_growth_rss_anon_bytes),
                count(first.victims.len(), "other workload"),
                victims.join(", "),
                if fleet_wide {
                    format!(
                        "; the same on {} ({}): bound {workload} itself",
                        count(per_node.len(), "node"),
                        per_node
                            .iter()
                            .map(|c| c.evidence.node.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    String::new()
                }
            );
            Finding {
                kind: FindingKind::NoisyNeighbour,
                workload: workload.to_owned(),
                verdict,
                nodes: per_node.iter().map(|c| c.evidence.node.clone()).collect(),
                instances: per_node
                    .iter()
                    .flat_map(|c| {
                        c.instances.iter().map(|i| InstanceRef {
                            node: c.evidence.node.clone(),
                            instance: (*i).to_owned(),
                        })
                    })
                    .collect(),
                evidence: Evidence::NoisyNeighbour(NoisyNeighbourEvidence {
                    window_seconds: span,
                    per_node: per_node.into_iter().map(|c| c.evidence).collect(),
                    fleet_wide,
                }),
            }
        })
        .collect()
}

/// Each workload's anon growth (last minus first point of each instance, summed) and mean reclaim
/// stall (instances summed) on one node over the window.
fn activity<'a>(answer: &'a NodeAnswer, trends: &'a Trends) -> Vec<Activity<'a>> {
    answer
        .summary
        .workloads
        .iter()
        .zip(&trends.per_workload)
        .map(|(workload, trends)| Activity {
            workload: &workload.workload,
            instances: workload
                .instances
                .iter()
                .map(|i| i.instance.as_str())
                .collect(),
            growth_anon: trends.iter().map(|t| t.anon_growth).sum(),
            stall: trends.iter().map(|t| t.mean_stall).sum(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{diagnose, fixtures::*};
    use super::*;

    fn hog(name: &str) -> memtrace_api::workloads::InstanceSummary {
        // Flat at 50 MiB until 30 minutes ago, then +400 MiB.
        instance(
            name,
            |ago| if ago > 30.0 { 50 * MIB } else { 450 * MIB },
            0.0,
        )
    }

    fn neighbours(nodes: &[NodeAnswer]) -> Vec<Finding> {
        diagnose(nodes, &Thresholds::default(), NOW_MS)
            .into_iter()
            .filter(|f| f.kind == FindingKind::NoisyNeighbour)
            .collect()
    }

    fn evidence(f: &Finding) -> &NoisyNeighbourEvidence {
        match &f.evidence {
            Evidence::NoisyNeighbour(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_workload_that_grew_while_others_stalled_is_named() {
        let nodes = vec![
            node("a")
                .with("hog", hog("hog-0"))
                .with("web", instance("web-0", |_| 100 * MIB, 0.12))
                .with("db", instance("db-0", |_| 300 * MIB, 0.01)),
            node("b").with("web", instance("web-1", |_| 100 * MIB, 0.0)),
        ];
        let findings = neighbours(&nodes);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.workload, "hog");
        assert_eq!(f.nodes, ["a"]);
        assert_eq!(f.instances[0].instance, "hog-0");
        let e = evidence(f);
        assert!(!e.fleet_wide);
        assert_eq!(e.per_node[0].culprit_growth_rss_anon_bytes, 400 * MIB);
        assert_eq!(e.per_node[0].victims.len(), 1, "db stalls under 0.05 s/s");
        assert_eq!(e.per_node[0].victims[0].workload, "web");
        assert!(f.verdict.starts_with("hog on a grew its anon RSS by 400.0 MiB while 1 other workload stalled in reclaim (web 0.12 s/s)"), "{}", f.verdict);
    }

    #[test]
    fn no_victim_or_no_growth_is_no_finding() {
        let quiet = vec![
            node("a")
                .with("hog", hog("hog-0"))
                .with("web", instance("web-0", |_| 100 * MIB, 0.01)),
        ];
        assert!(neighbours(&quiet).is_empty());
        let stalls_alone = vec![
            node("a")
                .with("steady", flat("steady-0", 500 * MIB))
                .with("web", instance("web-0", |_| 100 * MIB, 0.2)),
        ];
        assert!(neighbours(&stalls_alone).is_empty());
    }

    #[test]
    fn a_culprit_on_two_nodes_is_fleet_wide() {
        let nodes = vec![
            node("a")
                .with("hog", hog("hog-0"))
                .with("web", instance("web-0", |_| 100 * MIB, 0.1)),
            node("b")
                .with("hog", hog("hog-1"))
                .with("api", instance("api-0", |_| 100 * MIB, 0.07)),
            node("c").with("hog", hog("hog-2")),
        ];
        let findings = neighbours(&nodes);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.nodes, ["a", "b"]);
        assert!(evidence(f).fleet_wide);
        assert!(
            f.verdict
                .ends_with("the same on 2 nodes (a, b): bound hog itself"),
            "{}",
            f.verdict
        );
    }
}
