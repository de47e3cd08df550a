//! Prometheus text exposition (format 0.0.4) of one [`Snapshot`].
//!
//! # Bounded cardinality, by design
//!
//! A node runs thousands of short-lived processes; one series per pid would grow the TSDB without
//! bound (every pid is a new series forever) and make alerts on "a process" meaningless. So:
//!
//! - **No `pid` label anywhere.** Per-process data is aggregated by *workload* = (`comm`,
//!   `cgroup`): processes with the same comm in the same cgroup are one series (counters and gauges
//!   summed, the pressure score is the maximum). Labels: `comm`, `cgroup`, `pod_uid`,
//!   `container_id` (empty when unknown).
//! - Only the top [`ExportConfig::top_processes`] workloads by pressure score (ties: by
//!   major+minor fault rate, then by name) get their own series; all other workloads are summed
//!   into ONE series labelled `comm="~other", cgroup="~other", pod_uid="", container_id=""`.
//! - Per-cgroup series exist for at most [`ExportConfig::max_cgroups`] cgroups by pressure score;
//!   the rest are summed into `cgroup="~other"` (no limit series for it: a sum of limits is not a
//!   limit).
//! - OOM kills are labelled by victim workload, at most `top_processes` of them (most recent kill
//!   first; the rest in `~other`), and only while the workload's latest kill is within
//!   [`ExportConfig::oom_label_retention`], so the set of OOM series is bounded by the kill rate
//!   times the retention, and also by the daemon's bounded OOM history.
//!
//! Hence per metric name at most `top_processes + 1` workload series (times the fixed values of
//! `type`/`op`) and `max_cgroups + 1` cgroup series, whatever the node runs.
//!
//! Churn: processes and cgroups that exited are not in the next snapshot, so their series leave
//! the exposition at the next scrape, i.e. within one scrape interval (Prometheus then marks them
//! stale). Workload counters are sums over the workload's *live* processes, and the `~other`
//! aggregates change membership as the top N changes, so those counters may go down; Prometheus'
//! `rate()`/`increase()` treat that as a counter reset. Cgroup counters include the cgroup's
//! exited processes and do not go down.
//!
//! OOM counter semantics: `memtrace_oom_kills_total` for a workload counts all of its kills in the
//! OOM history, and the series is present while its newest kill is within the retention. Counting
//! only the kills inside the window would make a live series decrease as old kills age out, which
//! `increase()` reads as a reset followed by phantom kills. The node-wide
//! `memtrace_node_oom_kills_total` (kernel vmstat `oom_kill`) is the authoritative rate.
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use ::prometheus::{CounterVec, GaugeVec, Opts, Registry, TextEncoder};

use memtrace_api::{CgroupView, Counters, Family, OomRecord, OwnerView, ProcessView, Snapshot};

/// Label value of the aggregate of everything outside the top N.
pub const OTHER: &str = "~other";

/// `Content-Type` of the text exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What to export and how much of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportConfig {
    /// Workloads (comm, cgroup) with their own series; the rest are summed into `~other`.
    pub top_processes: usize,
    /// Cgroups with their own series; the rest are summed into `~other`.
    pub max_cgroups: usize,
    /// How long an OOM-killed workload keeps its `memtrace_oom_kills_total` series after its
    /// latest kill.
    pub oom_label_retention: Duration,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            top_processes: 50,
            max_cgroups: 200,
            oom_label_retention: Duration::from_secs(3600),
        }
    }
}

/// Labels of `memtrace_build_info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: &'static str,
    /// Running kernel release (`uname -r`).
    pub kernel: String,
}

/// Render the Prometheus text exposition (format 0.0.4) for one snapshot.
///
/// `ooms` is the daemon's OOM history (any order); `now_unix_ms` is the wall clock the OOM
/// retention is measured against. Encoding cannot fail for the fixed metric definitions here; if it
/// ever did, the error is logged and the result is empty (use [`try_render`] to see the error).
pub fn render(
    snapshot: &Snapshot,
    ooms: &[OomRecord],
    config: &ExportConfig,
    build: &BuildInfo,
    now_unix_ms: u64,
) -> String {
    try_render(snapshot, ooms, config, build, now_unix_ms).unwrap_or_else(|e| {
        tracing::error!(error = %e, "rendering the metrics exposition failed");
        String::new()
    })
}

/// [`render`], with the (never expected) error of the `prometheus` crate.
pub fn try_render(
    snapshot: &Snapshot,
    ooms: &[OomRecord],
    config: &ExportConfig,
    build: &BuildInfo,
    now_unix_ms: u64,
) -> ::prometheus::Result<String> {
    let x = Exposition::default();
    // Without the mmap family nothing counts mmap-family calls: export no zeros for them.
    let calls_counted = snapshot.pipeline.families.contains(&Family::Mmap);
    workload_metrics(&x, &snapshot.processes, config.top_processes, calls_counted)?;
    cgroup_metrics(&x, &snapshot.cgroups, config.max_cgroups)?;
    oom_metrics(&x, ooms, config, now_unix_ms)?;
    node_metrics(&x, snapshot)?;
    self_metrics(&x, snapshot, build)?;

    // Counted last, from what is actually exported, and including its own sample.
    let series = x
        .registry
        .gather()
        .iter()
        .map(|mf| mf.get_metric().len())
        .sum::<usize>()
        + 1;
    let g = x.gauge(
        "memtrace_exported_series",
        "Number of series in this exposition, this one included.",
        &[],
    )?;
    set(&g, &[], series as f64)?;

    let mut out = String::new();
    TextEncoder::new().encode_utf8(&x.registry.gather(), &mut out)?;
    Ok(out)
}

/// A fresh registry per scrape: nothing outlives the snapshot it describes.
#[derive(Default)]
struct Exposition {
    registry: Registry,
}

impl Exposition {
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> ::prometheus::Result<CounterVec> {
        let v = CounterVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(v.clone()))?;
        Ok(v)
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> ::prometheus::Result<GaugeVec> {
        let v = GaugeVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(v.clone()))?;
        Ok(v)
    }
}

fn add(v: &CounterVec, labels: &[&str], value: f64) -> ::prometheus::Result<()> {
    v.get_metric_with_label_values(labels)?.inc_by(value);
    Ok(())
}

