//! An instance's downsampled history as timed points, cut to a window. Points before the
//! instance's start are dropped, so a series never spans a restart even if a daemon sent them.
use memtrace_api::workloads::InstanceSummary;

/// One point: unix seconds and a value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Point {
    pub t: f64,
    pub v: f64,
}

/// Which column of the history.
#[derive(Clone, Copy, Debug)]
pub(super) enum Column {
    RssAnon,
    Rss,
    ReclaimStall,
}

/// The points of `column` with `from <= t <= to` (unix seconds) taken after the instance started.
pub(super) fn window(
    instance: &InstanceSummary,
    step_seconds: u32,
    column: Column,
    from: f64,
    to: f64,
) -> Vec<Point> {
    let history = &instance.history;
    let values: Vec<f64> = match column {
        Column::RssAnon => history.rss_anon_bytes.iter().map(|&v| v as f64).collect(),
        Column::Rss => history.rss_bytes.iter().map(|&v| v as f64).collect(),
        Column::ReclaimStall => history.reclaim_stall_seconds_per_sec.clone(),
    };
    let started = instance.started_unix_ms as f64 / 1000.0;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| Point {
            t: history.start_unix_s as f64 + i as f64 * f64::from(step_seconds),
            v,
        })
        .filter(|p| p.t >= started && p.t >= from && p.t <= to && p.v.is_finite())
        .collect()
}

/// A least-squares line through points.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fit {
    /// Per second.
    pub slope: f64,
    mean_t: f64,
    mean_v: f64,
}

impl Fit {
    /// `None` below two points or when they share one time.
    pub fn of(points: &[Point]) -> Option<Self> {
        if points.len() < 2 {
            return None;
        }
        let n = points.len() as f64;
        let mean_t = points.iter().map(|p| p.t).sum::<f64>() / n;
        let mean_v = points.iter().map(|p| p.v).sum::<f64>() / n;
        let (mut num, mut den) = (0.0, 0.0);
        for p in points {
            num += (p.t - mean_t) * (p.v - mean_v);
            den += (p.t - mean_t) * (p.t - mean_t);
        }
        (den > 0.0).then(|| Self {
            slope: num / den,
            mean_t,
            mean_v,
        })
    }

    /// The line's value at `t`.
    pub fn at(&self, t: f64) -> f64 {
        self.mean_v + self.slope * (t - self.mean_t)
    }
}

/// The mean value, `None` without points.
pub(super) fn mean(points: &[Point]) -> Option<f64> {
    (!points.is_empty()).then(|| points.iter().map(|p| p.v).sum::<f64>() / points.len() as f64)
}

/// The median (the mean of the two middle values for an even count, as PromQL's `quantile`).
pub(super) fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => 0,
        _ if n % 2 == 1 => values[n / 2],
        _ => {
            values[n / 2 - 1] / 2
                + values[n / 2] / 2
                + (values[n / 2 - 1] % 2 + values[n / 2] % 2) / 2
        }
    }
}

#[cfg(test)]
mod tests {
    use memtrace_api::workloads::InstanceHistory;

    use super::*;

    #[test]
    fn a_window_drops_points_before_a_restart_and_outside() {
        let instance = InstanceSummary {
            started_unix_ms: 1_120_000,
            history: InstanceHistory {
                start_unix_s: 1000,
                rss_anon_bytes: vec![9, 1, 2, 3, 4],
                ..InstanceHistory::default()
            },
            ..InstanceSummary::default()
        };
        let points = window(&instance, 60, Column::RssAnon, 0.0, 1200.0);
        assert_eq!(
            points,
            vec![Point { t: 1120.0, v: 2.0 }, Point { t: 1180.0, v: 3.0 }]
        );
    }

    #[test]
    fn fit_and_median() {
        let points: Vec<Point> = (0..5)
            .map(|i| Point {
                t: 100.0 + f64::from(i) * 10.0,
                v: 7.0 + 2.0 * f64::from(i) * 10.0,
            })
            .collect();
        let fit = Fit::of(&points).unwrap();
        assert!((fit.slope - 2.0).abs() < 1e-9);
        assert!((fit.at(100.0) - 7.0).abs() < 1e-9);
        assert!(Fit::of(&points[..1]).is_none());
        assert_eq!(median(&mut [5, 1, 3]), 3);
        assert_eq!(median(&mut [4, 1, 3, 10]), 3);
        assert_eq!(median(&mut [u64::MAX, u64::MAX]), u64::MAX);
        assert_eq!(median(&mut []), 0);
    }
}
