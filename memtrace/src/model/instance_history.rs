//! The bounded, downsampled per-instance history served by `GET /api/v1/workloads`: one point
//! per `--history-step` for each running instance, at most `--history-points` of them.
//!
//! Points are aligned on the wall clock (point `i` at a multiple of the step), so the histories
//! of every node line up. A point is the value at the first sample at or after its time (gauges)
//! or the mean rate since the previous point (reclaim stalls). Points the daemon missed (a slow
//! tick) are filled with the next value, so columns stay evenly spaced.
//!
//! **Restarts are new instances.** An instance continues only if it was present at the previous
//! point and at least one of its processes still runs; otherwise its old history is dropped and
//! it starts anew (new `started_unix_ms`).
//!
//! **Bounds.** A point is 12 bytes (RSS as 4-byte KiB counts, the stall rate as an `f32`) and
//! a history grows as its points come, never beyond its full length, so memory is at most
//! `instances × points × 12` bytes.
//! At most [`max_instances`] instances keep a history: 4,096, fewer when `--history-points` is
//! large, so that the store never exceeds [`HISTORY_BUDGET_BYTES`] (64 MiB); with the defaults
//! (360 points) it is at most 17 MiB. Beyond the cap the instances ranked last (the caller
//! orders them by pressure, then RSS) go without a history, counted as evictions.
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use memtrace_api::workloads::{HistorySpec, InstanceHistory};

/// Default `--history-step`.
pub const DEFAULT_STEP: Duration = Duration::from_secs(60);
/// Default `--history-points` (6 h at the default step).
pub const DEFAULT_POINTS: u32 = 360;
/// Bounds of `--history-step`.
pub const MIN_STEP: Duration = Duration::from_secs(1);
pub const MAX_STEP: Duration = Duration::from_secs(3600);
/// Upper bound of `--history-points` (a week at one point a minute).
pub const MAX_POINTS: u32 = 10_080;
/// Instances with a history at most, whatever the points.
pub const MAX_INSTANCES: usize = 4096;
/// Memory the store may use at most.
pub const HISTORY_BUDGET_BYTES: usize = 64 << 20;
/// Bytes one point takes (two `u32` KiB counts, one `f32`).
pub const POINT_BYTES: usize = 12;

/// Instances that keep a history with `points` points each.
pub fn max_instances(points: u32) -> usize {
    let per_instance = (points as usize).max(1) * POINT_BYTES;
    (HISTORY_BUDGET_BYTES / per_instance).clamp(1, MAX_INSTANCES)
}

/// Bytes the store uses at most with `points` points.
pub fn max_bytes(points: u32) -> usize {
    max_instances(points) * points as usize * POINT_BYTES
}

/// One instance's readings at a point, as the caller aggregates them.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceReading {
    pub instance: String,
    /// Its processes, sorted (to tell a restart: none of them still there).
    pub pids: Vec<u32>,
    pub rss_anon_bytes: u64,
    /// anon + file + shmem.
    pub rss_bytes: u64,
    /// Cumulative reclaim stall time of its live processes.
    pub reclaim_ns: u64,
}

#[derive(Clone, Debug)]
struct Track {
    started_unix_ms: u64,
    /// Point index (`unix seconds / step`) of the newest point.
    last: u64,
    pids: Vec<u32>,
    reclaim_ns: u64,
    reclaim_at_ms: u64,
    rss_anon_kib: VecDeque<u32>,
    rss_kib: VecDeque<u32>,
    stall: VecDeque<f32>,
}

impl Track {
    fn new(unix_ms: u64, index: u64, reading: &InstanceReading) -> Self {
        Self {
            started_unix_ms: unix_ms,
            last: index,
            pids: reading.pids.clone(),
            reclaim_ns: reading.reclaim_ns,
            reclaim_at_ms: unix_ms,
            rss_anon_kib: VecDeque::new(),
            rss_kib: VecDeque::new(),
            stall: VecDeque::new(),
        }
    }

    fn push(&mut self, points: usize, anon: u32, rss: u32, stall: f32) {
        let len = self.rss_kib.len();
        if len < points && len == self.rss_kib.capacity() {
            // Grown as points come (a young instance costs little), never beyond `points`.
            let more = (len * 2).max(8).min(points) - len;
            self.rss_anon_kib.reserve_exact(more);
            self.rss_kib.reserve_exact(more);
            self.stall.reserve_exact(more);
        }
        if len == points {
            self.rss_anon_kib.pop_front();
            self.rss_kib.pop_front();
            self.stall.pop_front();
        }
        self.rss_anon_kib.push_back(anon);
        self.rss_kib.push_back(rss);
        self.stall.push_back(stall);
    }
}