fn set(v: &GaugeVec, labels: &[&str], value: f64) -> ::prometheus::Result<()> {
    v.get_metric_with_label_values(labels)?.set(value);
    Ok(())
}

/// A 0–100 score as exported (NaN would poison `max` and `topk`).
fn score(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 100.0) }
}

/// A non-negative rate, for ranking only.
fn rate(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.max(0.0) }
}

fn ns_to_seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn us_to_seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

/// `acc += s`, field by field (saturating).
fn add_stats(acc: &mut Counters, s: &Counters) {
    macro_rules! sum {
        ($($f:ident),* $(,)?) => { $( acc.$f = acc.$f.saturating_add(s.$f); )* };
    }
    // Known for the sum only if known for every part.
    acc.vm_bytes = acc
        .vm_bytes
        .zip(s.vm_bytes)
        .map(|(a, b)| a.saturating_add(b));
    acc.faults_user = acc
        .faults_user
        .zip(s.faults_user)
        .map(|(a, b)| a.saturating_add(b));
    acc.faults_kernel = acc
        .faults_kernel
        .zip(s.faults_kernel)
        .map(|(a, b)| a.saturating_add(b));
    sum!(
        faults_minor,
        faults_major,
        mmap_calls,
        mmap_bytes,
        munmap_calls,
        munmap_bytes,
        brk_calls,
        brk_grow_bytes,
        brk_shrink_bytes,
        mremap_calls,
        mremap_grow_bytes,
        mremap_shrink_bytes,
        failed_calls,
        reclaim_stalls,
        reclaim_ns,
        rss_anon_bytes,
        rss_file_bytes,
        rss_shmem_bytes,
        swap_bytes,
    );
}

/// Counters to sum into: the optional ones are known until a part without them is added.
fn empty_sum() -> Counters {
    Counters {
        faults_user: Some(0),
        faults_kernel: Some(0),
        vm_bytes: Some(0),
        ..Counters::default()
    }
}

fn owner_str(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

// ---------------------------------------------------------------------------------------------
// Workloads

/// The processes of one (comm, cgroup), or the `~other` aggregate.
#[derive(Clone, Debug, Default)]
struct Workload<'a> {
    comm: &'a str,
    cgroup: &'a str,
    pod_uid: &'a str,
    container_id: &'a str,
    counters: Counters,
    /// Max over the processes.
    score: f64,
    /// Sum of major + minor fault rates (ranking tie-break).
    fault_rate: f64,
    processes: u64,
}

impl<'a> Workload<'a> {
    fn new(comm: &'a str, cgroup: &'a str, owner: &'a OwnerView) -> Self {
        Self {
            comm,
            cgroup,
            pod_uid: owner_str(&owner.pod_uid),
            container_id: owner_str(&owner.container_id),
            counters: empty_sum(),
            ..Self::default()
        }
    }

    fn add(&mut self, counters: &Counters, score_: f64, fault_rate: f64, processes: u64) {
        add_stats(&mut self.counters, counters);
        self.score = self.score.max(score(score_));
        self.fault_rate += rate(fault_rate);
        self.processes = self.processes.saturating_add(processes);
    }

    fn absorb(&mut self, other: &Workload<'_>) {
        self.add(
            &other.counters,
            other.score,
            other.fault_rate,
            other.processes,
        );
    }
}

/// Descending by score, then fault rate; ascending by the given key for a stable order.
fn rank<K: Ord>(a: (f64, f64, K), b: (f64, f64, K)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0)
        .then(b.1.total_cmp(&a.1))
        .then(a.2.cmp(&b.2))
}

/// Workloads ranked, the top `top` kept and the rest folded into one `~other` (if any).
fn workloads(processes: &[ProcessView], top: usize) -> (Vec<Workload<'_>>, Option<Workload<'_>>) {
    let mut by_key: HashMap<(&str, &str), Workload<'_>> = HashMap::new();
    for p in processes {
        let cgroup = p.cgroup.as_deref().unwrap_or("");
        let fault_rate = p.rates.faults_major_per_sec + p.rates.faults_minor_per_sec;
        by_key
            .entry((p.comm.as_str(), cgroup))
            .or_insert_with(|| Workload::new(&p.comm, cgroup, &p.owner))
            .add(&p.counters, p.pressure_score, fault_rate, 1);
    }
    let mut all: Vec<Workload<'_>> = by_key.into_values().collect();
    all.sort_by(|a, b| {
        rank(
            (a.score, a.fault_rate, (a.comm, a.cgroup)),
            (b.score, b.fault_rate, (b.comm, b.cgroup)),
        )
    });
    let rest = all.split_off(top.min(all.len()));
    let other = (!rest.is_empty()).then(|| {
        let mut o = Workload {
            comm: OTHER,
            cgroup: OTHER,
            counters: empty_sum(),
            ..Workload::default()
        };
        rest.iter().for_each(|w| o.absorb(w));
        o
    });
    (all, other)
}

const WORKLOAD_LABELS: [&str; 4] = ["comm", "cgroup", "pod_uid", "container_id"];
const WORKLOAD_NOTE: &str = "Summed over the live processes of a workload (same comm in the same \
    cgroup); comm=\"~other\" aggregates the workloads outside the top N. Workload and aggregate \
    series may reset when processes exit or enter or leave the top N.";

