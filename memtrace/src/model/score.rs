//! The memory-pressure score: one 0–100 number to sort processes and cgroups by.
use std::time::Duration;

/// An OOM kill this recent (in the same cgroup) adds the OOM term to the score.
pub const RECENT_OOM_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Inputs to [`pressure_score`], all as observed at snapshot time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScoreInputs {
    /// Major page faults per second (over the rate window).
    pub major_faults_per_sec: f64,
    /// Seconds spent stalled in direct/memcg reclaim per second of wall time.
    pub reclaim_stall_seconds_per_sec: f64,
    /// The cgroup's memory usage in bytes, if known.
    pub usage_bytes: Option<u64>,
    /// The cgroup's memory limit in bytes; `None` = unlimited (or unknown).
    pub limit_bytes: Option<u64>,
    /// PSI memory `some` avg10 (percent of wall time at least one task waited on memory).
    pub psi_some_avg10: Option<f64>,
    /// The OOM killer killed a process in this cgroup within [`RECENT_OOM_WINDOW`].
    pub recent_oom: bool,
}

/// The memory-pressure score, 0–100:
///
/// ```text
/// score = 25 · min(1, major_faults_per_sec / 100)
///       + 25 · min(1, reclaim_stall_seconds_per_sec / 0.10)
///       + 25 · clamp((usage / limit − 0.5) / 0.5, 0, 1)
///       + 15 · min(1, psi_some_avg10 / 25)
///       + 10 · [OOM kill in this cgroup in the last 5 min]
/// ```
///
/// Each term is a different symptom, saturating where it is unambiguously bad:
/// - **major faults**: pages the process needs are being read back from disk or swap — its
///   working set does not fit in the memory it has. 100/s is a working set that is thrashing.
/// - **reclaim stalls**: allocations blocked while the kernel reclaims memory synchronously; the
///   process is not running, it is waiting for memory. 10% of wall time is severe.
/// - **usage near limit**: the cgroup is approaching `memory.max`, where reclaim turns into OOM
///   kills. Zero below half the limit, rising linearly to full at the limit. An unlimited cgroup
///   contributes 0 (node-wide exhaustion shows up in the other terms).
/// - **PSI**: the kernel's own measure of time lost to memory waits (reclaim, refaults, swap-in),
///   covering what the per-process counters miss. 25% `some` is heavy pressure. For a process
///   (and a cgroup) this is the cgroup's `memory.pressure`, else the node's.
/// - **recent OOM**: it already happened; a cgroup that was just OOM-killed tends to be again.
///
/// Non-finite or negative inputs count as 0. For a process, usage, limit, PSI and the OOM term
/// come from its cgroup.
pub fn pressure_score(inputs: &ScoreInputs) -> f64 {
    let major = 25.0 * unit(inputs.major_faults_per_sec / 100.0);
    let reclaim = 25.0 * unit(inputs.reclaim_stall_seconds_per_sec / 0.10);
    let limit = match (inputs.usage_bytes, inputs.limit_bytes) {
        // A zero limit with usage is "over the limit" (∞ → 1); 0/0 is NaN → 0.
        (Some(usage), Some(limit)) => 25.0 * unit((usage as f64 / limit as f64 - 0.5) / 0.5),
        _ => 0.0,
    };
    let psi = 15.0 * unit(inputs.psi_some_avg10.unwrap_or(0.0) / 25.0);
    let oom = if inputs.recent_oom { 10.0 } else { 0.0 };
    major + reclaim + limit + psi + oom
}

/// Clamps to [0, 1]; NaN is 0.
fn unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-9,
            "expected {expected}, got {actual}"
        );
    }

    #[test]
    fn score_idle_is_zero() {
        close(pressure_score(&ScoreInputs::default()), 0.0);
    }

    #[test]
    fn score_half_of_every_term() {
        let inputs = ScoreInputs {
            major_faults_per_sec: 50.0,
            reclaim_stall_seconds_per_sec: 0.05,
            usage_bytes: Some(750),
            limit_bytes: Some(1000),
            psi_some_avg10: Some(12.5),
            recent_oom: true,
        };
        // 12.5 + 12.5 + 25·0.5 + 7.5 + 10
        close(pressure_score(&inputs), 55.0);
    }

    #[test]
    fn score_saturates_at_100() {
        let inputs = ScoreInputs {
            major_faults_per_sec: 1e6,
            reclaim_stall_seconds_per_sec: 4.0,
            usage_bytes: Some(2000),
            limit_bytes: Some(1000),
            psi_some_avg10: Some(99.0),
            recent_oom: true,
        };
        close(pressure_score(&inputs), 100.0);
    }

    #[test]
    fn score_unlimited_and_low_usage_terms_are_zero() {
        let unlimited = ScoreInputs {
            major_faults_per_sec: 200.0,
            usage_bytes: Some(1 << 40),
            limit_bytes: None,
            ..Default::default()
        };
        close(pressure_score(&unlimited), 25.0);
        let below_half = ScoreInputs {
            usage_bytes: Some(400),
            limit_bytes: Some(1000),
            psi_some_avg10: Some(5.0),
            ..Default::default()
        };
        // usage term 0 below half the limit; PSI 15·5/25 = 3.
        close(pressure_score(&below_half), 3.0);
    }

    #[test]
    fn score_ignores_nonsense_inputs() {
        let inputs = ScoreInputs {
            major_faults_per_sec: f64::NAN,
            reclaim_stall_seconds_per_sec: -1.0,
            usage_bytes: Some(0),
            limit_bytes: Some(0),
            psi_some_avg10: Some(f64::INFINITY),
            recent_oom: false,
        };
        // Only PSI (∞ → saturated) counts.
        close(pressure_score(&inputs), 15.0);
        let zero_limit = ScoreInputs {
            usage_bytes: Some(1),
            limit_bytes: Some(0),
            ..Default::default()
        };
        close(pressure_score(&zero_limit), 25.0);
    }
}
