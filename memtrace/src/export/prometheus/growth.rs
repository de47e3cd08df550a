//! The exposition's growth, leak-hint and reclaim-stall histogram series, per workload row and
//! per cgroup row of the top-N rollups (same labels, same bounds: `~other` sums the rest).
//!
//! - `memtrace_process_rss_growth_bytes_per_second` (gauge, W): the sum of the row's processes'
//!   growth over `--growth-window`; absent while none of them has been watched that long.
//! - `memtrace_process_leak_hint` (gauge, W): 1 while one of the row's processes is hinted as
//!   leaking, else 0 (present with the row).
//! - `memtrace_cgroup_rss_growth_bytes_per_second` (gauge, C).
//! - `memtrace_process_reclaim_stall_seconds` (histogram, W) and
//!   `memtrace_cgroup_reclaim_stall_seconds` (histogram, C): stalls by duration, buckets `le` =
//!   [`RECLAIM_STALL_BUCKET_BOUNDS_SECONDS`] and `+Inf`, `_sum` the stall seconds, `_count` the
//!   stalls. Present once the row has stalled (18 series each): a node's many rows that never
//!   stall cost nothing. The cgroup's include its exited processes (monotonic); a workload's,
//!   like every `memtrace_process_*` counter, are its live processes'.
use std::collections::HashMap;

use ::prometheus::core::{Collector, Desc};
use ::prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use memtrace_api::rollup::{CgroupRow, OTHER, RolledUp, WorkloadRow};
use memtrace_api::{CgroupView, ProcessView, RECLAIM_STALL_BUCKET_BOUNDS_SECONDS};

use super::{Exposition, set};

/// Series of one histogram row: the finite buckets, `+Inf`, `_sum` and `_count`.
pub const HISTOGRAM_SERIES: usize = RECLAIM_STALL_BUCKET_BOUNDS_SECONDS.len() + 3;

/// What the rows of the rollups do not carry: growth, hints and stall buckets, summed.
#[derive(Clone, Debug, Default)]
struct Extra {
    growth: Option<f64>,
    hinted: bool,
    buckets: Option<Vec<u64>>,
}

impl Extra {
    fn absorb(&mut self, growth: Option<f64>, hinted: bool, buckets: Option<&[u64]>) {
        if let Some(g) = growth.filter(|g| g.is_finite()) {
            *self.growth.get_or_insert(0.0) += g;
        }
        self.hinted |= hinted;
        if let Some(add) = buckets {
            let sum = self.buckets.get_or_insert_with(Vec::new);
            if sum.len() < add.len() {
                sum.resize(add.len(), 0);
            }
            for (s, a) in sum.iter_mut().zip(add) {
                *s = s.saturating_add(*a);
            }
        }
    }

    fn merge(&mut self, other: &Extra) {
        self.absorb(other.growth, other.hinted, other.buckets.as_deref());
    }
}

/// A histogram metric family built from bucket counts (the `prometheus` crate's own
/// histograms only observe values one at a time).
struct HistogramFamily {
    desc: Desc,
    metrics: Vec<Metric>,
}

impl HistogramFamily {
    fn new(name: &str, help: &str, labels: &[&str]) -> ::prometheus::Result<Self> {
        let desc = Desc::new(
            name.to_owned(),
            help.to_owned(),
            labels.iter().map(|l| (*l).to_owned()).collect(),
            HashMap::new(),
        )?;
        Ok(Self {
            desc,
            metrics: Vec::new(),
        })
    }

