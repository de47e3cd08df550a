//! `memtrace trace`: the flags, checked; the tracer itself is `memtrace::trace`.
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};

use crate::{
    events::EventKindSet,
    host::HostPaths,
    probes::page_size,
    trace::{self, COMM_MAX, GroupBy, TraceOptions},
    units::{duration_in, human_bytes, parse_size},
};

const EXAMPLES: &str = "\
Examples:
  memtrace trace                        OOM kills, reclaim stalls, mmap-family calls >= 1 MiB
  memtrace trace -e oom                 OOM kills only: attaches the OOM hook alone (fast start)
  memtrace trace -e oom,mmap            OOM kills and mmaps (>= 1 MiB)
  memtrace trace -p 1234                every mmap/munmap/brk/mremap of pid 1234 (no size floor)
  memtrace trace -p 1234 --faults --sample 100   ... plus every 100th page fault, with its cause
  memtrace trace -c redis-server -e vm,reclaim -o json
  memtrace trace --cgroup /oomtest -e oom -d 60s    (cgroup path as in /proc/PID/cgroup)
  memtrace trace --by comm --interval 10s   a summary every 10 s, one row per program name
                                        (a build's 40 cc1 processes are one row)
  memtrace trace --by workload          summary rows per systemd service, container or pod
  memtrace trace --no-collapse          every event its own line, even 2,048 identical mmaps
  memtrace trace -o json --collapse     JSON runs: one object with \"events\": N per run

Event kinds: fault, mmap, munmap, brk, mremap, reclaim, oom, exec, exit; groups: vm (the four
mmap-family calls), all. --event chooses what streams and which probes attach: without it every
probe family is attached and the summary shows every counter; with it, only the families of the
kinds named (plus process exits and RSS for their summary), and the summary shows what they count.

Identical events (same process, kind, size, flags) in a row are one line, `N × size`, written
when the run ends, idles for 100 ms or is a second old. Read-only file mappings (the dynamic
loader mapping libraries into every process started) are hidden unless --file-maps, --pid,
--comm or --cgroup is given. memtrace's own process is left out unless --include-self. Text
lines are cut to the terminal's width (COLUMNS, or --width); -o json keeps every value whole.
The summary's RSS/s is each row's RSS growth over the last 10 s (sampled every second; `-` until
two samples); it ends with `N delivered, M shown`: events from the kernel, lines written.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns: time, pid, comm, event, details.
    Text,
    /// One JSON object per line: kind, ts, ts_ns, pid, tid, comm, cpu, cgroup (when known), and the kind's fields
    /// (addresses also as `_hex`, flag words also as `_names`; sizes in bytes).
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct TraceArgs {
    /// Only these processes (tgid). Repeat or comma-separate.
    #[arg(short, long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<u32>,

    /// Only tasks with this name (as in /proc/PID/comm; the kernel keeps 15 characters).
    #[arg(short, long = "comm", value_name = "NAME", value_delimiter = ',', value_parser = non_empty)]
    pub comms: Vec<String>,

    /// Only processes in this cgroup or below: the path shown in /proc/PID/cgroup
    /// (e.g. /system.slice/nginx.service), or a directory under /sys/fs/cgroup.
    #[arg(long, value_name = "PATH", value_parser = non_empty)]
    pub cgroup: Option<String>,

    /// Event kinds to stream, comma-separated [default: oom,reclaim,vm].
    #[arg(short, long = "event", value_name = "KINDS", value_parser = parse_kinds)]
    pub events: Option<EventKindSet>,

    /// Smallest mmap/munmap/brk/mremap to show (4096, 64K, 1M, 2GiB…)
    /// [default: 0 with --pid/--comm/--cgroup, else 1M].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub min_size: Option<u64>,

    /// Stream page faults too (address, ip, cause). Costs a ring-buffer record per streamed fault.
    #[arg(long)]
    pub faults: bool,

    /// With --faults: stream one fault in N (per CPU). All faults are still counted.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "faults", value_parser = clap::value_parser!(u32).range(1..))]
    pub sample: u32,

    /// Shortest reclaim stall to show (stalls are always counted), e.g. 1ms; 0s to 1h.
    #[arg(long, value_name = "DURATION", value_parser = duration_in(Duration::ZERO, HOUR), default_value = "0s")]
    pub min_stall: Duration,

    /// Stop after this long (10s, 5m, 25 for seconds…; 100ms to 30 days). Default: until Ctrl-C.
    #[arg(short, long, value_name = "DURATION", value_parser = duration_in(MIN_PERIOD, MONTH))]
    pub duration: Option<Duration>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Also print the summary every INTERVAL (e.g. 10s; 100ms to 24h), stamped with its time;
    /// one equal to the last printed (growth aside) is left out.
    #[arg(long, value_name = "INTERVAL", value_parser = duration_in(MIN_PERIOD, DAY))]
    pub interval: Option<Duration>,

    /// Do not print the final per-process summary.
    #[arg(long)]
    pub no_summary: bool,

    /// Rows in the summary (most page faults first), at least 1 (--no-summary for none).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = at_least_one)]
    pub top: usize,

    /// One summary row per process, or summed per comm, cgroup or workload (the daemon's
    /// workload key: systemd service, container, pod, else comm).
    #[arg(long, value_enum, value_name = "KEY", default_value_t = GroupBy::Pid)]
    pub by: GroupBy,

    /// Every event its own line (text collapses runs of identical events into `N × size`).
    #[arg(long, conflicts_with = "collapse")]
    pub no_collapse: bool,

    /// With -o json: one object per run of identical events, with `events` (how many) and
    /// `last_ts`/`last_ts_ns` (JSON otherwise writes every event).
    #[arg(long)]
    pub collapse: bool,

    /// Cut text lines to COLS columns (0: never). Default: the terminal's width on a terminal,
    /// whole lines into a pipe or file.
    #[arg(long, value_name = "COLS")]
    pub width: Option<usize>,

    /// Show memtrace's own events and counters too.
    #[arg(long)]
    pub include_self: bool,

    /// Show read-only file mappings (libraries mapped at every process start) without
    /// --pid/--comm/--cgroup too.
    #[arg(long)]
    pub file_maps: bool,

    /// Size of the ring buffer for discrete events (power of two).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "4M")]
    pub ring_size: u64,

    /// Size of the ring buffer for fault events, with --faults (power of two).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "16M")]
    pub fault_ring_size: u64,
}

/// The shortest `--interval` and `--duration`: a summary every few milliseconds is a flood of
/// text, not a trace (`--interval 1ns` wrote 7.7 MB in 2 s), and a trace that ends before its
/// probes are attached shows nothing.
const MIN_PERIOD: Duration = Duration::from_millis(100);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
const MONTH: Duration = Duration::from_secs(30 * 24 * 3600);

/// `--cgroup ''` must not silently mean "no filter".
fn non_empty(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(text.to_owned())
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(err) => Err(format!("not a count ({err})")),
    }
}

