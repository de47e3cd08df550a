//! Benchmark 15: the cost of `memtrace profile --alloc` on a malloc/free loop, against bpftrace
//! doing the least an allocation profiler does (a user stack per malloc, a count per free).
//!
//! `alloc-sites --loop N T` (tests/programs/alloc-sites.c, built here with gcc) runs N
//! malloc(64)/free pairs on each of T threads once it reads a line, and prints ns per pair. Each
//! round runs, in a rotating order: untraced; `memtrace profile --alloc -p PID` (sampled, the
//! default 512 KiB); the same `--unsampled`; and `bpftrace -p PID` with
//! `uprobe:LIBC:malloc { @[ustack] = count(); } uprobe:LIBC:free { @frees = count(); }`. Overhead
//! is ns per pair above the same round's untraced run.
//!
//! Then Redis (jemalloc) under `redis-benchmark -t set,get -r 100000 -d 256`: ops/s untraced,
//! with `memtrace profile --alloc -p $(pidof redis-server)` (sampled), with `--duty-cycle 100%`
//! (allocation sites only: the allocating functions' entry probes, no free or return probe) and
//! with `--duty-cycle 5%` (the same in bursts), interleaved.
//!
//! Targets (issue 13): unsampled overhead ≤ ½ of bpftrace's in the same run; sampled ≤ 10 %
//! fewer ops/s on redis-benchmark (checked for `--alloc` and for `--duty-cycle 5%`).
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Benchmark,
    harness::{Env, Proc, READY_TIMEOUT, STOP_GRACE, Stop, check_interrupt},
    report::{Section, Status, Verdict, md},
    stats::{fmt_summary, summarize},
};
use crate::say;

/// Pairs per thread per run: long enough that the untraced loop is not all start-up (tens of
/// ms), short enough that the traced ones (µs per pair) take seconds, not minutes.
const PAIRS: u64 = 300_000;
const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
const READY_MARKER: &str = "profiling allocations of";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Untraced,
    Sampled,
    Unsampled,
    /// `--duty-cycle 100%`: the entry probe on malloc alone (no free, no return probe).
    SitesOnly,
    Bpftrace,
    /// Empty programs at malloc's and free's entries: bpftrace's probes without their work, the
    /// traps alone. glibc's free begins with a `test`, which the kernel single-steps out of line
    /// (a second trap); memtrace probes free past that NULL check, at an emulated push.
    EmptyEntryProbes,
    /// Empty programs on malloc's entry and return and on free: the traps of a profiler that
    /// also takes malloc's returned pointer (as `--alloc` does, to match frees to allocations).
    EmptyWithReturn,
}

const VARIANTS: [Variant; 7] = [
    Variant::Untraced,
    Variant::Sampled,
    Variant::Unsampled,
    Variant::SitesOnly,
    Variant::Bpftrace,
    Variant::EmptyEntryProbes,
    Variant::EmptyWithReturn,
];
const N: usize = VARIANTS.len();

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::Sampled => "`profile --alloc` (sampled, 512 KiB)",
            Self::Unsampled => "`profile --alloc --unsampled`",
            Self::SitesOnly => "`profile --alloc --duty-cycle 100%` (sites only: malloc's entry)",
            Self::Bpftrace => "bpftrace malloc ustack + free count",
            Self::EmptyEntryProbes => "empty uprobes at malloc's and free's entries (bpftrace)",
            Self::EmptyWithReturn => {
                "empty uprobes at malloc's entry and return and free's entry (bpftrace)"
            }
        }
    }

    /// The bpftrace program of a bpftrace variant.
    fn bpftrace(self, libc: &str) -> Option<String> {
        let probes = match self {
            Self::Bpftrace => {
                format!(
                    "uprobe:{libc}:malloc {{ @[ustack] = count(); }} \
                     uprobe:{libc}:free {{ @frees = count(); }}"
                )
            }
            Self::EmptyEntryProbes => {
                format!("uprobe:{libc}:malloc {{ }} uprobe:{libc}:free {{ }}")
            }
            Self::EmptyWithReturn => format!(
                "uprobe:{libc}:malloc {{ }} uretprobe:{libc}:malloc {{ }} uprobe:{libc}:free {{ }}"
            ),
            Self::Untraced | Self::Sampled | Self::Unsampled | Self::SitesOnly => return None,
        };
        Some(format!(
            "{probes} BEGIN {{ printf(\"{BPFTRACE_ATTACHED}\\n\"); }}"
        ))
    }
}

/// bpftrace runs `BEGIN` once every probe is attached; its "Attaching N probes" line comes
/// before the uprobes are (a short loop would finish untraced).
const BPFTRACE_ATTACHED: &str = "uprobes attached";

