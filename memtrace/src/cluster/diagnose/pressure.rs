//! App or node: a workload under pressure on every node it runs on is the application's problem;
//! under pressure on one of its nodes only, where other workloads are under pressure too, it is
//! that node's.
use std::collections::BTreeMap;

use memtrace_api::diagnose::{
    AppOrNodeEvidence, Evidence, Finding, FindingKind, InstanceRef, NodePressure, PressureSource,
};

use super::{Fleet, Thresholds, count};

pub(super) fn app_or_node(fleet: &Fleet<'_>, t: &Thresholds) -> Vec<Finding> {
    // Per node, per workload: the highest instance pressure score.
    let mut by_node: BTreeMap<&str, BTreeMap<&str, f64>> = BTreeMap::new();
    for p in fleet.instances() {
        let score = by_node
            .entry(p.node)
            .or_default()
            .entry(&p.workload.workload)
            .or_insert(0.0);
        *score = score.max(p.instance.pressure_score);
    }
    let mut findings = Vec::new();
    for (workload, placed) in fleet.by_workload() {
        let nodes = super::distinct(placed.iter().map(|p| p.node));
        if nodes.len() < 2 {
            continue;
        }
        let pressure_by_node: Vec<NodePressure> = nodes
            .iter()
            .map(|node| NodePressure {
                node: (*node).to_owned(),
                pressure_score: by_node[node][workload],
            })
            .collect();
        let pressed: Vec<&NodePressure> = pressure_by_node
            .iter()
            .filter(|n| n.pressure_score >= t.pressure_score)
            .collect();
        let under = |node: &str| -> Vec<InstanceRef> {
            placed
                .iter()
                .filter(|p| p.node == node && p.instance.pressure_score >= t.pressure_score)
                .map(|p| InstanceRef {
                    node: node.to_owned(),
                    instance: p.instance.instance.clone(),
                })
                .collect()
        };
        let (source, verdict, involved, others) = if pressed.len() == nodes.len() {
            (
                PressureSource::App,
                format!(
                    "{workload} is under pressure on all its {} (score ≥ {}): the application, not the nodes",
                    count(nodes.len(), "node"),
                    t.pressure_score
                ),
                nodes.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
                Vec::new(),
            )
        } else if let [only] = pressed[..] {
            let others: Vec<String> = by_node[only.node.as_str()]
                .iter()
                .filter(|(w, score)| **w != workload && **score >= t.pressure_score)
                .map(|(w, _)| (*w).to_owned())
                .collect();
            if others.is_empty() {
                continue;
            }
            (
                PressureSource::Node,
                format!(
                    "{workload} is under pressure only on {} of its {}, where {} too ({}): the node, not the application",
                    only.node,
                    count(nodes.len(), "node"),
                    match others.len() {
                        1 => "1 other workload is".to_owned(),
                        n => format!("{n} other workloads are"),
                    },
                    others.join(", ")
                ),
                vec![only.node.clone()],
                others,
            )
        } else {
            continue;
        };
        findings.push(Finding {
            kind: FindingKind::AppOrNode,
            workload: workload.to_owned(),
            verdict,
            instances: involved.iter().flat_map(|n| under(n)).collect(),
            nodes: involved,
            evidence: Evidence::AppOrNode(AppOrNodeEvidence {
                source,
                pressure_threshold: t.pressure_score,
                pressure_by_node,
                others_under_pressure: others,
            }),
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use memtrace_api::workloads::InstanceSummary;

    use super::super::{NodeAnswer, diagnose, fixtures::*};
    use super::*;

    fn scored(name: &str, score: f64) -> InstanceSummary {
        InstanceSummary {
            pressure_score: score,
            ..flat(name, 100 * MIB)
        }
    }

    fn verdicts(nodes: &[NodeAnswer]) -> Vec<Finding> {
        diagnose(nodes, &Thresholds::default(), NOW_MS)
            .into_iter()
            .filter(|f| f.kind == FindingKind::AppOrNode)
            .collect()
    }

    fn source(f: &Finding) -> PressureSource {
        match &f.evidence {
            Evidence::AppOrNode(e) => e.source,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pressure_on_every_node_is_the_app() {
        let nodes = vec![
            node("a")
                .with("web", scored("web-0", 60.0))
                .with("db", scored("db-0", 5.0)),
            node("b").with("web", scored("web-1", 45.0)),
            node("c").with("web", scored("web-2", 70.0)),
        ];
        let findings = verdicts(&nodes);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(source(&findings[0]), PressureSource::App);
        assert_eq!(findings[0].workload, "web");
        assert_eq!(findings[0].nodes, ["a", "b", "c"]);
        assert_eq!(findings[0].instances.len(), 3);
        assert!(
            findings[0]
                .verdict
                .ends_with("the application, not the nodes")
        );
    }

    #[test]
    fn pressure_on_one_node_shared_with_others_is_the_node() {
        let nodes = vec![
            node("a")
                .with("web", scored("web-0", 10.0))
                .with("db", scored("db-0", 10.0)),
            node("b")
                .with("web", scored("web-1", 55.0))
                .with("cron", scored("cron-0", 50.0)),
            node("c").with("web", scored("web-2", 12.0)),
        ];
        let findings = verdicts(&nodes);
        // web names node b; cron runs on b only, so it says nothing on its own.
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(source(f), PressureSource::Node);
        assert_eq!(f.nodes, ["b"]);
        assert_eq!(f.instances[0].instance, "web-1");
        assert!(
            f.verdict
                .contains("only on b of its 3 nodes, where 1 other workload is too (cron)"),
            "{}",
            f.verdict
        );
    }

    #[test]
    fn pressure_alone_or_nowhere_or_on_one_node_only_is_no_verdict() {
        let alone = vec![
            node("a")
                .with("web", scored("web-0", 80.0))
                .with("db", scored("db-0", 5.0)),
            node("b").with("web", scored("web-1", 5.0)),
        ];
        assert!(verdicts(&alone).is_empty(), "an instance's own problem");
        let calm = vec![
            node("a").with("web", scored("web-0", 39.0)),
            node("b").with("web", scored("web-1", 20.0)),
        ];
        assert!(verdicts(&calm).is_empty());
        let single_node = vec![
            node("a")
                .with("web", scored("web-0", 90.0))
                .with("web", scored("web-1", 90.0)),
        ];
        assert!(verdicts(&single_node).is_empty());
    }
}
