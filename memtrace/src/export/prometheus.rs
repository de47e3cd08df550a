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
//!   `container_id` (empty when unknown), and `workload`, the cross-node workload key (see
//!   [`crate::workload`]): a function of the comm and the cgroup, so it adds no series.
//! - Only the top [`ExportConfig::top_processes`] workloads by pressure score (ties: by
//!   major+minor fault rate, then by name) get their own series, and those whose workload key is
//!   pinned ([`ExportConfig::pins`], `--pin`); all other workloads are summed into ONE series
//!   labelled `comm="~other", cgroup="~other", workload="~other", pod_uid="", container_id=""`.
//! - Per-cgroup series exist for at most [`ExportConfig::max_cgroups`] cgroups by pressure score;
//!   the rest are summed into `cgroup="~other"` (no limit series for it: a sum of limits is not a
//!   limit).
//! - OOM kills are labelled by victim workload, at most `top_processes` of them (most recent kill
//!   first; the rest in `~other`), and only while the workload's latest kill is within
//!   [`ExportConfig::oom_label_retention`], so the set of OOM series is bounded by the kill rate
//!   times the retention, and also by the daemon's bounded OOM history.
//!
//! Hence per metric name at most `top_processes + 1` workload series, plus those of pinned
//! workloads, (times the fixed values of
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

use ::prometheus::proto::MetricType;
use ::prometheus::{CounterVec, GaugeVec, Opts, Registry, TextEncoder};

use crate::workload::Pins;
use memtrace_api::rollup::{self, non_negative};
use memtrace_api::{
    CgroupView, CounterKind, Counters, Family, FamilySet, OomRecord, ProcessView, Snapshot,
};

/// Label value of the aggregate of everything outside the top N.
pub use memtrace_api::rollup::OTHER;

mod growth;

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
    /// Workloads (by key) that always have their own series, never folded into `~other`.
    pub pins: Pins,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            top_processes: 50,
            max_cgroups: 200,
            oom_label_retention: Duration::from_secs(3600),
            pins: Pins::default(),
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
    render_exposition(snapshot, ooms, config, build, None, now_unix_ms)
}

/// The HTTP server's connection counts (`memtrace_http_connections`,
/// `memtrace_http_connections_rejected_total`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    pub connections: u64,
    pub connections_rejected: u64,
}

/// [`try_render`], with the serving HTTP server's own series.
pub fn try_render_served(
    snapshot: &Snapshot,
    ooms: &[OomRecord],
    config: &ExportConfig,
    build: &BuildInfo,
    http: HttpStats,
    now_unix_ms: u64,
) -> ::prometheus::Result<String> {
    render_exposition(snapshot, ooms, config, build, Some(http), now_unix_ms)
}

fn render_exposition(
    snapshot: &Snapshot,
    ooms: &[OomRecord],
    config: &ExportConfig,
    build: &BuildInfo,
    http: Option<HttpStats>,
    now_unix_ms: u64,
) -> ::prometheus::Result<String> {
    let x = Exposition::default();
    // Counters of a family that is not attached are not exported (nothing counts them: they
    // would be zeros).
    let families = snapshot.pipeline.families;
    workload_metrics(&x, &snapshot.processes, config, families)?;
    cgroup_metrics(&x, &snapshot.cgroups, config.max_cgroups, families)?;
    oom_metrics(&x, ooms, config, now_unix_ms)?;
    node_metrics(&x, snapshot)?;
    self_metrics(&x, snapshot, build)?;
    if let Some(http) = http {
        http_metrics(&x, http)?;
    }

    // Counted last, from what is actually exported, and including its own sample. A histogram
    // is one metric of many series (its buckets, `_sum` and `_count`).
    let series = x
        .registry
        .gather()
        .iter()
        .map(|mf| match mf.get_field_type() {
            MetricType::HISTOGRAM => mf.get_metric().len() * growth::HISTOGRAM_SERIES,
            _ => mf.get_metric().len(),
        })
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

fn ns_to_seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn us_to_seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

// ---------------------------------------------------------------------------------------------
// Counter series: derived from the counter table

/// How a counter's value is exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    /// As counted.
    Same,
    /// Nanoseconds, exported in seconds.
    NanosAsSeconds,
}