/// alloc-sites built into the bench's log directory.
fn build_loop(env: &Env) -> Result<PathBuf> {
    let src = env.ctx.root.join("tests/programs/alloc-sites.c");
    let out = env.logs.join("alloc-sites");
    let mut cmd = Command::new("gcc");
    cmd.args(["-O2", "-fno-builtin", "-fomit-frame-pointer", "-pthread"])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .arg("-ldl");
    env.note(&cmd);
    let status = cmd.status().context("gcc (apt-get install gcc)")?;
    if !status.success() {
        bail!("building {} failed", src.display());
    }
    Ok(out)
}

/// One timed run of the loop under `variant`: ns per pair.
fn run_variant(env: &Env, bin: &Path, threads: u32, variant: Variant) -> Result<f64> {
    let mut cmd = Command::new(bin);
    cmd.args(["--loop", &PAIRS.to_string(), &threads.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().context("starting alloc-sites --loop")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        bail!("alloc-sites --loop: {line:?}");
    }
    let pid = child.id();
    let mut tracer = match variant {
        Variant::Untraced => None,
        Variant::Sampled | Variant::Unsampled | Variant::SitesOnly => {
            let extra: &[&str] = match variant {
                Variant::Unsampled => &["--unsampled"],
                Variant::SitesOnly => &["--duty-cycle", "100%"],
                _ => &[],
            };
            Some(spawn_profiler(env, pid, "alloc-profile", extra)?)
        }
        Variant::Bpftrace | Variant::EmptyEntryProbes | Variant::EmptyWithReturn => {
            let Some(bpftrace) = &env.bpftrace else {
                bail!("bpftrace is not installed (apt-get install bpftrace)");
            };
            let program = variant.bpftrace(LIBC).context("a bpftrace variant")?;
            let mut cmd = Command::new(bpftrace);
            cmd.args(["-p", &pid.to_string(), "-e", &program]);
            env.note(&cmd);
            let (proc, _) = Proc::spawn(
                env,
                "bpftrace-alloc",
                cmd,
                Stop::Signal(libc::SIGINT),
                false,
            )?;
            Some(wait_ready(proc, BPFTRACE_ATTACHED)?)
        }
    };
    writeln!(stdin, "go")?;
    line.clear();
    stdout.read_line(&mut line)?;
    let status = child.wait()?;
    if let Some(tracer) = tracer.as_mut() {
        tracer.stop(STOP_GRACE)?;
    }
    if !status.success() {
        bail!("alloc-sites --loop failed: {status}");
    }
    line.trim()
        .parse::<f64>()
        .with_context(|| format!("alloc-sites printed {line:?}"))
}

/// `memtrace profile --alloc -p PID EXTRA --format json -o LOGS/NAME.json`, once attached.
fn spawn_profiler(env: &Env, pid: u32, name: &str, extra: &[&str]) -> Result<Proc> {
    let mut cmd = Command::new(&env.bins.memtrace);
    cmd.args([
        "profile",
        "--alloc",
        "-p",
        &pid.to_string(),
        "--format",
        "json",
    ])
    .args(extra)
    .arg("-o")
    .arg(env.logs.join(format!("{name}.json")));
    env.note(&cmd);
    let (proc, _) = Proc::spawn(
        env,
        &format!("memtrace-{name}"),
        cmd,
        Stop::Signal(libc::SIGINT),
        false,
    )?;
    wait_ready(proc, READY_MARKER)
}

fn wait_ready(mut proc: Proc, marker: &str) -> Result<Proc> {
    let started = Instant::now();
    loop {
        if proc.log_text().contains(marker) {
            return Ok(proc);
        }
        if !proc.alive() {
            bail!("{} exited before attaching: {}", proc.name, proc.log_tail());
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("{} not attached after {READY_TIMEOUT:?}", proc.name);
        }
        check_interrupt()?;
        thread::sleep(Duration::from_millis(20));
    }
}

pub(super) fn bench_alloc(env: &Env) -> Result<Section> {
    let bin = build_loop(env)?;
    let runs = env.args.runs as usize;
    let mut section = Section::new(Benchmark::ProfileAlloc);
    md!(
        section.body,
        "`alloc-sites --loop {PAIRS} T` (tests/programs/alloc-sites.c, gcc -O2 without frame pointers): T threads each run {PAIRS} malloc(64)/free pairs, timed by the program itself once the tracer has attached. Rounds rotate the variants; overhead is ns per pair above the same round's untraced run. bpftrace: `{}` with `-p PID`. The empty-uprobe variants are bpftrace with empty programs at its own probe points (the functions' entries): the traps alone. memtrace probes glibc's free past its NULL check, where the kernel emulates the instruction instead of single-stepping it.\n",
        Variant::Bpftrace.bpftrace("LIBC").unwrap_or_default()
    );
    for threads in [1u32, 2] {
        // ns per pair by variant, one per round (None where a run failed).
        let mut ns: [Vec<f64>; N] = Default::default();
        let mut overhead: [Vec<f64>; N] = Default::default();
        let mut failed: [Option<String>; N] = Default::default();
        for round in 0..runs {
            let mut this_round = [None; N];
            for i in 0..VARIANTS.len() {
                let variant = VARIANTS[(i + round) % VARIANTS.len()];
                let v = variant as usize;
                if failed[v].is_some() {
                    continue;
                }
                match run_variant(env, &bin, threads, variant) {
                    Ok(value) => {
                        say(format!(
                            "{threads} thread(s), round {}/{runs}, {variant:?}: {value:.1} ns/pair",
                            round + 1
                        ));
                        this_round[v] = Some(value);
                        ns[v].push(value);
                    }
                    Err(err) => {
                        say(format!("{variant:?} failed: {err:#}"));
                        failed[v] = Some(format!("{err:#}"));
                    }
                }
            }
            if let Some(base) = this_round[Variant::Untraced as usize] {
                for v in 1..N {
                    if let Some(value) = this_round[v] {
                        overhead[v].push(value - base);
                    }
                }
            }
        }
        md!(
            section.body,
            "\n**{threads} thread(s)** ({runs} rounds; median [min–max]):\n"
        );
        md!(
            section.body,
            "| variant | ns per malloc/free pair | overhead, ns per pair |"
        );
        md!(section.body, "|---|---|---|");
        for variant in VARIANTS {
            let v = variant as usize;
            let shown = match &failed[v] {
                Some(err) => format!("not run: {err}"),
                None => fmt_summary(summarize(&ns[v]), 1, ""),
            };
            let over = if variant == Variant::Untraced {
                "—".to_owned()
            } else {
                fmt_summary(summarize(&overhead[v]), 1, "")
            };
            md!(section.body, "| {} | {shown} | {over} |", variant.label());
        }
        let median = |v: Variant| summarize(&overhead[v as usize]).map(|s| s.median);
        let figure = format!("unsampled overhead vs bpftrace's, {threads} thread(s)");
        section.verdicts.push(
            match (median(Variant::Unsampled), median(Variant::Bpftrace)) {
                (Some(ours), Some(theirs)) if theirs > 0.0 => Verdict::new(
                    &figure,
                    format!("{ours:.0} vs {theirs:.0} ns/pair ({:.2}×)", ours / theirs),
                    "≤ 0.5×",
                    Status::of(ours <= theirs / 2.0),
                ),
                _ => Verdict::new(&figure, "—".to_owned(), "≤ 0.5×", Status::NotRun),
            },
        );
        for (variant, figure) in [
            (
                Variant::EmptyEntryProbes,
                "empty uprobes at malloc's and free's entries",
            ),
            (
                Variant::EmptyWithReturn,
                "empty uprobes at malloc's entry and return and free's entry",
            ),
            (Variant::Sampled, "sampled overhead"),
            (
                Variant::SitesOnly,
                "sites-only overhead (--duty-cycle 100%)",
            ),
        ] {
            if let Some(ns) = median(variant) {
                section.verdicts.push(Verdict::new(
                    &format!("{figure}, {threads} thread(s)"),
                    format!("{ns:.0} ns/pair"),
                    "—",
                    Status::Info,
                ));
            }
        }
    }
    redis_section(env, runs, &mut section);
    Ok(section)
}

const REDIS_PORT: &str = "16391";

/// How Redis is profiled in a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RedisVariant {
    Untraced,
    Sampled,
    SitesOnly,
    DutyCycle,
}

