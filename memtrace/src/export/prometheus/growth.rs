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
        metric.set_label(
            self.desc
                .variable_labels
                .iter()
                .zip(labels)
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(name.clone());
                    pair.set_value((*value).to_owned());
                    pair
                })
                .collect(),
        );
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
