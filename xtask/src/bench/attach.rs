//! Benchmark 11: what each attach mechanism costs on the fault path, where the kernel has it —
//! the numbers behind "tracepoints, not kprobes or fentry". The same bpftrace body (a count per
//! pid) on the page-fault tracepoint, a kprobe on `handle_mm_fault`, and fentry on it; and what
//! fentry/fexit would add to tell more (the fault's latency, as a histogram). Interleaved rounds
//! of `bench-faults`, each variant against the untraced run of its round, as benchmark 1.
//! A mechanism the kernel lacks (this development machine has neither kprobes nor fentry) is
//! `not run` with bpftrace's reason; `cargo xtask vm-test --bench` runs it on kernels that do.
use anyhow::Result;

use super::{
    Benchmark,
    faults::faults_spec,
    harness::{Env, check_interrupt},
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

struct Mechanism {
    name: &'static str,
    program: &'static str,
}

const MECHANISMS: [Mechanism; 4] = [
    Mechanism {
        name: "tracepoint exceptions:page_fault_user",
        program: "tracepoint:exceptions:page_fault_user { @[pid] = count(); }",
    },
    Mechanism {
        name: "kprobe handle_mm_fault",
        program: "kprobe:handle_mm_fault { @[pid] = count(); }",
    },
    Mechanism {
        name: "fentry handle_mm_fault",
        program: "kfunc:handle_mm_fault { @[pid] = count(); }",
    },
    Mechanism {
        name: "fentry+fexit handle_mm_fault, latency histogram",
        program: "kfunc:handle_mm_fault { @start[tid] = nsecs; } \
                  kretfunc:handle_mm_fault /@start[tid]/ { @ns = hist(nsecs - @start[tid]); delete(@start[tid]); }",
    },
];

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
            match env.start_bpftrace(MECHANISMS[variant].program) {
                Ok(mut tracer) => {
                    let sample = env
                        .run_workload(env.workload(&spec.bin, &spec.args, true))?
                        .num(spec.wall_key)?;
                    tracer.stop(std::time::Duration::from_secs(5))?;
                    // bpftrace says "Attaching" before it attaches and may carry on after a
                    // probe failed to attach (a kprobe on a kernel without them): only the maps
                    // it prints at exit prove its programs ran.
                    let log = tracer.log_text();
                    if log.lines().any(|line| line.starts_with('@')) {
                        samples.push(sample);
                    } else {
                        traced[variant] = Err(format!("attached nothing ({})", last_reason(&log)));
                    }
                }
                Err(err) => traced[variant] = Err(last_reason(&format!("{err:#}"))),
            }
        }
    }

    let mut section = Section::new(Benchmark::Attach);
    md!(
        section.body,
        "`bench-faults` ({} × 128 MiB, one minor fault per page) untraced and under bpftrace with the same body (`@[pid] = count()`) on each attach mechanism; {} interleaved rounds, overhead = median over rounds of (traced − untraced of the same round) / untraced. memtrace itself attaches a raw tracepoint (`raw_tp exceptions:page_fault_user`, cheaper than the classic tracepoint below) and, in the daemon, nothing per fault at all (the task sampler).\n",
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
