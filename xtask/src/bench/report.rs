//! `BENCHMARKS.md`: each benchmark's section (figures against targets), the machine and the run,
//! rendered from plain results so the text can be checked without running anything.
use std::{
    fs,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use super::{
    Benchmark,
    harness::{Env, SETTLE, capture},
    procfs::read_trimmed,
    stats::fmt_duration,
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Met,
    NotMet,
    NotRun,
    /// A figure reported for comparison, without a target.
    Info,
}

impl Status {
    pub(super) fn of(ok: bool) -> Self {
        if ok { Self::Met } else { Self::NotMet }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Met => "MET",
            Self::NotMet => "**NOT MET**",
            Self::NotRun => "not run",
            Self::Info => "—",
        }
    }
}

pub(super) struct Verdict {
    pub(super) figure: String,
    pub(super) result: String,
    pub(super) target: String,
    pub(super) status: Status,
}

impl Verdict {
    pub(super) fn new(figure: &str, result: String, target: &str, status: Status) -> Self {
        Self {
            figure: figure.to_owned(),
            result,
            target: target.to_owned(),
            status,
        }
    }
}

pub(super) struct Section {
    pub(super) number: u8,
    pub(super) title: &'static str,
    pub(super) body: String,
    pub(super) verdicts: Vec<Verdict>,
}

impl Section {
    /// An empty section of `benchmark`.
    pub(super) fn new(benchmark: Benchmark) -> Self {
        Self {
            number: benchmark.number(),
            title: benchmark.title(),
            body: String::new(),
            verdicts: Vec::new(),
        }
    }
}

/// The verdicts of `sections` as JSON, one object per summary row.
pub(super) fn verdicts_json(sections: &[Section]) -> anyhow::Result<String> {
    let rows: Vec<serde_json::Value> = sections
        .iter()
        .flat_map(|section| {
            section.verdicts.iter().map(move |verdict| {
                serde_json::json!({
                    "benchmark": section.number,
                    "title": section.title,
                    "figure": verdict.figure,
                    "result": verdict.result,
                    "target": verdict.target,
                    "status": match verdict.status {
                        Status::Met => "met",
                        Status::NotMet => "not met",
                        Status::NotRun => "not run",
                        Status::Info => "info",
                    },
                })
            })
        })
        .collect();
    Ok(serde_json::to_string_pretty(&rows)?)
}

/// A line of Markdown appended to a `String` (`md!(out)`: an empty line).
macro_rules! md {
    ($out:expr) => {{
        $out.push('\n');
    }};
    ($out:expr, $($arg:tt)*) => {{
        use ::std::fmt::Write as _;
        // Writing into a String cannot fail.
        let _ = writeln!($out, $($arg)*);
    }};
}
pub(super) use md;

pub(super) fn commands_block(body: &mut String, commands: &[String]) {
    if commands.is_empty() {
        return;
    }
    md!(body, "Commands (as run):\n\n```sh");
    for c in commands {
        md!(body, "{c}");
    }
    md!(body, "```\n");
}

/// The section of a benchmark that failed.
pub(super) fn not_run(benchmark: Benchmark, error: &str) -> Section {
    Section {
        body: format!("Not run: {error}\n"),
        verdicts: vec![Verdict::new(
            "—",
            format!("not run: {error}"),
            "—",
            Status::NotRun,
        )],
        ..Section::new(benchmark)
    }
}

/// The commands a benchmark ran head its section.
pub(super) fn with_commands(mut section: Section, commands: &[String]) -> Section {
    let mut body = String::new();
    commands_block(&mut body, commands);
    body.push_str(&section.body);
    section.body = body;
    section
}

pub(super) fn daemon_missing(benchmark: Benchmark, figures: &[(&str, &str)]) -> Section {
    let mut s = Section {
        body: "Not run: daemon missing (`memtrace daemon --help` does not work in this build, or `--memtrace trace` was given).\n".to_owned(),
        ..Section::new(benchmark)
    };
    for (figure, target) in figures {
        s.verdicts.push(Verdict::new(
            figure,
            "not run: daemon missing".into(),
            target,
            Status::NotRun,
        ));
    }
    s
}