fn workload_metrics(
    x: &Exposition,
    processes: &[ProcessView],
    top: usize,
    calls_counted: bool,
) -> ::prometheus::Result<()> {
    let with = |extra: &'static str| {
        [
            WORKLOAD_LABELS[0],
            WORKLOAD_LABELS[1],
            WORKLOAD_LABELS[2],
            WORKLOAD_LABELS[3],
            extra,
        ]
    };
    let faults = x.counter(
        "memtrace_process_page_faults_total",
        &format!("Page faults by type (minor, major). {WORKLOAD_NOTE}"),
        &with("type"),
    )?;
    let mapped = calls_counted
        .then(|| {
            x.counter(
                "memtrace_process_mapped_bytes_total",
                &format!(
                    "Bytes mapped or unmapped by mmap, munmap, brk and mremap, by operation \
                     (daemon --mmap-calls). {WORKLOAD_NOTE}"
                ),
                &with("op"),
            )
        })
        .transpose()?;
    let vm = x.gauge(
        "memtrace_process_virtual_memory_bytes",
        &format!(
            "Virtual memory size (the kernel's total_vm: everything mapped, however it was \
             mapped). {WORKLOAD_NOTE}"
        ),
        &WORKLOAD_LABELS,
    )?;
    let stalls = x.counter(
        "memtrace_process_reclaim_stalls_total",
        &format!("Direct-reclaim stalls. {WORKLOAD_NOTE}"),
        &WORKLOAD_LABELS,
    )?;
    let stall_seconds = x.counter(
        "memtrace_process_reclaim_stall_seconds_total",
        &format!("Seconds spent stalled in direct reclaim (summed over threads). {WORKLOAD_NOTE}"),
        &WORKLOAD_LABELS,
    )?;
    let rss = x.gauge(
        "memtrace_process_rss_bytes",
        &format!(
            "Resident memory by type (anon, file, shmem) and swapped-out memory (swap). \
             {WORKLOAD_NOTE}"
        ),
        &with("type"),
    )?;
    let pressure = x.gauge(
        "memtrace_process_pressure_score",
        "Memory-pressure score, 0-100 (see README), the maximum over the workload's processes; \
         comm=\"~other\" is the maximum over the workloads outside the top N.",
        &WORKLOAD_LABELS,
    )?;
    let count = x.gauge(
        "memtrace_process_processes",
        "Live processes in the workload (same comm in the same cgroup); comm=\"~other\" counts \
         those of the workloads outside the top N.",
        &WORKLOAD_LABELS,
    )?;

    let (top, other) = workloads(processes, top);
    for w in top.iter().chain(other.iter()) {
        let l = [w.comm, w.cgroup, w.pod_uid, w.container_id];
        let lx = |v: &'static str| [l[0], l[1], l[2], l[3], v];
        let c = &w.counters;
        add(&faults, &lx("minor"), c.faults_minor as f64)?;
        add(&faults, &lx("major"), c.faults_major as f64)?;
        if let Some(mapped) = &mapped {
            for (op, bytes) in [
                ("mmap", c.mmap_bytes),
                ("munmap", c.munmap_bytes),
                ("brk_grow", c.brk_grow_bytes),
                ("brk_shrink", c.brk_shrink_bytes),
                ("mremap_grow", c.mremap_grow_bytes),
                ("mremap_shrink", c.mremap_shrink_bytes),
            ] {
                add(mapped, &lx(op), bytes as f64)?;
            }
        }
        if let Some(bytes) = c.vm_bytes {
            set(&vm, &l, bytes as f64)?;
        }
        add(&stalls, &l, c.reclaim_stalls as f64)?;
        add(&stall_seconds, &l, ns_to_seconds(c.reclaim_ns))?;
        for (ty, bytes) in [
            ("anon", c.rss_anon_bytes),
            ("file", c.rss_file_bytes),
            ("shmem", c.rss_shmem_bytes),
            ("swap", c.swap_bytes),
        ] {
            set(&rss, &lx(ty), bytes as f64)?;
        }
        set(&pressure, &l, w.score)?;
        set(&count, &l, w.processes as f64)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cgroups

#[derive(Clone, Debug, Default)]
struct Cgroup<'a> {
    path: &'a str,
    pod_uid: &'a str,
    container_id: &'a str,
    qos: &'a str,
    processes: u64,
    faults_minor: u64,
    faults_major: u64,
    reclaim_ns: u64,
    rss_bytes: u64,
    usage_bytes: Option<u64>,
    limit_bytes: Option<u64>,
    psi_some_us: Option<u64>,
    psi_full_us: Option<u64>,
    score: f64,
    fault_rate: f64,
}

fn add_opt(acc: Option<u64>, v: Option<u64>) -> Option<u64> {
    match (acc, v) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, b) => a.or(b),
    }
}

impl<'a> Cgroup<'a> {
    fn from_view(c: &'a CgroupView) -> Self {
        Self {
            path: &c.path,
            pod_uid: owner_str(&c.owner.pod_uid),
            container_id: owner_str(&c.owner.container_id),
            qos: owner_str(&c.owner.qos),
            processes: u64::from(c.processes),
            faults_minor: c.counters.faults_minor,
            faults_major: c.counters.faults_major,
            reclaim_ns: c.counters.reclaim_ns,
            rss_bytes: c.rss_bytes,
            usage_bytes: c.usage_bytes,
            limit_bytes: c.limit_bytes,
            psi_some_us: c.psi.map(|p| p.some_total_us),
            psi_full_us: c.psi.and_then(|p| p.full_total_us),
            score: score(c.pressure_score),
            fault_rate: rate(c.rates.faults_major_per_sec) + rate(c.rates.faults_minor_per_sec),
        }
    }

    /// Sums everything but the limit (a sum of limits is not a limit).
    fn absorb(&mut self, o: &Cgroup<'_>) {
        self.processes = self.processes.saturating_add(o.processes);
        self.faults_minor = self.faults_minor.saturating_add(o.faults_minor);
        self.faults_major = self.faults_major.saturating_add(o.faults_major);
        self.reclaim_ns = self.reclaim_ns.saturating_add(o.reclaim_ns);
        self.rss_bytes = self.rss_bytes.saturating_add(o.rss_bytes);
        self.usage_bytes = add_opt(self.usage_bytes, o.usage_bytes);
        self.psi_some_us = add_opt(self.psi_some_us, o.psi_some_us);
        self.psi_full_us = add_opt(self.psi_full_us, o.psi_full_us);
        self.score = self.score.max(o.score);
        self.fault_rate += o.fault_rate;
    }
}