/// Rounds `bytes` to a granularity of about 1/1024 of its magnitude (at least 4 KiB) and
/// returns KiB: 0.1 % precision is far below any trend worth seeing, and a steady instance's
/// jitter of a few pages becomes a repeated value that gzip folds away.
pub fn quantize_kib(bytes: u64) -> u32 {
    let magnitude = 63 - bytes.max(1).leading_zeros();
    let granularity = 1u64 << magnitude.saturating_sub(10).max(12);
    let rounded = bytes.saturating_add(granularity / 2) / granularity * granularity;
    u32::try_from(rounded / 1024).unwrap_or(u32::MAX)
}

/// Per-instance histories. See the module documentation.
#[derive(Clone, Debug)]
pub struct InstanceHistories {
    step_s: u64,
    points: usize,
    max_instances: usize,
    tracks: HashMap<String, Track>,
    /// Index of the newest point recorded.
    last: Option<u64>,
    evicted: u64,
}

impl InstanceHistories {
    /// `step` is rounded to whole seconds (at least 1).
    pub fn new(step: Duration, points: u32) -> Self {
        Self {
            step_s: step.as_secs().max(1),
            points: (points as usize).max(1),
            max_instances: max_instances(points),
            tracks: HashMap::new(),
            last: None,
            evicted: 0,
        }
    }

    /// With a different instance cap (tests).
    #[must_use]
    pub fn with_max_instances(mut self, max: usize) -> Self {
        self.max_instances = max.max(1);
        self
    }

    fn index(&self, unix_ms: u64) -> u64 {
        unix_ms / 1000 / self.step_s
    }

    /// Whether a point is due at `unix_ms` (none recorded yet for its step).
    pub fn due(&self, unix_ms: u64) -> bool {
        self.last.is_none_or(|last| self.index(unix_ms) > last)
    }

    /// Records a point at `unix_ms` for `readings`, best ranked first (the cap keeps the first
    /// ones). Instances absent from `readings` have ended: their histories are dropped.
    pub fn record(&mut self, unix_ms: u64, readings: &[InstanceReading]) {
        let index = self.index(unix_ms);
        if !self.due(unix_ms) {
            return;
        }
        let previous = self.last.replace(index);
        let mut old = std::mem::take(&mut self.tracks);
        for (rank, reading) in readings.iter().enumerate() {
            if rank >= self.max_instances {
                self.evicted += 1;
                continue;
            }
            let anon = quantize_kib(reading.rss_anon_bytes);
            let rss = quantize_kib(reading.rss_bytes);
            let continued = old.remove(&reading.instance).filter(|track| {
                Some(track.last) == previous
                    && (track.pids.is_empty()
                        || reading
                            .pids
                            .iter()
                            .any(|pid| track.pids.binary_search(pid).is_ok()))
            });
            let track = match continued {
                Some(mut track) => {
                    let elapsed_ms = unix_ms.saturating_sub(track.reclaim_at_ms).max(1);
                    let stalled = reading.reclaim_ns.saturating_sub(track.reclaim_ns);
                    let stall = (stalled as f64 / 1e6 / elapsed_ms as f64) as f32;
                    // Missed points (a slow tick) take this point's values.
                    for _ in track.last + 1..=index {
                        track.push(self.points, anon, rss, stall);
                    }
                    track.last = index;
                    track.pids.clone_from(&reading.pids);
                    track.reclaim_ns = reading.reclaim_ns;
                    track.reclaim_at_ms = unix_ms;
                    track
                }
                None => {
                    let mut track = Track::new(unix_ms, index, reading);
                    track.push(self.points, anon, rss, 0.0);
                    track
                }
            };
            self.tracks.insert(reading.instance.clone(), track);
        }
    }

    /// When `instance` was first seen (its current run), if it has a history.
    pub fn started_unix_ms(&self, instance: &str) -> Option<u64> {
        self.tracks.get(instance).map(|t| t.started_unix_ms)
    }