impl Unit {
    fn export(self, v: u64) -> f64 {
        match self {
            Unit::Same => v as f64,
            Unit::NanosAsSeconds => ns_to_seconds(v),
        }
    }
}

/// A metric that counters of the table feed (`prom(metric "label value")` in
/// [`memtrace_api::counter_table!`]): one per workload, and optionally one per cgroup.
#[derive(Debug)]
struct Metric {
    /// `memtrace_process_<suffix>` and `memtrace_cgroup_<suffix>`.
    suffix: &'static str,
    /// Help of the workload metric (the workload note is appended).
    workload_help: &'static str,
    /// Help of the cgroup metric (the cgroup note is appended), if there is one.
    cgroup_help: Option<&'static str>,
    /// A counter (else a gauge).
    counter: bool,
    /// The label whose values the counters feeding it set (`type`, `op`), if any.
    label: Option<&'static str>,
    unit: Unit,
}

/// The metrics the counter table refers to, by the names it uses.
#[expect(
    non_upper_case_globals,
    reason = "named as the counter table's `prom(...)` entries"
)]
mod metric {
    use super::{Metric, Unit};

    pub(super) const page_faults: Metric = Metric {
        suffix: "page_faults_total",
        workload_help: "Page faults by type (minor, major).",
        cgroup_help: Some(
            "Page faults by type (minor, major) of the cgroup's processes, exited ones included.",
        ),
        counter: true,
        label: Some("type"),
        unit: Unit::Same,
    };
    pub(super) const mapped_bytes: Metric = Metric {
        suffix: "mapped_bytes_total",
        workload_help: "Bytes mapped or unmapped by mmap, munmap, brk and mremap, by operation \
                        (daemon --mmap-calls).",
        cgroup_help: None,
        counter: true,
        label: Some("op"),
        unit: Unit::Same,
    };
    pub(super) const madvised_bytes: Metric = Metric {
        suffix: "madvised_bytes_total",
        workload_help: "Bytes given back to the kernel with madvise, by advice (dontneed, free): \
                        how allocators and garbage-collected runtimes return memory without \
                        munmap (daemon --mmap-calls).",
        cgroup_help: None,
        counter: true,
        label: Some("advice"),
        unit: Unit::Same,
    };
    pub(super) const virtual_memory: Metric = Metric {
        suffix: "virtual_memory_bytes",
        workload_help: "Virtual memory size (the kernel's total_vm: everything mapped, however it \
                        was mapped).",
        cgroup_help: None,
        counter: false,
        label: None,
        unit: Unit::Same,
    };
    pub(super) const reclaim_stalls: Metric = Metric {
        suffix: "reclaim_stalls_total",
        workload_help: "Direct-reclaim stalls.",
        cgroup_help: None,
        counter: true,
        label: None,
        unit: Unit::Same,
    };
    pub(super) const reclaim_stall_seconds: Metric = Metric {
        suffix: "reclaim_stall_seconds_total",
        workload_help: "Seconds spent stalled in direct reclaim (summed over threads).",
        cgroup_help: Some(
            "Seconds the cgroup's processes spent stalled in direct reclaim, exited ones included.",
        ),
        counter: true,
        label: None,
        unit: Unit::NanosAsSeconds,
    };
    pub(super) const rss: Metric = Metric {
        suffix: "rss_bytes",
        workload_help: "Resident memory by type (anon, file, shmem) and swapped-out memory (swap).",
        cgroup_help: None,
        counter: false,
        label: Some("type"),
        unit: Unit::Same,
    };
}

/// One line of the counter table that has a Prometheus series.
#[derive(Debug)]
struct Series {
    metric: &'static Metric,
    /// Value of [`Metric::label`].
    label: Option<&'static str>,
    /// Without this family attached, nothing counts it: not exported (rather than as zeros).
    family: Option<Family>,
    kind: CounterKind,
    get: fn(&Counters) -> Option<u64>,
}

macro_rules! opt {
    () => {
        None
    };
    ($v:literal) => {
        Some($v)
    };
}

