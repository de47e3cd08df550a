//! Benchmarks 1 and 2: overhead on a workload, untraced | memtrace | bpftrace (| floor | opt-in),
//! interleaved round by round, and the in-kernel cost of memtrace's programs.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use super::{
    harness::{
        Env, SETTLE, STOP_GRACE, Sysctl, WorkloadRun, check_interrupt, other_tracers, pause,
    },
    procfs::{cpu_ns, prog_name, prog_stats, prog_type_name},
    report::{Section, Status, Verdict, md},
    stats::{fmt_pct, fmt_summary, summarize},
};
use crate::say;

pub(super) const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Variant {
    Untraced,
    Memtrace,
    Bpftrace,
    /// Empty programs on memtrace's hooks ([`OverheadSpec::floor`]).
    Floor,
    /// The daemon with [`OverheadSpec::memtrace_extra`] (its opt-in hooks).
    MemtraceExtra,
}

pub(super) const VARIANTS: [Variant; 5] = [
    Variant::Untraced,
    Variant::Memtrace,
    Variant::Bpftrace,
    Variant::Floor,
    Variant::MemtraceExtra,
];

#[derive(Clone, Copy)]
pub(super) struct Sample {
    pub(super) wall: f64,
    pub(super) cpu: f64,
}

pub(super) struct OverheadSpec {
    pub(super) bin: PathBuf,
    pub(super) args: Vec<String>,
    /// JSON keys of the workload's result: wall and CPU time per operation.
    pub(super) wall_key: &'static str,
    pub(super) cpu_key: &'static str,
    pub(super) unit: &'static str,
    pub(super) bpftrace: &'static str,
    /// A bpftrace program with empty actions on the hooks memtrace runs for this workload, to
    /// measure the cost of the attach points themselves in the same run.
    pub(super) floor: Option<&'static str>,
    /// Daemon flags of an opt-in variant measured beside the default one (not the target's).
    pub(super) memtrace_extra: Option<&'static [&'static str]>,
    /// Target for memtrace's pairwise overhead, in %.
    pub(super) target_pct: f64,
    /// Target for memtrace's overhead as a fraction of bpftrace's.
    pub(super) target_frac: f64,
    pub(super) target_frac_text: &'static str,
    pub(super) measure_cpu: bool,
}

pub(super) fn run_variant(
    env: &Env,
    spec: &OverheadSpec,
    v: Variant,
) -> Result<(Sample, Option<f64>)> {
    let workload = || env.workload(&spec.bin, &spec.args, true);
    let sample = |run: &WorkloadRun| -> Result<Sample> {
        Ok(Sample {
            wall: run.num(spec.wall_key)?,
            cpu: run.num(spec.cpu_key)?,
        })
    };
    match v {
        Variant::Untraced => Ok((sample(&env.run_workload(workload())?)?, None)),
        Variant::Memtrace | Variant::MemtraceExtra => {
            let extra = match v {
                Variant::MemtraceExtra => spec
                    .memtrace_extra
                    .context("no opt-in variant for this benchmark")?,
                _ => &[],
            };
            let (mut memtrace, _) = env.start_memtrace_with(extra)?;
            pause(SETTLE)?;
            let t0 = cpu_ns(memtrace.pid())?;
            let run = env.run_workload(workload())?;
            let used_ns = cpu_ns(memtrace.pid())?.saturating_sub(t0);
            if !memtrace.alive() {
                bail!("memtrace died during the run: {}", memtrace.log_tail());
            }
            memtrace.stop(STOP_GRACE)?;
            let cpu_pct = used_ns as f64 / 1e9 / run.wall.as_secs_f64() * 100.0;
            Ok((sample(&run)?, (v == Variant::Memtrace).then_some(cpu_pct)))
        }
        Variant::Bpftrace | Variant::Floor => {
            let program = match v {
                Variant::Floor => spec.floor.context("no floor program for this benchmark")?,
                _ => spec.bpftrace,
            };
            let mut bpftrace = env.start_bpftrace(program)?;
            pause(SETTLE)?;
            let run = env.run_workload(workload())?;
            if !bpftrace.alive() {
                bail!("bpftrace died during the run: {}", bpftrace.log_tail());
            }
            bpftrace.stop(STOP_GRACE)?;
            Ok((sample(&run)?, None))
        }
    }
}

