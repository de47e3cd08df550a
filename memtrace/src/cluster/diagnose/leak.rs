//! Leak localisation: which instances' RSS grows steadily over the window, and whether that is
//! every instance (a code regression), some (named), or a leak that moved since the window
//! before.
use std::collections::BTreeSet;

use memtrace_api::diagnose::{
    Evidence, Finding, FindingKind, InstanceGrowth, InstanceRef, LeakClass, LeakEvidence,
};

use super::{Fleet, Placed, Thresholds, count, distinct};
use crate::units::human_bytes;

/// The instances of one window: how many could be judged, and those that leak.
struct Judged {
    judged: u32,
    leaking: Vec<InstanceGrowth>,
}

pub(super) fn leaks(fleet: &Fleet<'_>, t: &Thresholds) -> Vec<Finding> {
    let span = t.window.as_secs_f64();
    let mut findings = Vec::new();
    for (workload, placed) in fleet.by_workload() {
        let current = judge(&placed, false);
        if current.leaking.is_empty() {
            continue;
        }
        let previous = judge(&placed, true);
        let keys = |j: &Judged| -> BTreeSet<(String, String)> {
            j.leaking
                .iter()
                .map(|g| (g.node.clone(), g.instance.clone()))
                .collect()
        };
        let (now_keys, before_keys) = (keys(&current), keys(&previous));
        let share = current.leaking.len() as f64 / f64::from(current.judged);
        let class = if share >= t.leak_all_share {
            LeakClass::All
        } else if !before_keys.is_empty() && now_keys.is_disjoint(&before_keys) {
            LeakClass::Migrating
        } else {
            LeakClass::Subset
        };
        let leaking = &current.leaking;
        let top = &leaking[0];
        let verdict = match class {
            LeakClass::All => format!(
                "{workload}: {}/{} leak (fastest {} on {}: +{}/h, +{:.0}%/h): a code regression in every replica",
                leaking.len(),
                count(current.judged as usize, "instance"),
                top.instance,
                top.node,
                human_bytes(top.growth_bytes_per_hour as u64),
                top.growth_ratio_per_hour * 100.0
            ),
            LeakClass::Subset => format!(
                "{workload}: {}/{} leak: {} on {} grows +{}/h (+{:.0}%/h){}",
                leaking.len(),
                count(current.judged as usize, "instance"),
                top.instance,
                top.node,
                human_bytes(top.growth_bytes_per_hour as u64),
                top.growth_ratio_per_hour * 100.0,
                others(leaking)
            ),
            LeakClass::Migrating => format!(
                "{workload}: the leak moved from {} to {} on {} (+{}/h, +{:.0}%/h): it follows load or data, not one replica",
                previous
                    .leaking
                    .iter()
                    .map(|g| format!("{} on {}", g.instance, g.node))
                    .collect::<Vec<_>>()
                    .join(", "),
                top.instance,
                top.node,
                human_bytes(top.growth_bytes_per_hour as u64),
                top.growth_ratio_per_hour * 100.0
            ),
        };
        findings.push(Finding {
            kind: FindingKind::Leak,
            workload: workload.to_owned(),
            verdict,
            nodes: distinct(leaking.iter().map(|g| g.node.clone())),
            instances: leaking
                .iter()
                .map(|g| InstanceRef {
                    node: g.node.clone(),
                    instance: g.instance.clone(),
                })
                .collect(),
            evidence: Evidence::Leak(LeakEvidence {
                class,
                window_seconds: span,
                judged_instances: current.judged,
                leaking: current.leaking,
                previously_leaking: if class == LeakClass::Migrating {
                    previous.leaking
                } else {
                    Vec::new()
                },
            }),
        });
    }
    findings
}

fn others(leaking: &[InstanceGrowth]) -> String {
    if leaking.len() < 2 {
        return String::new();
    }
    let rest: Vec<String> = leaking[1..]
        .iter()
        .map(|g| format!("{} on {}", g.instance, g.node))
        .collect();
    format!("; also {}", rest.join(", "))
}