fn cgroups(views: &[CgroupView], max: usize) -> (Vec<Cgroup<'_>>, Option<Cgroup<'_>>) {
    // Paths are unique in a well-formed snapshot; merge duplicates rather than emit them twice.
    let mut by_path: HashMap<&str, Cgroup<'_>> = HashMap::new();
    for v in views {
        match by_path.entry(v.path.as_str()) {
            Entry::Occupied(mut e) => e.get_mut().absorb(&Cgroup::from_view(v)),
            Entry::Vacant(e) => {
                e.insert(Cgroup::from_view(v));
            }
        }
    }
    let mut all: Vec<Cgroup<'_>> = by_path.into_values().collect();
    all.sort_by(|a, b| {
        rank(
            (a.score, a.fault_rate, a.path),
            (b.score, b.fault_rate, b.path),
        )
    });
    let rest = all.split_off(max.min(all.len()));
    let other = (!rest.is_empty()).then(|| {
        let mut o = Cgroup {
            path: OTHER,
            ..Cgroup::default()
        };
        rest.iter().for_each(|c| o.absorb(c));
        o
    });
    (all, other)
}

const CGROUP_LABELS: [&str; 4] = ["cgroup", "pod_uid", "container_id", "qos"];
const CGROUP_NOTE: &str = "cgroup=\"~other\" aggregates the cgroups outside the top N and may reset when cgroups enter \
     or leave the top N.";

fn cgroup_metrics(x: &Exposition, views: &[CgroupView], max: usize) -> ::prometheus::Result<()> {
    let with = |extra: &'static str| {
        [
            CGROUP_LABELS[0],
            CGROUP_LABELS[1],
            CGROUP_LABELS[2],
            CGROUP_LABELS[3],
            extra,
        ]
    };
    let faults = x.counter(
        "memtrace_cgroup_page_faults_total",
        &format!(
            "Page faults by type (minor, major) of the cgroup's processes, exited ones included. \
             {CGROUP_NOTE}"
        ),
        &with("type"),
    )?;
    let stall_seconds = x.counter(
        "memtrace_cgroup_reclaim_stall_seconds_total",
        &format!(
            "Seconds the cgroup's processes spent stalled in direct reclaim, exited ones included. \
             {CGROUP_NOTE}"
        ),
        &CGROUP_LABELS,
    )?;
    let rss = x.gauge(
        "memtrace_cgroup_rss_bytes",
        &format!("Resident memory (anon + file + shmem) of the cgroup's processes. {CGROUP_NOTE}"),
        &CGROUP_LABELS,
    )?;
    let usage = x.gauge(
        "memtrace_cgroup_memory_usage_bytes",
        &format!("Memory charged to the cgroup (memory.current / usage_in_bytes). {CGROUP_NOTE}"),
        &CGROUP_LABELS,
    )?;
    let limit = x.gauge(
        "memtrace_cgroup_memory_limit_bytes",
        "Memory limit of the cgroup (memory.max / limit_in_bytes); absent when unlimited and for \
         the cgroup=\"~other\" aggregate.",
        &CGROUP_LABELS,
    )?;
    let psi = x.counter(
        "memtrace_cgroup_memory_pressure_seconds_total",
        &format!(
            "Seconds some (kind=\"some\") or all (kind=\"full\") non-idle tasks of the cgroup were \
             stalled on memory (PSI memory.pressure total). {CGROUP_NOTE}"
        ),
        &with("kind"),
    )?;
    let pressure = x.gauge(
        "memtrace_cgroup_pressure_score",
        "Memory-pressure score of the cgroup, 0-100 (see README); cgroup=\"~other\" is the \
         maximum over the cgroups outside the top N.",
        &CGROUP_LABELS,
    )?;
    let processes = x.gauge(
        "memtrace_cgroup_processes",
        &format!("Live processes in the cgroup. {CGROUP_NOTE}"),
        &CGROUP_LABELS,
    )?;

    let (top, other) = cgroups(views, max);
    for c in top.iter().chain(other.iter()) {
        let l = [c.path, c.pod_uid, c.container_id, c.qos];
        let lx = |v: &'static str| [l[0], l[1], l[2], l[3], v];
        add(&faults, &lx("minor"), c.faults_minor as f64)?;
        add(&faults, &lx("major"), c.faults_major as f64)?;
        add(&stall_seconds, &l, ns_to_seconds(c.reclaim_ns))?;
        set(&rss, &l, c.rss_bytes as f64)?;
        if let Some(u) = c.usage_bytes {
            set(&usage, &l, u as f64)?;
        }
        if let Some(m) = c.limit_bytes {
            set(&limit, &l, m as f64)?;
        }
        if let Some(us) = c.psi_some_us {
            add(&psi, &lx("some"), us_to_seconds(us))?;
        }
        if let Some(us) = c.psi_full_us {
            add(&psi, &lx("full"), us_to_seconds(us))?;
        }
        set(&pressure, &l, c.score)?;
        set(&processes, &l, c.processes as f64)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// OOM kills

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct OomKey<'a> {
    comm: &'a str,
    cgroup: &'a str,
    pod_uid: &'a str,
    container_id: &'a str,
}

