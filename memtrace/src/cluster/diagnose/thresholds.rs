//! The diagnostics' thresholds: flags of `memtrace cluster diagnose` and `serve`, with the issue's
//! numbers as defaults (README "Diagnostics"; the Prometheus rules use the same).
use std::time::Duration;

use crate::units::{parse_duration, parse_size};

/// Thresholds of the diagnostics.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Hot shard: an instance's anon RSS over the median of its workload's instances at which it
    /// is an outlier.
    #[arg(long, default_value = "1.5", value_parser = parse_ratio_at_least_one, help_heading = "Diagnostics")]
    pub skew_ratio: f64,
    /// Hot shard: the outlier's anon RSS must be at least this (smaller skews do not matter).
    #[arg(long, default_value = "64MiB", value_parser = parse_size, help_heading = "Diagnostics")]
    pub skew_min: u64,
    /// Hot shard: instances the workload needs (across nodes) to have a median worth comparing.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..), help_heading = "Diagnostics")]
    pub skew_min_instances: u32,
    /// Hot shard: nodes the workload must run on.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Diagnostics")]
    pub skew_min_nodes: u32,
    /// Leak: RSS growth relative to the instance's RSS at the window's start (`10%/h`).
    #[arg(long, default_value = "10%/h", value_parser = parse_share_per_hour, help_heading = "Diagnostics")]
    pub leak_rate: f64,
    /// Leak: absolute RSS growth an instance needs as well (`50MiB/h`) ...
    #[arg(long, default_value = "50MiB/h", value_parser = parse_bytes_per_hour, help_heading = "Diagnostics")]
    pub leak_min: f64,
    /// ... or this share of its cgroup limit per hour, when that is more (`5%/h`).
    #[arg(long, default_value = "5%/h", value_parser = parse_share_per_hour, help_heading = "Diagnostics")]
    pub leak_limit_rate: f64,
    /// Leak: the share of a workload's instances that must leak for `all` (a code regression).
    #[arg(long, default_value = "80%", value_parser = parse_share, help_heading = "Diagnostics")]
    pub leak_all_share: f64,
    /// Leak: the share of the window an instance's history must cover to be judged.
    #[arg(long, default_value = "50%", value_parser = parse_share, help_heading = "Diagnostics")]
    pub leak_min_coverage: f64,
    /// The window over which trends (leaks, reclaim stalls, growth) and OOM kills are judged;
    /// `migrating` leaks compare it with the window before.
    #[arg(long, default_value = "1h", value_parser = parse_window, help_heading = "Diagnostics")]
    pub window: Duration,
    /// OOM storm: kills of one workload on several nodes with no gap longer than this.
    #[arg(long, default_value = "5m", value_parser = parse_window, help_heading = "Diagnostics")]
    pub storm_window: Duration,
    /// OOM storm: nodes with kills needed.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..), help_heading = "Diagnostics")]
    pub storm_min_nodes: u32,
    /// Noisy neighbour: mean reclaim stall (seconds per second) over the window at which a
    /// workload is a victim.
    #[arg(long, default_value = "0.05", value_parser = parse_positive, help_heading = "Diagnostics")]
    pub stall_rate: f64,
    /// Noisy neighbour: the culprit's anon RSS growth over the window must be at least this.
    #[arg(long, default_value = "32MiB", value_parser = parse_size, help_heading = "Diagnostics")]
    pub culprit_min_growth: u64,
    /// Noisy neighbour: nodes on which one culprit makes it fleet-wide.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..), help_heading = "Diagnostics")]
    pub culprit_min_nodes: u32,
    /// App or node: the pressure score (0–100) from which an instance is under pressure; 40
    /// needs at least two of the score's symptoms.
    #[arg(long, default_value = "40", value_parser = parse_score, help_heading = "Diagnostics")]
    pub pressure_score: f64,
}

impl Default for Thresholds {
    /// The flags' defaults (one source: the `#[arg]` attributes above).
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            thresholds: Thresholds,
        }
        <Defaults as clap::Parser>::parse_from(["diagnose"]).thresholds
    }
}