pub(super) fn measure_overhead(env: &Env, spec: &OverheadSpec) -> Result<OverheadResults> {
    let runs = env.args.runs as usize;
    let variants: Vec<Variant> = VARIANTS
        .into_iter()
        .filter(|&v| match v {
            Variant::Floor => spec.floor.is_some(),
            Variant::MemtraceExtra => spec.memtrace_extra.is_some(),
            _ => true,
        })
        .collect();
    let mut samples: [Vec<Option<Sample>>; 5] = Default::default();
    let mut failed: [Option<String>; 5] = Default::default();
    let mut memtrace_cpu = Vec::new();
    // Tracers of other people running during a round's untraced run skew that round.
    let mut foreign: Vec<Vec<String>> = vec![Vec::new(); runs];

    say("warm-up run (discarded)");
    env.run_workload(env.workload(&spec.bin, &spec.args, true))?;
    for round in 0..runs {
        let order: Vec<Variant> = (0..variants.len())
            .map(|i| variants[(i + round) % variants.len()])
            .collect();
        for v in order {
            let i = v as usize;
            if failed[i].is_some() {
                samples[i].push(None);
                continue;
            }
            check_interrupt()?;
            if v == Variant::Untraced {
                foreign[round] = other_tracers();
            }
            match run_variant(env, spec, v) {
                Ok((s, cpu)) => {
                    say(format!(
                        "round {}/{runs} {v:?}: {:.1} {} (cpu {:.1})",
                        round + 1,
                        s.wall,
                        spec.unit,
                        s.cpu
                    ));
                    samples[i].push(Some(s));
                    memtrace_cpu.extend(cpu);
                }
                Err(e) => {
                    check_interrupt()?;
                    say(format!("{v:?} failed, skipped from now on: {e:#}"));
                    failed[i] = Some(format!("{e:#}"));
                    samples[i].push(None);
                }
            }
        }
    }
    if spec.measure_cpu {
        env.cpu_during_faults.borrow_mut().extend(&memtrace_cpu);
    }

    let labels = [
        "untraced".to_owned(),
        env.running_label().to_owned(),
        "bpftrace".to_owned(),
        "floor: empty programs on memtrace's tracepoints".to_owned(),
        format!(
            "{} {}",
            env.running_label(),
            spec.memtrace_extra.unwrap_or_default().join(" ")
        ),
    ];

    // In-kernel cost per program (of the opt-in variant where there is one: its programs are
    // the default's and more).
    let costs = failed[1].is_none().then(|| {
        let extra = spec.memtrace_extra.unwrap_or(&[]);
        program_costs(env, env.workload(&spec.bin, &spec.args, true), extra)
            .map_err(|e| format!("{e:#}"))
    });
    Ok(OverheadResults {
        runs,
        variants,
        labels,
        samples,
        failed,
        memtrace_cpu,
        foreign,
        costs,
    })
}

/// What one overhead benchmark measured, for [`render_overhead`].
pub(super) struct OverheadResults {
    pub(super) runs: usize,
    pub(super) variants: Vec<Variant>,
    pub(super) labels: [String; 5],
    pub(super) samples: [Vec<Option<Sample>>; 5],
    pub(super) failed: [Option<String>; 5],
    pub(super) memtrace_cpu: Vec<f64>,
    /// Other people's tracers seen during each round's untraced run.
    pub(super) foreign: Vec<Vec<String>>,
    /// `None` when memtrace failed (nothing to measure); `Err` when the measurement did.
    pub(super) costs: Option<Result<Vec<ProgCost>, String>>,
}