    /// One row: per-bucket (not cumulative) `counts`, the last one beyond the last bound.
    fn push(&mut self, labels: &[&str], counts: &[u64], sum_seconds: f64) {
        let mut metric = Metric::default();
        let mut pairs: Vec<LabelPair> = self
            .desc
            .variable_labels
            .iter()
            .zip(labels)
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name.clone());
                pair.set_value((*value).to_owned());
                pair
            })
            .collect();
        // By name, as the crate's own vectors write them.
        pairs.sort_by(|a, b| a.name().cmp(b.name()));
        metric.set_label(pairs);
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(RECLAIM_STALL_BUCKET_BOUNDS_SECONDS.len());
        for (i, bound) in RECLAIM_STALL_BUCKET_BOUNDS_SECONDS.iter().enumerate() {
            cumulative = cumulative.saturating_add(counts.get(i).copied().unwrap_or(0));
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(*bound);
            bucket.set_cumulative_count(cumulative);
            buckets.push(bucket);
        }
        let total = counts.iter().fold(0u64, |a, b| a.saturating_add(*b));
        let mut histogram = Histogram::default();
        histogram.set_bucket(buckets);
        histogram.set_sample_count(total);
        histogram.set_sample_sum(sum_seconds);
        metric.set_histogram(histogram);
        self.metrics.push(metric);
    }
}

impl Collector for HistogramFamily {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(self.metrics.clone());
        vec![family]
    }
}

/// The extras of `rows`' keys from `items`, the rows not in the top folded into `~other`.
fn extras_of_rows<K: std::hash::Hash + Eq>(
    items: impl IntoIterator<Item = (K, Extra)>,
    top: impl IntoIterator<Item = K>,
) -> (Vec<Extra>, Extra) {
    let mut by_key: HashMap<K, Extra> = HashMap::new();
    for (key, extra) in items {
        by_key.entry(key).or_default().merge(&extra);
    }
    let named = top
        .into_iter()
        .map(|key| by_key.remove(&key).unwrap_or_default())
        .collect();
    let mut other = Extra::default();
    for extra in by_key.values() {
        other.merge(extra);
    }
    (named, other)
}

const HISTOGRAM_NOTE: &str = "Buckets are powers of two of microseconds, 64 us to 1.048576 s; \
    present once the row has stalled.";

pub(super) fn workload_series(
    x: &Exposition,
    labels: &[&str],
    processes: &[ProcessView],
    rows: &RolledUp<WorkloadRow<'_>>,
    note: &str,
) -> ::prometheus::Result<()> {
    let growth = x.gauge(
        "memtrace_process_rss_growth_bytes_per_second",
        &format!(
            "RSS change per second over the growth window (daemon --growth-window), summed over \
             the workload's processes watched that long; absent until one has been. {note}"
        ),
        labels,
    )?;
    let hint = x.gauge(
        "memtrace_process_leak_hint",
        &format!(
            "1 while a process of the workload is hinted as leaking (RSS grew at least \
             --leak-min-growth over the whole --leak-window without falling), else 0. {note}"
        ),
        labels,
    )?;
    let mut histogram = HistogramFamily::new(
        "memtrace_process_reclaim_stall_seconds",
        &format!("Direct and memcg reclaim stalls by duration. {HISTOGRAM_NOTE} {note}"),
        labels,
    )?;
    let (named, other) = extras_of_rows(
        processes.iter().map(|p| {
            let mut extra = Extra::default();
            extra.absorb(
                p.rss_growth_bytes_per_sec,
                p.leak_hint.is_some(),
                p.reclaim_stall_buckets.as_deref(),
            );
            ((p.comm.as_str(), p.cgroup.as_deref().unwrap_or("")), extra)
        }),
        rows.top.iter().map(|w| (w.comm, w.cgroup)),
    );
    let with_extra = rows
        .top
        .iter()
        .zip(&named)
        .chain(rows.other.iter().map(|w| (w, &other)));
    for (w, extra) in with_extra {
        let l = [w.comm, w.cgroup, w.pod_uid, w.container_id, w.workload];
        if let Some(g) = extra.growth {
            set(&growth, &l, g)?;
        }
        set(&hint, &l, if extra.hinted { 1.0 } else { 0.0 })?;
        if let Some(buckets) = &extra.buckets {
            histogram.push(&l, buckets, w.counters.reclaim_ns as f64 / 1e9);
        }
    }
    debug_assert!(rows.other.as_ref().is_none_or(|o| o.comm == OTHER));
    x.registry.register(Box::new(histogram))
}

