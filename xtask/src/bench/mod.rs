//! `cargo xtask bench`: memtrace's overhead and footprint, measured side by side, written to
//! `BENCHMARKS.md`.
//!
//! Every comparison is interleaved: each round runs every variant once (the order rotates from
//! round to round) and ratios are computed within a round — a traced run against the untraced
//! run of the same round — so background load drifting on a shared machine cancels out as far
//! as it can. Benchmarks report, they never fail: a missed target is `NOT MET` in the report, a
//! benchmark that could not run is `not run: <why>`. Every process started here (memtrace,
//! bpftrace, workloads and their children) is owned by a guard that kills it on the way out,
//! error or Ctrl-C included, and every sysctl changed is restored the same way.
//!
//! One file per benchmark (`faults` and `mmap` share `overhead`'s interleaved rounds); `harness`
//! starts and stops what is measured, `procfs` reads the kernel's accounting, `stats` sums it
//! up and `report` renders `BENCHMARKS.md` from plain results (a golden test checks its text).
mod alloc;
mod attach;
mod cluster_fanout;
mod cluster_prometheus;
mod faults;
mod footprint;
mod harness;
mod micro;
mod mmap;
mod overhead;
mod procfs;
mod profile_sites;
mod record_size;
mod report;
mod scrape;
mod startup;
mod stats;
mod summary;
mod throughput;
mod top;

use std::{
    cell::{Cell, RefCell},
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;

use self::{
    alloc::bench_alloc,
    attach::bench_attach,
    cluster_fanout::bench_cluster,
    cluster_prometheus::bench_cluster_prometheus,
    faults::bench_faults,
    footprint::bench_footprint_and_scrape,
    harness::{
        Bins, Env, Running, capture, check_interrupt, install_signal_handlers, other_tracers,
    },
    micro::bench_micro,
    mmap::bench_mmap,
    procfs::read_trimmed,
    profile_sites::bench_profile_sites,
    record_size::bench_record_size,
    report::{RunInfo, Section, not_run, render_report, with_commands},
    startup::bench_startup,
    stats::fmt_duration,
    summary::bench_summary,
    throughput::bench_throughput,
    top::bench_top,
};
use crate::{Ctx, ensure_apt_packages, ensure_tracefs, is_root, say, setup};

/// What the "memtrace running" variant runs. `Auto` picks `memtrace daemon` as soon as
/// `memtrace daemon --help` works and falls back to the `memtrace trace` stand-in otherwise;
/// change this one line (or pass `--memtrace`) to force either.
const MEMTRACE_RUNNING: MemtraceMode = MemtraceMode::Auto;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MemtraceMode {
    /// `memtrace daemon` if `memtrace daemon --help` works, else the `memtrace trace` stand-in.
    Auto,
    /// `memtrace daemon --listen ADDR`, ready when `/readyz` answers 200.
    Daemon,
    /// `memtrace trace --event oom --no-summary`, ready when it reports its probes attached.
    Trace,
}

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Rounds per comparison (each round runs every variant once) and repetitions elsewhere.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// bench-faults iterations in benchmark 1 (128 MiB each: 32,768 faults).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    fault_iters: u32,
    /// bench-mmap iterations in benchmark 2.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    mmap_iters: u32,
    /// bench-faults iterations in each live-trace trial of benchmark 3.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    throughput_iters: u32,
    /// Length of benchmark 4's quiet window, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    quiet_secs: u64,
    /// Sequential requests per endpoint in benchmark 5.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    requests: u32,
    /// Nice value for the workloads of benchmarks 1 and 2 (0: inherit). A negative value keeps
    /// other people's compilers on a shared machine from stretching the timed loops.
    #[arg(long, default_value_t = -10, allow_negative_numbers = true)]
    nice: i32,
    /// Only these benchmarks (comma-separated): 1-15 or faults, mmap, throughput, footprint,
    /// scrape, startup, micro, workloads, cluster, cluster-prometheus, attach, top, record-size,
    /// profile-sites, profile-alloc.
    #[arg(long, value_delimiter = ',', value_name = "LIST", value_parser = Benchmark::parse)]
    only: Vec<Benchmark>,
    /// Simulated fleet sizes of benchmarks 9 and 10 (`memtrace cluster diagnose`, and the same
    /// question through Prometheus).
    #[arg(long, value_delimiter = ',', value_name = "LIST", default_value = "100,1000,5000", value_parser = clap::value_parser!(usize))]
    cluster_nodes: Vec<usize>,
    /// What the "memtrace running" variant is.
    #[arg(long, value_enum, default_value_t = MEMTRACE_RUNNING)]
    memtrace: MemtraceMode,
    /// Address the benchmarked daemon listens on (not 9847: a daemon already running is left alone).
    #[arg(long, default_value = "127.0.0.1:19847", value_name = "ADDR")]
    listen: SocketAddr,
    /// Take memtrace, bench-faults and bench-mmap from DIR instead of building them.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Where to write the report (relative to the workspace root).
    #[arg(long, default_value = "BENCHMARKS.md", value_name = "FILE")]
    output: PathBuf,
    /// Also write the summary's verdicts as JSON (`[{benchmark, title, figure, result, target,
    /// status}]`) to FILE, for scripts (the kernel matrix reads it).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// The benchmarks, in the report's order (their number is their position, from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Benchmark {
    Faults,
    Mmap,
    Throughput,
    Footprint,
    Scrape,
    Startup,
    Micro,
    Workloads,
    Cluster,
    ClusterPrometheus,
    Attach,
    Top,
    RecordSize,
    ProfileSites,
    ProfileAlloc,
}

