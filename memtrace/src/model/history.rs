//! Bounded sample histories and the rates derived from them.
//!
//! The model stores raw cumulative samples only; every rate is computed from two samples when a
//! snapshot or an OOM record is built, so nothing derived can drift out of step with its inputs.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use memtrace_common::{ProcStats, rss_member};

use crate::counters::proc_stats_value;

use memtrace_api::{FlightSample, Rates};

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

    #[cfg(test)]
    pub(crate) fn back(&self) -> Option<&T> {
        self.buf.back()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }
}

/// Generates [`Sample`] from the lines of [`memtrace_api::counter_table!`] marked `history(yes)`:
/// its fields (named as the JSON keys), their count and which of them are cumulative.
macro_rules! history_sample {
    (@collect [$($acc:tt)*]) => { history_sample!(@emit $($acc)*); };
    (@collect [$($acc:tt)*]
        $(#[$doc:meta])*
        $key:ident : $kind:ident ( $src:ident ) family ( $family:ident ) history (yes)
            prom ( $($prom:tt)* ) ;
        $($rest:tt)*
    ) => {
        history_sample!(@collect [$($acc)* $key $kind $src ;] $($rest)*);
    };
    (@collect [$($acc:tt)*]
        $(#[$doc:meta])*
        $key:ident : $kind:ident ( $src:ident ) family ( $family:ident ) history (no)
            prom ( $($prom:tt)* ) ;
        $($rest:tt)*
    ) => {
        history_sample!(@collect [$($acc)*] $($rest)*);
    };
    (@emit $($key:ident $kind:ident $src:ident ;)*) => {
        /// The part of one [`ProcStats`] reading that rates and flight recordings need. Histories
        /// do not store it as is (see [`SampleHistory`]); it is what they hand back.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) struct Sample {
            pub(crate) at: Instant,
            $( pub(crate) $key: u64, )*
        }

        /// Fields of a [`Sample`] after its time, in encoding order.
        const FIELDS: usize = [$(stringify!($key)),*].len();
        /// Which fields are cumulative counters (rates are computed from them); the others are
        /// gauges.
        const CUMULATIVE: [bool; FIELDS] =
            [$(memtrace_api::__counter_kind!($kind).is_cumulative()),*];

        impl Sample {
            pub(crate) fn new(at: Instant, s: &ProcStats) -> Self {
                Self {
                    at,
                    $( $key: proc_stats_value!($kind, s, $src), )*
                }
            }

            fn fields(&self) -> [u64; FIELDS] {
                [$(self.$key),*]
            }

            fn set_fields(&mut self, fields: [u64; FIELDS]) {
                let [$($key),*] = fields;
                $( self.$key = $key; )*
            }
        }
    };
    ($($line:tt)*) => { history_sample!(@collect [] $($line)*); };
}

memtrace_api::counter_table!(history_sample);

/// Record mask bits: bit 0 the time, bit `1 + i` field `i`. These are the cumulative fields'.
const RATE_BITS: u32 = {
    let mut bits = 0;
    let mut i = 0;
    while i < FIELDS {
        if CUMULATIVE[i] {
            bits |= 1 << (i + 1);
        }
        i += 1;
    }
    bits
};

// ---- compact encoding ---------------------------------------------------------------------------

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut VecDeque<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push_back((v as u8) | 0x80);
        v >>= 7;
    }
    out.push_back(v as u8);
}