pub(super) fn cgroup_series(
    x: &Exposition,
    labels: &[&str],
    views: &[CgroupView],
    rows: &RolledUp<CgroupRow<'_>>,
    note: &str,
) -> ::prometheus::Result<()> {
    let growth = x.gauge(
        "memtrace_cgroup_rss_growth_bytes_per_second",
        &format!(
            "RSS change per second of the cgroup's processes over the growth window (daemon \
             --growth-window); absent until the cgroup has been watched that long. {note}"
        ),
        labels,
    )?;
    let mut histogram = HistogramFamily::new(
        "memtrace_cgroup_reclaim_stall_seconds",
        &format!(
            "Direct and memcg reclaim stalls of the cgroup's processes by duration, exited ones \
             included. {HISTOGRAM_NOTE} {note}"
        ),
        labels,
    )?;
    let (named, other) = extras_of_rows(
        views.iter().map(|c| {
            let mut extra = Extra::default();
            extra.absorb(
                c.rss_growth_bytes_per_sec,
                false,
                c.reclaim_stall_buckets.as_deref(),
            );
            (c.path.as_str(), extra)
        }),
        rows.top.iter().map(|c| c.path),
    );
    let with_extra = rows
        .top
        .iter()
        .zip(&named)
        .chain(rows.other.iter().map(|c| (c, &other)));
    for (c, extra) in with_extra {
        let l = [c.path, c.pod_uid, c.container_id, c.qos];
        if let Some(g) = extra.growth {
            set(&growth, &l, g)?;
        }
        if let Some(buckets) = &extra.buckets {
            histogram.push(&l, buckets, c.counters.reclaim_ns as f64 / 1e9);
        }
    }
    x.registry.register(Box::new(histogram))
}

#[cfg(test)]
mod tests {
    use memtrace_api::{LeakHint, Snapshot};

    use super::super::tests::promtool_check;
    use super::super::{BuildInfo, ExportConfig, render};
    use crate::export::testutil::{self, NOW_MS, many_processes, parse, process, realistic};

    fn render_default(snapshot: &Snapshot, config: &ExportConfig) -> String {
        let build = BuildInfo {
            version: "0.1.0",
            kernel: "6.8.0".to_owned(),
        };
        render(snapshot, &[], config, &build, NOW_MS)
    }

    fn buckets(pairs: &[(usize, u64)]) -> Option<Vec<u64>> {
        let mut counts = vec![0; 16];
        for &(i, n) in pairs {
            counts[i] = n;
        }
        Some(counts)
    }

