//! Medians, ranges and percentiles, and how the report prints them.
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub(super) struct Summary {
    pub(super) median: f64,
    pub(super) min: f64,
    pub(super) max: f64,
    pub(super) n: usize,
}

pub(super) fn summarize(xs: &[f64]) -> Option<Summary> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted values.
pub(super) fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// `median (min–max)` with `decimals`.
pub(super) fn fmt_summary(s: Option<Summary>, decimals: usize, suffix: &str) -> String {
    match s {
        Some(s) => format!(
            "{:.d$}{suffix} ({:.d$}–{:.d$})",
            s.median,
            s.min,
            s.max,
            d = decimals
        ),
        None => "—".to_owned(),
    }
}

/// `+1.2% (−0.4…+2.8%)`.
pub(super) fn fmt_pct(s: Option<Summary>) -> String {
    match s {
        Some(s) => format!("{:+.1}% ({:+.1}…{:+.1}%)", s.median, s.min, s.max),
        None => "—".to_owned(),
    }
}

pub(super) fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M/s", per_sec / 1e6)
    } else {
        format!("{:.0} k/s", per_sec / 1e3)
    }
}

pub(super) fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        let s = summarize(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 10.0, 4));
        let xs: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), 100.0);
        assert_eq!(percentile(&xs, 99.0), 198.0);
        assert_eq!(percentile(&xs, 100.0), 200.0);
    }
}
