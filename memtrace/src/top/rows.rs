//! The rows of each view, made from a [`Fleet`]: one [`Row`] per process, workload, cgroup or
//! node, with the [`Metrics`] every view sorts by, filtered and sorted as the user asked.
use std::collections::{BTreeSet, HashMap};

use memtrace_api::workloads::{InstanceSummary, WorkloadSummary};
use memtrace_api::{CgroupView, ProcessView};

use super::source::{Fleet, NodeFrame};
use crate::escape::terminal;

/// The four views (Tab, 1–4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum View {
    #[default]
    Processes,
    Workloads,
    Cgroups,
    Node,
}

impl View {
    pub const ALL: [Self; 4] = [Self::Processes, Self::Workloads, Self::Cgroups, Self::Node];

    pub fn title(self) -> &'static str {
        match self {
            Self::Processes => "Processes",
            Self::Workloads => "Workloads",
            Self::Cgroups => "Cgroups",
            Self::Node => "Nodes",
        }
    }

    pub fn next(self) -> Self {
        let at = Self::ALL.iter().position(|v| *v == self).unwrap_or(0);
        Self::ALL[(at + 1) % Self::ALL.len()]
    }
}

/// What a row is, stable across refreshes (the selection and the history follow it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowKey {
    Process(u32),
    Workload(String),
    Cgroup(String),
    /// A node's target.
    Node(String),
}

/// What every row is sorted by and shows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    pub pressure: f64,
    /// anon + file + shmem (a node: memory in use, total − available).
    pub rss: u64,
    /// A node: its anonymous memory.
    pub anon: u64,
    /// A node: its page cache.
    pub file: u64,
    /// A node: swap in use.
    pub shmem: u64,
    pub faults_minor: f64,
    pub faults_major: f64,
    /// Seconds stalled in reclaim per second.
    pub reclaim: f64,
    /// RSS change per second over the growth window, once known.
    pub growth: Option<f64>,
    /// The growth looks like a leak.
    pub leak: bool,
}

/// What the rows are ordered by (`s`/`S` cycle through them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    #[default]
    Pressure,
    Rss,
    Anon,
    File,
    Shmem,
    MinorFaults,
    MajorFaults,
    Reclaim,
    Growth,
}

impl SortKey {
    pub const ALL: [Self; 9] = [
        Self::Pressure,
        Self::Rss,
        Self::Anon,
        Self::File,
        Self::Shmem,
        Self::MinorFaults,
        Self::MajorFaults,
        Self::Reclaim,
        Self::Growth,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Pressure => "pressure",
            Self::Rss => "RSS",
            Self::Anon => "anon",
            Self::File => "file",
            Self::Shmem => "shmem",
            Self::MinorFaults => "minor faults",
            Self::MajorFaults => "major faults",
            Self::Reclaim => "reclaim stall",
            Self::Growth => "growth",
        }
    }

    /// The next key (`forward`) or the previous one.
    pub fn cycle(self, forward: bool) -> Self {
        let at = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        let len = Self::ALL.len();
        Self::ALL[if forward {
            (at + 1) % len
        } else {
            (at + len - 1) % len
        }]
    }

    /// The value sorted on; an unknown growth sorts below every known one.
    pub fn value(self, m: &Metrics) -> f64 {
        match self {
            Self::Pressure => m.pressure,
            Self::Rss => m.rss as f64,
            Self::Anon => m.anon as f64,
            Self::File => m.file as f64,
            Self::Shmem => m.shmem as f64,
            Self::MinorFaults => m.faults_minor,
            Self::MajorFaults => m.faults_major,
            Self::Reclaim => m.reclaim,
            Self::Growth => m.growth.unwrap_or(f64::NEG_INFINITY),
        }
    }
}

/// One line of a view's table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub key: RowKey,
    /// The command, the workload, the cgroup's path or the node's name (safe for a terminal).
    pub name: String,
    /// The pid, the instances, the processes or the target.
    pub id: String,
    /// A process's or cgroup's workload; a workload's kind; a node's kernel.
    pub workload: String,
    /// A process's cgroup; a workload's busiest instance's.
    pub cgroup: String,
    pub metrics: Metrics,
}

impl Row {
    /// Whether `needle` (lower case) is in the name, workload, cgroup or id.
    pub fn matches(&self, needle: &str) -> bool {
        needle.is_empty()
            || [&self.name, &self.workload, &self.cgroup, &self.id]
                .iter()
                .any(|field| field.to_lowercase().contains(needle))
    }
}

