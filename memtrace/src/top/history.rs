//! The client-side ring of the last refreshes: per process, cgroup, workload and node, the
//! metrics the detail pane draws as sparklines. Samples are `f32` (a sparkline needs no more),
//! so 10 000 processes over the whole ring take about 20 MiB.
use std::collections::{HashMap, VecDeque};

use memtrace_api::frame::Frame;

use super::rows::{self, Metrics, RowKey};
use super::source::{Fleet, NodeFrame};

/// Refreshes kept.
pub const CAPACITY: usize = 60;

/// One refresh of one row.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub rss_anon: f32,
    pub rss_file: f32,
    pub rss_shmem: f32,
    pub faults_minor: f32,
    pub faults_major: f32,
    pub reclaim: f32,
    /// A node: available memory.
    pub available: f32,
    /// A node: PSI `some` avg10.
    pub psi_some: f32,
}

impl Sample {
    fn of(m: &Metrics) -> Self {
        Self {
            rss_anon: m.anon as f32,
            rss_file: m.file as f32,
            rss_shmem: m.shmem as f32,
            faults_minor: m.faults_minor as f32,
            faults_major: m.faults_major as f32,
            reclaim: m.reclaim as f32,
            available: 0.0,
            psi_some: 0.0,
        }
    }
}

struct Series {
    samples: VecDeque<Sample>,
    /// The refresh it was last seen at.
    seen: u64,
}

#[derive(Default)]
pub struct History {
    /// foldhash rather than SipHash: every process's key is looked up at each refresh (10,000 of
    /// them a second), and the keys come from the daemon, not from an attacker with a budget.
    series: HashMap<RowKey, Series, foldhash::fast::RandomState>,
    /// Refreshes recorded so far.
    refreshes: u64,
}

impl History {
    /// The samples of `key`, oldest first.
    pub fn samples(&self, key: &RowKey) -> Option<&VecDeque<Sample>> {
        self.series.get(key).map(|s| &s.samples)
    }

    pub fn clear(&mut self) {
        self.series.clear();
    }

    /// Forget everything, then record `frames` (oldest first) as refreshes of one node.
    pub fn rebuild(&mut self, frames: &[Frame], target: &str) {
        self.clear();
        for frame in frames.iter().skip(frames.len().saturating_sub(CAPACITY)) {
            let node = NodeFrame {
                target: target.to_owned(),
                frame: frame.clone(),
                detailed: true,
            };
            self.push(&Fleet {
                nodes: vec![node],
                ..Fleet::default()
            });
        }
    }

    /// Record one refresh: each row of every view gets a sample; rows gone for the whole ring
    /// are forgotten.
    pub fn push(&mut self, fleet: &Fleet) {
        self.refreshes += 1;
        let now = self.refreshes;
        let mut record = |key: RowKey, sample: Sample| {
            let series = self.series.entry(key).or_insert_with(|| Series {
                samples: VecDeque::with_capacity(8),
                seen: now,
            });
            if series.samples.len() == CAPACITY {
                series.samples.pop_front();
            }
            series.samples.push_back(sample);
            series.seen = now;
        };
        if let Some(node) = fleet.detailed() {
            for process in &node.frame.snapshot.processes {
                record(
                    RowKey::Process(process.pid),
                    Sample::of(&rows::process_metrics(process)),
                );
            }
            for cgroup in &node.frame.snapshot.cgroups {
                record(
                    RowKey::Cgroup(cgroup.path.clone()),
                    Sample::of(&rows::cgroup_metrics(cgroup)),
                );
            }
        }
        for row in rows::workload_rows(fleet) {
            record(row.key, Sample::of(&row.metrics));
        }
        for node in &fleet.nodes {
            let memory = &node.frame.snapshot.node_memory;
            let sample = Sample {
                available: memory.mem_available_bytes as f32,
                psi_some: memory.psi.map_or(0.0, |psi| psi.some_avg10 as f32),
                ..Sample::of(&rows::node_metrics(node))
            };
            record(RowKey::Node(node.target.clone()), sample);
        }
        let oldest = now.saturating_sub(CAPACITY as u64);
        self.series.retain(|_, series| series.seen > oldest);
    }
}