const REDIS_VARIANTS: [RedisVariant; 4] = [
    RedisVariant::Untraced,
    RedisVariant::Sampled,
    RedisVariant::SitesOnly,
    RedisVariant::DutyCycle,
];

impl RedisVariant {
    fn label(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::Sampled => "`profile --alloc` (sampled: sites, in use, leaks)",
            Self::SitesOnly => "`profile --alloc --duty-cycle 100%` (sites only, always on)",
            Self::DutyCycle => "`profile --alloc --duty-cycle 5%` (sites only, 200 ms bursts)",
        }
    }

    /// The profiler's arguments, or `None` untraced.
    fn args(self) -> Option<&'static [&'static str]> {
        match self {
            Self::Untraced => None,
            Self::Sampled => Some(&[]),
            Self::SitesOnly => Some(&["--duty-cycle", "100%"]),
            Self::DutyCycle => Some(&["--duty-cycle", "5%"]),
        }
    }
}

/// ops/s of one `redis-benchmark` run against a fresh redis-server, profiled as `variant` says:
/// the mean of SET's and GET's.
fn redis_ops(env: &Env, variant: RedisVariant) -> Result<f64> {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", REDIS_PORT, "--save", "", "--appendonly", "no"]);
    env.note(&cmd);
    let (mut redis, _) = Proc::spawn(env, "redis-alloc", cmd, Stop::Signal(libc::SIGTERM), false)?;
    let started = Instant::now();
    while !Command::new("redis-cli")
        .args(["-p", REDIS_PORT, "ping"])
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
    {
        if started.elapsed() > READY_TIMEOUT || !redis.alive() {
            bail!("redis-server not answering: {}", redis.log_tail());
        }
        thread::sleep(Duration::from_millis(50));
    }
    let mut tracer = match variant.args() {
        Some(args) => Some(spawn_profiler(env, redis.pid(), "alloc-redis", args)?),
        None => None,
    };
    let mut bench = Command::new("redis-benchmark");
    bench.args([
        "-p", REDIS_PORT, "-t", "set,get", "-n", "200000", "-r", "100000", "-d", "256", "-q",
        "--csv",
    ]);
    env.note(&bench);
    let out = bench
        .output()
        .context("redis-benchmark (apt-get install redis-tools)")?;
    if let Some(tracer) = tracer.as_mut() {
        tracer.stop(STOP_GRACE)?;
    }
    redis.stop(STOP_GRACE)?;
    if !out.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // "SET","98039.22",… and "GET",…: the second column is requests per second.
    let text = String::from_utf8_lossy(&out.stdout);
    let rps: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("\"SET\"") || l.starts_with("\"GET\""))
        .filter_map(|l| l.split(',').nth(1)?.trim_matches('"').parse().ok())
        .collect();
    if rps.len() != 2 {
        bail!("redis-benchmark printed {text:?}");
    }
    Ok(rps.iter().sum::<f64>() / 2.0)
}