    /// The last `span` of `instance`'s history (all of it that is kept, at most); empty for
    /// a zero span or an instance without one.
    pub fn history(&self, instance: &str, span: Duration) -> InstanceHistory {
        let Some(track) = self.tracks.get(instance) else {
            return InstanceHistory::default();
        };
        let wanted = usize::try_from(span.as_secs().div_ceil(self.step_s)).unwrap_or(usize::MAX);
        let len = track.rss_kib.len();
        let skip = len - wanted.min(len);
        if skip == len {
            return InstanceHistory::default();
        }
        let first_index = track.last + 1 - (len - skip) as u64;
        let bytes = |kib: &u32| u64::from(*kib) * 1024;
        InstanceHistory {
            start_unix_s: first_index * self.step_s,
            rss_anon_bytes: track.rss_anon_kib.iter().skip(skip).map(bytes).collect(),
            rss_bytes: track.rss_kib.iter().skip(skip).map(bytes).collect(),
            // Four significant digits: the rest is noise, and costs bytes on the wire.
            reclaim_stall_seconds_per_sec: track
                .stall
                .iter()
                .skip(skip)
                .map(|s| round_significant(f64::from(*s), 4))
                .collect(),
        }
    }

    /// The resolution and bounds, as the response states them.
    pub fn spec(&self) -> HistorySpec {
        HistorySpec {
            step_seconds: u32::try_from(self.step_s).unwrap_or(u32::MAX),
            max_points: u32::try_from(self.points).unwrap_or(u32::MAX),
            max_instances: Some(u32::try_from(self.max_instances).unwrap_or(u32::MAX)),
            evicted_instances: Some(self.evicted),
        }
    }

    /// Instances with a history.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }
}