impl Benchmark {
    fn number(self) -> u8 {
        self as u8 + 1
    }

    fn title(self) -> &'static str {
        match self {
            Self::Faults => "Fault-path overhead",
            Self::Mmap => "mmap churn",
            Self::Throughput => "Live trace throughput",
            Self::Footprint => "Daemon footprint",
            Self::Scrape => "Scrape latency",
            Self::Startup => "Start-up",
            Self::Micro => "Hot-path micro-benchmarks",
            Self::Workloads => "Workloads summary and history",
            Self::Cluster => "Cluster fan-out",
            Self::ClusterPrometheus => "Cross-node skew through Prometheus (baseline)",
            Self::Attach => "Attach mechanisms on the fault path",
            Self::Top => "`memtrace top` at 10,000 processes",
            Self::RecordSize => "Recording size",
            Self::ProfileSites => "Page-fault site sampling (`memtrace profile`)",
            Self::ProfileAlloc => "Allocator profiling on a malloc/free loop",
        }
    }

    /// A benchmark by number (`1`-`7`, as the report numbers them) or by name.
    fn parse(item: &str) -> Result<Self, String> {
        let item = item.trim();
        let all = Self::value_variants();
        match item.parse::<usize>() {
            Ok(n) if (1..=all.len()).contains(&n) => Ok(all[n - 1]),
            _ => Self::from_str(item, false).map_err(|_| {
                let names: Vec<String> = all
                    .iter()
                    .filter_map(|b| Some(b.to_possible_value()?.get_name().to_owned()))
                    .collect();
                format!(
                    "unknown benchmark `{item}` (1-{} or {})",
                    all.len(),
                    names.join(", ")
                )
            }),
        }
    }
}

fn locate_bins(ctx: &Ctx, args: &BenchArgs) -> Result<Bins> {
    let dir = match &args.bin_dir {
        Some(d) => ctx.root.join(d),
        None => crate::build_release_bins(ctx)?,
    };
    let bins = Bins {
        memtrace: dir.join("memtrace"),
        faults: dir.join("bench-faults"),
        mmap: dir.join("bench-mmap"),
    };
    for b in [&bins.memtrace, &bins.faults, &bins.mmap] {
        if !b.is_file() {
            bail!("{} is missing", b.display());
        }
    }
    Ok(bins)
}