fn parse_window(text: &str) -> Result<Duration, String> {
    let value = parse_duration(text)?;
    if value < Duration::from_secs(1) || value > Duration::from_secs(7 * 24 * 3600) {
        return Err(format!("must be between 1s and 7d (got {text})"));
    }
    Ok(value)
}

fn parse_number(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("invalid number '{text}'"))
}

fn parse_positive(text: &str) -> Result<f64, String> {
    let value = parse_number(text)?;
    if value <= 0.0 {
        return Err(format!("must be above 0 (got {text})"));
    }
    Ok(value)
}

fn parse_ratio_at_least_one(text: &str) -> Result<f64, String> {
    let value = parse_number(text)?;
    if value <= 1.0 {
        return Err(format!("must be above 1 (got {text})"));
    }
    Ok(value)
}

fn parse_score(text: &str) -> Result<f64, String> {
    let value = parse_number(text)?;
    if !(0.0..=100.0).contains(&value) || value == 0.0 {
        return Err(format!("must be above 0 and at most 100 (got {text})"));
    }
    Ok(value)
}

/// `80%` or `0.8`, as a fraction in (0, 1].
fn parse_share(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let value = match trimmed.strip_suffix('%') {
        Some(percent) => parse_number(percent)? / 100.0,
        None => parse_number(trimmed)?,
    };
    if value <= 0.0 || value > 1.0 {
        return Err(format!("must be above 0% and at most 100% (got {text})"));
    }
    Ok(value)
}

/// `10%/h`, `10%` or `0.1` (per hour), as a fraction per hour.
fn parse_share_per_hour(text: &str) -> Result<f64, String> {
    let per = text.trim();
    let share = per.strip_suffix("/h").unwrap_or(per);
    let value = match share.trim().strip_suffix('%') {
        Some(percent) => parse_number(percent)? / 100.0,
        None => parse_number(share)?,
    };
    if value <= 0.0 {
        return Err(format!("must be above 0%/h (got {text})"));
    }
    Ok(value)
}

/// `50MiB/h` or `50MiB` (per hour), as bytes per hour.
fn parse_bytes_per_hour(text: &str) -> Result<f64, String> {
    let per = text.trim();
    let size = per.strip_suffix("/h").unwrap_or(per);
    parse_size(size).map(|bytes| bytes as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_issues_numbers() {
        let t = Thresholds::default();
        assert_eq!(t.skew_ratio, 1.5);
        assert_eq!(t.skew_min, 64 << 20);
        assert_eq!(t.skew_min_instances, 3);
        assert_eq!(t.skew_min_nodes, 2);
        assert_eq!(t.leak_rate, 0.10);
        assert_eq!(t.leak_min, (50u64 << 20) as f64);
        assert_eq!(t.leak_limit_rate, 0.05);
        assert_eq!(t.leak_all_share, 0.80);
        assert_eq!(t.window, Duration::from_secs(3600));
        assert_eq!(t.storm_window, Duration::from_secs(300));
        assert_eq!(t.storm_min_nodes, 2);
        assert_eq!(t.stall_rate, 0.05);
        assert_eq!(t.pressure_score, 40.0);
    }

    #[test]
    fn flags_parse_their_units() {
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            thresholds: Thresholds,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([
            "diagnose",
            "--leak-rate",
            "25%/h",
            "--leak-min",
            "1GiB/h",
            "--skew-min",
            "1M",
            "--window",
            "90s",
            "--leak-all-share",
            "0.5",
        ])
        .unwrap();
        assert_eq!(cli.thresholds.leak_rate, 0.25);
        assert_eq!(cli.thresholds.leak_min, (1u64 << 30) as f64);
        assert_eq!(cli.thresholds.skew_min, 1 << 20);
        assert_eq!(cli.thresholds.window, Duration::from_secs(90));
        assert_eq!(cli.thresholds.leak_all_share, 0.5);
        for bad in [
            ["diagnose", "--skew-ratio", "1"],
            ["diagnose", "--leak-all-share", "120%"],
            ["diagnose", "--leak-rate", "lots"],
            ["diagnose", "--window", "0s"],
            ["diagnose", "--pressure-score", "101"],
        ] {
            let err = <Cli as clap::Parser>::try_parse_from(bad).unwrap_err();
            assert!(err.to_string().contains(bad[1]), "{err}");
        }
    }
}
