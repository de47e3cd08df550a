//! Benchmark 11: what each attach mechanism costs on the fault path, where the kernel has it —
//! the numbers behind "tracepoints, not kprobes or fentry". The same bpftrace body (a count per
//! pid) on the page-fault tracepoint, a kprobe on `handle_mm_fault`, and fentry on it; and what
//! fentry/fexit would add to tell more (the fault's latency, as a histogram); beside them,
//! memtrace's own two ways (`trace`'s raw tracepoints, the daemon's task sampler). Interleaved
//! rounds of `bench-faults`, each variant against the untraced run of its round, as benchmark 1.
//! A mechanism the kernel lacks (this development machine has neither kprobes nor fentry) is
//! `not run` with bpftrace's reason; `cargo xtask vm-test --bench` runs it on kernels that do.
use anyhow::Result;

use super::{
    Benchmark,
    faults::faults_spec,
    harness::{Env, Proc, Running, SETTLE, STOP_GRACE, check_interrupt, pause},
    report::{Section, Status, Verdict, md},
    stats::summarize,
};

fn median(xs: &[f64]) -> Option<f64> {
    summarize(xs).map(|s| s.median)
}

/// Per round, (traced − untraced) / untraced in %.
fn pairwise_pct(traced: &[f64], untraced: &[f64]) -> Vec<f64> {
    traced
        .iter()
        .zip(untraced)
        .map(|(t, u)| (t - u) / u * 100.0)
        .collect()
}

/// The line of bpftrace's output that says why it failed: its last, minus the caret lines
/// under the program.
fn last_reason(log: &str) -> String {
    log.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.contains('~') && !l.starts_with("Attaching"))
        .unwrap_or("bpftrace failed")
        .to_owned()
}