fn resolve_running(mode: MemtraceMode, memtrace: &Path) -> Running {
    let daemon_works = || {
        Command::new(memtrace)
            .args(["daemon", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    match mode {
        MemtraceMode::Daemon => Running::Daemon,
        MemtraceMode::Trace => Running::Trace,
        MemtraceMode::Auto if daemon_works() => Running::Daemon,
        MemtraceMode::Auto => Running::Trace,
    }
}

/// Entry point of `cargo xtask bench`.
pub fn run(ctx: &mut Ctx, args: BenchArgs) -> Result<()> {
    if !is_root() {
        bail!("cargo xtask bench loads eBPF programs and changes sysctls: run it as root");
    }
    install_signal_handlers();
    let started = Instant::now();
    // Prebuilt binaries need no toolchain: `cargo xtask vm-test --bench` runs this inside VMs
    // that have none.
    if args.bin_dir.is_none() {
        setup(ctx)?;
    }
    ensure_tracefs();
    if let Err(e) = ensure_apt_packages(ctx, &[("bpftrace", "bpftrace")]) {
        say(format!(
            "warning: bpftrace unavailable, its variants will be `not run`: {e:#}"
        ));
    }
    let bins = locate_bins(ctx, &args)?;
    let running = resolve_running(args.memtrace, &bins.memtrace);
    let logs = ctx.root.join("target/bench");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let env = Env {
        ctx,
        args: &args,
        bins,
        running,
        logs,
        seq: Cell::new(0),
        bpftrace: ctx.which("bpftrace"),
        commands: RefCell::new(Vec::new()),
        cpu_during_faults: RefCell::new(Vec::new()),
    };
    say(format!(
        "\"memtrace running\" = `{} {}`",
        env.rel(&env.bins.memtrace),
        env.memtrace_args().join(" ")
    ));

    let date = capture("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]);
    let load_start = read_trimmed("/proc/loadavg");
    let tracers = other_tracers();

    let wanted = |b: Benchmark| args.only.is_empty() || args.only.contains(&b);
    let mut sections: Vec<Section> = Vec::new();
    type Bench = fn(&Env) -> Result<Section>;
    let plan: [(Benchmark, Bench); 3] = [
        (Benchmark::Faults, bench_faults),
        (Benchmark::Mmap, bench_mmap),
        (Benchmark::Throughput, bench_throughput),
    ];
    for (benchmark, f) in plan {
        if wanted(benchmark) {
            sections.push(run_one(&env, benchmark, f));
        }
        check_interrupt()?;
    }
    let (footprint, scrape) = (wanted(Benchmark::Footprint), wanted(Benchmark::Scrape));
    if footprint || scrape {
        say("=== benchmarks 4/5: daemon footprint and scrape latency");
        sections.extend(bench_footprint_and_scrape(&env, footprint, scrape));
    }
    check_interrupt()?;
    if wanted(Benchmark::Startup) {
        sections.push(run_one(&env, Benchmark::Startup, bench_startup));
    }
    check_interrupt()?;
    if wanted(Benchmark::Micro) {
        sections.push(run_one(&env, Benchmark::Micro, bench_micro));
    }
    check_interrupt()?;
    if wanted(Benchmark::Workloads) {
        sections.push(run_one(&env, Benchmark::Workloads, bench_summary));
    }
    check_interrupt()?;
    if wanted(Benchmark::Cluster) {
        sections.push(run_one(&env, Benchmark::Cluster, bench_cluster));
    }
    check_interrupt()?;
    if wanted(Benchmark::ClusterPrometheus) {
        sections.push(run_one(
            &env,
            Benchmark::ClusterPrometheus,
            bench_cluster_prometheus,
        ));
    }
    check_interrupt()?;

    if wanted(Benchmark::Attach) {
        sections.push(run_one(&env, Benchmark::Attach, bench_attach));
    }
    check_interrupt()?;
    if wanted(Benchmark::Top) {
        sections.push(run_one(&env, Benchmark::Top, bench_top));
    }
    if wanted(Benchmark::RecordSize) {
        sections.push(run_one(&env, Benchmark::RecordSize, bench_record_size));
    }
    check_interrupt()?;
    if wanted(Benchmark::ProfileSites) {
        sections.push(run_one(&env, Benchmark::ProfileSites, bench_profile_sites));
    }
    check_interrupt()?;
    if wanted(Benchmark::ProfileAlloc) {
        sections.push(run_one(&env, Benchmark::ProfileAlloc, bench_alloc));
    }
    check_interrupt()?;

    let info = RunInfo::collect(&env, date, load_start, tracers, started);
    let report = render_report(&info, &sections);
    let path = env.ctx.root.join(&args.output);
    fs::write(&path, report).with_context(|| format!("writing {}", path.display()))?;
    if let Some(json) = &args.json {
        let json = env.ctx.root.join(json);
        fs::write(&json, report::verdicts_json(&sections)?)
            .with_context(|| format!("writing {}", json.display()))?;
    }
    say(format!(
        "wrote {} ({} benchmarks in {})",
        path.display(),
        sections.len(),
        fmt_duration(started.elapsed())
    ));
    Ok(())
}

/// Run one benchmark; an error becomes a "not run" section. The commands it ran head the section.
fn run_one(env: &Env, benchmark: Benchmark, f: fn(&Env) -> Result<Section>) -> Section {
    let n = benchmark.number();
    say(format!("=== benchmark {n}: {}", benchmark.title()));
    let result = f(env);
    let commands = env.take_commands();
    let section = result.unwrap_or_else(|e| {
        say(format!("benchmark {n} failed: {e:#}"));
        not_run(benchmark, &format!("{e:#}"))
    });
    with_commands(section, &commands)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `cargo xtask bench`'s options as clap parses them.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn only(args: &[&str]) -> Result<Vec<Benchmark>, clap::Error> {
        Cli::try_parse_from(["bench"].iter().chain(args)).map(|c| c.bench.only)
    }

    #[test]
    fn benchmark_selection() {
        assert_eq!(only(&[]).unwrap(), []);
        assert_eq!(
            only(&["--only", "1,scrape"]).unwrap(),
            [Benchmark::Faults, Benchmark::Scrape]
        );
        // As the README and BENCHMARKS.md write it.
        assert_eq!(
            only(&["--only", "faults,mmap"]).unwrap(),
            [Benchmark::Faults, Benchmark::Mmap]
        );
        assert_eq!(
            only(&["--only", "7", "--only", "throughput"]).unwrap(),
            [Benchmark::Micro, Benchmark::Throughput]
        );
        for bogus in ["nope", "0", "16", ""] {
            let e = only(&["--only", bogus]).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "unknown benchmark `{bogus}` (1-15 or faults, mmap, throughput, footprint, scrape, startup, micro, workloads, cluster, cluster-prometheus, attach, top, record-size, profile-sites, profile-alloc)"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn numbers_and_titles_are_the_reports() {
        let numbered: Vec<(u8, &str)> = Benchmark::value_variants()
            .iter()
            .map(|b| (b.number(), b.title()))
            .collect();
        assert_eq!(
            numbered,
            [
                (1, "Fault-path overhead"),
                (2, "mmap churn"),
                (3, "Live trace throughput"),
                (4, "Daemon footprint"),
                (5, "Scrape latency"),
                (6, "Start-up"),
                (7, "Hot-path micro-benchmarks"),
                (8, "Workloads summary and history"),
                (9, "Cluster fan-out"),
                (10, "Cross-node skew through Prometheus (baseline)"),
                (11, "Attach mechanisms on the fault path"),
                (12, "`memtrace top` at 10,000 processes"),
                (13, "Recording size"),
                (14, "Page-fault site sampling (`memtrace profile`)"),
                (15, "Allocator profiling on a malloc/free loop"),
            ]
        );
    }
}