    fn hint() -> LeakHint {
        LeakHint {
            since_unix_ms: NOW_MS - 700_000,
            window_seconds: 600.0,
            growth_bytes_per_sec: 20_000.0,
            growth_bytes: 14_000_000,
        }
    }

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let mut a = process(10, "java", Some("/app.slice"), 40.0, 1);
        a.reclaim_stall_buckets = buckets(&[(0, 3), (4, 2), (15, 1)]);
        a.counters.reclaim_ns = 2_500_000_000;
        let mut b = process(11, "java", Some("/app.slice"), 30.0, 2);
        b.reclaim_stall_buckets = buckets(&[(4, 1), (14, 1)]);
        b.counters.reclaim_ns = 1_000_000_000;
        // Never stalled: no histogram for its row.
        let c = process(12, "idle", Some("/app.slice"), 10.0, 3);
        let mut cg = testutil::cgroup("/app.slice", 50.0, None, false);
        // Its processes, and one that exited (the cgroup's sums include it).
        cg.reclaim_stall_buckets = buckets(&[(0, 4), (4, 3), (14, 1), (15, 1)]);
        cg.counters.reclaim_ns = 3_750_000_000;
        let snapshot = Snapshot {
            processes: vec![a, b, c],
            cgroups: vec![cg],
            ..Snapshot::default()
        };
        let text = render_default(&snapshot, &ExportConfig::default());
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("reclaim_stall_seconds") && !l.contains("_total"))
            .collect();
        let w = r#"cgroup="/app.slice",comm="java",container_id="",pod_uid="",workload="java""#;
        let c = r#"cgroup="/app.slice",container_id="",pod_uid="",qos="""#;
        let mut expected = vec![
            "# HELP memtrace_cgroup_reclaim_stall_seconds Direct and memcg reclaim stalls of the \
             cgroup's processes by duration, exited ones included. Buckets are powers of two of \
             microseconds, 64 us to 1.048576 s; present once the row has stalled. \
             cgroup=\"~other\" aggregates the cgroups outside the top N and may reset when \
             cgroups enter or leave the top N."
                .to_owned(),
            "# TYPE memtrace_cgroup_reclaim_stall_seconds histogram".to_owned(),
        ];
        let bounds = [
            "0.000064", "0.000128", "0.000256", "0.000512", "0.001024", "0.002048", "0.004096",
            "0.008192", "0.016384", "0.032768", "0.065536", "0.131072", "0.262144", "0.524288",
            "1.048576",
        ];
        let cumulative_cg = [4, 4, 4, 4, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8];
        for (le, n) in bounds.iter().zip(cumulative_cg) {
            expected.push(format!(
                "memtrace_cgroup_reclaim_stall_seconds_bucket{{{c},le=\"{le}\"}} {n}"
            ));
        }
        expected.push(format!(
            "memtrace_cgroup_reclaim_stall_seconds_bucket{{{c},le=\"+Inf\"}} 9"
        ));
        expected.push(format!(
            "memtrace_cgroup_reclaim_stall_seconds_sum{{{c}}} 3.75"
        ));
        expected.push(format!(
            "memtrace_cgroup_reclaim_stall_seconds_count{{{c}}} 9"
        ));
        expected.push(
            "# HELP memtrace_process_reclaim_stall_seconds Direct and memcg reclaim stalls by \
             duration. Buckets are powers of two of microseconds, 64 us to 1.048576 s; present \
             once the row has stalled. Summed over the live processes of a workload (same comm \
             in the same cgroup); comm=\"~other\" aggregates the workloads outside the top N. \
             Workload and aggregate series may reset when processes exit or enter or leave the \
             top N."
                .to_owned(),
        );
        expected.push("# TYPE memtrace_process_reclaim_stall_seconds histogram".to_owned());
        let cumulative_w = [3, 3, 3, 3, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7];
        for (le, n) in bounds.iter().zip(cumulative_w) {
            expected.push(format!(
                "memtrace_process_reclaim_stall_seconds_bucket{{{w},le=\"{le}\"}} {n}"
            ));
        }
        expected.push(format!(
            "memtrace_process_reclaim_stall_seconds_bucket{{{w},le=\"+Inf\"}} 8"
        ));
        expected.push(format!(
            "memtrace_process_reclaim_stall_seconds_sum{{{w}}} 3.5"
        ));
        expected.push(format!(
            "memtrace_process_reclaim_stall_seconds_count{{{w}}} 8"
        ));
        assert_eq!(lines, expected);
        let samples = parse(&text);
        let series = samples
            .iter()
            .find(|s| s.name == "memtrace_exported_series")
            .expect("counted");
        let lines = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(
            series.value, lines as f64,
            "a histogram counts all its series"
        );
        promtool_check(&text);
    }

    #[test]
    fn growth_and_leak_hints_per_workload_and_cgroup_with_other_summed() {
        let mut processes = many_processes(100);
        for (i, p) in processes.iter_mut().enumerate() {
            // Every other process has been watched a whole window; every tenth leaks.
            p.rss_growth_bytes_per_sec = (i % 2 == 0).then_some(1000.0 * i as f64);
            p.leak_hint = (i % 10 == 0).then(hint);
            p.reclaim_stall_buckets = (i % 3 == 0).then(|| vec![1; 16]);
        }
        let mut cgroups: Vec<_> = (0..40)
            .map(|i| {
                let mut c = testutil::cgroup(
                    &format!("/system.slice/svc{i}.service"),
                    f64::from(i),
                    None,
                    false,
                );
                c.rss_growth_bytes_per_sec = Some(-100.0 * f64::from(i));
                c
            })
            .collect();
        cgroups[0].rss_growth_bytes_per_sec = None;
        let snapshot = Snapshot {
            processes: processes.clone(),
            cgroups,
            ..Snapshot::default()
        };
        let config = ExportConfig {
            top_processes: 5,
            max_cgroups: 10,
            ..ExportConfig::default()
        };
        let text = render_default(&snapshot, &config);
        let samples = parse(&text);
        let named = |name: &str, label: &str, value: &str| {
            samples
                .iter()
                .find(|s| s.name == name && s.label(label) == value)
                .map(|s| s.value)
        };
        // The top five by score: w0095..w0099 (process i is w{i:04}).
        assert_eq!(
            named(
                "memtrace_process_rss_growth_bytes_per_second",
                "comm",
                "w0098"
            ),
            Some(98_000.0)
        );
        assert_eq!(
            named(
                "memtrace_process_rss_growth_bytes_per_second",
                "comm",
                "w0099"
            ),
            None,
            "not watched a window yet"
        );
        assert_eq!(
            named("memtrace_process_leak_hint", "comm", "w0090"),
            None,
            "folded"
        );
        assert_eq!(
            named("memtrace_process_leak_hint", "comm", "w0099"),
            Some(0.0)
        );
        let growth_other: f64 = processes[..95]
            .iter()
            .filter_map(|p| p.rss_growth_bytes_per_sec)
            .sum();
        assert_eq!(
            named(
                "memtrace_process_rss_growth_bytes_per_second",
                "comm",
                "~other"
            ),
            Some(growth_other)
        );
        assert_eq!(
            named("memtrace_process_leak_hint", "comm", "~other"),
            Some(1.0)
        );
        let stalled_other = processes[..95]
            .iter()
            .filter(|p| p.reclaim_stall_buckets.is_some())
            .count();
        assert_eq!(
            named(
                "memtrace_process_reclaim_stall_seconds_count",
                "comm",
                "~other"
            ),
            Some((stalled_other * 16) as f64)
        );
        assert_eq!(
            named(
                "memtrace_process_reclaim_stall_seconds_count",
                "comm",
                "w0099"
            ),
            Some(16.0)
        );
        assert_eq!(
            named(
                "memtrace_process_reclaim_stall_seconds_count",
                "comm",
                "w0098"
            ),
            None
        );
        // Cgroups: the top ten by score are svc30..svc39; ~other sums svc1..svc29 (svc0 unknown).
        assert_eq!(
            named(
                "memtrace_cgroup_rss_growth_bytes_per_second",
                "cgroup",
                "/system.slice/svc33.service"
            ),
            Some(-3300.0)
        );
        let other: f64 = (1..30).map(|i| -100.0 * f64::from(i)).sum();
        assert_eq!(
            named(
                "memtrace_cgroup_rss_growth_bytes_per_second",
                "cgroup",
                "~other"
            ),
            Some(other)
        );
        promtool_check(&text);
        // And with the realistic node, nothing to say either.
        let (mut snapshot, ooms) = realistic();
        for p in &mut snapshot.processes {
            p.rss_growth_bytes_per_sec = Some(12.5);
            p.reclaim_stall_buckets = Some(vec![2; 16]);
        }
        for c in &mut snapshot.cgroups {
            c.reclaim_stall_buckets = Some(vec![3; 16]);
        }
        let build = BuildInfo {
            version: "0.1.0",
            kernel: "6.8.0".to_owned(),
        };
        promtool_check(&render(
            &snapshot,
            &ooms,
            &ExportConfig::default(),
            &build,
            NOW_MS,
        ));
    }
}
