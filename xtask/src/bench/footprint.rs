//! Benchmark 4: the daemon's memory and CPU with 1,000 and 10,000 live processes (the 10,000 run
//! also serves benchmark 5).
use std::{
    io::{BufRead as _, BufReader},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Benchmark,
    harness::{Env, Proc, Running, STOP_GRACE, Stop, Sysctl, check_interrupt, pause},
    procfs::{cpu_ns, process_count, read_trimmed, status_kib, thread_count},
    report::{Section, Status, Verdict, commands_block, daemon_missing, md},
    scrape::{SCRAPE, ScrapeResult, render_scrape, scrape, tracked_processes},
    stats::{fmt_summary, summarize},
};
use crate::say;

pub(super) const PID_MAX_SYSCTL: &str = "/proc/sys/kernel/pid_max";

/// `bench-mmap --idle N`: N children that each dirtied a few pages, held until dropped.
pub(super) fn spawn_population(env: &Env, n: usize) -> Result<Proc> {
    let mut cmd = Command::new(&env.bins.mmap);
    cmd.args(["--idle", &n.to_string(), "--pages", "4"])
        .env("PATH", &env.ctx.path);
    env.note(&cmd);
    let (mut p, stdout) = Proc::spawn(env, "population", cmd, Stop::CloseStdin, true)?;
    let mut line = String::new();
    BufReader::new(stdout.context("no stdout pipe")?).read_line(&mut line)?;
    check_interrupt()?;
    let ready: usize = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("bench-mmap --idle: `{}`: {}", line.trim(), p.log_tail()))?;
    if ready < n {
        bail!(
            "only {ready} of {n} idle processes started: {}",
            p.log_tail()
        );
    }
    if !p.alive() {
        bail!("bench-mmap --idle exited: {}", p.log_tail());
    }
    Ok(p)
}

/// Raise pid_max if N more processes would not fit comfortably (restored on drop).
pub(super) fn pid_room(n: usize) -> Result<Option<Sysctl>> {
    let pid_max: usize = read_trimmed(PID_MAX_SYSCTL).parse().unwrap_or(32768);
    let needed = thread_count() + n + 4096;
    if needed <= pid_max {
        return Ok(None);
    }
    Sysctl::set(PID_MAX_SYSCTL, &needed.min(4 << 20).to_string()).map(Some)
}

pub(super) struct Footprint {
    pub(super) n: usize,
    pub(super) processes: usize,
    /// `memtrace_tracked_processes` from /metrics.
    pub(super) tracked: Option<f64>,
    pub(super) rss_kib: u64,
    pub(super) hwm_kib: u64,
    pub(super) quiet_cpu_pct: f64,
}

/// Daemon up, N idle processes spawned after it (so it sees each one fault), settle, quiet window.
pub(super) fn footprint(
    env: &Env,
    n: usize,
    quiet: bool,
    then_scrape: bool,
) -> Result<(Option<Footprint>, Vec<ScrapeResult>)> {
    let _pid_max = pid_room(n)?;
    let (mut daemon, _) = env.start_memtrace()?;
    let population = spawn_population(env, n)?;
    say(format!(
        "{n} idle processes up; settling 5 s before measuring"
    ));
    pause(Duration::from_secs(5))?;
    let pid = daemon.pid();
    let mut result = None;
    if quiet {
        let t0 = cpu_ns(pid)?;
        let started = Instant::now();
        pause(Duration::from_secs(env.args.quiet_secs))?;
        let used_ns = cpu_ns(pid)?.saturating_sub(t0);
        result = Some(Footprint {
            n,
            processes: process_count(),
            tracked: tracked_processes(env),
            rss_kib: status_kib(pid, "VmRSS")?,
            hwm_kib: status_kib(pid, "VmHWM")?,
            quiet_cpu_pct: used_ns as f64 / 1e9 / started.elapsed().as_secs_f64() * 100.0,
        });
    }
    let mut scrapes = Vec::new();
    if then_scrape {
        for path in ["/metrics", "/api/v1/snapshot"] {
            say(format!("{} × GET {path}", env.args.requests));
            scrapes.push(scrape(env, path)?);
        }
    }
    if !daemon.alive() {
        bail!("the daemon died: {}", daemon.log_tail());
    }
    drop(population);
    daemon.stop(STOP_GRACE)?;
    Ok((result, scrapes))
}

/// Figures and targets of benchmark 4.
pub(super) const FOOT: &[(&str, &str)] = &[
    ("RSS @1k processes", "≤ 32 MiB"),
    ("RSS @10k processes", "≤ 64 MiB"),
    ("CPU quiet", "≤ 2%"),
    ("CPU during benchmark 1", "≤ 5%"),
];

