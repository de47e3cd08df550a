//! Hot shard / replica skew: a workload with enough instances on enough nodes, one of which holds
//! far more anon RSS than the median instance.
use memtrace_api::diagnose::{
    Evidence, Finding, FindingKind, HotShardEvidence, InstanceBytes, InstanceRef,
};

use super::{Fleet, Thresholds, count, distinct, series::median};
use crate::units::human_bytes;

pub(super) fn hot_shards(fleet: &Fleet<'_>, t: &Thresholds) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (workload, placed) in fleet.by_workload() {
        let nodes = distinct(placed.iter().map(|p| p.node));
        if placed.len() < t.skew_min_instances as usize || nodes.len() < t.skew_min_nodes as usize {
            continue;
        }
        let mut sizes: Vec<u64> = placed.iter().map(|p| p.instance.rss_anon_bytes).collect();
        let median = median(&mut sizes);
        let ratio_of = |bytes: u64| bytes as f64 / median.max(1) as f64;
        let mut outliers: Vec<InstanceBytes> = placed
            .iter()
            .filter(|p| {
                let bytes = p.instance.rss_anon_bytes;
                bytes >= t.skew_min && ratio_of(bytes) >= t.skew_ratio
            })
            .map(|p| InstanceBytes {
                node: p.node.to_owned(),
                instance: p.instance.instance.clone(),
                bytes: p.instance.rss_anon_bytes,
            })
            .collect();
        if outliers.is_empty() {
            continue;
        }
        outliers.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.node.cmp(&b.node)));
        let top = &outliers[0];
        let ratio = ratio_of(top.bytes);
        let verdict = format!(
            "{workload}: instance {} on {} holds {ratio:.1}× the median anon RSS ({} vs {} over {} on {}): a hot shard{}",
            top.instance,
            top.node,
            human_bytes(top.bytes),
            human_bytes(median),
            count(placed.len(), "instance"),
            count(nodes.len(), "node"),
            match outliers.len() {
                1 => String::new(),
                n => format!(" ({} more above {:.1}×)", n - 1, t.skew_ratio),
            }
        );
        findings.push(Finding {
            kind: FindingKind::HotShard,
            workload: workload.to_owned(),
            verdict,
            nodes: distinct(outliers.iter().map(|o| o.node.clone())),
            instances: outliers
                .iter()
                .map(|o| InstanceRef {
                    node: o.node.clone(),
                    instance: o.instance.clone(),
                })
                .collect(),
            evidence: Evidence::HotShard(HotShardEvidence {
                instance_count: placed.len() as u32,
                node_count: nodes.len() as u32,
                median_rss_anon_bytes: median,
                max_rss_anon_bytes: top.bytes,
                ratio,
                outliers,
            }),
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::super::{NodeAnswer, diagnose, fixtures::*};
    use super::*;

    fn redis(hot: u64) -> Vec<NodeAnswer> {
        vec![
            node("a")
                .with("redis", flat("redis-0", 100 * MIB))
                .with("redis", flat("redis-1", 110 * MIB)),
            node("b").with("redis", flat("redis-2", hot)),
            node("c").with("redis", flat("redis-3", 90 * MIB)),
        ]
    }

    fn shards(nodes: &[NodeAnswer], t: &Thresholds) -> Vec<Finding> {
        diagnose(nodes, t, NOW_MS)
            .into_iter()
            .filter(|f| f.kind == FindingKind::HotShard)
            .collect()
    }

    #[test]
    fn names_the_outlier_and_its_node() {
        let findings = shards(&redis(400 * MIB), &Thresholds::default());
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.workload, "redis");
        assert_eq!(f.nodes, ["b"]);
        assert_eq!(
            f.instances,
            [InstanceRef {
                node: "b".into(),
                instance: "redis-2".into()
            }]
        );
        let Evidence::HotShard(e) = &f.evidence else {
            panic!("{f:?}")
        };
        // Median of 90, 100, 110, 400 MiB is 105 MiB.
        assert_eq!(e.median_rss_anon_bytes, 105 * MIB);
        assert_eq!(e.max_rss_anon_bytes, 400 * MIB);
        assert!((e.ratio - 400.0 / 105.0).abs() < 1e-9);
        assert_eq!((e.instance_count, e.node_count), (4, 3));
        assert!(
            f.verdict
                .starts_with("redis: instance redis-2 on b holds 3.8× the median anon RSS"),
            "{}",
            f.verdict
        );
    }

    #[test]
    fn balanced_replicas_are_healthy() {
        // 150 MiB is 1.43× the median of 105 MiB: under 1.5.
        assert!(shards(&redis(150 * MIB), &Thresholds::default()).is_empty());
    }

    #[test]
    fn small_absolute_sizes_do_not_matter() {
        let nodes = vec![
            node("a")
                .with("tiny", flat("t0", 2 * MIB))
                .with("tiny", flat("t1", 2 * MIB)),
            node("b").with("tiny", flat("t2", 40 * MIB)),
        ];
        assert!(shards(&nodes, &Thresholds::default()).is_empty());
        let low = Thresholds {
            skew_min: 32 * MIB,
            ..Thresholds::default()
        };
        assert_eq!(shards(&nodes, &low).len(), 1);
    }

    #[test]
    fn too_few_instances_or_one_node_only() {
        let two = vec![
            node("a").with("redis", flat("r0", 100 * MIB)),
            node("b").with("redis", flat("r1", 900 * MIB)),
        ];
        assert!(shards(&two, &Thresholds::default()).is_empty());
        let one_node = vec![
            node("a")
                .with("redis", flat("r0", 100 * MIB))
                .with("redis", flat("r1", 100 * MIB))
                .with("redis", flat("r2", 900 * MIB)),
        ];
        assert!(shards(&one_node, &Thresholds::default()).is_empty());
    }
}
