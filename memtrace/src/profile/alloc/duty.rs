//! `--duty-cycle`: the allocation probes attached in bursts, so that a busy process pays their
//! traps for a share of the time only. Allocations are counted while the probes are attached,
//! and the report says how long that was ([`Coverage`]). The counts are not extrapolated to the
//! whole run: while attached, a process that allocates much runs slower (each call traps, for
//! microseconds on some machines), so its bursts see fewer allocations per second than it makes
//! untraced, and an extrapolation would be biased low by an unknown factor. What a burst does
//! keep is which code allocates, and in what proportions.
//!
//! The schedule is kept apart from the probes so that it can be tested on its own: the run loop
//! asks [`DutyCycle::next_toggle`], attaches or detaches, then tells the schedule when it did.
use std::time::{Duration, Instant};

/// How much of the run the probes were attached.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coverage {
    /// Attached time, summed over bursts.
    pub attached: Duration,
    /// Since the first burst began.
    pub elapsed: Duration,
    /// The requested share (`--duty-cycle`), 0 to 1.
    pub share: f64,
    pub burst: Duration,
}

impl Coverage {
    /// The share of the run the probes were attached, 0 to 1.
    pub fn attached_share(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 1.0;
        }
        (self.attached.as_secs_f64() / self.elapsed.as_secs_f64()).min(1.0)
    }

    /// For a report's sampling line.
    pub fn describe(&self) -> String {
        if self.share >= 1.0 {
            return "allocation sites only, probes attached throughout".to_owned();
        }
        format!(
            "allocation sites only, counted while the probes were attached: {:.1} s of {:.1} s \
             ({:.1} %; --duty-cycle {}, bursts of {})",
            self.attached.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            self.attached_share() * 100.0,
            self.share_percent(),
            humantime::format_duration(self.burst),
        )
    }

    fn share_percent(&self) -> String {
        let percent = self.share * 100.0;
        if (percent - percent.round()).abs() < 1e-9 {
            format!("{percent:.0}%")
        } else {
            format!("{percent}%")
        }
    }
}

/// The schedule of bursts: attached for `burst`, then detached for `burst × (1 − share) /
/// share`, from the first attach on.
#[derive(Clone, Debug)]
pub struct DutyCycle {
    share: f64,
    burst: Duration,
    pause: Duration,
    started: Instant,
    /// When the current burst began (its probes attached), if one is on.
    attached_since: Option<Instant>,
    /// Attached time of the bursts that ended.
    attached: Duration,
    /// When the current burst or pause is due to end.
    next: Instant,
}

impl DutyCycle {
    /// A schedule whose first burst began `now` (the probes were just attached). `share` is in
    /// (0, 1].
    pub fn new(share: f64, burst: Duration, now: Instant) -> Self {
        let share = share.clamp(f64::MIN_POSITIVE, 1.0);
        let pause = burst.mul_f64((1.0 - share) / share);
        Self {
            share,
            burst,
            pause,
            started: now,
            attached_since: Some(now),
            attached: Duration::ZERO,
            next: now + burst,
        }
    }

    /// When the probes are next to be attached or detached; never at 100 %.
    pub fn next_toggle(&self) -> Option<Instant> {
        (!self.pause.is_zero()).then_some(self.next)
    }

    pub fn is_attached(&self) -> bool {
        self.attached_since.is_some()
    }

    /// The probes were detached at `now`: the burst ends, the pause begins.
    pub fn detached(&mut self, now: Instant) {
        if let Some(since) = self.attached_since.take() {
            self.attached += now.saturating_duration_since(since);
        }
        self.next = now + self.pause;
    }

    /// The probes were attached at `now` (after attaching them): the next burst begins.
    pub fn attached(&mut self, now: Instant) {
        if self.attached_since.is_none() {
            self.attached_since = Some(now);
        }
        self.next = now + self.burst;
    }

    /// How much of the run until `now` the probes were attached.
    pub fn coverage(&self, now: Instant) -> Coverage {
        let current = self
            .attached_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        Coverage {
            attached: self.attached + current,
            elapsed: now.saturating_duration_since(self.started),
            share: self.share,
            burst: self.burst,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bursts_take_the_share_of_the_time_asked_for() {
        let t0 = Instant::now();
        let mut duty = DutyCycle::new(0.05, 100 * MS, t0);
        assert_eq!(duty.next_toggle(), Some(t0 + 100 * MS));
        // Detaching takes 2 ms; the pause is counted from when it is done.
        duty.detached(t0 + 102 * MS);
        assert!(!duty.is_attached());
        assert_eq!(duty.next_toggle(), Some(t0 + 102 * MS + 1900 * MS));
        // Attaching takes 3 ms: the burst starts once the probes are on.
        duty.attached(t0 + 2005 * MS);
        assert_eq!(duty.next_toggle(), Some(t0 + 2105 * MS));
        let coverage = duty.coverage(t0 + 2055 * MS);
        assert_eq!(coverage.attached, 152 * MS);
        assert_eq!(coverage.elapsed, 2055 * MS);
        assert!((coverage.attached_share() - 152.0 / 2055.0).abs() < 1e-9);
        // In a pause, the pause so far counts as elapsed, not attached.
        duty.detached(t0 + 2105 * MS);
        let coverage = duty.coverage(t0 + 3000 * MS);
        assert_eq!(coverage.attached, 202 * MS);
        assert_eq!(coverage.elapsed, 3000 * MS);
    }

    #[test]
    fn a_full_duty_cycle_never_toggles() {
        let t0 = Instant::now();
        let duty = DutyCycle::new(1.0, 100 * MS, t0);
        assert_eq!(duty.next_toggle(), None);
        let coverage = duty.coverage(t0 + 10_000 * MS);
        assert!((coverage.attached_share() - 1.0).abs() < 1e-12);
        assert_eq!(
            coverage.describe(),
            "allocation sites only, probes attached throughout"
        );
    }

    #[test]
    fn the_sampling_line_states_the_attached_time() {
        let coverage = Coverage {
            attached: 1500 * MS,
            elapsed: 30_000 * MS,
            share: 0.05,
            burst: 100 * MS,
        };
        assert_eq!(
            coverage.describe(),
            "allocation sites only, counted while the probes were attached: 1.5 s of 30.0 s \
             (5.0 %; --duty-cycle 5%, bursts of 100ms)"
        );
    }
}