/// The instances judged over one window (the current one, or the one before it).
fn judge(placed: &[Placed<'_>], previous: bool) -> Judged {
    let mut judged = 0;
    let mut leaking = Vec::new();
    for p in placed {
        let growth = if previous {
            p.trend.leak_before
        } else {
            p.trend.leak_now
        };
        let Some(growth) = growth else {
            continue;
        };
        judged += 1;
        if growth.leaking {
            leaking.push(InstanceGrowth {
                node: p.node.to_owned(),
                instance: p.instance.instance.clone(),
                growth_bytes_per_hour: growth.bytes_per_hour,
                growth_ratio_per_hour: growth.ratio_per_hour,
                rss_bytes: growth.rss_bytes,
                limit_bytes: p.instance.limit_bytes,
            });
        }
    }
    leaking.sort_by(|a, b| b.growth_bytes_per_hour.total_cmp(&a.growth_bytes_per_hour));
    Judged { judged, leaking }
}

#[cfg(test)]
mod tests {
    use memtrace_api::workloads::InstanceSummary;

    use super::super::{NodeAnswer, diagnose, fixtures::*};
    use super::*;

    fn leak_findings(nodes: &[NodeAnswer]) -> Vec<Finding> {
        diagnose(nodes, &Thresholds::default(), NOW_MS)
            .into_iter()
            .filter(|f| f.kind == FindingKind::Leak)
            .collect()
    }

    fn evidence(f: &Finding) -> &LeakEvidence {
        match &f.evidence {
            Evidence::Leak(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_leaking_replica_is_a_named_subset() {
        let nodes = vec![
            node("a")
                .with("api", flat("api-0", 300 * MIB))
                .with("api", growing("api-1", 300 * MIB, 60 * MIB)),
            node("b").with("api", flat("api-2", 300 * MIB)),
            node("c").with("api", flat("api-3", 300 * MIB)),
        ];
        let findings = leak_findings(&nodes);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        let e = evidence(f);
        assert_eq!(e.class, LeakClass::Subset);
        assert_eq!(e.judged_instances, 4);
        assert_eq!(f.nodes, ["a"]);
        assert_eq!(f.instances[0].instance, "api-1");
        assert!((e.leaking[0].growth_bytes_per_hour / (60 * MIB) as f64 - 1.0).abs() < 0.01);
        assert!(
            f.verdict.contains("api-1 on a grows +60.0 MiB/h"),
            "{}",
            f.verdict
        );
    }

    #[test]
    fn every_replica_leaking_is_a_regression() {
        let nodes = vec![
            node("a").with("api", growing("api-0", 200 * MIB, 80 * MIB)),
            node("b").with("api", growing("api-1", 200 * MIB, 70 * MIB)),
            node("c").with("api", growing("api-2", 200 * MIB, 90 * MIB)),
        ];
        let f = &leak_findings(&nodes)[0];
        assert_eq!(evidence(f).class, LeakClass::All);
        assert_eq!(f.instances.len(), 3);
        assert_eq!(f.instances[0].instance, "api-2", "fastest first");
    }

    #[test]
    fn slow_or_small_growth_is_not_a_leak() {
        let nodes = vec![
            // 60 MiB/h on 2 GiB is 3 %/h: under 10 %/h.
            node("a").with("big", growing("big-0", 2048 * MIB, 60 * MIB)),
            // 20 %/h but only 20 MiB/h.
            node("b").with("small", growing("small-0", 100 * MIB, 20 * MIB)),
        ];
        assert!(leak_findings(&nodes).is_empty());
    }

    #[test]
    fn a_large_limit_raises_the_absolute_bar() {
        // 60 MiB/h is 12 %/h of 500 MiB, and above 50 MiB/h, but under 5 % of a 2 GiB limit.
        let limited = InstanceSummary {
            limit_bytes: Some(2048 * MIB),
            ..growing("api-0", 500 * MIB, 60 * MIB)
        };
        assert!(leak_findings(&[node("a").with("api", limited)]).is_empty());
        let loose = InstanceSummary {
            limit_bytes: Some(512 * MIB),
            ..growing("api-0", 500 * MIB, 60 * MIB)
        };
        assert_eq!(leak_findings(&[node("a").with("api", loose)]).len(), 1);
    }

    #[test]
    fn a_restart_splits_the_series() {
        // The old process held 500 MiB; the new one, started 40 minutes ago, began at 100 MiB
        // and leaks 90 MiB/h. Read across the restart, the drop hides the leak.
        let mut restarted = instance(
            "api-0",
            |ago| {
                if ago > 40.0 {
                    500 * MIB
                } else {
                    100 * MIB + ((40.0 - ago) / 60.0 * 90.0 * MIB as f64) as u64
                }
            },
            0.0,
        );
        restarted.started_unix_ms = (NOW_S - 40 * 60) * 1000;
        let findings = leak_findings(&[node("a").with("api", restarted.clone())]);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let growth = evidence(&findings[0]).leaking[0].growth_bytes_per_hour;
        assert!((growth / (90 * MIB) as f64 - 1.0).abs() < 0.01, "{growth}");
        let spanning = InstanceSummary {
            started_unix_ms: 0,
            ..restarted
        };
        assert!(
            leak_findings(&[node("a").with("api", spanning)]).is_empty(),
            "the same points read as one series hide the leak"
        );
    }

    #[test]
    fn a_one_off_allocation_is_not_a_leak() {
        // +280 MiB at once half an hour ago, flat before and after.
        let step = instance(
            "api-0",
            |ago| if ago > 30.0 { 20 * MIB } else { 300 * MIB },
            0.0,
        );
        assert!(leak_findings(&[node("a").with("api", step)]).is_empty());
    }

    #[test]
    fn too_little_history_is_not_judged() {
        // Started 20 minutes ago and growing fast: a third of the window is not enough.
        let mut young = growing("api-0", 100 * MIB, 300 * MIB);
        young.started_unix_ms = (NOW_S - 20 * 60) * 1000;
        assert!(leak_findings(&[node("a").with("api", young)]).is_empty());
    }

    #[test]
    fn a_leak_that_changes_instance_between_windows_is_migrating() {
        // api-0 grew during the window before and is flat now; api-2 grows now.
        let was = instance(
            "api-0",
            |ago| 300 * MIB + ((120.0 - ago.clamp(60.0, 120.0)) / 60.0 * 80.0) as u64 * MIB,
            0.0,
        );
        let now = instance(
            "api-2",
            |ago| 300 * MIB + ((60.0 - ago.min(60.0)) / 60.0 * 80.0) as u64 * MIB,
            0.0,
        );
        let nodes = vec![
            node("a")
                .with("api", was)
                .with("api", flat("api-1", 300 * MIB)),
            node("b")
                .with("api", now)
                .with("api", flat("api-3", 300 * MIB)),
        ];
        let findings = leak_findings(&nodes);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let e = evidence(&findings[0]);
        assert_eq!(e.class, LeakClass::Migrating);
        assert_eq!(e.leaking[0].instance, "api-2");
        assert_eq!(e.previously_leaking[0].instance, "api-0");
        assert!(
            findings[0]
                .verdict
                .contains("moved from api-0 on a to api-2 on b"),
            "{}",
            findings[0].verdict
        );
    }

    #[test]
    fn a_leak_in_the_same_instance_both_windows_stays_a_subset() {
        let nodes = vec![
            node("a")
                .with("api", growing("api-0", 300 * MIB, 80 * MIB))
                .with("api", flat("api-1", 300 * MIB)),
            node("b").with("api", flat("api-2", 300 * MIB)),
        ];
        assert_eq!(evidence(&leak_findings(&nodes)[0]).class, LeakClass::Subset);
    }
}