/// Reads one LEB128 value; `None` at the end of the input (never for what `put_varint` wrote).
fn get_varint(bytes: &mut impl Iterator<Item = u8>, read: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0u32;
    loop {
        let b = bytes.next()?;
        *read += 1;
        if shift < 64 {
            v |= u64::from(b & 0x7f) << shift;
        }
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

/// `new − old` in nanoseconds, signed (a caller may pass times out of order).
fn time_delta(old: Instant, new: Instant) -> i64 {
    match new.checked_duration_since(old) {
        Some(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        None => i64::try_from(old.duration_since(new).as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

fn shift_time(at: Instant, nanos: i64) -> Instant {
    let d = Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 {
        at.checked_add(d).unwrap_or(at)
    } else {
        at.checked_sub(d).unwrap_or(at)
    }
}

/// Appends the record turning `old` into `new`: a mask of what changed, then each change as a
/// zigzag varint (wrapping differences, so any value round-trips exactly). Returns the mask.
fn encode(out: &mut VecDeque<u8>, old: &Sample, new: &Sample) -> u32 {
    let dt = time_delta(old.at, new.at);
    let (a, b) = (old.fields(), new.fields());
    let mut mask = u32::from(dt != 0);
    for i in 0..FIELDS {
        if a[i] != b[i] {
            mask |= 1 << (i + 1);
        }
    }
    put_varint(out, u64::from(mask));
    if dt != 0 {
        put_varint(out, zigzag(dt));
    }
    for i in 0..FIELDS {
        if mask & (1 << (i + 1)) != 0 {
            put_varint(out, zigzag(b[i].wrapping_sub(a[i]) as i64));
        }
    }
    mask
}

/// Applies one record to `sample`; returns its mask and length in bytes.
fn decode(bytes: &mut impl Iterator<Item = u8>, sample: &mut Sample) -> Option<(u32, usize)> {
    let mut read = 0;
    let mask = u32::try_from(get_varint(bytes, &mut read)?).ok()?;
    if mask & 1 != 0 {
        sample.at = shift_time(sample.at, unzigzag(get_varint(bytes, &mut read)?));
    }
    let mut fields = sample.fields();
    for (i, field) in fields.iter_mut().enumerate() {
        if mask & (1 << (i + 1)) != 0 {
            let delta = unzigzag(get_varint(bytes, &mut read)?) as u64;
            *field = field.wrapping_add(delta);
        }
    }
    sample.set_fields(fields);
    Some((mask, read))
}

/// A process's bounded sample history, oldest first, like a [`Ring`] of [`Sample`]s but compact:
/// the oldest and newest samples are kept whole and every later sample as the difference from
/// the one before (a few bytes; six for a process whose counters did not move). At 61 samples
/// that is ~0.5 KiB instead of 5.4 KiB per idle process, and nothing is allocated until a
/// process has a second sample.
#[derive(Clone, Debug)]
pub(crate) struct SampleHistory {
    /// Records turning `oldest` into each later sample in turn.
    records: VecDeque<u8>,
    oldest: Sample,
    newest: Sample,
    len: u32,
    capacity: u32,
    /// Records (in `records`) that change a rate counter: with none, every rate is zero.
    rate_changes: u32,
}

impl SampleHistory {
    /// A history of `capacity` samples (at least one) holding `first`.
    pub(crate) fn new(capacity: usize, first: Sample) -> Self {
        Self {
            records: VecDeque::new(),
            oldest: first,
            newest: first,
            len: 1,
            capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
            rate_changes: 0,
        }
    }

    pub(crate) fn push(&mut self, sample: Sample) {
        if self.len == self.capacity {
            self.pop_oldest();
        }
        if self.len == 0 {
            self.oldest = sample;
        } else if encode(&mut self.records, &self.newest, &sample) & RATE_BITS != 0 {
            self.rate_changes += 1;
        }
        self.newest = sample;
        self.len += 1;
    }

    fn pop_oldest(&mut self) {
        if self.len <= 1 {
            self.len = 0;
            self.records.clear();
            self.rate_changes = 0;
            return;
        }
        let mut bytes = self.records.iter().copied();
        let Some((mask, read)) = decode(&mut bytes, &mut self.oldest) else {
            // Unreachable: records hold `len − 1` complete entries.
            self.len = 1;
            self.oldest = self.newest;
            self.records.clear();
            self.rate_changes = 0;
            return;
        };
        self.records.drain(..read);
        if mask & RATE_BITS != 0 {
            self.rate_changes -= 1;
        }
        self.len -= 1;
    }

    /// Oldest first.
    pub(crate) fn iter(&self) -> SampleIter<'_> {
        SampleIter {
            bytes: self.records.iter().copied(),
            current: self.oldest,
            remaining: self.len,
        }
    }

    pub(crate) fn back(&self) -> Option<Sample> {
        (self.len > 0).then_some(self.newest)
    }

    /// No rate counter changed between any two samples held.
    fn rates_flat(&self) -> bool {
        self.rate_changes == 0
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }
}

/// Decodes a [`SampleHistory`], oldest first.
pub(crate) struct SampleIter<'a> {
    bytes: std::iter::Copied<std::collections::vec_deque::Iter<'a, u8>>,
    current: Sample,
    remaining: u32,
}

impl Iterator for SampleIter<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.remaining == 0 {
            return None;
        }
        let out = self.current;
        self.remaining -= 1;
        if self.remaining > 0 && decode(&mut self.bytes, &mut self.current).is_none() {
            self.remaining = 0;
        }
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
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
pub(crate) fn window_rates(history: &SampleHistory, now: Instant, window: Duration) -> Rates {
    let Some(newest) = history.back() else {
        return Rates::default();
    };
    if history.rates_flat() {
        // Whichever sample starts the window, every difference is zero (most processes, most
        // of the time): skip decoding.
        return Rates::default();
    }
    match history
        .iter()
        .find(|s| now.saturating_duration_since(s.at) <= window)
    {
        Some(oldest) => rates_between(&oldest, &newest),
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
    history: &SampleHistory,
    usage: Option<&Ring<(Instant, u64)>>,
    now: Instant,
    window: Duration,
    tolerance: Duration,
) -> Vec<FlightSample> {
    let mut out = Vec::new();
    let mut previous: Option<Sample> = None;
    for sample in history.iter() {
        let in_window = now
            .checked_duration_since(sample.at)
            .filter(|age| *age <= window);
        if let Some(age) = in_window {
            let rates = previous.map_or_else(Rates::default, |p| rates_between(&p, &sample));
            out.push(FlightSample {
                // `0.0 - x` rather than `-x`: the kill instant itself is 0, not -0.
                offset_seconds: 0.0 - age.as_secs_f64(),
                rss_anon_bytes: sample.rss_anon_bytes,
                rss_file_bytes: sample.rss_file_bytes,
                rss_shmem_bytes: sample.rss_shmem_bytes,
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

/// The flight sample at the kill: `at_kill` (the victim's counters then, as far as known) with
/// its rates since `previous`, the last sample before it.
pub(crate) fn kill_sample(
    previous: &Sample,
    at_kill: &Sample,
    cgroup_usage_bytes: Option<u64>,
) -> FlightSample {
    let rates = rates_between(previous, at_kill);
    FlightSample {
        offset_seconds: 0.0,
        rss_anon_bytes: at_kill.rss_anon_bytes,
        rss_file_bytes: at_kill.rss_file_bytes,
        rss_shmem_bytes: at_kill.rss_shmem_bytes,
        faults_minor_per_sec: rates.faults_minor_per_sec,
        faults_major_per_sec: rates.faults_major_per_sec,
        reclaim_stall_seconds_per_sec: rates.reclaim_stall_seconds_per_sec,
        cgroup_usage_bytes,
    }
}

/// The usage reading closest to `at`, if one is within `tolerance` of it.
pub(crate) fn usage_near(
    usage: &Ring<(Instant, u64)>,
    at: Instant,
    tolerance: Duration,
) -> Option<u64> {
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

    /// A tiny deterministic generator (xorshift), so the test needs no dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn compact_history_round_trips_like_a_ring() {
        let t0 = Instant::now() + Duration::from_secs(100_000);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for capacity in [1, 2, 3, 61] {
            let mut ring = Ring::new(capacity);
            let mut compact: Option<SampleHistory> = None;
            let mut s = Sample::new(t0, &ProcStats::default());
            for step in 0..500u64 {
                let r = next(&mut rng);
                // Mostly idle; sometimes big jumps, drops, extremes and time going backwards.
                match r % 8 {
                    0 => s.faults_minor += r >> 40,
                    1 => s.mmap_bytes = s.mmap_bytes.wrapping_add(r),
                    2 => s.rss_anon_bytes = r >> (r % 64),
                    3 => s.rss_file_bytes = s.rss_file_bytes.saturating_sub(r >> 50),
                    4 => s.reclaim_ns = u64::MAX - (r % 3),
                    5 => {
                        s.faults_major += 1;
                        s.rss_shmem_bytes ^= r;
                        s.brk_grow_bytes += r >> 60;
                        s.munmap_bytes += r >> 33;
                    }
                    _ => {}
                }
                s.at = if r.is_multiple_of(17) {
                    s.at - Duration::from_nanos(r >> 34)
                } else {
                    s.at + Duration::from_nanos(1_000_000_000 + (r >> 44) * (step % 3))
                };
                ring.push(s);
                match compact.as_mut() {
                    Some(c) => c.push(s),
                    None => compact = Some(SampleHistory::new(capacity, s)),
                }
                let c = compact.as_ref().expect("created");
                let want: Vec<Sample> = ring.iter().copied().collect();
                let got: Vec<Sample> = c.iter().collect();
                assert_eq!(got, want, "capacity {capacity}, step {step}");
                assert_eq!(c.len(), ring.len());
                assert_eq!(c.back(), ring.back().copied());
                let rate_fields = |s: &Sample| {
                    let fields = s.fields();
                    (0..FIELDS)
                        .filter(|i| CUMULATIVE[*i])
                        .map(|i| fields[i])
                        .collect::<Vec<_>>()
                };
                let flat = want
                    .windows(2)
                    .all(|w| rate_fields(&w[0]) == rate_fields(&w[1]));
                assert_eq!(c.rates_flat(), flat, "capacity {capacity}, step {step}");
            }
        }
    }

    #[test]
    fn sample_layout_is_the_tables_history_lines() {
        // The encoding's field order: changing it is harmless (histories live in memory only),
        // but this pins what the table generates.
        let stats = ProcStats {
            faults_user: 100,
            faults_kernel: 10,
            faults_major: 1,
            mmap_bytes: 2,
            munmap_bytes: 3,
            brk_grow_bytes: 4,
            reclaim_ns: 5,
            rss: [6, 7, 8, 9],
            ..ProcStats::default()
        };
        let s = Sample::new(Instant::now(), &stats);
        // minor, major, mmap, munmap, brk grow, reclaim ns, then RSS anon, file, shmem.
        assert_eq!(s.fields(), [109, 1, 2, 3, 4, 5, 7, 6, 9]);
        assert_eq!(
            (s.rss_anon_bytes, s.rss_file_bytes, s.rss_shmem_bytes),
            (
                stats.rss[rss_member::ANON],
                stats.rss[rss_member::FILE],
                stats.rss[rss_member::SHMEM]
            )
        );
        assert_eq!(FIELDS, 9);
        assert_eq!(
            RATE_BITS,
            ((1 << 6) - 1) << 1,
            "six counters, then three gauges"
        );
    }

    #[test]
    fn idle_history_is_small() {
        let t0 = Instant::now();
        let stats = ProcStats {
            faults_user: 123_456,
            rss: [16384; rss_member::COUNT],
            ..ProcStats::default()
        };
        let mut h = SampleHistory::new(61, Sample::new(t0, &stats));
        for i in 1..200 {
            h.push(Sample::new(at(t0, i), &stats));
        }
        assert_eq!(h.len(), 61);
        assert_eq!(
            h.records.len(),
            60 * 6,
            "a mask byte and a 5-byte time step each"
        );
        assert!(h.rates_flat());
        let now = at(t0, 199);
        assert_eq!(
            window_rates(&h, now, Duration::from_secs(10)),
            Rates::default()
        );
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
