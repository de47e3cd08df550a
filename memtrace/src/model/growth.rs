//! RSS growth rates and leak hints, derived on read from bounded histories.
//!
//! **Growth** is the RSS change per second over `--growth-window` (default 60 s): from the
//! newest sample of a history to the newest one at least a window older. Absent until the
//! process (cgroup) has been watched for a whole window. Processes use their sample history
//! (whose capacity the model sizes to cover the window); cgroups a ring of their processes'
//! summed RSS, one entry per tick.
//!
//! **Leak hint** ([`LeakTracker`]): the 60 s sample history is too short for a 10 min leak
//! window, so each process also keeps a downsampled series of its RSS: [`LEAK_POINTS`] + 1
//! points, one per `--leak-window / 20`, each 8 bytes (a millisecond offset and a KiB count),
//! so at most 168 bytes of points (allocated once, at their full length) plus 80 bytes of state
//! per process, whatever the window. (Cgroups keep no such series: a ring of one RSS sum per
//! tick over the growth window, 24 bytes an entry, 1.4 KiB with the defaults.)
//! A process is hinted while
//! - its RSS grew at least `--leak-min-growth` (default 1 MiB/min) on average over the last
//!   `--leak-window` (default 10 min), and
//! - it did not fall meanwhile: never more than [`fall_tolerance`] (the larger of 1 MiB and 1 %
//!   of its peak) below the highest RSS seen since the window began. Falls are checked at every
//!   tick, not only at the downsampled points. A fall starts the watch anew: the hint clears and
//!   comes back only after a whole window of growth from there.
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use memtrace_api::LeakHint;

use super::views::unix_ms;

/// Downsampled points per leak window.
pub const LEAK_POINTS: u32 = 20;
/// Default `--growth-window`.
pub const DEFAULT_GROWTH_WINDOW: Duration = Duration::from_secs(60);
/// Default `--leak-window`.
pub const DEFAULT_LEAK_WINDOW: Duration = Duration::from_secs(600);
/// Longest `--growth-window`: the sample histories grow with it (one sample per tick).
pub const MAX_GROWTH_WINDOW: Duration = Duration::from_secs(300);
/// Longest `--leak-window` (its series is downsampled: the length costs nothing).
pub const MAX_LEAK_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// The smallest fall that clears a hint.
pub const MIN_FALL_TOLERANCE_BYTES: u64 = 1 << 20;

/// A rate of growth as the flag gives it: `bytes` per `per` (`1MiB/min`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrowthRate {
    pub bytes: u64,
    pub per: Duration,
}

impl GrowthRate {
    /// Default `--leak-min-growth`: 1 MiB/min.
    pub const DEFAULT: Self = Self {
        bytes: 1 << 20,
        per: Duration::from_secs(60),
    };

    pub fn bytes_per_sec(self) -> f64 {
        let secs = self.per.as_secs_f64();
        if secs <= 0.0 {
            return f64::INFINITY;
        }
        self.bytes as f64 / secs
    }
}

impl std::fmt::Display for GrowthRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            crate::units::human_bytes(self.bytes),
            humantime::format_duration(self.per)
        )
    }
}

/// Parses `SIZE/UNIT` (`1MiB/min`, `512K/s`, `100MB/h`), or a bare size, per minute.
pub fn parse_growth_rate(text: &str) -> Result<GrowthRate, String> {
    let invalid = |why: &str| {
        format!("invalid growth rate '{text}' ({why}; examples: 1MiB/min, 512K/s, 100MiB/h)")
    };
    let (size, unit) = match text.split_once('/') {
        Some((size, unit)) => (size, unit.trim()),
        None => (text, "min"),
    };
    let bytes = crate::units::parse_size(size).map_err(|e| invalid(&e))?;
    let per = match unit {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(invalid("the unit after / is s, min or h")),
    };
    if bytes == 0 {
        return Err(invalid("must be more than 0"));
    }
    Ok(GrowthRate { bytes, per })
}

/// The growth settings of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrowthConfig {
    /// `--growth-window`.
    pub window: Duration,
    /// `--leak-window`.
    pub leak_window: Duration,
    /// `--leak-min-growth`.
    pub leak_min_growth: GrowthRate,
}