/// The machine and the run, as the report's "Machine and run" table shows them.
pub(super) struct RunInfo {
    pub(super) date: String,
    pub(super) kernel: String,
    pub(super) cpu: String,
    pub(super) cores: usize,
    pub(super) mem_gib: f64,
    pub(super) commit: String,
    pub(super) dirty: bool,
    pub(super) rustc: String,
    /// `bpftrace --version`, or `not installed`.
    pub(super) bpftrace: String,
    /// The "memtrace running" command line, relative to the workspace root.
    pub(super) running: String,
    pub(super) load_start: String,
    pub(super) load_end: String,
    /// Other memtrace/bpftrace processes at the start.
    pub(super) tracers: Vec<String>,
    pub(super) runs: u32,
    pub(super) fault_iters: u32,
    pub(super) mmap_iters: u32,
    pub(super) throughput_iters: u32,
    pub(super) quiet_secs: u64,
    pub(super) requests: u32,
    pub(super) nice: i32,
    pub(super) total: Duration,
}

impl RunInfo {
    pub(super) fn collect(
        env: &Env,
        date: String,
        load_start: String,
        tracers: Vec<String>,
        started: Instant,
    ) -> Self {
        let root = &env.ctx.root;
        let git = |args: &[&str]| {
            Command::new("git")
                .args(args)
                .current_dir(root)
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        let commit = git(&["rev-parse", "--short=12", "HEAD"]);
        let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty()
            || !git(&["ls-files", "--others", "--exclude-standard"]).is_empty();
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or("?".to_owned(), |(_, m)| m.trim().to_owned());
        let cores = thread::available_parallelism().map_or(0, |n| n.get());
        let mem_gib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
        Self {
            date,
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            cpu,
            cores,
            mem_gib,
            commit,
            dirty,
            rustc: capture("rustc", &["--version"]),
            bpftrace: env
                .bpftrace
                .as_ref()
                .map_or("not installed".to_owned(), |b| {
                    capture(&b.to_string_lossy(), &["--version"])
                }),
            running: format!(
                "{} {}",
                env.rel(&env.bins.memtrace),
                env.memtrace_args().join(" ")
            ),
            load_start,
            load_end: read_trimmed("/proc/loadavg"),
            tracers,
            runs: env.args.runs,
            fault_iters: env.args.fault_iters,
            mmap_iters: env.args.mmap_iters,
            throughput_iters: env.args.throughput_iters,
            quiet_secs: env.args.quiet_secs,
            requests: env.args.requests,
            nice: env.args.nice,
            total: started.elapsed(),
        }
    }
}

pub(super) fn render_report(info: &RunInfo, sections: &[Section]) -> String {
    let RunInfo {
        date,
        kernel,
        cpu,
        cores,
        mem_gib,
        commit,
        dirty,
        rustc,
        bpftrace,
        running,
        load_start,
        load_end,
        tracers,
        runs,
        fault_iters,
        mmap_iters,
        throughput_iters,
        quiet_secs,
        requests,
        nice,
        total,
    } = info;

    let mut r = String::new();
    md!(r, "# memtrace benchmarks\n");
    md!(
        r,
        "Generated by `cargo xtask bench` (xtask/src/bench/); do not edit by hand, re-run it. Benchmarks report, they do not fail CI. On a shared machine absolute times are noisy: **the ratio against the baseline of the same run is the figure.**\n"
    );
    md!(r, "## Summary\n");
    md!(r, "| # | Benchmark | Figure | Result | Target | Status |");
    md!(r, "|---|---|---|---|---|---|");
    for s in sections {
        for v in &s.verdicts {
            md!(
                r,
                "| {} | {} | {} | {} | {} | {} |",
                s.number,
                s.title,
                v.figure,
                v.result.replace('|', "\\|").replace('\n', " "),
                v.target,
                v.status.label()
            );
        }
    }
    md!(r);
    md!(r, "## Machine and run\n");
    md!(r, "| | |\n|---|---|");
    md!(r, "| Date | {date} |");
    md!(r, "| Kernel | {} |", kernel);
    md!(r, "| CPU | {cpu} × {cores} cores |");
    md!(r, "| Memory | {mem_gib:.1} GiB |");
    md!(
        r,
        "| memtrace commit | {commit}{} |",
        if *dirty {
            " + uncommitted changes in the work tree"
        } else {
            ""
        }
    );
    md!(r, "| rustc | {} |", rustc);
    md!(r, "| bpftrace | {} |", bpftrace);
    md!(r, "| \"memtrace running\" variant | `{}` |", running);
    md!(
        r,
        "| Load average (1/5/15 min, running/total) at start → end | {load_start} → {} |",
        load_end
    );
    md!(
        r,
        "| Other memtrace/bpftrace processes at start | {} |",
        if tracers.is_empty() {
            "none".to_owned()
        } else {
            tracers.join(", ")
        }
    );
    md!(
        r,
        "| Options | --runs {} --fault-iters {} --mmap-iters {} --throughput-iters {} --quiet-secs {} --requests {} --nice {} |",
        runs,
        fault_iters,
        mmap_iters,
        throughput_iters,
        quiet_secs,
        requests,
        nice
    );
    md!(r, "| Total run time | {} |\n", fmt_duration(*total));
    md!(r, "## How to reproduce\n");
    md!(
        r,
        "```sh\n# as root (loads eBPF programs, toggles kernel.bpf_stats_enabled): builds\n# `cargo build --release -p memtrace -p memtrace-tests --bins`, installs bpftrace with apt if missing\nsudo -E cargo xtask bench                      # default: --runs 5, a few minutes on 2 cores\nsudo -E cargo xtask bench --runs 20 --fault-iters 50 --throughput-iters 100 --quiet-secs 60   # longer, tighter\nsudo -E cargo xtask bench --only faults,mmap   # a subset (1-7 or faults, mmap, throughput, footprint, scrape, startup, micro)\nsudo -E cargo xtask bench --help\n```\n"
    );
    md!(
        r,
        "Method: in benchmarks 1 and 2 each round runs the workload untraced, with memtrace running and with bpftrace running, in an order that rotates every round; a tracer is started before the workload, waited for (memtrace: `/readyz` 200, or its probes-attached message for the trace stand-in; bpftrace: `Attaching`), given {} ms to settle, and stopped after it. Overheads are computed pair by pair (traced run ÷ untraced run of the same round − 1), then the median and min…max of those ratios are reported. The workloads run at nice {} so that other people's builds on a shared machine stretch the timed loops less; tracers run at normal priority. Logs of every process started are in `target/bench/`.\n",
        SETTLE.as_millis(),
        nice
    );
    for s in sections {
        md!(r, "## {}. {}\n", s.number, s.title);
        r.push_str(&s.body);
        if !s.body.ends_with("\n\n") {
            r.push('\n');
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::super::faults::{faults_section, faults_spec};
    use super::super::footprint::{FOOT, Footprint, FootprintResults, render_footprint_and_scrape};
    use super::super::harness::Running;
    use super::super::micro::{parse_criterion, render_micro};
    use super::super::mmap::{mmap_section, mmap_spec};
    use super::super::overhead::{OverheadResults, ProgCost, Sample, VARIANTS, Variant};
    use super::super::procfs::prog_type_name;
    use super::super::scrape::ScrapeResult;
    use super::super::startup::render_startup;
    use super::super::throughput::{THROUGHPUT_RING, TINY_RING, Trial, render_throughput};
    use super::*;
    use std::path::{Path, PathBuf};

    /// Every renderer fed fixed measurements: a report whose every table and sentence can be
    /// compared with the one the code rendered before a change (`UPDATE_GOLDEN=1` rewrites it).
    fn golden_report() -> String {
        let s = |wall: f64, cpu: f64| Some(Sample { wall, cpu });
        let faults_spec = faults_spec(PathBuf::from("target/release/bench-faults"), 20);
        let faults = OverheadResults {
            runs: 3,
            variants: vec![Variant::Untraced, Variant::Memtrace, Variant::Bpftrace],
            labels: [
                "untraced".to_owned(),
                "memtrace daemon".to_owned(),
                "bpftrace".to_owned(),
                "floor: empty programs on memtrace's tracepoints".to_owned(),
                "memtrace daemon ".to_owned(),
            ],
            samples: [
                vec![s(1000.25, 999.5), s(1150.75, 1100.0), s(980.0, 979.9)],
                vec![s(1012.5, 1010.0), s(1130.0, 1120.0), s(1001.0, 1000.0)],
                vec![s(1500.0, 1499.0), s(1610.5, 1600.0), s(1490.0, 1480.0)],
                Vec::new(),
                Vec::new(),
            ],
            failed: Default::default(),
            memtrace_cpu: vec![0.21, 0.19, 0.23],
            foreign: vec![Vec::new(), vec!["bpftrace (4242)".to_owned()], Vec::new()],
            costs: Some(Ok(vec![
                ProgCost {
                    name: "task_exit".to_owned(),
                    prog_type: prog_type_name(17),
                    runs: 1234,
                    ns_per_run: 88.25,
                },
                ProgCost {
                    name: "oom_kill".to_owned(),
                    prog_type: prog_type_name(5),
                    runs: 0,
                    ns_per_run: 0.0,
                },
            ])),
        };
        let mmap_spec = mmap_spec(
            PathBuf::from("target/release/bench-mmap"),
            100_000,
            Running::Daemon,
        );
        let mmap = OverheadResults {
            runs: 2,
            variants: VARIANTS.to_vec(),
            labels: [
                "untraced".to_owned(),
                "memtrace daemon".to_owned(),
                "bpftrace".to_owned(),
                "floor: empty programs on memtrace's tracepoints".to_owned(),
                "memtrace daemon --mmap-calls".to_owned(),
            ],
            samples: [
                vec![s(2000.0, 1990.0), s(2100.0, 2090.0)],
                vec![s(2010.0, 2001.0), s(2121.0, 2110.0)],
                vec![None, None],
                vec![s(2300.0, 2290.0), s(2390.0, 2380.0)],
                vec![s(2320.0, 2310.0), s(2400.0, 2390.0)],
            ],
            failed: [
                None,
                None,
                Some("bpftrace is not installed (apt-get install bpftrace)".to_owned()),
                None,
                None,
            ],
            memtrace_cpu: vec![1.5, 1.25],
            foreign: vec![Vec::new(), Vec::new()],
            costs: Some(Err("reading /proc/1/fdinfo: gone".to_owned())),
        };
        let trial = |sample, ring, counted, fault_lines, ring_full, queue_drops| Trial {
            sample,
            ring,
            counted,
            fault_lines,
            ring_full,
            queue_drops,
            decode_errors: 0,
            loop_secs: 0.5,
            delivery_secs: 0.52,
        };
        let trials = vec![
            trial(1, THROUGHPUT_RING, 655_360, 600_000, 10_000, 45_360),
            trial(2, THROUGHPUT_RING, 655_360, 327_680, 0, 0),
            trial(2, THROUGHPUT_RING, 655_360, 327_000, 0, 680),
            trial(1, TINY_RING, 655_360, 100_000, 555_360, 0),
        ];
        let footprint = FootprintResults {
            ambient: 85,
            rows: vec![
                Footprint {
                    n: 1_000,
                    processes: 1_090,
                    tracked: Some(1_071.0),
                    rss_kib: 25_600,
                    hwm_kib: 27_000,
                    quiet_cpu_pct: 1.234,
                },
                Footprint {
                    n: 10_000,
                    processes: 10_088,
                    tracked: None,
                    rss_kib: 52_900,
                    hwm_kib: 60_000,
                    quiet_cpu_pct: 1.5,
                },
            ],
            scrapes: vec![
                ScrapeResult {
                    path: "/metrics",
                    latencies_ms: (1..=200).map(|i| f64::from(i) / 100.0).collect(),
                    bytes: 40_000,
                    non_ok: 0,
                },
                ScrapeResult {
                    path: "/api/v1/snapshot",
                    latencies_ms: (1..=200).map(|i| f64::from(i) / 10.0).collect(),
                    bytes: 3_500_000,
                    non_ok: 1,
                },
            ],
            error: None,
            commands: vec!["target/release/memtrace daemon --listen 127.0.0.1:19847".to_owned()],
            during_faults: vec![0.21, 0.19, 0.23],
        };
        let failed_footprint = FootprintResults {
            ambient: 85,
            rows: Vec::new(),
            scrapes: Vec::new(),
            error: Some("the daemon died: out of memory".to_owned()),
            commands: Vec::new(),
            during_faults: Vec::new(),
        };
        let micro = parse_criterion(
            "decode/mmap             time:   [3.1 ns 3.2 ns 3.3 ns]\nmodel/observe_processes_10k_tick\n                        time:   [1.01 ms 1.02 ms 1.05 ms]\n",
        );
        let mut sections = vec![
            with_commands(
                faults_section(20, &faults_spec, &faults),
                &["nice -n -10 target/release/bench-faults --iters 20 --mib 128".to_owned()],
            ),
            mmap_section(100_000, &mmap_spec, &mmap),
            render_throughput(20, &trials, Some(2)),
        ];
        sections.extend(render_footprint_and_scrape(&footprint, true, true, 10, 200));
        sections.extend(render_footprint_and_scrape(
            &failed_footprint,
            false,
            true,
            10,
            200,
        ));
        sections.push(daemon_missing(Benchmark::Footprint, FOOT));
        sections.push(render_startup(
            &[105.0, 98.0, 130.0],
            Running::Daemon,
            "memtrace daemon",
            3,
            90,
        ));
        sections.push(render_startup(
            &[40.0],
            Running::Trace,
            "memtrace (trace stand-in)",
            1,
            90,
        ));
        sections.push(render_micro(&micro));
        sections.push(not_run(
            Benchmark::Micro,
            "no results in criterion's output",
        ));
        let info = RunInfo {
            date: "2026-11-24 05:34:24 UTC".to_owned(),
            kernel: "6.18.44".to_owned(),
            cpu: "AMD EPYC".to_owned(),
            cores: 2,
            mem_gib: 23.456,
            commit: "ddd9bb49d347".to_owned(),
            dirty: true,
            rustc: "rustc 1.95.0".to_owned(),
            bpftrace: "bpftrace v0.17.0".to_owned(),
            running: "target/release/memtrace daemon --listen 127.0.0.1:19847".to_owned(),
            load_start: "1.36 12.71 20.43 1/84 29881".to_owned(),
            load_end: "1.19 8.10 17.53 1/82 8702".to_owned(),
            tracers: vec!["memtrace (77)".to_owned()],
            runs: 3,
            fault_iters: 20,
            mmap_iters: 100_000,
            throughput_iters: 20,
            quiet_secs: 10,
            requests: 200,
            nice: -10,
            total: Duration::from_secs(165),
        };
        render_report(&info, &sections)
    }

    #[test]
    fn report_matches_the_golden_rendering() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bench/testdata/report.md");
        let report = golden_report();
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &report).unwrap();
        }
        let golden = fs::read_to_string(&path).expect("golden report");
        assert_eq!(
            report, golden,
            "the report's text changed (UPDATE_GOLDEN=1 rewrites it)"
        );
    }
}
