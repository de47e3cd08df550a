//! Benchmark 14: what `memtrace profile` (growth sites) costs on benchmark 1's fault loop. The
//! perf software event `PAGE_FAULTS` counts every fault (in the kernel's fault path, whether or
//! not a program is attached) and runs the sampling program once per `--fault-period` faults of
//! a CPU: a stack walk and a hash update. Untraced and under `memtrace profile --all` at several
//! periods (`--all`: every process is sampled, the loop's included, the dearest target), in
//! interleaved rounds, each against the untraced run of its round; the default period (1000) is
//! the one the target applies to, the others show how the cost scales and why it was chosen.
use anyhow::{Result, bail};

use super::{
    Benchmark,
    faults::faults_spec,
    harness::{Env, Proc, READY_TIMEOUT, SETTLE, STOP_GRACE, Stop, check_interrupt, pause},
    procfs::cpu_ns,
    report::{Section, Status, Verdict, md},
    stats::{fmt_pct, fmt_summary, summarize},
};

/// `memtrace profile`'s default `--fault-period` (memtrace/src/cli/profile.rs).
const DEFAULT_PERIOD: u64 = 1000;
/// The periods measured, the default among them.
const PERIODS: [u64; 3] = [100, DEFAULT_PERIOD, 10_000];
/// Target: the default period's overhead on the fault loop, in %.
const TARGET_PCT: f64 = 2.0;
/// What `memtrace profile` prints once its programs are attached.
const READY_MARKER: &str = "memtrace: profiling";

/// Start `memtrace profile --all --fault-period PERIOD` and wait until it is attached.
fn start_profile(env: &Env, period: u64, round: usize) -> Result<Proc> {
    let output = env.log_path(&format!("profile-sites-{period}-{round}.json"));
    let mut cmd = std::process::Command::new(&env.bins.memtrace);
    cmd.args([
        "profile",
        "--all",
        "--fault-period",
        &period.to_string(),
        "--format",
        "json",
        "-o",
    ])
    .arg(&output)
    .env("PATH", &env.ctx.path);
    env.note(&cmd);
    let started = std::time::Instant::now();
    let (mut p, _) = Proc::spawn(
        env,
        "memtrace-profile",
        cmd,
        Stop::Signal(libc::SIGINT),
        false,
    )?;
    loop {
        if p.log_text().contains(READY_MARKER) {
            return Ok(p);
        }
        if !p.alive() {
            bail!(
                "memtrace profile exited before it was ready: {}",
                p.log_tail()
            );
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!(
                "memtrace profile not ready after {READY_TIMEOUT:?}: {}",
                p.log_tail()
            );
        }
        check_interrupt()?;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

pub(super) fn bench_profile_sites(env: &Env) -> Result<Section> {
    let spec = faults_spec(env.bins.faults.clone(), env.args.fault_iters);
    // (wall, CPU) ns per fault: wall is the figure, as in benchmark 1; the thread's CPU time,
    // immune to preemption by other processes, beside it.
    let run = || -> Result<(f64, f64)> {
        let run = env.run_workload(env.workload(&spec.bin, &spec.args, true))?;
        Ok((run.num(spec.wall_key)?, run.num(spec.cpu_key)?))
    };
    let mut untraced = Vec::new();
    let mut traced: Vec<Vec<(f64, f64)>> = vec![Vec::new(); PERIODS.len()];
    // memtrace's own CPU during the default period's runs, in % of one core.
    let mut memtrace_cpu = Vec::new();
    run()?; // warm-up, discarded
    for round in 0..env.args.runs as usize {
        // Rotate the order so drift does not favour one variant.
        let order: Vec<usize> = (0..=PERIODS.len())
            .map(|i| (i + round) % (PERIODS.len() + 1))
            .collect();
        for variant in order {
            check_interrupt()?;
            let Some(&period) = PERIODS.get(variant) else {
                untraced.push(run()?);
                continue;
            };
            let mut profiler = start_profile(env, period, round)?;
            pause(SETTLE)?;
            let t0 = cpu_ns(profiler.pid())?;
            let started = std::time::Instant::now();
            let sample = run()?;
            let used = cpu_ns(profiler.pid())?.saturating_sub(t0);
            if period == DEFAULT_PERIOD {
                memtrace_cpu.push(used as f64 / 1e9 / started.elapsed().as_secs_f64() * 100.0);
            }
            if !profiler.alive() {
                bail!(
                    "memtrace profile died during the run: {}",
                    profiler.log_tail()
                );
            }
            profiler.stop(STOP_GRACE)?;
            traced[variant].push(sample);
        }
    }

    let mut section = Section::new(Benchmark::ProfileSites);
    md!(
        section.body,
        "`bench-faults` ({} × 128 MiB, one minor fault per page) untraced and under `memtrace profile --all --fault-period N` (page faults sampled by a perf software event, counted in the kernel by stack; every process sampled, the loop's included); {} interleaved rounds, overhead = median over rounds of (traced − untraced of the same round) / untraced. The target applies to the default period, {DEFAULT_PERIOD}.\n",
        env.args.fault_iters,
        env.args.runs
    );
    let wall = |samples: &[(f64, f64)]| samples.iter().map(|s| s.0).collect::<Vec<f64>>();
    let cpu = |samples: &[(f64, f64)]| samples.iter().map(|s| s.1).collect::<Vec<f64>>();
    // Per round, traced against the untraced run of the same round, in %.
    let pairwise = |traced: &[f64], untraced: &[f64]| -> Vec<f64> {
        traced
            .iter()
            .zip(untraced)
            .map(|(t, u)| (t / u - 1.0) * 100.0)
            .collect()
    };
    md!(
        section.body,
        "| Variant | ns/fault (wall), median (min–max) | overhead vs untraced, pairwise | CPU ns/fault | CPU overhead, pairwise |"
    );
    md!(section.body, "|---|---|---|---|---|");
    md!(
        section.body,
        "| untraced | {} | — | {} | — |",
        fmt_summary(summarize(&wall(&untraced)), 1, ""),
        fmt_summary(summarize(&cpu(&untraced)), 1, "")
    );
    for (period, samples) in PERIODS.iter().zip(&traced) {
        let overhead = summarize(&pairwise(&wall(samples), &wall(&untraced)));
        let cpu_overhead = summarize(&pairwise(&cpu(samples), &cpu(&untraced)));
        md!(
            section.body,
            "| `--fault-period {period}`{} | {} | {} | {} | {} |",
            if *period == DEFAULT_PERIOD {
                " (default)"
            } else {
                ""
            },
            fmt_summary(summarize(&wall(samples)), 1, ""),
            fmt_pct(overhead),
            fmt_summary(summarize(&cpu(samples)), 1, ""),
            fmt_pct(cpu_overhead)
        );
        let figure = format!("profile sites: fault-loop overhead at period {period}");
        let verdict = match overhead {
            Some(o) if *period == DEFAULT_PERIOD => Verdict::new(
                &figure,
                format!("{:+.2}%", o.median),
                "≤ 2%",
                Status::of(o.median <= TARGET_PCT),
            ),
            Some(o) => Verdict::new(
                &figure,
                format!("{:+.2}%", o.median),
                "(comparison)",
                Status::Info,
            ),
            None => Verdict::new(&figure, "no complete rounds".into(), "≤ 2%", Status::NotRun),
        };
        section.verdicts.push(verdict);
    }
    md!(
        section.body,
        "\nmemtrace's own CPU at the default period: {} of one core (it reads its maps only to report).\n",
        fmt_summary(summarize(&memtrace_cpu), 2, "%")
    );
    Ok(section)
}
