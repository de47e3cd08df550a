//! Bounded sample histories and the rates derived from them.
//!
//! The model stores raw cumulative samples only; every rate is computed from two samples when a
//! snapshot or an OOM record is built, so nothing derived can drift out of step with its inputs.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use memtrace_common::{ProcStats, rss_member};

use super::snapshot::{FlightSample, Rates};

/// A fixed-capacity FIFO: pushing onto a full ring drops the oldest entry, so memory per ring is
/// constant however long the daemon runs.
#[derive(Clone, Debug)]
pub(crate) struct Ring<T> {
    buf: VecDeque<T>,
    capacity: usize,
}

impl<T> Ring<T> {
    /// A ring of `capacity` entries (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            buf: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub(crate) fn push(&mut self, value: T) {
        if self.buf.len() == self.capacity {
            self.buf.pop_front();
        }
        self.buf.push_back(value);
    }

    /// Oldest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.buf.iter()
    }

    pub(crate) fn back(&self) -> Option<&T> {
        self.buf.back()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }
}

/// The part of one [`ProcStats`] reading that rates and flight recordings need (88 bytes instead
/// of 200: with ~61 samples per process this is what dominates the model's memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) at: Instant,
    pub(crate) faults_minor: u64,
    pub(crate) faults_major: u64,
    pub(crate) mmap_bytes: u64,
    pub(crate) munmap_bytes: u64,
    pub(crate) brk_grow_bytes: u64,
    pub(crate) reclaim_ns: u64,
    pub(crate) rss_anon: u64,
    pub(crate) rss_file: u64,
    pub(crate) rss_shmem: u64,
}

impl Sample {
    pub(crate) fn new(at: Instant, s: &ProcStats) -> Self {
        Self {
            at,
            faults_minor: s.faults_minor(),
            faults_major: s.faults_major,
            mmap_bytes: s.mmap_bytes,
            munmap_bytes: s.munmap_bytes,
            brk_grow_bytes: s.brk_grow_bytes,
            reclaim_ns: s.reclaim_ns,
            rss_anon: s.rss[rss_member::ANON],
            rss_file: s.rss[rss_member::FILE],
            rss_shmem: s.rss[rss_member::SHMEM],
        }
    }
}

/// Per-second rates from `older` to `newer`; zero when they are not apart in time. A counter
/// that went down (which the caller prevents by resetting histories) counts as no change.
pub(crate) fn rates_between(older: &Sample, newer: &Sample) -> Rates {
    let elapsed = newer.at.saturating_duration_since(older.at).as_secs_f64();
    if elapsed <= 0.0 {
        return Rates::default();
    }
    let per_sec = |old: u64, new: u64| new.saturating_sub(old) as f64 / elapsed;
    Rates {
        faults_minor_per_sec: per_sec(older.faults_minor, newer.faults_minor),
        faults_major_per_sec: per_sec(older.faults_major, newer.faults_major),
        mmap_bytes_per_sec: per_sec(older.mmap_bytes, newer.mmap_bytes),
        munmap_bytes_per_sec: per_sec(older.munmap_bytes, newer.munmap_bytes),
        brk_grow_bytes_per_sec: per_sec(older.brk_grow_bytes, newer.brk_grow_bytes),
        reclaim_stall_seconds_per_sec: per_sec(older.reclaim_ns, newer.reclaim_ns) / 1e9,
    }
}

/// Rates over the last `window` before `now`: from the oldest sample no more than `window` old to
/// the newest one, divided by the time actually between those two samples (so a snapshot taken
/// between ticks is not skewed). One sample or none: all zero.
pub(crate) fn window_rates(history: &Ring<Sample>, now: Instant, window: Duration) -> Rates {
    let Some(newest) = history.back() else {
        return Rates::default();
    };
    match history
        .iter()
        .find(|s| now.saturating_duration_since(s.at) <= window)
    {
        Some(oldest) => rates_between(oldest, newest),
        None => Rates::default(),
    }
}

/// Adds `b` into `a`, field by field.
pub(crate) fn add_rates(a: &mut Rates, b: &Rates) {
    a.faults_minor_per_sec += b.faults_minor_per_sec;
    a.faults_major_per_sec += b.faults_major_per_sec;
    a.mmap_bytes_per_sec += b.mmap_bytes_per_sec;
    a.munmap_bytes_per_sec += b.munmap_bytes_per_sec;
    a.brk_grow_bytes_per_sec += b.brk_grow_bytes_per_sec;
    a.reclaim_stall_seconds_per_sec += b.reclaim_stall_seconds_per_sec;
}

/// The flight recording of an OOM victim: one [`FlightSample`] per history entry taken within
/// `window` before `now`, oldest first. Rates are between each entry and the one before it (the
/// entry before the window, if the ring still has it, so the first sample has a rate too).
/// `usage` is the victim's cgroup usage history; each sample gets the usage reading nearest in
/// time, if one is within `tolerance`.
pub(crate) fn flight_recording(
    history: &Ring<Sample>,
    usage: Option<&Ring<(Instant, u64)>>,
    now: Instant,
    window: Duration,
    tolerance: Duration,
) -> Vec<FlightSample> {
    let mut out = Vec::new();
    let mut previous: Option<&Sample> = None;
    for sample in history.iter() {
        let in_window = now
            .checked_duration_since(sample.at)
            .filter(|age| *age <= window);
        if let Some(age) = in_window {
            let rates = previous.map_or_else(Rates::default, |p| rates_between(p, sample));
            out.push(FlightSample {
                // `0.0 - x` rather than `-x`: the kill instant itself is 0, not -0.
                offset_seconds: 0.0 - age.as_secs_f64(),
                rss_anon_bytes: sample.rss_anon,
                rss_file_bytes: sample.rss_file,
                rss_shmem_bytes: sample.rss_shmem,
                faults_minor_per_sec: rates.faults_minor_per_sec,
                faults_major_per_sec: rates.faults_major_per_sec,
                reclaim_stall_seconds_per_sec: rates.reclaim_stall_seconds_per_sec,
                cgroup_usage_bytes: usage.and_then(|u| usage_near(u, sample.at, tolerance)),
            });
        }
        previous = Some(sample);
    }
    out
}

/// The usage reading closest to `at`, if one is within `tolerance` of it.
fn usage_near(usage: &Ring<(Instant, u64)>, at: Instant, tolerance: Duration) -> Option<u64> {
    let distance = |t: Instant| t.max(at).duration_since(t.min(at));
    usage
        .iter()
        .map(|&(t, bytes)| (distance(t), bytes))
        .filter(|(d, _)| *d <= tolerance)
        .min_by_key(|(d, _)| *d)
        .map(|(_, bytes)| bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn ring_drops_oldest_when_full() {
        let mut ring = Ring::new(3);
        for i in 0..5 {
            ring.push(i);
        }
        assert_eq!(ring.iter().copied().collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(ring.back(), Some(&4));
        assert_eq!(Ring::<u8>::new(0).capacity, 1);
    }

    #[test]
    fn usage_near_picks_closest_within_tolerance() {
        let t0 = Instant::now();
        let mut usage = Ring::new(4);
        usage.push((at(t0, 0), 100));
        usage.push((at(t0, 2), 300));
        let tol = Duration::from_secs(1);
        assert_eq!(usage_near(&usage, at(t0, 2), tol), Some(300));
        assert_eq!(usage_near(&usage, at(t0, 1), tol), Some(100));
        assert_eq!(usage_near(&usage, at(t0, 10), tol), None);
    }
}