/// The rows of `view`, filtered by `filter` (case-insensitive) and sorted by `sort`, highest
/// first unless `ascending`; ties in name order, so the order is the same at every refresh.
pub fn build(view: View, fleet: &Fleet, sort: SortKey, ascending: bool, filter: &str) -> Vec<Row> {
    let mut rows = match view {
        View::Processes => fleet.detailed().map(process_rows).unwrap_or_default(),
        View::Workloads => workload_rows(fleet),
        View::Cgroups => fleet.detailed().map(cgroup_rows).unwrap_or_default(),
        View::Node => fleet.nodes.iter().map(node_row).collect(),
    };
    let needle = filter.to_lowercase();
    rows.retain(|row| row.matches(&needle));
    // Sorted as indices with their values beside them: moving 10,000 rows of ~150 bytes about
    // (a stable sort merges through a buffer) cost more than comparing them.
    let mut order: Vec<(f64, usize)> = rows
        .iter()
        .enumerate()
        .map(|(at, row)| (sort.value(&row.metrics), at))
        .collect();
    order.sort_unstable_by(|(a_value, a), (b_value, b)| {
        let by_value = if ascending {
            a_value.total_cmp(b_value)
        } else {
            b_value.total_cmp(a_value)
        };
        let (a, b) = (&rows[*a], &rows[*b]);
        by_value
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.key.cmp(&b.key))
    });
    let mut rows: Vec<Option<Row>> = rows.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|(_, at)| rows[at].take())
        .collect()
}

pub fn process_metrics(process: &ProcessView) -> Metrics {
    Metrics {
        pressure: process.pressure_score,
        rss: process.rss_bytes,
        anon: process.counters.rss_anon_bytes,
        file: process.counters.rss_file_bytes,
        shmem: process.counters.rss_shmem_bytes,
        faults_minor: process.rates.faults_minor_per_sec,
        faults_major: process.rates.faults_major_per_sec,
        reclaim: process.rates.reclaim_stall_seconds_per_sec,
        growth: process.rss_growth_bytes_per_sec,
        leak: process.leak_hint.is_some(),
    }
}

pub fn cgroup_metrics(cgroup: &CgroupView) -> Metrics {
    Metrics {
        pressure: cgroup.pressure_score,
        rss: cgroup.rss_bytes,
        anon: cgroup.counters.rss_anon_bytes,
        file: cgroup.counters.rss_file_bytes,
        shmem: cgroup.counters.rss_shmem_bytes,
        faults_minor: cgroup.rates.faults_minor_per_sec,
        faults_major: cgroup.rates.faults_major_per_sec,
        reclaim: cgroup.rates.reclaim_stall_seconds_per_sec,
        growth: cgroup.rss_growth_bytes_per_sec,
        leak: false,
    }
}

pub fn instance_metrics(instance: &InstanceSummary) -> Metrics {
    Metrics {
        pressure: instance.pressure_score,
        rss: instance.rss_anon_bytes + instance.rss_file_bytes + instance.rss_shmem_bytes,
        anon: instance.rss_anon_bytes,
        file: instance.rss_file_bytes,
        shmem: instance.rss_shmem_bytes,
        faults_minor: instance.rates.faults_minor_per_sec,
        faults_major: instance.rates.faults_major_per_sec,
        reclaim: instance.rates.reclaim_stall_seconds_per_sec,
        growth: instance.rss_growth_bytes_per_sec,
        leak: instance.leak_hint.is_some(),
    }
}

/// `into` plus `more`: sums, the higher pressure, a leak if either leaks.
pub fn add(into: &mut Metrics, more: &Metrics) {
    into.pressure = into.pressure.max(more.pressure);
    into.rss += more.rss;
    into.anon += more.anon;
    into.file += more.file;
    into.shmem += more.shmem;
    into.faults_minor += more.faults_minor;
    into.faults_major += more.faults_major;
    into.reclaim += more.reclaim;
    into.growth = match (into.growth, more.growth) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    };
    into.leak |= more.leak;
}

pub fn node_metrics(node: &NodeFrame) -> Metrics {
    let memory = &node.frame.snapshot.node_memory;
    let summary = node.frame.workloads.as_ref().map(|w| &w.node);
    let processes = &node.frame.snapshot.processes;
    Metrics {
        pressure: summary.map_or_else(
            || {
                processes
                    .iter()
                    .map(|p| p.pressure_score)
                    .fold(0.0, f64::max)
            },
            |s| s.pressure_score,
        ),
        rss: memory
            .mem_total_bytes
            .saturating_sub(memory.mem_available_bytes),
        anon: memory.anon_bytes,
        file: memory.page_cache_bytes,
        shmem: memory
            .swap_total_bytes
            .saturating_sub(memory.swap_free_bytes),
        faults_minor: processes.iter().map(|p| p.rates.faults_minor_per_sec).sum(),
        faults_major: processes.iter().map(|p| p.rates.faults_major_per_sec).sum(),
        reclaim: summary.map_or_else(
            || {
                processes
                    .iter()
                    .map(|p| p.rates.reclaim_stall_seconds_per_sec)
                    .sum()
            },
            |s| s.reclaim_stall_seconds_per_sec,
        ),
        growth: None,
        leak: false,
    }
}

