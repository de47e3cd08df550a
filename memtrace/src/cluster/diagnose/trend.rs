//! What the diagnostics need of an instance's history, computed once per node.
//!
//! Histories are most of a summary's size (two hours at one point a minute is 120 points of three
//! columns per instance, ~170 KiB decoded per busy node), and every use of them is local to one
//! instance: the leak fit over each window and the anon growth and reclaim stall of the noisy
//! neighbour rule. The fan-out reduces each answer to its [`Trends`] as it arrives and drops the
//! histories, so an aggregator holds a few dozen bytes per instance rather than every point
//! (BENCHMARKS.md, benchmark 9). An answer that still has its histories (built in a test, or
//! edited after the fan-out) is reduced by `diagnose` itself, with the same function.
use memtrace_api::workloads::{InstanceHistory, InstanceSummary, WorkloadsResponse};

use super::{
    Thresholds,
    series::{Column, Fit, Point, mean, window},
};

/// One node's trends: `[workload][instance]`, in the summary's order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trends {
    pub(super) per_workload: Vec<Vec<InstanceTrend>>,
}

/// One instance over the diagnostics' windows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct InstanceTrend {
    /// The leak judgement over the window ending now; `None`: too little history to judge.
    pub leak_now: Option<Growth>,
    /// The same over the window before it (a leak that moved).
    pub leak_before: Option<Growth>,
    /// Anon RSS at the window's last point minus its first; 0 without points.
    pub anon_growth: i128,
    /// Mean reclaim stall over the window (s/s); 0 without points.
    pub mean_stall: f64,
}

/// A judged instance's growth over one window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Growth {
    /// Met the leak thresholds: fast enough, relatively and absolutely, and steadily.
    pub leaking: bool,
    pub bytes_per_hour: f64,
    pub ratio_per_hour: f64,
    /// RSS at the window's last point.
    pub rss_bytes: u64,
}

impl Trends {
    /// Every instance of `summary` over the windows of `t` ending at `now_unix_s`.
    pub fn of(summary: &WorkloadsResponse, t: &Thresholds, now_unix_s: f64) -> Self {
        let step = summary.history.step_seconds;
        let span = t.window.as_secs_f64();
        let per_workload = summary
            .workloads
            .iter()
            .map(|workload| {
                workload
                    .instances
                    .iter()
                    .map(|instance| {
                        let anon = window(
                            instance,
                            step,
                            Column::RssAnon,
                            now_unix_s - span,
                            now_unix_s,
                        );
                        let anon_growth = match (anon.first(), anon.last()) {
                            (Some(first), Some(last)) => last.v as i128 - first.v as i128,
                            _ => 0,
                        };
                        let stall = window(
                            instance,
                            step,
                            Column::ReclaimStall,
                            now_unix_s - span,
                            now_unix_s,
                        );
                        InstanceTrend {
                            leak_now: judge(instance, step, t, now_unix_s - span, now_unix_s),
                            leak_before: judge(
                                instance,
                                step,
                                t,
                                now_unix_s - 2.0 * span,
                                now_unix_s - span,
                            ),
                            anon_growth,
                            mean_stall: mean(&stall).unwrap_or(0.0),
                        }
                    })
                    .collect()
            })
            .collect();
        Self { per_workload }
    }

    /// Whether these trends have `summary`'s shape (the instances they were taken of).
    pub(super) fn fit(&self, summary: &WorkloadsResponse) -> bool {
        self.per_workload.len() == summary.workloads.len()
            && self
                .per_workload
                .iter()
                .zip(&summary.workloads)
                .all(|(trends, workload)| trends.len() == workload.instances.len())
    }
}

/// Frees every instance's history, keeping the step and bounds it was sent with.
pub(super) fn drop_histories(summary: &mut WorkloadsResponse) {
    for instance in summary
        .workloads
        .iter_mut()
        .flat_map(|w| w.instances.iter_mut())
    {
        instance.history = InstanceHistory {
            start_unix_s: instance.history.start_unix_s,
            ..InstanceHistory::default()
        };
    }
}

/// A leak grows all along: the slope over each half of the points is at least a quarter of the
/// whole one's, so a one-off allocation (a step) is not a leak.
fn steady(points: &[Point], slope: f64) -> bool {
    let middle = (points[0].t + points[points.len() - 1].t) / 2.0;
    let (early, late): (Vec<Point>, Vec<Point>) = points.iter().partition(|p| p.t < middle);
    [early, late]
        .iter()
        .all(|half| Fit::of(half).is_some_and(|f| f.slope >= STEADY_SHARE * slope))
}

/// The share of the window's slope each half of it must show (see [`steady`]).
const STEADY_SHARE: f64 = 0.25;

/// One instance's RSS over `from..=to`: `None` when too little of the window is covered to judge.
fn judge(
    instance: &InstanceSummary,
    step: u32,
    t: &Thresholds,
    from: f64,
    to: f64,
) -> Option<Growth> {
    let points = window(instance, step, Column::Rss, from, to);
    let covered = match (points.first(), points.last()) {
        (Some(first), Some(last)) => last.t - first.t,
        _ => 0.0,
    };
    if points.len() < 3 || covered < t.leak_min_coverage * (to - from) {
        return None;
    }
    let fit = Fit::of(&points)?;
    let bytes_per_hour = fit.slope * 3600.0;
    let base = fit.at(points[0].t).max(1.0);
    let ratio_per_hour = bytes_per_hour / base;
    let absolute = instance.limit_bytes.map_or(t.leak_min, |l| {
        (l as f64 * t.leak_limit_rate).max(t.leak_min)
    });
    Some(Growth {
        leaking: steady(&points, fit.slope)
            && ratio_per_hour >= t.leak_rate
            && bytes_per_hour >= absolute,
        bytes_per_hour,
        ratio_per_hour,
        rss_bytes: points.last().map_or(0, |p| p.v as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn trends_survive_dropping_the_histories() {
        let mut answer = node("a")
            .with("api", growing("api-0", 200 * MIB, 60 * MIB))
            .with("api", flat("api-1", 200 * MIB));
        let now = NOW_S as f64;
        let trends = Trends::of(&answer.summary, &Thresholds::default(), now);
        let leak = trends.per_workload[0][0].leak_now.expect("judged");
        assert!(leak.leaking);
        assert!((leak.bytes_per_hour / (60 * MIB) as f64 - 1.0).abs() < 0.01);
        assert!(!trends.per_workload[0][1].leak_now.expect("judged").leaking);
        assert_eq!(trends.per_workload[0][0].anon_growth, 60 * i128::from(MIB));

        drop_histories(&mut answer.summary);
        let instance = &answer.summary.workloads[0].instances[0];
        assert!(instance.history.rss_bytes.is_empty());
        assert!(trends.fit(&answer.summary));
        answer.summary.workloads[0].instances.pop();
        assert!(!trends.fit(&answer.summary));
        // Reduced again without histories, nothing can be judged: the kept trends are the record.
        let empty = Trends::of(&answer.summary, &Thresholds::default(), now);
        assert_eq!(empty.per_workload[0][0].leak_now, None);
    }
}