/// (workload, kills in the history, newest kill) for the workloads whose newest kill is within
/// the retention, newest first; beyond `top`, folded into one `~other`.
fn oom_workloads<'a>(
    ooms: &'a [OomRecord],
    config: &ExportConfig,
    now_unix_ms: u64,
) -> Vec<(OomKey<'a>, u64)> {
    let mut by_key: HashMap<OomKey<'a>, (u64, u64)> = HashMap::new();
    for o in ooms {
        let key = OomKey {
            comm: &o.victim_comm,
            cgroup: owner_str(&o.victim_cgroup),
            pod_uid: owner_str(&o.victim_owner.pod_uid),
            container_id: owner_str(&o.victim_owner.container_id),
        };
        let e = by_key.entry(key).or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(o.timestamp_unix_ms);
    }
    let retention_ms = u64::try_from(config.oom_label_retention.as_millis()).unwrap_or(u64::MAX);
    // A kill stamped after `now` (clock step) counts as recent.
    let mut live: Vec<(OomKey<'a>, u64, u64)> = by_key
        .into_iter()
        .filter(|(_, (_, newest))| now_unix_ms.saturating_sub(*newest) <= retention_ms)
        .map(|(k, (kills, newest))| (k, kills, newest))
        .collect();
    live.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let rest = live.split_off(config.top_processes.min(live.len()));
    let mut out: Vec<(OomKey<'a>, u64)> = live.into_iter().map(|(k, n, _)| (k, n)).collect();
    if !rest.is_empty() {
        let other = OomKey {
            comm: OTHER,
            cgroup: OTHER,
            pod_uid: "",
            container_id: "",
        };
        out.push((other, rest.iter().map(|r| r.1).sum()));
    }
    out
}

fn oom_metrics(
    x: &Exposition,
    ooms: &[OomRecord],
    config: &ExportConfig,
    now_unix_ms: u64,
) -> ::prometheus::Result<()> {
    let kills = x.counter(
        "memtrace_oom_kills_total",
        &format!(
            "OOM kills by victim workload (comm, cgroup) seen by memtrace. A workload's series is \
             present while its latest kill is less than {}s old, also after the workload is gone; \
             comm=\"~other\" aggregates the workloads beyond the top N and may reset.",
            config.oom_label_retention.as_secs()
        ),
        &WORKLOAD_LABELS,
    )?;
    for (k, n) in oom_workloads(ooms, config, now_unix_ms) {
        add(
            &kills,
            &[k.comm, k.cgroup, k.pod_uid, k.container_id],
            n as f64,
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Node and self

fn node_metrics(x: &Exposition, snapshot: &Snapshot) -> ::prometheus::Result<()> {
    let n = &snapshot.node_memory;
    if let Some(p) = n.psi {
        let total = x.counter(
            "memtrace_node_memory_pressure_seconds_total",
            "Seconds some (kind=\"some\") or all (kind=\"full\") non-idle tasks were stalled on \
             memory (/proc/pressure/memory total).",
            &["kind"],
        )?;
        let avg10 = x.gauge(
            "memtrace_node_memory_pressure_avg10_ratio",
            "Share of the last 10 s some (kind=\"some\") or all (kind=\"full\") non-idle tasks \
             were stalled on memory (/proc/pressure/memory avg10 / 100).",
            &["kind"],
        )?;
        add(&total, &["some"], us_to_seconds(p.some_total_us))?;
        set(&avg10, &["some"], rate(p.some_avg10) / 100.0)?;
        if let Some(us) = p.full_total_us {
            add(&total, &["full"], us_to_seconds(us))?;
        }
        if let Some(a) = p.full_avg10 {
            set(&avg10, &["full"], rate(a) / 100.0)?;
        }
    }

    for (name, help, value) in [
        (
            "memtrace_node_memory_total_bytes",
            "MemTotal of /proc/meminfo.",
            n.mem_total_bytes,
        ),
        (
            "memtrace_node_memory_available_bytes",
            "MemAvailable of /proc/meminfo.",
            n.mem_available_bytes,
        ),
        (
            "memtrace_node_swap_free_bytes",
            "SwapFree of /proc/meminfo.",
            n.swap_free_bytes,
        ),
    ] {
        set(&x.gauge(name, help, &[])?, &[], value as f64)?;
    }

    let frag = x.gauge(
        "memtrace_node_fragmentation_index",
        "Unusable free space index for allocations of 2^order pages (0: none, 1: all free memory \
         is in blocks too small), worst zone.",
        &["order"],
    )?;
    set(&frag, &["3"], rate(n.fragmentation_index_order3))?;
    set(&frag, &["9"], rate(n.fragmentation_index_order9))?;

    let faults = x.counter(
        "memtrace_node_page_faults_total",
        "Page faults on the node by type (minor, major), from /proc/vmstat pgfault and pgmajfault.",
        &["type"],
    )?;
    add(
        &faults,
        &["minor"],
        n.pgfault_total.saturating_sub(n.pgmajfault_total) as f64,
    )?;
    add(&faults, &["major"], n.pgmajfault_total as f64)?;

    for (name, help, value) in [
        (
            "memtrace_node_direct_reclaim_stalls_total",
            "Direct-reclaim stalls on the node (/proc/vmstat allocstall).",
            n.allocstall_total,
        ),
        (
            "memtrace_node_compaction_stalls_total",
            "Direct-compaction stalls on the node (/proc/vmstat compact_stall).",
            n.compact_stall_total,
        ),
        (
            "memtrace_node_compaction_failures_total",
            "Failed direct compactions on the node (/proc/vmstat compact_fail).",
            n.compact_fail_total,
        ),
        (
            "memtrace_node_oom_kills_total",
            "OOM kills on the node, all cgroups (/proc/vmstat oom_kill).",
            n.oom_kill_total,
        ),
        (
            "memtrace_node_workingset_refaults_total",
            "Refaults of recently evicted pages on the node (/proc/vmstat workingset_refault).",
            n.workingset_refault_total,
        ),
    ] {
        add(&x.counter(name, help, &[])?, &[], value as f64)?;
    }
    Ok(())
}

fn self_metrics(
    x: &Exposition,
    snapshot: &Snapshot,
    build: &BuildInfo,
) -> ::prometheus::Result<()> {
    let p = &snapshot.pipeline;
    let received = x.counter(
        "memtrace_events_received_total",
        "Kernel events received by memtrace.",
        &[],
    )?;
    add(&received, &[], p.events_received as f64)?;

    let lost = x.counter(
        "memtrace_events_lost_total",
        "Kernel events lost, by stage: kernel_ring (ring buffer full), kernel_map (per-process map \
         full), userspace_queue (pipeline queue full), decode (malformed record).",
        &["stage"],
    )?;
    for (stage, n) in [
        ("kernel_ring", p.lost_kernel_ring_full),
        ("kernel_map", p.lost_kernel_map_full),
        ("userspace_queue", p.lost_userspace_queue),
        ("decode", p.lost_decode),
    ] {
        add(&lost, &[stage], n as f64)?;
    }

    let probes = x.gauge(
        "memtrace_probes",
        "Kernel probes by state (attached, failed).",
        &["state"],
    )?;
    set(&probes, &["attached"], f64::from(p.probes_attached))?;
    set(&probes, &["failed"], f64::from(p.probes_failed))?;

    let tracked = x.gauge(
        "memtrace_tracked_processes",
        "Processes memtrace currently tracks in the kernel.",
        &[],
    )?;
    set(&tracked, &[], p.tracked_processes as f64)?;

    let info = x.gauge(
        "memtrace_build_info",
        "Always 1; memtrace version and running kernel release as labels.",
        &["version", "kernel"],
    )?;
    set(&info, &[build.version, &build.kernel], 1.0)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;
    use crate::export::testutil::{
        self, NOW_MS, Sample, many_processes, parse, process, realistic,
    };
    use memtrace_api::PipelineView;

    fn build() -> BuildInfo {
        BuildInfo {
            version: "0.1.0",
            kernel: "6.8.0-45-generic".to_owned(),
        }
    }

    fn render_with(snapshot: &Snapshot, ooms: &[OomRecord], config: &ExportConfig) -> String {
        render(snapshot, ooms, config, &build(), NOW_MS)
    }

    fn samples_named<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
        samples.iter().filter(|s| s.name == name).collect()
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
        samples
            .iter()
            .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        find(samples, name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?}"))
            .value
    }

    /// A snapshot of `processes` from a daemon run with `--mmap-calls`.
    fn counting_calls(processes: Vec<ProcessView>) -> Snapshot {
        Snapshot {
            processes,
            pipeline: PipelineView {
                families: vec![Family::Tasks, Family::Mmap],
                ..PipelineView::default()
            },
            ..Snapshot::default()
        }
    }

    #[test]
    fn workload_series_are_bounded_per_metric_name() {
        let snapshot = counting_calls(many_processes(1000));
        let config = ExportConfig::default();
        let samples = parse(&render_with(&snapshot, &[], &config));
        let mut workloads: BTreeMap<&str, BTreeSet<(&str, &str)>> = BTreeMap::new();
        for s in samples
            .iter()
            .filter(|s| s.name.starts_with("memtrace_process_"))
        {
            workloads
                .entry(&s.name)
                .or_default()
                .insert((s.label("comm"), s.label("cgroup")));
        }
        assert_eq!(workloads.len(), 8, "{:?}", workloads.keys());
        for (name, w) in &workloads {
            assert_eq!(w.len(), config.top_processes + 1, "{name}");
            assert!(w.contains(&(OTHER, OTHER)), "{name}");
        }
        // The named ones are the highest scores: w0950..w0999.
        let faults = samples_named(&samples, "memtrace_process_page_faults_total");
        assert_eq!(faults.len(), 2 * (config.top_processes + 1));
        assert!(
            faults
                .iter()
                .all(|s| s.label("comm") == OTHER || s.label("comm") >= "w0950")
        );
    }

    #[test]
    fn without_the_mmap_family_no_call_counters_are_exported_but_the_vm_size_is() {
        let snapshot = Snapshot {
            processes: many_processes(10),
            pipeline: PipelineView {
                families: vec![Family::Tasks, Family::Oom],
                ..PipelineView::default()
            },
            ..Snapshot::default()
        };
        let samples = parse(&render_with(&snapshot, &[], &ExportConfig::default()));
        assert!(samples_named(&samples, "memtrace_process_mapped_bytes_total").is_empty());
        let vm = samples_named(&samples, "memtrace_process_virtual_memory_bytes");
        assert_eq!(vm.len(), 10);
        // Process i (seed i + 1) maps (i + 1) MiB.
        assert_eq!(
            value(
                &samples,
                "memtrace_process_virtual_memory_bytes",
                &[("comm", "w0003")]
            ),
            f64::from(4 << 20)
        );
    }

    #[test]
    fn other_aggregate_is_the_sum_of_the_rest() {
        let processes = many_processes(1000);
        let snapshot = counting_calls(processes.clone());
        let samples = parse(&render_with(&snapshot, &[], &ExportConfig::default()));
        let named: BTreeSet<String> = samples
            .iter()
            .filter(|s| s.name == "memtrace_process_processes" && s.label("comm") != OTHER)
            .map(|s| s.label("comm").to_owned())
            .collect();
        assert_eq!(named.len(), 50);
        let rest: Vec<&ProcessView> = processes
            .iter()
            .filter(|p| !named.contains(&p.comm))
            .collect();
        assert_eq!(rest.len(), 950);
        let other = [
            ("comm", OTHER),
            ("cgroup", OTHER),
            ("pod_uid", ""),
            ("container_id", ""),
        ];
        let with = |k: &'static str, v: &'static str| {
            let mut l = other.to_vec();
            l.push((k, v));
            l
        };
        let sum = |f: fn(&ProcessView) -> u64| rest.iter().map(|p| f(p)).sum::<u64>() as f64;

        for (labels, expected) in [
            (with("type", "minor"), sum(|p| p.counters.faults_minor)),
            (with("type", "major"), sum(|p| p.counters.faults_major)),
        ] {
            assert_eq!(
                value(&samples, "memtrace_process_page_faults_total", &labels),
                expected
            );
        }
        assert_eq!(
            value(
                &samples,
                "memtrace_process_mapped_bytes_total",
                &with("op", "mmap")
            ),
            sum(|p| p.counters.mmap_bytes)
        );
        assert_eq!(
            value(
                &samples,
                "memtrace_process_mapped_bytes_total",
                &with("op", "brk_shrink")
            ),
            sum(|p| p.counters.brk_shrink_bytes)
        );
        assert_eq!(
            value(
                &samples,
                "memtrace_process_rss_bytes",
                &with("type", "swap")
            ),
            sum(|p| p.counters.swap_bytes)
        );
        assert_eq!(
            value(&samples, "memtrace_process_reclaim_stalls_total", &other),
            sum(|p| p.counters.reclaim_stalls)
        );
        let stall = value(
            &samples,
            "memtrace_process_reclaim_stall_seconds_total",
            &other,
        );
        assert!((stall - sum(|p| p.counters.reclaim_ns) / 1e9).abs() < 1e-6);
        assert_eq!(value(&samples, "memtrace_process_processes", &other), 950.0);
        assert_eq!(
            value(&samples, "memtrace_process_virtual_memory_bytes", &other),
            rest.iter()
                .map(|p| p.counters.vm_bytes.unwrap())
                .sum::<u64>() as f64
        );
        let max = rest.iter().map(|p| p.pressure_score).fold(0.0, f64::max);
        assert_eq!(
            value(&samples, "memtrace_process_pressure_score", &other),
            max
        );

        // Conservation: named + ~other = all processes.
        let all_minor: f64 = samples
            .iter()
            .filter(|s| {
                s.name == "memtrace_process_page_faults_total" && s.label("type") == "minor"
            })
            .map(|s| s.value)
            .sum();
        let expected: u64 = processes.iter().map(|p| p.counters.faults_minor).sum();
        assert_eq!(all_minor, expected as f64);
    }

    #[test]
    fn same_comm_and_cgroup_are_one_series() {
        let cg = testutil::pod_cgroup();
        let mut a = process(10, "java", Some(&cg), 40.0, 5);
        let mut b = process(11, "java", Some(&cg), 70.0, 7);
        a.owner = testutil::pod_owner();
        b.owner = testutil::pod_owner();
        let c = process(12, "java", Some("/other.slice"), 10.0, 1);
        let snapshot = Snapshot {
            processes: vec![a.clone(), b.clone(), c],
            ..Snapshot::default()
        };
        let samples = parse(&render_with(&snapshot, &[], &ExportConfig::default()));
        let scores = samples_named(&samples, "memtrace_process_pressure_score");
        assert_eq!(scores.len(), 2, "{scores:?}");
        let l = [
            ("comm", "java"),
            ("cgroup", cg.as_str()),
            ("pod_uid", testutil::POD_UID),
            ("container_id", testutil::CONTAINER_ID),
        ];
        assert_eq!(value(&samples, "memtrace_process_pressure_score", &l), 70.0);
        assert_eq!(value(&samples, "memtrace_process_processes", &l), 2.0);
        let mut minor = l.to_vec();
        minor.push(("type", "minor"));
        assert_eq!(
            value(&samples, "memtrace_process_page_faults_total", &minor),
            (a.counters.faults_minor + b.counters.faults_minor) as f64
        );
        let mut anon = l.to_vec();
        anon.push(("type", "anon"));
        assert_eq!(
            value(&samples, "memtrace_process_rss_bytes", &anon),
            f64::from(2 << 20)
        );
        // Nothing left over: no ~other series.
        assert!(find(&samples, "memtrace_process_processes", &[("comm", OTHER)]).is_none());
    }

    #[test]
    fn no_pid_label_anywhere() {
        let (snapshot, ooms) = realistic();
        let text = render_with(&snapshot, &ooms, &ExportConfig::default());
        for s in parse(&text) {
            assert!(!s.labels.contains_key("pid"), "{s:?}");
            assert!(s.labels.keys().all(|k| !k.contains("pid")), "{s:?}");
        }
    }

    #[test]
    fn oom_kills_stay_for_the_retention_then_leave() {
        let (snapshot, mut ooms) = realistic();
        // A second, recent kill of the workload killed 2 h ago: its series counts both.
        ooms.push(testutil::oom(
            "oldkill",
            Some("/system.slice/old.service"),
            OwnerView::default(),
            60_000,
        ));
        let config = ExportConfig::default();
        let samples = parse(&render_with(&snapshot, &ooms, &config));
        let kills = samples_named(&samples, "memtrace_oom_kills_total");
        assert_eq!(kills.len(), 2, "{kills:?}");
        // The container is gone from the snapshot, its kill is 10 min old: still there, labelled.
        assert!(
            !snapshot
                .cgroups
                .iter()
                .any(|c| c.path == "/kubepods.slice/gone.scope")
        );
        let gone = [
            ("comm", "stress-ng"),
            ("cgroup", "/kubepods.slice/gone.scope"),
            ("pod_uid", "0d0e0a0d-0000-4000-8000-000000000001"),
            (
                "container_id",
                "deadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeef",
            ),
        ];
        assert_eq!(value(&samples, "memtrace_oom_kills_total", &gone), 1.0);
        assert_eq!(
            value(&samples, "memtrace_oom_kills_total", &[("comm", "oldkill")]),
            2.0
        );
        assert_eq!(value(&samples, "memtrace_node_oom_kills_total", &[]), 3.0);

        // Without the recent one, the 2 h old kill is past the 1 h retention: gone.
        ooms.pop();
        let samples = parse(&render_with(&snapshot, &ooms, &config));
        assert!(find(&samples, "memtrace_oom_kills_total", &[("comm", "oldkill")]).is_none());
        assert!(find(&samples, "memtrace_oom_kills_total", &gone).is_some());

        // Eleven minutes later with a 10 min retention, the gone container's series leaves too.
        let short = ExportConfig {
            oom_label_retention: Duration::from_secs(600),
            ..ExportConfig::default()
        };
        let text = render(&snapshot, &ooms, &short, &build(), NOW_MS + 60_000);
        assert!(samples_named(&parse(&text), "memtrace_oom_kills_total").is_empty());
        assert!(
            !text.contains("memtrace_oom_kills_total"),
            "empty families are not exported"
        );
    }

    #[test]
    fn oom_series_are_bounded_too() {
        let ooms: Vec<OomRecord> = (0..20)
            .map(|i| {
                testutil::oom(
                    &format!("victim{i:02}"),
                    Some("/a.slice"),
                    OwnerView::default(),
                    i * 1000,
                )
            })
            .collect();
        let config = ExportConfig {
            top_processes: 5,
            ..ExportConfig::default()
        };
        let samples = parse(&render_with(&Snapshot::default(), &ooms, &config));
        let kills = samples_named(&samples, "memtrace_oom_kills_total");
        assert_eq!(kills.len(), 6);
        // The five most recent kills keep their labels; the other 15 are in ~other.
        assert_eq!(
            value(
                &samples,
                "memtrace_oom_kills_total",
                &[("comm", "victim04")]
            ),
            1.0
        );
        assert_eq!(
            value(&samples, "memtrace_oom_kills_total", &[("comm", OTHER)]),
            15.0
        );
    }

    #[test]
    fn cgroups_are_bounded_and_other_is_summed() {
        let (snapshot, ooms) = realistic();
        assert_eq!(snapshot.cgroups.len(), 253);
        let config = ExportConfig::default();
        let samples = parse(&render_with(&snapshot, &ooms, &config));
        let rss = samples_named(&samples, "memtrace_cgroup_rss_bytes");
        assert_eq!(rss.len(), config.max_cgroups + 1);
        let other = [
            ("cgroup", OTHER),
            ("pod_uid", ""),
            ("container_id", ""),
            ("qos", ""),
        ];
        assert_eq!(
            value(&samples, "memtrace_cgroup_rss_bytes", &other),
            (53u64 * (64 << 20)) as f64
        );
        assert_eq!(
            value(&samples, "memtrace_cgroup_processes", &other),
            53.0 * 3.0
        );
        assert!(find(&samples, "memtrace_cgroup_memory_limit_bytes", &other).is_none());
        // Unlimited: no limit series; limited pod: labelled with its owner.
        assert!(
            find(
                &samples,
                "memtrace_cgroup_memory_limit_bytes",
                &[("cgroup", "/system.slice/sshd.service")]
            )
            .is_none()
        );
        let pod = testutil::pod_cgroup();
        let pod_labels = [
            ("cgroup", pod.as_str()),
            ("pod_uid", testutil::POD_UID),
            ("container_id", testutil::CONTAINER_ID),
            ("qos", "Burstable"),
        ];
        assert_eq!(
            value(&samples, "memtrace_cgroup_memory_limit_bytes", &pod_labels),
            f64::from(512 << 20)
        );
        let mut full = pod_labels.to_vec();
        full.push(("kind", "full"));
        assert_eq!(
            value(
                &samples,
                "memtrace_cgroup_memory_pressure_seconds_total",
                &full
            ),
            1.0
        );
        let all_rss: f64 = rss.iter().map(|s| s.value).sum();
        assert_eq!(all_rss, (253u64 * (64 << 20)) as f64);
    }

    #[test]
    fn node_and_self_metrics() {
        let (snapshot, ooms) = realistic();
        let samples = parse(&render_with(&snapshot, &ooms, &ExportConfig::default()));
        let n = &snapshot.node_memory;
        assert_eq!(
            value(
                &samples,
                "memtrace_node_page_faults_total",
                &[("type", "minor")]
            ),
            (n.pgfault_total - n.pgmajfault_total) as f64
        );
        assert_eq!(
            value(
                &samples,
                "memtrace_node_memory_pressure_avg10_ratio",
                &[("kind", "some")]
            ),
            0.025
        );
        assert_eq!(
            value(
                &samples,
                "memtrace_node_memory_pressure_seconds_total",
                &[("kind", "some")]
            ),
            12.0
        );
        assert_eq!(
            value(
                &samples,
                "memtrace_node_fragmentation_index",
                &[("order", "9")]
            ),
            0.93
        );
        assert_eq!(
            value(&samples, "memtrace_node_direct_reclaim_stalls_total", &[]),
            17.0
        );
        assert_eq!(
            value(
                &samples,
                "memtrace_events_lost_total",
                &[("stage", "kernel_ring")]
            ),
            3.0
        );
        assert_eq!(
            value(&samples, "memtrace_probes", &[("state", "failed")]),
            1.0
        );
        assert_eq!(
            value(
                &samples,
                "memtrace_build_info",
                &[("version", "0.1.0"), ("kernel", "6.8.0-45-generic")]
            ),
            1.0
        );
        // The odd comm survives escaping; no NaN anywhere.
        assert!(
            find(
                &samples,
                "memtrace_process_processes",
                &[("comm", "we\"ird\\comm\nx")]
            )
            .is_some()
        );
        assert!(samples.iter().all(|s| !s.value.is_nan()));
        // A NaN score (a model bug) is exported as 0 rather than poisoning max() and topk().
        let nan = Snapshot {
            processes: vec![process(4, "kworker/u8:2", None, f64::NAN, 1)],
            ..Snapshot::default()
        };
        let samples = parse(&render_with(&nan, &[], &ExportConfig::default()));
        assert_eq!(
            value(
                &samples,
                "memtrace_process_pressure_score",
                &[("comm", "kworker/u8:2")]
            ),
            0.0
        );
    }

    #[test]
    fn exported_series_counts_every_sample_line() {
        for (snapshot, ooms) in [realistic(), (Snapshot::default(), Vec::new())] {
            let text = render_with(&snapshot, &ooms, &ExportConfig::default());
            let samples = parse(&text);
            let lines = text
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count();
            assert_eq!(samples.len(), lines);
            assert_eq!(
                value(&samples, "memtrace_exported_series", &[]),
                lines as f64
            );
        }
    }

    #[test]
    fn every_metric_has_help_and_counters_end_in_total() {
        let (snapshot, ooms) = realistic();
        let text = render_with(&snapshot, &ooms, &ExportConfig::default());
        let mut types = BTreeMap::new();
        let mut helps = BTreeSet::new();
        for line in text.lines() {
            if let Some(h) = line.strip_prefix("# HELP ") {
                let (name, help) = h.split_once(' ').expect("HELP has text");
                assert!(help.len() > 10, "{line}");
                assert!(helps.insert(name.to_owned()), "duplicate HELP {name}");
            } else if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, ty) = t.split_once(' ').expect("TYPE has a type");
                assert!(
                    types.insert(name.to_owned(), ty.to_owned()).is_none(),
                    "duplicate TYPE {name}"
                );
            }
        }
        assert_eq!(helps, types.keys().cloned().collect());
        for (name, ty) in &types {
            assert!(name.starts_with("memtrace_"), "{name}");
            assert_eq!(
                ty == "counter",
                name.ends_with("_total"),
                "{name} is a {ty}"
            );
        }
    }

    /// `promtool check metrics` must have nothing to say (lints included).
    fn promtool_check(text: &str) {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write exposition");
        let stdin = std::fs::File::open(file.path()).expect("reopen exposition");
        let out = match Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::from(stdin))
            .output()
        {
            Ok(out) => out,
            Err(e) => panic!(
                "cannot run promtool ({e}); install it: `apt-get update && apt-get install -y prometheus`"
            ),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.is_empty() && stderr.is_empty(),
            "promtool check metrics: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
    }

    #[test]
    fn promtool_check_metrics_reports_nothing() {
        let (snapshot, ooms) = realistic();
        promtool_check(&render_with(&snapshot, &ooms, &ExportConfig::default()));
        let many = Snapshot {
            processes: many_processes(1000),
            ..snapshot
        };
        promtool_check(&render_with(&many, &ooms, &ExportConfig::default()));
        promtool_check(&render_with(
            &Snapshot::default(),
            &[],
            &ExportConfig::default(),
        ));
    }
}