fn parse_kinds(text: &str) -> Result<EventKindSet, String> {
    let set: EventKindSet = text.parse()?;
    if set.is_empty() {
        return Err("no event kinds given".to_owned());
    }
    Ok(set)
}

/// A ring size must be a power of two and a multiple of the page size.
fn checked_ring_bytes(flag: &str, size: u64) -> anyhow::Result<u32> {
    let page = u64::from(page_size());
    if !size.is_power_of_two() || size < page || size > (1 << 30) {
        bail!(
            "{flag} must be a power of two between {} and 1 GiB (got {size} bytes)",
            human_bytes(page)
        );
    }
    Ok(size as u32)
}

impl TraceArgs {
    /// The checked options; what needs the host (pids, the cgroup) is checked by the tracer.
    fn options(self) -> anyhow::Result<TraceOptions> {
        let ring_bytes = checked_ring_bytes("--ring-size", self.ring_size)?;
        let fault_ring_bytes = if self.faults {
            checked_ring_bytes("--fault-ring-size", self.fault_ring_size)?
        } else {
            page_size()
        };
        for comm in &self.comms {
            if comm.len() > COMM_MAX {
                let kept: String = comm.chars().take(COMM_MAX).collect();
                tracing::warn!(
                    "--comm {comm}: the kernel keeps {COMM_MAX} characters; matching '{kept}'"
                );
            }
        }
        Ok(TraceOptions {
            pids: self.pids,
            comms: self.comms,
            cgroup: self.cgroup,
            events: self.events,
            min_size: self.min_size,
            faults: self.faults,
            sample: self.sample,
            min_stall: self.min_stall,
            duration: self.duration,
            output: match self.output {
                OutputFormat::Text => trace::OutputFormat::Text,
                OutputFormat::Json => trace::OutputFormat::Json,
            },
            interval: self.interval,
            no_summary: self.no_summary,
            top: self.top,
            by: self.by,
            collapse: match self.output {
                OutputFormat::Text => !self.no_collapse,
                OutputFormat::Json => self.collapse,
            },
            width: trace::width::detect(self.width),
            include_self: self.include_self,
            file_maps: self.file_maps,
            ring_bytes,
            fault_ring_bytes,
            host: HostPaths::default(),
        })
    }
}

pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    trace::run(args.options()?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_are_powers_of_two_from_a_page_to_a_gib() {
        assert_eq!(checked_ring_bytes("--ring-size", 4 << 20).unwrap(), 4 << 20);
        for bad in [3 << 20, 1024, 2 << 30] {
            let err = checked_ring_bytes("--ring-size", bad)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("--ring-size must be a power of two between"),
                "{err}"
            );
        }
    }

    /// `memtrace trace ARGS`, parsed as `main` parses it; the error as `main` prints it.
    fn parse(args: &[&str]) -> Result<TraceArgs, String> {
        use clap::Parser;
        let cli =
            crate::cli::Cli::try_parse_from(["memtrace", "trace"].iter().chain(args).copied())
                .map_err(|err| crate::cli::one_line(&err.render().to_string()))?;
        match cli.command {
            crate::cli::Command::Trace(args) => Ok(args),
            other => panic!("not a trace: {other:?}"),
        }
    }

    #[test]
    fn periods_are_bounded_and_bad_ones_name_the_flag() {
        for (args, expected) in [
            (
                &["--interval", "0s"][..],
                "invalid value '0s' for '--interval <INTERVAL>': must be between 100ms and 1day (got 0s)",
            ),
            (
                &["--interval", "1ns"],
                "invalid value '1ns' for '--interval <INTERVAL>': must be between 100ms and 1day (got 1ns)",
            ),
            (
                &["--duration", "0"],
                "invalid value '0' for '--duration <DURATION>': must be between 100ms and 30days (got 0s)",
            ),
            (
                &["--cgroup", ""],
                "invalid value '' for '--cgroup <PATH>': must not be empty",
            ),
            (
                &["--comm", ""],
                "invalid value '' for '--comm <NAME>': must not be empty",
            ),
            (
                &["--top", "0"],
                "invalid value '0' for '--top <N>': must be at least 1",
            ),
            (
                &["--min-stall", "2h"],
                "invalid value '2h' for '--min-stall <DURATION>': must be between 0s and 1h (got 2h)",
            ),
        ] {
            assert_eq!(parse(args).unwrap_err(), expected, "{args:?}");
        }
        let args = parse(&["--interval", "100ms", "--duration", "25", "--cgroup", "/a"]).unwrap();
        assert_eq!(args.interval, Some(MIN_PERIOD));
        assert_eq!(args.duration, Some(Duration::from_secs(25)), "bare seconds");
        assert_eq!(args.cgroup.as_deref(), Some("/a"));
    }
}