fn process_rows(node: &NodeFrame) -> Vec<Row> {
    node.frame
        .snapshot
        .processes
        .iter()
        .map(|p| Row {
            key: RowKey::Process(p.pid),
            name: terminal(&p.comm).into_owned(),
            id: p.pid.to_string(),
            workload: p
                .workload
                .as_deref()
                .map(terminal)
                .unwrap_or_default()
                .into_owned(),
            cgroup: p
                .cgroup
                .as_deref()
                .map(terminal)
                .unwrap_or_default()
                .into_owned(),
            metrics: process_metrics(p),
        })
        .collect()
}

fn cgroup_rows(node: &NodeFrame) -> Vec<Row> {
    node.frame
        .snapshot
        .cgroups
        .iter()
        .map(|c| Row {
            key: RowKey::Cgroup(c.path.clone()),
            name: terminal(&c.path).into_owned(),
            id: c.processes.to_string(),
            workload: c
                .workload
                .as_deref()
                .map(terminal)
                .unwrap_or_default()
                .into_owned(),
            cgroup: String::new(),
            metrics: cgroup_metrics(c),
        })
        .collect()
}

/// A workload across the nodes that answered.
#[derive(Default)]
struct Merged<'a> {
    nodes: BTreeSet<&'a str>,
    instances: usize,
    kind: Option<memtrace_api::workloads::WorkloadKind>,
    metrics: Metrics,
    /// The cgroup of the instance with the most pressure.
    busiest: Option<(f64, &'a str)>,
}

/// Each workload once, summed over its instances on every node.
pub fn workload_rows(fleet: &Fleet) -> Vec<Row> {
    let mut merged: HashMap<&str, Merged<'_>> = HashMap::new();
    for node in &fleet.nodes {
        for workload in node.frame.workloads.iter().flat_map(|w| &w.workloads) {
            let entry = merged.entry(workload.workload.as_str()).or_default();
            merge(entry, node, workload);
        }
    }
    let several_nodes = fleet.nodes.len() > 1;
    merged
        .into_iter()
        .map(|(workload, m)| {
            let instances = if m.instances == 1 {
                "1 inst".to_owned()
            } else {
                format!("{} inst", m.instances)
            };
            let id = if several_nodes {
                format!("{}n {instances}", m.nodes.len())
            } else {
                instances
            };
            Row {
                key: RowKey::Workload(workload.to_owned()),
                name: terminal(workload).into_owned(),
                id,
                workload: m.kind.map(kind_label).unwrap_or_default().to_owned(),
                cgroup: m
                    .busiest
                    .map(|(_, c)| terminal(c).into_owned())
                    .unwrap_or_default(),
                metrics: m.metrics,
            }
        })
        .collect()
}

fn merge<'a>(entry: &mut Merged<'a>, node: &'a NodeFrame, workload: &'a WorkloadSummary) {
    entry.nodes.insert(node.target.as_str());
    entry.kind = Some(workload.kind);
    for instance in &workload.instances {
        entry.instances += 1;
        add(&mut entry.metrics, &instance_metrics(instance));
        if let Some(cgroup) = &instance.cgroup
            && entry
                .busiest
                .is_none_or(|(pressure, _)| instance.pressure_score > pressure)
        {
            entry.busiest = Some((instance.pressure_score, cgroup));
        }
    }
}

pub fn kind_label(kind: memtrace_api::workloads::WorkloadKind) -> &'static str {
    use memtrace_api::workloads::WorkloadKind;
    match kind {
        WorkloadKind::Kubernetes => "kubernetes",
        WorkloadKind::Systemd => "systemd",
        WorkloadKind::Container => "container",
        WorkloadKind::Comm => "comm",
    }
}

fn node_row(node: &NodeFrame) -> Row {
    let snapshot = &node.frame.snapshot;
    let processes = node
        .frame
        .workloads
        .as_ref()
        .map_or(snapshot.processes.len() as u64, |w| {
            u64::from(w.node.processes)
        });
    Row {
        key: RowKey::Node(node.target.clone()),
        name: terminal(node.frame.node_name()).into_owned(),
        id: format!("{processes} procs"),
        workload: terminal(&snapshot.node.kernel_release).into_owned(),
        cgroup: terminal(&node.target).into_owned(),
        metrics: node_metrics(node),
    }
}