impl Default for GrowthConfig {
    fn default() -> Self {
        Self {
            window: DEFAULT_GROWTH_WINDOW,
            leak_window: DEFAULT_LEAK_WINDOW,
            leak_min_growth: GrowthRate::DEFAULT,
        }
    }
}

/// RSS change per second from the newest of `samples` (time, RSS; oldest first) to the newest
/// one at least `window − tolerance` older; `None` when none is that old yet.
pub fn growth<I>(
    samples: I,
    newest: (Instant, u64),
    window: Duration,
    tolerance: Duration,
) -> Option<f64>
where
    I: IntoIterator<Item = (Instant, u64)>,
{
    let (at, rss) = newest;
    let (base_at, base_rss) = samples
        .into_iter()
        .take_while(|(t, _)| at.saturating_duration_since(*t) + tolerance >= window)
        .last()?;
    let elapsed = at.saturating_duration_since(base_at).as_secs_f64();
    (elapsed > 0.0).then(|| (rss as f64 - base_rss as f64) / elapsed)
}

/// How far below its peak RSS may fall without clearing a hint: 1 MiB or 1 % of the peak.
pub fn fall_tolerance(peak_bytes: u64) -> u64 {
    (peak_bytes / 100).max(MIN_FALL_TOLERANCE_BYTES)
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes / 1024).unwrap_or(u32::MAX)
}

fn bytes(kib: u32) -> u64 {
    u64::from(kib) * 1024
}

/// One process's downsampled RSS series and leak state. See the module documentation.
#[derive(Clone, Debug)]
pub struct LeakTracker {
    /// Time 0 of the points' offsets.
    epoch: Instant,
    /// (ms since `epoch`, RSS KiB), oldest first, at most `LEAK_POINTS + 1`.
    points: VecDeque<(u32, u32)>,
    /// Start of the watch: the first sample, or the last fall.
    watch_from_ms: u32,
    /// Highest RSS (KiB) since the watch began.
    peak: u32,
    /// While hinted: the start of the window the growth was first seen over (ms, KiB), and the
    /// mean growth over the latest window.
    hinted: Option<((u32, u32), f64)>,
}

impl LeakTracker {
    pub fn new(now: Instant, rss_bytes: u64) -> Self {
        let mut points = VecDeque::with_capacity(LEAK_POINTS as usize + 1);
        points.push_back((0, kib(rss_bytes)));
        Self {
            epoch: now,
            points,
            watch_from_ms: 0,
            peak: kib(rss_bytes),
            hinted: None,
        }
    }

    fn offset_ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Moves the epoch to the oldest point when offsets near `u32::MAX` (49 days).
    fn rebase(&mut self, now_ms: u64) -> u32 {
        if now_ms < u64::from(u32::MAX / 2) {
            return now_ms as u32;
        }
        let shift = self.points.front().map_or(0, |p| p.0);
        self.epoch += Duration::from_millis(u64::from(shift));
        for p in &mut self.points {
            p.0 -= shift;
        }
        self.watch_from_ms = self.watch_from_ms.saturating_sub(shift);
        if let Some(((since, _), _)) = &mut self.hinted {
            *since = since.saturating_sub(shift);
        }
        u32::try_from(now_ms - u64::from(shift)).unwrap_or(u32::MAX)
    }

    /// A tick's RSS reading.
    pub fn observe(
        &mut self,
        now: Instant,
        rss_bytes: u64,
        config: &GrowthConfig,
        tolerance: Duration,
    ) {
        let now_ms = self.offset_ms(now);
        let now_ms = self.rebase(now_ms);
        let rss = kib(rss_bytes);
        if bytes(self.peak).saturating_sub(rss_bytes) > fall_tolerance(bytes(self.peak)) {
            // A fall: watch anew from here.
            self.watch_from_ms = now_ms;
            self.peak = rss;
            self.hinted = None;
            self.points.clear();
        }
        self.peak = self.peak.max(rss);
        let step = (config.leak_window / LEAK_POINTS).saturating_sub(tolerance);
        let step_ms = u32::try_from(step.as_millis()).unwrap_or(u32::MAX);
        let due = self
            .points
            .back()
            .is_none_or(|&(t, _)| now_ms.saturating_sub(t) >= step_ms);
        if due {
            if self.points.len() > LEAK_POINTS as usize {
                self.points.pop_front();
            }
            self.points.push_back((now_ms, rss));
        }
        self.judge(now_ms, rss, config, tolerance);
    }

