//! Fleets for the diagnostics' tests: nodes with workloads, instances and histories.
use memtrace_api::workloads::{
    HistorySpec, InstanceHistory, InstanceSummary, NodeSummary, OomKill, OomScope, WorkloadSummary,
    WorkloadsResponse,
};

use super::NodeAnswer;

pub const MIB: u64 = 1 << 20;
/// Wall time of the tests' fleet: histories end here.
pub const NOW_S: u64 = 1_800_000_000;
pub const NOW_MS: u64 = NOW_S * 1000;
pub const STEP: u32 = 60;
/// Points in a history: six hours.
pub const POINTS: usize = 360;

/// A node with nothing on it yet.
pub fn node(name: &str) -> NodeAnswer {
    NodeAnswer {
        target: format!("{name}:9847"),
        summary: WorkloadsResponse {
            schema_version: 1,
            node: NodeSummary {
                name: name.to_owned(),
                ..NodeSummary::default()
            },
            timestamp_unix_ms: NOW_MS,
            history: HistorySpec {
                step_seconds: STEP,
                max_points: POINTS as u32,
                ..HistorySpec::default()
            },
            ..WorkloadsResponse::default()
        },
        trends: None,
    }
}

/// An instance whose anon RSS (and total RSS, anon + 10 MiB) follows `anon(minutes_ago)` over the
/// last six hours, started before them, at a steady reclaim stall.
pub fn instance(name: &str, anon: impl Fn(f64) -> u64, stall: f64) -> InstanceSummary {
    let start = NOW_S - (POINTS as u64 - 1) * u64::from(STEP);
    let minutes_ago = |i: usize| ((POINTS - 1 - i) as f64) * f64::from(STEP) / 60.0;
    let anon_points: Vec<u64> = (0..POINTS).map(|i| anon(minutes_ago(i))).collect();
    InstanceSummary {
        instance: name.to_owned(),
        started_unix_ms: (start - 3600) * 1000,
        processes: 1,
        rss_anon_bytes: *anon_points.last().unwrap(),
        rss_file_bytes: 10 * MIB,
        rates: memtrace_api::Rates {
            reclaim_stall_seconds_per_sec: stall,
            ..memtrace_api::Rates::default()
        },
        history: InstanceHistory {
            start_unix_s: start,
            rss_bytes: anon_points.iter().map(|v| v + 10 * MIB).collect(),
            rss_anon_bytes: anon_points,
            reclaim_stall_seconds_per_sec: vec![stall; POINTS],
        },
        ..InstanceSummary::default()
    }
}

/// A flat instance of `anon` bytes.
pub fn flat(name: &str, anon: u64) -> InstanceSummary {
    instance(name, |_| anon, 0.0)
}

/// An instance growing steadily by `per_hour`, at `base` an hour ago (the window's start with the
/// default thresholds).
pub fn growing(name: &str, base: u64, per_hour: u64) -> InstanceSummary {
    instance(
        name,
        move |ago| (base as f64 + (60.0 - ago) / 60.0 * per_hour as f64).max(MIB as f64) as u64,
        0.0,
    )
}

impl NodeAnswer {
    /// Adds an instance of `workload`.
    pub fn with(mut self, workload: &str, instance: InstanceSummary) -> Self {
        let workloads = &mut self.summary.workloads;
        match workloads.iter_mut().find(|w| w.workload == workload) {
            Some(w) => w.instances.push(instance),
            None => workloads.push(WorkloadSummary {
                workload: workload.to_owned(),
                instances: vec![instance],
                ..WorkloadSummary::default()
            }),
        }
        self
    }

    /// Adds an OOM kill `seconds_ago`.
    pub fn with_oom(
        mut self,
        workload: &str,
        instance: &str,
        seconds_ago: u64,
        scope: OomScope,
    ) -> Self {
        self.summary.ooms.push(OomKill {
            timestamp_unix_ms: NOW_MS - seconds_ago * 1000,
            workload: workload.to_owned(),
            instance: instance.to_owned(),
            victim_comm: workload.to_owned(),
            scope,
            ..OomKill::default()
        });
        self
    }
}