/// What traces the fault loop in a variant.
enum Tracer {
    /// A bpftrace program.
    Bpftrace(&'static str),
    /// memtrace itself, as it runs.
    Memtrace(Running),
}

struct Mechanism {
    name: &'static str,
    tracer: Tracer,
}

const MECHANISMS: [Mechanism; 6] = [
    Mechanism {
        name: "tracepoint exceptions:page_fault_user",
        tracer: Tracer::Bpftrace("tracepoint:exceptions:page_fault_user { @[pid] = count(); }"),
    },
    Mechanism {
        name: "kprobe handle_mm_fault",
        tracer: Tracer::Bpftrace("kprobe:handle_mm_fault { @[pid] = count(); }"),
    },
    Mechanism {
        name: "fentry handle_mm_fault",
        tracer: Tracer::Bpftrace("kfunc:handle_mm_fault { @[pid] = count(); }"),
    },
    Mechanism {
        name: "fentry+fexit handle_mm_fault, latency histogram",
        tracer: Tracer::Bpftrace(
            "kfunc:handle_mm_fault { @start[tid] = nsecs; } \
             kretfunc:handle_mm_fault /@start[tid]/ { @ns = hist(nsecs - @start[tid]); delete(@start[tid]); }",
        ),
    },
    Mechanism {
        name: "memtrace trace: raw tracepoints (fault count per process + RSS)",
        tracer: Tracer::Memtrace(Running::Trace),
    },
    Mechanism {
        name: "memtrace daemon: task sampler (nothing per fault)",
        tracer: Tracer::Memtrace(Running::Daemon),
    },
];

/// Start `tracer` and let it settle; the inner `Err` says why it cannot run on this kernel.
fn start(env: &Env, tracer: &Tracer) -> Result<Result<Proc, String>> {
    let started = match tracer {
        Tracer::Bpftrace(program) => env.start_bpftrace(program),
        Tracer::Memtrace(running) => env.start_memtrace_as(*running, &[]).map(|(p, _)| p),
    };
    Ok(match started {
        Ok(p) => {
            pause(SETTLE)?;
            Ok(p)
        }
        Err(err) => Err(last_reason(&format!("{err:#}"))),
    })
}

pub(super) fn bench_attach(env: &Env) -> Result<Section> {
    let spec = faults_spec(env.bins.faults.clone(), env.args.fault_iters);
    let run_untraced = || -> Result<f64> {
        env.run_workload(env.workload(&spec.bin, &spec.args, true))?
            .num(spec.wall_key)
    };
    // Per mechanism: per-round ns/fault, or why it could not run.
    let mut traced: Vec<Result<Vec<f64>, String>> =
        MECHANISMS.iter().map(|_| Ok(Vec::new())).collect();
    let mut untraced = Vec::new();
    for round in 0..env.args.runs as usize {
        // Rotate the order so drift does not favour one variant.
        let order: Vec<usize> = (0..=MECHANISMS.len())
            .map(|i| (i + round) % (MECHANISMS.len() + 1))
            .collect();
        for variant in order {
            check_interrupt()?;
            if variant == MECHANISMS.len() {
                untraced.push(run_untraced()?);
                continue;
            }
            let Ok(samples) = &mut traced[variant] else {
                continue;
            };
            let mechanism = &MECHANISMS[variant];
            match start(env, &mechanism.tracer)? {
                Ok(mut tracer) => {
                    let sample = env
                        .run_workload(env.workload(&spec.bin, &spec.args, true))?
                        .num(spec.wall_key)?;
                    tracer.stop(STOP_GRACE)?;
                    // bpftrace says "Attaching" before it attaches and may carry on after a
                    // probe failed to attach (a kprobe on a kernel without them): only the maps
                    // it prints at exit prove its programs ran. memtrace fails to start instead.
                    let log = tracer.log_text();
                    if matches!(mechanism.tracer, Tracer::Memtrace(_))
                        || log.lines().any(|line| line.starts_with('@'))
                    {
                        samples.push(sample);
                    } else {
                        traced[variant] = Err(format!("attached nothing ({})", last_reason(&log)));
                    }
                }
                Err(why) => traced[variant] = Err(why),
            }
        }
    }

    let mut section = Section::new(Benchmark::Attach);
    md!(
        section.body,
        "`bench-faults` ({} × 128 MiB, one minor fault per page) untraced, under bpftrace with the same body (`@[pid] = count()`) on each attach mechanism, and under memtrace as it runs; {} interleaved rounds, overhead = median over rounds of (traced − untraced of the same round) / untraced. `memtrace trace` attaches raw tracepoints (`exceptions:page_fault_user` and `rss_stat`: a count per process and its RSS by type, in kernel maps); `memtrace daemon` attaches nothing per fault (its task iterator reads the counters the kernel keeps, once per tick).\n",
        env.args.fault_iters,
        env.args.runs
    );
    md!(
        section.body,
        "| Mechanism | ns/fault (median) | Overhead vs untraced |"
    );
    md!(section.body, "|---|---|---|");
    md!(
        section.body,
        "| untraced | {:.1} | — |",
        median(&untraced).unwrap_or(f64::NAN)
    );
    for (mechanism, result) in MECHANISMS.iter().zip(&traced) {
        let (ns, overhead, status) = match result {
            Ok(samples) if samples.len() == untraced.len() && !samples.is_empty() => {
                let pct = pairwise_pct(samples, &untraced);
                (
                    format!("{:.1}", median(samples).unwrap_or(f64::NAN)),
                    format!("{:+.1}%", median(&pct).unwrap_or(f64::NAN)),
                    Status::Info,
                )
            }
            Ok(_) => (
                "—".into(),
                "not run: no complete rounds".into(),
                Status::NotRun,
            ),
            Err(why) => ("—".into(), format!("not run: {why}"), Status::NotRun),
        };
        md!(section.body, "| {} | {ns} | {overhead} |", mechanism.name);
        section.verdicts.push(Verdict::new(
            mechanism.name,
            overhead,
            "(comparison)",
            status,
        ));
    }
    Ok(section)
}