fn redis_section(env: &Env, runs: usize, section: &mut Section) {
    const M: usize = REDIS_VARIANTS.len();
    let mut ops: [Vec<f64>; M] = Default::default();
    let mut drop_pct: [Vec<f64>; M] = Default::default();
    let mut error = None;
    for round in 0..runs {
        let mut this_round = [None; M];
        for i in 0..M {
            let variant = REDIS_VARIANTS[(i + round) % M];
            match redis_ops(env, variant) {
                Ok(value) => {
                    say(format!(
                        "redis round {}/{runs}, {variant:?}: {value:.0} ops/s",
                        round + 1
                    ));
                    this_round[variant as usize] = Some(value);
                    ops[variant as usize].push(value);
                }
                Err(err) => error = Some(format!("{variant:?}: {err:#}")),
            }
        }
        if let Some(base) = this_round[RedisVariant::Untraced as usize] {
            for (v, value) in this_round.iter().enumerate().skip(1) {
                if let Some(value) = value {
                    drop_pct[v].push((base - value) / base * 100.0);
                }
            }
        }
    }
    md!(
        section.body,
        "\n**Redis** (`redis-benchmark -t set,get -n 200000 -r 100000 -d 256`, mean of SET and GET ops/s; {runs} rounds, the variants' order rotating):\n"
    );
    md!(section.body, "| variant | ops/s | ops/s lost |");
    md!(section.body, "|---|---|---|");
    for variant in REDIS_VARIANTS {
        let v = variant as usize;
        let lost = if variant == RedisVariant::Untraced {
            "—".to_owned()
        } else {
            fmt_summary(summarize(&drop_pct[v]), 1, " %")
        };
        md!(
            section.body,
            "| {} | {} | {lost} |",
            variant.label(),
            fmt_summary(summarize(&ops[v]), 0, "")
        );
    }
    if let Some(err) = &error {
        md!(section.body, "\nnot every run completed: {err}");
    }
    for (variant, figure, target) in [
        (
            RedisVariant::Sampled,
            "redis-benchmark ops/s lost, sampled",
            true,
        ),
        (
            RedisVariant::DutyCycle,
            "redis-benchmark ops/s lost, --duty-cycle 5%",
            true,
        ),
        (
            RedisVariant::SitesOnly,
            "redis-benchmark ops/s lost, --duty-cycle 100%",
            false,
        ),
    ] {
        let wanted = if target { "≤ 10 %" } else { "—" };
        section
            .verdicts
            .push(match summarize(&drop_pct[variant as usize]) {
                Some(s) => Verdict::new(
                    figure,
                    format!("{:.1} %", s.median),
                    wanted,
                    if target {
                        Status::of(s.median <= 10.0)
                    } else {
                        Status::Info
                    },
                ),
                None => Verdict::new(figure, "—".to_owned(), wanted, Status::NotRun),
            });
    }
}
