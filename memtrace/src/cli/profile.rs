//! `memtrace profile`: which code grows memory (sampled page faults and address-space growth by
//! stack), or, with `--alloc`, which code allocates and what it leaks (allocator uprobes).
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, ValueEnum};

use crate::units::{duration_in, parse_duration, parse_percent, parse_size};

const EXAMPLES: &str = "\
Examples:
  memtrace profile -p 1234 --duration 30s            where pid 1234 first touches memory
  memtrace profile --all --output growth.svg         every process, a flame graph on Ctrl-C
  memtrace profile --alloc -p $(pidof redis-server) --duration 30s --output flamegraph.svg
  memtrace profile --alloc -p 1234 --leaks --min-age 1m
  memtrace profile --alloc -p 1234 --unsampled -o allocs.pb.gz   exact counts, pprof
  memtrace profile --alloc -p $(pidof redis-server) --duty-cycle 5% --duration 5m
                                 allocation sites of a busy server, probes on 5 % of the time";

/// How a profile is written; by default from `--output`'s extension (`.svg`, `.folded`,
/// `.pb.gz`, `.json`), else text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The top sites, for a terminal.
    Text,
    /// Folded stacks (`a;b;c 1234`), for flamegraph.pl, inferno, speedscope.
    Folded,
    /// pprof (gzipped protobuf) for `go tool pprof`, Pyroscope, Parca, Grafana.
    Pprof,
    /// An SVG flame graph.
    Svg,
    /// JSON, for scripts.
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
#[command(group(ArgGroup::new("target").required(true).args(["pid", "cgroup", "all"])))]
pub struct ProfileArgs {
    /// The process to profile.
    #[arg(short = 'p', long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Every process in this cgroup (a path under the memory controller, as in `trace`).
    #[arg(long, value_name = "PATH", conflicts_with = "alloc")]
    pub cgroup: Option<String>,

    /// Every process on the machine.
    #[arg(long, conflicts_with = "alloc")]
    pub all: bool,

    /// Profile the allocator (malloc, free, … of glibc, jemalloc or tcmalloc, as the process
    /// uses) with uprobes, instead of page faults and address-space growth. One process.
    #[arg(long, requires = "pid")]
    pub alloc: bool,

    /// Report leak suspects: allocations still outstanding after --min-age, by stack.
    #[arg(long, requires = "alloc")]
    pub leaks: bool,

    /// With --leaks: how old an outstanding allocation must be to be a suspect.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub min_age: Duration,

    /// With --alloc: sample allocations by bytes, one per RATE bytes on average (an allocation
    /// of size s is taken with probability 1-exp(-s/RATE), as jemalloc does), each weighted
    /// back to an unbiased estimate [default: 512KiB; 32KiB with --duty-cycle, whose bursts see
    /// a share of the allocations and whose cost is the trap, not the sample].
    #[arg(long, value_name = "BYTES", value_parser = parse_size, requires = "alloc")]
    pub sample_rate: Option<u64>,

    /// With --alloc: every call, exact counts (costlier).
    #[arg(long, requires = "alloc")]
    pub unsampled: bool,

    /// With --alloc: allocation sites only (bytes and objects allocated by stack; no in-use
    /// bytes, no leaks), the probes attached for this share of the time in bursts of --burst.
    /// Each probed call traps into the kernel (microseconds on some machines): this is the mode
    /// to leave on a busy server. Only the allocating functions are probed (not free, not their
    /// returns); 100% keeps them attached. The report counts what the bursts saw and says how
    /// long they were; it does not extrapolate (a process slowed by the traps allocates less
    /// while they are on), so read it as shares between sites.
    #[arg(long, value_name = "PERCENT", requires = "alloc", conflicts_with = "leaks", value_parser = parse_percent)]
    pub duty_cycle: Option<f64>,

    /// With --duty-cycle: how long each burst of attached probes lasts. Detaching them takes the
    /// kernel about 65 ms a probe (one after the other): a burst is best longer than that, and
    /// the pause between bursts too.
    #[arg(long, value_name = "DURATION", default_value = "200ms", requires = "duty_cycle", value_parser = duration_in(Duration::from_millis(10), Duration::from_secs(60)))]
    pub burst: Duration,

    /// Without --alloc: take one page fault in N per CPU, each counted as N faults. The
    /// default keeps the sampling program's cost under 0.1 % of a fault-bound loop (the perf
    /// event's own accounting costs every fault the same at any N: BENCHMARKS.md, benchmark 14);
    /// a smaller N resolves small or short-lived sites better.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub fault_period: u64,

    /// Also capture kernel stacks (which syscall or kernel path faulted or grew).
    #[arg(long)]
    pub kernel_stacks: bool,

    /// Stop after this long and report [default: on Ctrl-C].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Live mode: print the top sites every interval (and the growth per site).
    #[arg(long, value_name = "DURATION", value_parser = duration_in(Duration::from_millis(500), Duration::from_secs(3600)))]
    pub interval: Option<Duration>,

    /// Write the final report to FILE instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// The report's format [default: from --output's extension, else text].
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Sites in the text report.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
}

/// `--sample-rate`'s default: jemalloc's `lg_prof_sample=19`.
pub const DEFAULT_SAMPLE_RATE: u64 = 512 << 10;
/// `--sample-rate`'s default with `--duty-cycle`: its bursts see a share of the allocations, and
/// a sample costs little beside the trap every probed call takes anyway.
pub const DUTY_CYCLE_SAMPLE_RATE: u64 = 32 << 10;

impl ProfileArgs {
    /// `--sample-rate`, or its default for the mode.
    pub fn sample_rate(&self) -> u64 {
        self.sample_rate.unwrap_or(if self.duty_cycle.is_some() {
            DUTY_CYCLE_SAMPLE_RATE
        } else {
            DEFAULT_SAMPLE_RATE
        })
    }
}

pub async fn run(args: ProfileArgs) -> anyhow::Result<()> {
    if args.alloc {
        crate::profile::alloc::run(args).await
    } else {
        crate::profile::sites::run(args).await
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<ProfileArgs, clap::Error> {
        let cli = Cli::try_parse_from(["memtrace", "profile"].iter().chain(args))?;
        match cli.command {
            Command::Profile(args) => Ok(*args),
            _ => unreachable!("a profile command"),
        }
    }

    #[test]
    fn the_sample_rate_defaults_by_mode_and_the_duty_cycle_takes_sites_only() {
        let full = parse(&["--alloc", "-p", "1"]).unwrap();
        assert_eq!(full.sample_rate(), 512 << 10);
        let duty = parse(&["--alloc", "-p", "1", "--duty-cycle", "5%"]).unwrap();
        assert_eq!(duty.sample_rate(), 32 << 10);
        assert_eq!(duty.duty_cycle, Some(0.05));
        assert_eq!(duty.burst, Duration::from_millis(200));
        let chosen = parse(&[
            "--alloc",
            "-p",
            "1",
            "--duty-cycle",
            "5%",
            "--sample-rate",
            "1M",
        ]);
        assert_eq!(chosen.unwrap().sample_rate(), 1 << 20);
        // Leaks need the free probe; a burst needs a duty cycle; a rate needs the allocator.
        assert!(parse(&["--alloc", "-p", "1", "--duty-cycle", "5%", "--leaks"]).is_err());
        assert!(parse(&["--alloc", "-p", "1", "--burst", "1s"]).is_err());
        assert!(parse(&["-p", "1", "--sample-rate", "4K"]).is_err());
    }
}