    /// Whether the last leak window (ending at `now_ms`) grew enough, within the watch.
    fn judge(&mut self, now_ms: u32, rss: u32, config: &GrowthConfig, tolerance: Duration) {
        let window_ms = u32::try_from(config.leak_window.saturating_sub(tolerance).as_millis())
            .unwrap_or(u32::MAX);
        let base = self
            .points
            .iter()
            .take_while(|(t, _)| now_ms.saturating_sub(*t) >= window_ms)
            .last()
            .copied();
        let growth = base
            .filter(|(t, _)| *t >= self.watch_from_ms)
            .and_then(|(t, k)| {
                let secs = f64::from(now_ms - t) / 1000.0;
                (secs > 0.0).then(|| (bytes(rss) as f64 - bytes(k) as f64) / secs)
            });
        self.hinted = match (growth, base) {
            (Some(g), Some(base)) if g >= config.leak_min_growth.bytes_per_sec() => {
                let since = self.hinted.map_or(base, |(since, _)| since);
                Some((since, g))
            }
            _ => None,
        };
    }

    /// The hint at `now` (wall clock `wall`), with the RSS now, if hinted.
    pub fn hint(
        &self,
        now: Instant,
        wall: SystemTime,
        rss_bytes: u64,
        config: &GrowthConfig,
    ) -> Option<LeakHint> {
        let ((since_ms, since_kib), growth) = self.hinted?;
        let since = self.epoch + Duration::from_millis(u64::from(since_ms));
        let ago = u64::try_from(now.saturating_duration_since(since).as_millis()).unwrap_or(0);
        Some(LeakHint {
            since_unix_ms: unix_ms(wall).saturating_sub(ago),
            window_seconds: config.leak_window.as_secs_f64(),
            growth_bytes_per_sec: growth,
            growth_bytes: rss_bytes.saturating_sub(bytes(since_kib)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn config(window: u64, leak: u64, per_min_mib: u64) -> GrowthConfig {
        GrowthConfig {
            window: Duration::from_secs(window),
            leak_window: Duration::from_secs(leak),
            leak_min_growth: GrowthRate {
                bytes: per_min_mib * MIB,
                per: Duration::from_secs(60),
            },
        }
    }

    const HALF: Duration = Duration::from_millis(500);

    #[test]
    fn growth_rates_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_growth_rate("1MiB/min").unwrap(), GrowthRate::DEFAULT);
        assert_eq!(parse_growth_rate("1M").unwrap(), GrowthRate::DEFAULT);
        let per_sec = parse_growth_rate("512K/s").unwrap();
        assert_eq!(per_sec.bytes_per_sec(), 512.0 * 1024.0);
        assert_eq!(
            parse_growth_rate("36MiB/h").unwrap().bytes_per_sec(),
            36.0 * MIB as f64 / 3600.0
        );
        for bad in ["", "0/min", "1MiB/day", "lots/min", "1MiB/"] {
            let err = parse_growth_rate(bad).unwrap_err();
            assert!(
                err.starts_with(&format!("invalid growth rate '{bad}'")),
                "{err}"
            );
        }
        assert_eq!(GrowthRate::DEFAULT.to_string(), "1.0 MiB/1m");
    }

    #[test]
    fn growth_needs_a_whole_window_then_is_the_slope() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let samples: Vec<(Instant, u64)> =
            (0..=60).map(|s| (at(s), 100 * MIB + s * 4096)).collect();
        let window = Duration::from_secs(60);
        // 59 s watched: absent.
        assert_eq!(
            growth(samples[..60].iter().copied(), samples[59], window, HALF),
            None
        );
        let g = growth(samples.iter().copied(), samples[60], window, HALF).unwrap();
        assert!((g - 4096.0).abs() < 1e-6, "{g}");
        // Flat: 0, present.
        let flat: Vec<(Instant, u64)> = (0..=60).map(|s| (at(s), 7 * MIB)).collect();
        assert_eq!(
            growth(flat.iter().copied(), flat[60], window, HALF),
            Some(0.0)
        );
    }

    /// Feeds `rss(second)` once a second for `seconds`; returns the tracker.
    fn feed(
        config: &GrowthConfig,
        seconds: u64,
        rss: impl Fn(u64) -> u64,
    ) -> (LeakTracker, Instant) {
        let t0 = Instant::now();
        let mut tracker = LeakTracker::new(t0, rss(0));
        for s in 1..=seconds {
            tracker.observe(t0 + Duration::from_secs(s), rss(s), config, HALF);
        }
        (tracker, t0 + Duration::from_secs(seconds))
    }

    #[test]
    fn steady_growth_is_hinted_after_the_window_and_not_before() {
        let config = config(60, 600, 1);
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // 2 MiB a minute.
        let rss = |s: u64| 100 * MIB + s * 2 * MIB / 60;
        let (early, now) = feed(&config, 590, rss);
        assert_eq!(
            early.hint(now, wall, rss(590), &config),
            None,
            "not a whole window yet"
        );
        let (tracker, now) = feed(&config, 900, rss);
        let hint = tracker.hint(now, wall, rss(900), &config).expect("hinted");
        assert_eq!(hint.window_seconds, 600.0);
        let expected = 2.0 * MIB as f64 / 60.0;
        assert!(
            (hint.growth_bytes_per_sec - expected).abs() < expected * 0.01,
            "{hint:?}"
        );
        // First seen over [0, 600]: since the start, 900 s ago; 30 MiB grown since.
        assert_eq!(hint.since_unix_ms, 1_000_000_000 - 900_000);
        assert!(hint.growth_bytes.abs_diff(30 * MIB) <= 2048, "{hint:?}");
        // Memory: the points never exceed their bound.
        assert!(tracker.points.len() <= LEAK_POINTS as usize + 1);
        assert_eq!(tracker.points.capacity(), LEAK_POINTS as usize + 1);
        assert_eq!(size_of::<(u32, u32)>(), 8);
        assert_eq!(
            size_of::<LeakTracker>(),
            80,
            "the state the module documents"
        );
    }

    #[test]
    fn a_fall_clears_the_hint_until_a_whole_window_grows_again() {
        let config = config(60, 600, 1);
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let rss = |s: u64| {
            let grown = 100 * MIB + s * 2 * MIB / 60;
            // At 700 s, 10 MiB freed (more than 1 MiB and 1 % of ~123 MiB).
            if s >= 700 { grown - 10 * MIB } else { grown }
        };
        let (tracker, now) = feed(&config, 699, rss);
        assert!(tracker.hint(now, wall, rss(699), &config).is_some());
        let (tracker, now) = feed(&config, 700, rss);
        assert_eq!(
            tracker.hint(now, wall, rss(700), &config),
            None,
            "cleared at the fall"
        );
        let (tracker, now) = feed(&config, 1290, rss);
        assert_eq!(
            tracker.hint(now, wall, rss(1290), &config),
            None,
            "590 s since the fall"
        );
        let (tracker, now) = feed(&config, 1310, rss);
        let hint = tracker
            .hint(now, wall, rss(1310), &config)
            .expect("a window since the fall");
        assert_eq!(
            hint.since_unix_ms,
            1_000_000_000 - 610_000,
            "since the fall"
        );
        // Jitter under the tolerance does not clear it.
        let jitter =
            |s: u64| 100 * MIB + s * 2 * MIB / 60 - if s.is_multiple_of(7) { 512 << 10 } else { 0 };
        let (tracker, now) = feed(&config, 900, jitter);
        assert!(tracker.hint(now, wall, jitter(900), &config).is_some());
    }

    #[test]
    fn flat_and_slow_growth_are_not_hinted() {
        let config = config(60, 600, 1);
        let wall = SystemTime::UNIX_EPOCH;
        let (tracker, now) = feed(&config, 1200, |_| 50 * MIB);
        assert_eq!(tracker.hint(now, wall, 50 * MIB, &config), None);
        // Half the threshold.
        let slow = |s: u64| 50 * MIB + s * MIB / 120;
        let (tracker, now) = feed(&config, 1200, slow);
        assert_eq!(tracker.hint(now, wall, slow(1200), &config), None);
    }
}