pub(super) fn bench_footprint_and_scrape(
    env: &Env,
    do_footprint: bool,
    do_scrape: bool,
) -> Vec<Section> {
    let mut sections = Vec::new();
    if env.running != Running::Daemon {
        if do_footprint {
            sections.push(daemon_missing(Benchmark::Footprint, FOOT));
        }
        if do_scrape {
            sections.push(daemon_missing(Benchmark::Scrape, SCRAPE));
        }
        return sections;
    }
    let mut rows = Vec::new();
    let mut scrapes = Vec::new();
    let mut error = None;
    let ambient = process_count();
    if do_footprint {
        match footprint(env, 1_000, true, false) {
            Ok((row, _)) => rows.extend(row),
            Err(e) => error = Some(format!("{e:#}")),
        }
    }
    if error.is_none() {
        match footprint(env, 10_000, do_footprint, do_scrape) {
            Ok((row, s)) => {
                rows.extend(row);
                scrapes = s;
            }
            Err(e) => error = Some(format!("{e:#}")),
        }
    }
    let results = FootprintResults {
        ambient,
        rows,
        scrapes,
        error,
        commands: env.take_commands(),
        during_faults: env.cpu_during_faults.borrow().clone(),
    };
    sections.extend(render_footprint_and_scrape(
        &results,
        do_footprint,
        do_scrape,
        env.args.quiet_secs,
        env.args.requests,
    ));
    sections
}

/// What benchmarks 4 and 5 measured, for [`render_footprint_and_scrape`].
pub(super) struct FootprintResults {
    /// Processes on the system before the benchmark.
    pub(super) ambient: usize,
    pub(super) rows: Vec<Footprint>,
    pub(super) scrapes: Vec<ScrapeResult>,
    pub(super) error: Option<String>,
    pub(super) commands: Vec<String>,
    /// memtrace's CPU while benchmark 1's workload ran (% of one core).
    pub(super) during_faults: Vec<f64>,
}

/// Benchmarks 4 and 5's sections (5 from 4's 10,000-process run).
pub(super) fn render_footprint_and_scrape(
    results: &FootprintResults,
    do_footprint: bool,
    do_scrape: bool,
    quiet_secs: u64,
    requests: u32,
) -> Vec<Section> {
    let mut sections = Vec::new();
    if do_footprint {
        sections.push(render_footprint(results, quiet_secs));
    }
    if do_scrape {
        sections.push(render_scrape(results, do_footprint, requests));
    }
    sections
}

/// Benchmark 4's section; it shows the commands of both benchmarks.
fn render_footprint(results: &FootprintResults, quiet_secs: u64) -> Section {
    let FootprintResults {
        ambient,
        rows,
        error,
        commands,
        during_faults,
        ..
    } = results;
    let mut s = Section::new(Benchmark::Footprint);
    md!(
        s.body,
        "The daemon is started, then `bench-mmap --idle N` forks N children that each dirty 4 pages and sleep (so the daemon sees every one of them fault); after 5 s of settling, CPU is the daemon's CPU time (sum of its threads' schedstat run time) over a {} s quiet window (% of one core) and RSS is VmRSS (VmHWM = peak). {ambient} processes were running before the benchmark.\n",
        quiet_secs
    );
    commands_block(&mut s.body, commands);
    md!(
        s.body,
        "| Idle processes spawned | processes on the system | tracked by the daemon | VmRSS | VmHWM | CPU, quiet |"
    );
    md!(s.body, "|---|---|---|---|---|---|");
    for r in rows {
        md!(
            s.body,
            "| {} | {} | {} | {:.1} MiB | {:.1} MiB | {:.2}% |",
            r.n,
            r.processes,
            r.tracked.map_or("?".to_owned(), |t| format!("{t:.0}")),
            r.rss_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0,
            r.quiet_cpu_pct
        );
    }
    let during = summarize(during_faults);
    md!(
        s.body,
        "\nCPU during benchmark 1 (while bench-faults ran, % of one core): {}.\n",
        match during {
            Some(d) => fmt_summary(Some(d), 2, "%"),
            None => "not measured (benchmark 1 not run or memtrace failed there)".into(),
        }
    );
    if let Some(e) = &error {
        md!(s.body, "Error: {e}\n");
    }
    let rss =
        |n: usize, limit: f64, figure: &str, target: &str| match rows.iter().find(|r| r.n == n) {
            Some(r) => Verdict::new(
                figure,
                format!("{:.1} MiB", r.rss_kib as f64 / 1024.0),
                target,
                Status::of(r.rss_kib as f64 / 1024.0 <= limit),
            ),
            None => Verdict::new(
                figure,
                format!("not run: {}", error.clone().unwrap_or_default()),
                target,
                Status::NotRun,
            ),
        };
    s.verdicts.push(rss(1_000, 32.0, FOOT[0].0, FOOT[0].1));
    s.verdicts.push(rss(10_000, 64.0, FOOT[1].0, FOOT[1].1));
    let quiet = rows
        .iter()
        .map(|r| r.quiet_cpu_pct)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    s.verdicts.push(match quiet {
        Some(q) => Verdict::new(
            FOOT[2].0,
            format!("{q:.2}% (worst of 1k/10k)"),
            FOOT[2].1,
            Status::of(q <= 2.0),
        ),
        None => Verdict::new(FOOT[2].0, "not run".into(), FOOT[2].1, Status::NotRun),
    });
    s.verdicts.push(match during {
        Some(d) => Verdict::new(
            FOOT[3].0,
            format!("{:.2}% (median)", d.median),
            FOOT[3].1,
            Status::of(d.median <= 5.0),
        ),
        None => Verdict::new(FOOT[3].0, "not measured".into(), FOOT[3].1, Status::NotRun),
    });
    s
}