/// `value` rounded to `digits` significant decimal digits (0 stays 0).
pub fn round_significant(value: f64, digits: i32) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return if value.is_finite() { value } else { 0.0 };
    }
    let scale = 10f64.powi(digits - 1 - value.abs().log10().floor() as i32);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn reading(instance: &str, pids: &[u32], anon: u64, reclaim_ns: u64) -> InstanceReading {
        InstanceReading {
            instance: instance.to_owned(),
            pids: pids.to_vec(),
            rss_anon_bytes: anon,
            rss_bytes: anon + MIB,
            reclaim_ns,
        }
    }

    #[test]
    fn one_point_per_step_aligned_on_the_clock_and_bounded() {
        let mut h = InstanceHistories::new(Duration::from_secs(60), 3);
        // Ticks every 10 s: one point a minute, at the first tick of each minute.
        for tick in 0..30u64 {
            let ms = 6_000_000 + tick * 10_000;
            let due = h.due(ms);
            assert_eq!(due, tick % 6 == 0, "tick {tick}");
            h.record(ms, &[reading("a", &[1], (100 + tick) * MIB, 0)]);
        }
        let all = h.history("a", Duration::from_secs(3600));
        assert_eq!(all.rss_anon_bytes.len(), 3, "at most --history-points");
        let track = &h.tracks["a"];
        assert_eq!(
            track.rss_kib.capacity(),
            3,
            "never allocated beyond its points"
        );
        assert_eq!(
            all.rss_anon_bytes,
            vec![112 * MIB, 118 * MIB, 124 * MIB],
            "the newest three points, each the value at the minute's first tick"
        );
        assert_eq!(all.start_unix_s, 6_000 + 120, "point i at start + i × step");
        let last = h.history("a", Duration::from_secs(61));
        assert_eq!(last.rss_anon_bytes, vec![118 * MIB, 124 * MIB]);
        assert_eq!(last.start_unix_s, 6_000 + 180);
        assert!(h.history("a", Duration::ZERO).rss_bytes.is_empty());
        assert!(h.history("b", Duration::from_secs(60)).rss_bytes.is_empty());
    }

    #[test]
    fn reclaim_stalls_are_the_mean_rate_over_the_step() {
        let mut h = InstanceHistories::new(Duration::from_secs(10), 10);
        h.record(100_000, &[reading("a", &[1], MIB, 5_000_000_000)]);
        // 0.5 s stalled in 10 s.
        h.record(110_000, &[reading("a", &[1], MIB, 5_500_000_000)]);
        // A process left: the sum went down, never a negative rate.
        h.record(120_000, &[reading("a", &[1], MIB, 1_000_000_000)]);
        let history = h.history("a", Duration::from_secs(100));
        assert_eq!(history.reclaim_stall_seconds_per_sec, vec![0.0, 0.05, 0.0]);
    }

    #[test]
    fn missed_points_are_filled_and_columns_stay_evenly_spaced() {
        let mut h = InstanceHistories::new(Duration::from_secs(1), 10);
        h.record(10_000, &[reading("a", &[1], 10 * MIB, 0)]);
        h.record(13_500, &[reading("a", &[1], 20 * MIB, 0)]);
        let history = h.history("a", Duration::from_secs(10));
        assert_eq!(history.start_unix_s, 10);
        assert_eq!(
            history.rss_anon_bytes,
            vec![10 * MIB, 20 * MIB, 20 * MIB, 20 * MIB]
        );
    }

    #[test]
    fn restarts_and_gaps_start_a_new_instance() {
        let mut h = InstanceHistories::new(Duration::from_secs(1), 10);
        h.record(
            1_000,
            &[reading("a", &[1, 2], MIB, 0), reading("b", &[3], MIB, 0)],
        );
        h.record(
            2_000,
            &[reading("a", &[2, 5], MIB, 0), reading("b", &[3], MIB, 0)],
        );
        assert_eq!(h.history("a", Duration::from_secs(60)).rss_bytes.len(), 2);
        assert_eq!(h.started_unix_ms("a"), Some(1_000));
        // Every process of `a` is new: it restarted.
        h.record(3_000, &[reading("a", &[7], MIB, 0)]);
        assert_eq!(h.started_unix_ms("a"), Some(3_000));
        assert_eq!(h.history("a", Duration::from_secs(60)).rss_bytes.len(), 1);
        // `b` was absent at a point: ended, and a new run when it comes back.
        assert_eq!(h.started_unix_ms("b"), None);
        h.record(
            4_000,
            &[reading("a", &[7], MIB, 0), reading("b", &[3], MIB, 0)],
        );
        assert_eq!(h.started_unix_ms("b"), Some(4_000));
        assert_eq!(h.history("a", Duration::from_secs(60)).rss_bytes.len(), 2);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn the_instance_cap_keeps_the_best_ranked_and_counts_the_rest() {
        let mut h = InstanceHistories::new(Duration::from_secs(1), 10).with_max_instances(2);
        let readings = [
            reading("hot", &[1], MIB, 0),
            reading("warm", &[2], MIB, 0),
            reading("cold", &[3], MIB, 0),
        ];
        h.record(1_000, &readings);
        assert_eq!(h.len(), 2);
        assert_eq!(h.spec().evicted_instances, Some(1));
        assert!(
            h.history("cold", Duration::from_secs(60))
                .rss_bytes
                .is_empty()
        );
        // `cold` becomes the hottest: it gets a history, `warm` loses its own.
        h.record(
            2_000,
            &[
                readings[2].clone(),
                readings[0].clone(),
                readings[1].clone(),
            ],
        );
        assert_eq!(
            h.history("cold", Duration::from_secs(60)).rss_bytes.len(),
            1
        );
        assert!(
            h.history("warm", Duration::from_secs(60))
                .rss_bytes
                .is_empty()
        );
        assert_eq!(h.history("hot", Duration::from_secs(60)).rss_bytes.len(), 2);
        assert_eq!(h.spec().evicted_instances, Some(2));
    }

    #[test]
    fn memory_is_bounded_whatever_the_flags() {
        assert_eq!(max_instances(DEFAULT_POINTS), MAX_INSTANCES);
        assert_eq!(max_bytes(DEFAULT_POINTS), 4096 * 360 * 12);
        assert!(max_bytes(DEFAULT_POINTS) < 17 << 20);
        assert_eq!(max_instances(MAX_POINTS), 554);
        for points in [1, 360, 1000, 5000, MAX_POINTS] {
            assert!(max_bytes(points) <= HISTORY_BUDGET_BYTES, "{points}");
        }
        let h = InstanceHistories::new(Duration::from_secs(60), 360);
        assert_eq!(
            h.spec(),
            HistorySpec {
                step_seconds: 60,
                max_points: 360,
                max_instances: Some(4096),
                evicted_instances: Some(0),
            }
        );
    }

    #[test]
    fn quantizing_keeps_a_thousandth_and_folds_page_jitter() {
        assert_eq!(quantize_kib(0), 0);
        assert_eq!(quantize_kib(4096), 4);
        assert_eq!(quantize_kib(6000), 4, "nearest 4 KiB");
        let base = 100 * MIB;
        assert_eq!(
            quantize_kib(base + 8192),
            quantize_kib(base),
            "2 pages of jitter"
        );
        for bytes in [5 * MIB + 12_345, 777 * MIB + 1, 3 << 30, (40 << 30) + 99] {
            let back = u64::from(quantize_kib(bytes)) * 1024;
            let error = back.abs_diff(bytes) as f64 / bytes as f64;
            assert!(error <= 0.001, "{bytes}: {back} ({error})");
        }
        assert_eq!(quantize_kib(u64::MAX), u32::MAX, "saturates at 4 TiB");
        assert_eq!(round_significant(0.012_345_6, 4), 0.012_35);
        assert_eq!(round_significant(8123.456, 4), 8123.0);
        assert_eq!(round_significant(f64::NAN, 4), 0.0);
    }
}