macro_rules! series_table {
    ($(
        $(#[$doc:meta])*
        $key:ident : $kind:ident ( $src:ident ) family ( $family:ident ) history ( $history:ident )
            prom ( $($metric:ident $($label:literal)?)? ) ;
    )*) => {
        /// The counter table's lines with a series, in table order.
        const SERIES: &[Series] = &[$($(
            Series {
                metric: &metric::$metric,
                label: opt!($($label)?),
                family: memtrace_api::__counter_family!($family),
                kind: memtrace_api::__counter_kind!($kind),
                get: |c| memtrace_api::Presence::value(&c.$key),
            },
        )?)*];
    };
}

memtrace_api::counter_table!(series_table);

/// A registered metric vector of either type.
enum Vector {
    Counter(CounterVec),
    Gauge(GaugeVec),
}

/// The table's metrics for one scope (workloads or cgroups), registered, and the series that
/// the attached families count.
struct CounterSeries {
    vectors: HashMap<&'static str, Vector>,
    series: Vec<&'static Series>,
}

impl CounterSeries {
    /// `name_help(metric)`: the metric's name and help in this scope, `None` if it has none.
    fn register(
        x: &Exposition,
        families: FamilySet,
        labels: &[&'static str],
        name_help: impl Fn(&Metric) -> Option<(String, String)>,
    ) -> ::prometheus::Result<Self> {
        let mut vectors = HashMap::new();
        let mut series = Vec::new();
        for s in SERIES {
            let Some((name, help)) = name_help(s.metric) else {
                continue;
            };
            if s.family.is_some_and(|f| !families.contains(f)) {
                continue;
            }
            debug_assert_eq!(
                s.metric.counter,
                s.kind.is_cumulative(),
                "a Prometheus counter is fed by cumulative counters only, a gauge by gauges"
            );
            series.push(s);
            if let Entry::Vacant(e) = vectors.entry(s.metric.suffix) {
                let mut names = labels.to_vec();
                names.extend(s.metric.label);
                e.insert(if s.metric.counter {
                    Vector::Counter(x.counter(&name, &help, &names)?)
                } else {
                    Vector::Gauge(x.gauge(&name, &help, &names)?)
                });
            }
        }
        Ok(Self { vectors, series })
    }

    /// The series of one row labelled `labels`: those present in `counters`.
    fn export(&self, labels: &[&str], counters: &Counters) -> ::prometheus::Result<()> {
        for s in &self.series {
            let Some(v) = (s.get)(counters) else {
                continue;
            };
            let mut all = labels.to_vec();
            all.extend(s.label);
            let value = s.metric.unit.export(v);
            match &self.vectors[s.metric.suffix] {
                Vector::Counter(c) => add(c, &all, value)?,
                Vector::Gauge(g) => set(g, &all, value)?,
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads

const WORKLOAD_LABELS: [&str; 5] = ["comm", "cgroup", "pod_uid", "container_id", "workload"];
const WORKLOAD_NOTE: &str = "Summed over the live processes of a workload (same comm in the same \
    cgroup); comm=\"~other\" aggregates the workloads outside the top N. Workload and aggregate \
    series may reset when processes exit or enter or leave the top N.";

fn workload_metrics(
    x: &Exposition,
    processes: &[ProcessView],
    config: &ExportConfig,
    families: FamilySet,
) -> ::prometheus::Result<()> {
    let counters = CounterSeries::register(x, families, &WORKLOAD_LABELS, |m| {
        Some((
            format!("memtrace_process_{}", m.suffix),
            format!("{} {WORKLOAD_NOTE}", m.workload_help),
        ))
    })?;
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

    let pinned = |key: &str| config.pins.matches(key);
    let rows = rollup::workloads_pinned(processes, config.top_processes, pinned);
    for w in rows.rows() {
        let l = [w.comm, w.cgroup, w.pod_uid, w.container_id, w.workload];
        counters.export(&l, &w.counters)?;
        set(&pressure, &l, w.score)?;
        set(&count, &l, w.processes as f64)?;
    }
    growth::workload_series(x, &WORKLOAD_LABELS, processes, &rows, WORKLOAD_NOTE)
}

// ---------------------------------------------------------------------------------------------
// Cgroups

const CGROUP_LABELS: [&str; 4] = ["cgroup", "pod_uid", "container_id", "qos"];
const CGROUP_NOTE: &str = "cgroup=\"~other\" aggregates the cgroups outside the top N and may reset when cgroups enter \
     or leave the top N.";

fn cgroup_metrics(
    x: &Exposition,
    views: &[CgroupView],
    max: usize,
    families: FamilySet,
) -> ::prometheus::Result<()> {
    let counters = CounterSeries::register(x, families, &CGROUP_LABELS, |m| {
        m.cgroup_help.map(|help| {
            (
                format!("memtrace_cgroup_{}", m.suffix),
                format!("{help} {CGROUP_NOTE}"),
            )
        })
    })?;
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
        &with_label(CGROUP_LABELS, "kind"),
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

    let rows = rollup::cgroups(views, max);
    for c in rows.rows() {
        let l = [c.path, c.pod_uid, c.container_id, c.qos];
        counters.export(&l, &c.counters)?;
        set(&rss, &l, c.rss_bytes as f64)?;
        if let Some(u) = c.usage_bytes {
            set(&usage, &l, u as f64)?;
        }
        if let Some(m) = c.limit_bytes {
            set(&limit, &l, m as f64)?;
        }
        if let Some(us) = c.psi_some_us {
            add(&psi, &with_label(l, "some"), us_to_seconds(us))?;
        }
        if let Some(us) = c.psi_full_us {
            add(&psi, &with_label(l, "full"), us_to_seconds(us))?;
        }
        set(&pressure, &l, c.score)?;
        set(&processes, &l, c.processes as f64)?;
    }
    growth::cgroup_series(x, &CGROUP_LABELS, views, &rows, CGROUP_NOTE)
}

fn with_label<'a>(l: [&'a str; 4], extra: &'a str) -> [&'a str; 5] {
    [l[0], l[1], l[2], l[3], extra]
}

// ---------------------------------------------------------------------------------------------
// OOM kills

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
    let retention_ms = u64::try_from(config.oom_label_retention.as_millis()).unwrap_or(u64::MAX);
    let pinned = |key: &str| config.pins.matches(key);
    let rows = rollup::oom_workloads_pinned(
        ooms,
        retention_ms,
        now_unix_ms,
        config.top_processes,
        pinned,
    );
    for k in rows.rows() {
        add(
            &kills,
            &[k.comm, k.cgroup, k.pod_uid, k.container_id, k.workload],
            k.kills as f64,
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
        set(&avg10, &["some"], non_negative(p.some_avg10) / 100.0)?;
        if let Some(us) = p.full_total_us {
            add(&total, &["full"], us_to_seconds(us))?;
        }
        if let Some(a) = p.full_avg10 {
            set(&avg10, &["full"], non_negative(a) / 100.0)?;
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
    set(&frag, &["3"], non_negative(n.fragmentation_index_order3))?;
    set(&frag, &["9"], non_negative(n.fragmentation_index_order9))?;

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

    if let Some(recording) = &p.recording {
        for (name, help, value) in [
            (
                "memtrace_record_frames_total",
                "Frames written by the recording store (--record-dir).",
                recording.frames_written,
            ),
            (
                "memtrace_record_write_errors_total",
                "Failed writes of the recording store (a full disk, say): frames lost, the \
                 daemon runs on.",
                recording.write_errors,
            ),
            (
                "memtrace_record_frames_dropped_total",
                "Frames the recording store dropped because its writer was still busy (a slow \
                 disk).",
                recording.frames_dropped,
            ),
        ] {
            add(&x.counter(name, help, &[])?, &[], value as f64)?;
        }
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

    // For PromQL joins across nodes: `* on(instance) group_left(node) memtrace_node_info`.
    let node = x.gauge(
        "memtrace_node_info",
        "Always 1; the node's name (--node-name), hostname, kernel release and memtrace version \
         as labels.",
        &["node", "hostname", "kernel", "version"],
    )?;
    let identity = &snapshot.node;
    let name = identity.name.as_deref().unwrap_or(&identity.hostname);
    set(
        &node,
        &[name, &identity.hostname, &build.kernel, build.version],
        1.0,
    )?;
    Ok(())
}

fn http_metrics(x: &Exposition, http: HttpStats) -> ::prometheus::Result<()> {
    let open = x.gauge(
        "memtrace_http_connections",
        "Open connections to the HTTP server (at most --max-connections).",
        &[],
    )?;
    set(&open, &[], http.connections as f64)?;
    let rejected = x.counter(
        "memtrace_http_connections_rejected_total",
        "Connections closed at once because --max-connections were open.",
        &[],
    )?;
    add(&rejected, &[], http.connections_rejected as f64)
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
    use memtrace_api::{OwnerView, PipelineView};

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
                families: FamilySet::from([Family::Tasks, Family::Mmap]),
                ..PipelineView::default()
            },
            ..Snapshot::default()
        }
    }

    #[test]
    fn pinned_workloads_keep_their_series_with_the_workload_label() {
        let snapshot = counting_calls(many_processes(1000));
        let config = ExportConfig {
            pins: Pins::new(&["w000[0-2]"]).unwrap(),
            ..ExportConfig::default()
        };
        let samples = parse(&render_with(&snapshot, &[], &config));
        let rows: BTreeSet<(&str, &str)> = samples_named(&samples, "memtrace_process_processes")
            .iter()
            .map(|s| (s.label("comm"), s.label("workload")))
            .collect();
        assert_eq!(
            rows.len(),
            config.top_processes + 1 + 3,
            "top N, ~other, 3 pinned"
        );
        for pinned in ["w0000", "w0001", "w0002"] {
            assert!(
                rows.contains(&(pinned, pinned)),
                "{pinned} has its own series"
            );
        }
        assert!(rows.contains(&(OTHER, OTHER)));
        assert!(
            !rows.contains(&("w0003", "w0003")),
            "not pinned, low score: in ~other"
        );
        // Every per-workload series carries the label, equal to its processes' key.
        for s in samples
            .iter()
            .filter(|s| s.name.starts_with("memtrace_process_"))
        {
            assert_eq!(s.label("workload"), s.label("comm"), "{s:?}");
        }
        // Without the pin the same workload is folded.
        let plain = parse(&render_with(&snapshot, &[], &ExportConfig::default()));
        assert!(find(&plain, "memtrace_process_processes", &[("comm", "w0000")]).is_none());
    }

    #[test]
    fn node_info_names_the_node_for_joins() {
        let (snapshot, _) = realistic();
        let samples = parse(&render_with(&snapshot, &[], &ExportConfig::default()));
        let info = samples_named(&samples, "memtrace_node_info");
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].value, 1.0);
        assert_eq!(info[0].label("node"), "node-1");
        assert_eq!(info[0].label("hostname"), "node-1");
        assert_eq!(info[0].label("kernel"), "6.8.0-45-generic");
        assert_eq!(info[0].label("version"), "0.1.0");
        // A daemon that knows no name (an old snapshot) is named by its hostname.
        let (mut unnamed, _) = realistic();
        unnamed.node.name = None;
        unnamed.node.hostname = "host-9".to_owned();
        let samples = parse(&render_with(&unnamed, &[], &ExportConfig::default()));
        assert_eq!(
            samples_named(&samples, "memtrace_node_info")[0].label("node"),
            "host-9"
        );
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
        // page faults, mapped bytes, madvised bytes, virtual size, reclaim stalls and seconds,
        // RSS, pressure score, processes, leak hint (growth and the stall histogram come with
        // growth and stalls, which these processes have not).
        assert_eq!(workloads.len(), 10, "{:?}", workloads.keys());
        // The README's per-workload share of the series bound with --mmap-calls: 2 fault types,
        // 6 mapping operations, 2 madvise advices, 4 RSS types, and one series each for the
        // other six (its OOM counter comes on top, only once it has a kill; its growth once it
        // has been watched a growth window, its stall histogram once it stalled).
        let one_workload = samples
            .iter()
            .filter(|s| s.name.starts_with("memtrace_process_") && s.label("comm") == "w0999")
            .count();
        assert_eq!(one_workload, 2 + 6 + 2 + 4 + 6);
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
                families: FamilySet::from([Family::Tasks, Family::Oom]),
                ..PipelineView::default()
            },
            ..Snapshot::default()
        };
        let samples = parse(&render_with(&snapshot, &[], &ExportConfig::default()));
        assert!(samples_named(&samples, "memtrace_process_mapped_bytes_total").is_empty());
        assert!(samples_named(&samples, "memtrace_process_madvised_bytes_total").is_empty());
        // The README's per-workload share of the series bound by default: 2 fault types, 4 RSS
        // types, and one series each for the other six.
        let one_workload = samples
            .iter()
            .filter(|s| s.name.starts_with("memtrace_process_") && s.label("comm") == "w0003")
            .count();
        assert_eq!(one_workload, 2 + 4 + 6);
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
        // The recording store's counts, only when the daemon records.
        for (name, expected) in [
            ("memtrace_record_frames_total", 3_600.0),
            ("memtrace_record_write_errors_total", 2.0),
            ("memtrace_record_frames_dropped_total", 1.0),
        ] {
            assert_eq!(value(&samples, name, &[]), expected, "{name}");
        }
        let mut not_recording = snapshot.clone();
        not_recording.pipeline.recording = None;
        let exposition = render_with(&not_recording, &ooms, &ExportConfig::default());
        assert!(!exposition.contains("memtrace_record_"), "{exposition}");
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

    /// Each line of the counter table with a series, from its own value: present (with that
    /// value, in its unit, labelled with its label value) for workloads and, where the metric has
    /// one, for cgroups; absent when its family is not attached.
    #[test]
    fn every_counter_of_the_table_is_exported_from_its_own_value() {
        let keys: Vec<&str> = memtrace_api::COUNTER_FIELDS.iter().map(|f| f.key).collect();
        let counters = Counters::from_fn(|key| {
            let i = keys.iter().position(|k| *k == key).expect("a table key") as u64;
            (i + 1) * 1_000_000_007
        });
        let mut p = process(7, "app", Some("/app.slice"), 50.0, 1);
        p.counters = counters;
        let mut cg = testutil::cgroup("/app.slice", 50.0, None, false);
        cg.counters = counters;
        for families in [Family::ALL.iter().collect(), FamilySet::EMPTY] {
            let snapshot = Snapshot {
                processes: vec![p.clone()],
                cgroups: vec![cg.clone()],
                pipeline: PipelineView {
                    families,
                    ..PipelineView::default()
                },
                ..Snapshot::default()
            };
            let samples = parse(&render_with(&snapshot, &[], &ExportConfig::default()));
            let mut checked = 0;
            for s in SERIES {
                let counted = s.family.is_none_or(|f| families.contains(f));
                let expected = s.metric.unit.export((s.get)(&counters).expect("all known"));
                let mut scopes = vec![(
                    format!("memtrace_process_{}", s.metric.suffix),
                    "comm",
                    "app",
                )];
                if s.metric.cgroup_help.is_some() {
                    scopes.push((
                        format!("memtrace_cgroup_{}", s.metric.suffix),
                        "cgroup",
                        "/app.slice",
                    ));
                }
                for (name, key, row) in scopes {
                    let mut labels = vec![(key, row)];
                    if let (Some(label), Some(v)) = (s.metric.label, s.label) {
                        labels.push((label, v));
                    }
                    match find(&samples, &name, &labels) {
                        Some(sample) => {
                            assert!(counted, "{name}{labels:?} exported without its family");
                            assert_eq!(sample.value, expected, "{name}{labels:?}");
                            checked += 1;
                        }
                        None => assert!(!counted, "no {name}{labels:?}"),
                    }
                }
            }
            assert!(checked >= 7, "{checked}");
        }
        // Every table metric is a counter exactly when what feeds it is cumulative.
        for s in SERIES {
            assert_eq!(
                s.metric.counter,
                s.kind.is_cumulative(),
                "{}",
                s.metric.suffix
            );
            assert_eq!(
                s.metric.label.is_some(),
                s.label.is_some(),
                "{}",
                s.metric.suffix
            );
        }
    }

    /// `promtool check metrics` must have nothing to say (lints included).
    pub(super) fn promtool_check(text: &str) {
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