pub(super) fn render_overhead(
    spec: &OverheadSpec,
    results: &OverheadResults,
    section: &mut Section,
) {
    let OverheadResults {
        runs,
        variants,
        labels,
        samples,
        failed,
        memtrace_cpu,
        foreign,
        costs,
    } = results;
    let runs = *runs;
    let column = |v: Variant, f: fn(&Sample) -> f64| -> Vec<f64> {
        samples[v as usize].iter().flatten().map(f).collect()
    };
    // Pairwise: each traced run against the untraced run of the same round.
    let pairwise = |v: Variant, f: fn(&Sample) -> f64| -> Vec<f64> {
        (0..runs)
            .filter_map(|r| {
                // (A variant this benchmark does not run has no samples at all.)
                let u = (*samples[Variant::Untraced as usize].get(r)?)?;
                let t = (*samples[v as usize].get(r)?)?;
                Some((f(&t) / f(&u) - 1.0) * 100.0)
            })
            .collect()
    };
    let wall = |s: &Sample| s.wall;
    let cpu = |s: &Sample| s.cpu;
    let body = &mut section.body;
    md!(
        body,
        "| Variant | {u} (wall), median (min–max) | overhead vs untraced, pairwise | CPU {u} | CPU overhead, pairwise | runs |",
        u = spec.unit
    );
    md!(body, "|---|---|---|---|---|---|");
    for &v in variants {
        let i = v as usize;
        if let Some(e) = &failed[i]
            && samples[i].iter().all(Option::is_none)
        {
            md!(body, "| {} | not run: {e} | | | | 0 |", labels[i]);
            continue;
        }
        let (oh, cpu_oh) = if v == Variant::Untraced {
            ("—".to_owned(), "—".to_owned())
        } else {
            (
                fmt_pct(summarize(&pairwise(v, wall))),
                fmt_pct(summarize(&pairwise(v, cpu))),
            )
        };
        md!(
            body,
            "| {} | {} | {oh} | {} | {cpu_oh} | {} |",
            labels[i],
            fmt_summary(summarize(&column(v, wall)), 1, ""),
            fmt_summary(summarize(&column(v, cpu)), 1, ""),
            column(v, wall).len()
        );
    }
    md!(body);

    // memtrace's overhead as a fraction of bpftrace's, round by round.
    let fractions: Vec<f64> = (0..runs)
        .filter_map(|r| {
            let u = samples[0][r]?.wall;
            let m = samples[1][r]?.wall;
            let b = samples[2][r]?.wall;
            (b > u).then(|| (m - u) / (b - u))
        })
        .collect();
    let frac = summarize(&fractions);
    if let Some(f) = frac {
        md!(
            body,
            "memtrace's overhead as a fraction of bpftrace's (wall, pairwise per round): **{:.2}** ({:.2}…{:.2}, {} rounds).\n",
            f.median,
            f.min,
            f.max,
            f.n
        );
    }
    if let (Some(floor), Some(ours)) = (
        summarize(&pairwise(Variant::Floor, wall)),
        summarize(&pairwise(Variant::Memtrace, wall)),
    ) {
        md!(
            body,
            "Attach floor: empty programs on the tracepoints of the per-call hooks cost **{:+.1}%** in this run (median pairwise). Any program there pays it: attaching a syscall tracepoint sends every syscall through the kernel's slow path and the tracepoint's dispatch. {}\n",
            floor.median,
            match summarize(&pairwise(Variant::MemtraceExtra, wall)) {
                Some(extra) => format!(
                    "With `{}` (those hooks, opt-in) memtrace costs {:+.1}%: its programs add {:+.1} points to the floor. By default it attaches none of them ({:+.1}%).",
                    spec.memtrace_extra.unwrap_or_default().join(" "),
                    extra.median,
                    extra.median - floor.median,
                    ours.median
                ),
                None => format!(
                    "memtrace's own programs add {:+.1} points on top.",
                    ours.median - floor.median
                ),
            }
        );
    }
    if let Some(c) = summarize(memtrace_cpu) {
        md!(
            body,
            "{}'s own CPU while the workload ran (CPU time of its threads / wall, % of one core): {}.\n",
            labels[1],
            fmt_summary(Some(c), 1, "%")
        );
    }
    if let Some(u) = summarize(&column(Variant::Untraced, wall))
        && u.max / u.min - 1.0 > 0.10
    {
        md!(
            body,
            "⚠ Noisy: the untraced runs alone spread by {:.0}% (min to max); trust the pairwise ratios over absolute times, and prefer a longer run.\n",
            (u.max / u.min - 1.0) * 100.0
        );
    }

    // Raw runs, for the record.
    md!(
        body,
        "<details><summary>Per-round {} (wall / CPU); order rotates each round</summary>\n",
        spec.unit
    );
    md!(
        body,
        "| Round | {} |",
        variants
            .iter()
            .map(|&v| labels[v as usize].as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    md!(body, "|---|{}", "---|".repeat(variants.len()));
    for (r, others) in foreign.iter().enumerate() {
        let cell = |v: usize| {
            samples[v]
                .get(r)
                .copied()
                .flatten()
                .map_or("—".to_owned(), |s| {
                    format!("{:.1} / {:.1}", s.wall, s.cpu)
                })
        };
        let mark = if others.is_empty() { "" } else { " †" };
        md!(
            body,
            "| {}{mark} | {} |",
            r + 1,
            variants
                .iter()
                .map(|&v| cell(v as usize))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let mut tainted: Vec<String> = foreign.iter().flatten().cloned().collect();
    tainted.sort();
    tainted.dedup();
    if !tainted.is_empty() {
        md!(
            body,
            "\n† Someone else's tracer was running during that round's untraced run ({}): its baseline is traced too.",
            tainted.join(", ")
        );
    }
    md!(body, "\n</details>\n");

    // Verdicts.
    let oh = summarize(&pairwise(Variant::Memtrace, wall));
    section.verdicts.push(match oh {
        Some(s) => Verdict::new(
            "memtrace overhead (median pairwise, wall)",
            format!("{:+.1}%", s.median),
            &format!("≤ {}%", spec.target_pct),
            Status::of(s.median <= spec.target_pct),
        ),
        None => Verdict::new(
            "memtrace overhead",
            format!(
                "not run: {}",
                failed[1].clone().unwrap_or_else(|| "no runs".into())
            ),
            &format!("≤ {}%", spec.target_pct),
            Status::NotRun,
        ),
    });
    section.verdicts.push(match frac {
        Some(f) => Verdict::new(
            "memtrace overhead ÷ bpftrace overhead",
            format!("{:.2}", f.median),
            spec.target_frac_text,
            Status::of(f.median <= spec.target_frac),
        ),
        None => Verdict::new(
            "memtrace overhead ÷ bpftrace overhead",
            format!(
                "not run: {}",
                failed[2]
                    .clone()
                    .or(failed[1].clone())
                    .unwrap_or_else(|| "bpftrace showed no overhead".into())
            ),
            spec.target_frac_text,
            Status::NotRun,
        ),
    });

    // In-kernel cost per program (of the opt-in variant where there is one: its programs are
    // the default's and more).
    if let Some(costs) = costs {
        let label = match spec.memtrace_extra {
            Some(_) => &labels[Variant::MemtraceExtra as usize],
            None => &labels[Variant::Memtrace as usize],
        };
        match costs {
            Ok(costs) => {
                md!(
                    body,
                    "In-kernel cost of the programs of `{}` during one extra run with `kernel.bpf_stats_enabled=1` (restored afterwards; invocations are system-wide):\n",
                    label
                );
                md!(
                    body,
                    "| Program (the kernel keeps 15 characters) | Type | Invocations | ns / invocation |"
                );
                md!(body, "|---|---|---|---|");
                let mut idle = Vec::new();
                for c in costs {
                    if c.runs == 0 {
                        idle.push(c.name.clone());
                    } else {
                        md!(
                            body,
                            "| {} | {} | {} | {:.1} |",
                            c.name,
                            c.prog_type,
                            c.runs,
                            c.ns_per_run
                        );
                    }
                }
                if !idle.is_empty() {
                    md!(body, "\nNot invoked during the run: {}.", idle.join(", "));
                }
                md!(body);
            }
            Err(e) => md!(body, "In-kernel program cost: not measured: {e}\n"),
        }
    }
}

pub(super) struct ProgCost {
    pub(super) name: String,
    pub(super) prog_type: String,
    pub(super) runs: u64,
    pub(super) ns_per_run: f64,
}

/// Start memtrace, enable bpf_stats, run the workload once, read each program's cost delta.
pub(super) fn program_costs(env: &Env, workload: Command, extra: &[&str]) -> Result<Vec<ProgCost>> {
    let (mut memtrace, _) = env.start_memtrace_with(extra)?;
    pause(SETTLE)?;
    let pid = memtrace.pid();
    let (before, after) = {
        let _stats = Sysctl::set(BPF_STATS_SYSCTL, "1")?;
        let before = prog_stats(pid)?;
        env.run_workload(workload)?;
        (before, prog_stats(pid)?)
    };
    // Names while memtrace still holds the programs (ids die with it).
    let mut costs: Vec<ProgCost> = after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.id == a.id);
            let runs = a.run_cnt - b.map_or(0, |b| b.run_cnt);
            let ns = a.run_time_ns - b.map_or(0, |b| b.run_time_ns);
            ProgCost {
                name: prog_name(a.id).unwrap_or_else(|| format!("prog {}", a.id)),
                prog_type: prog_type_name(a.prog_type),
                runs,
                ns_per_run: if runs > 0 {
                    ns as f64 / runs as f64
                } else {
                    0.0
                },
            }
        })
        .collect();
    memtrace.stop(STOP_GRACE)?;
    costs.sort_by(|a, b| b.runs.cmp(&a.runs).then(a.name.cmp(&b.name)));
    Ok(costs)
}
