//! Benchmark 6: start-up, process start to ready; and `memtrace trace -e oom` against bpftrace
//! with the same one-probe program, alternating in the same run (issue 14: attach only what the
//! chosen events need, and be ready before bpftrace is).
use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use super::{
    Benchmark,
    harness::{
        Env, Proc, READY_TIMEOUT, Running, STOP_GRACE, Stop, TRACE_READY_MARKER, check_interrupt,
        pause,
    },
    procfs::process_count,
    report::{Section, Status, Verdict, md},
    stats::{fmt_summary, summarize},
};
use crate::say;

/// The OOM trace as a user starts it: ready when it says its probes are attached.
const TRACE_OOM_ARGS: &[&str] = &["trace", "-e", "oom", "--no-summary"];

/// bpftrace's equivalent: the same tracepoint. Its `BEGIN` block runs once every probe is
/// attached (its "Attaching N probes..." line comes before the attach), so `ready` marks the
/// same point as memtrace's line.
const BPFTRACE_OOM: &str =
    r#"tracepoint:oom:mark_victim { printf("oom %d\n", args->pid); } BEGIN { printf("ready\n"); }"#;
const BPFTRACE_READY: &str = "ready\n";

/// Starts `cmd` and times it until `marker` appears in its output; stopped after.
fn time_to_ready(env: &Env, name: &str, cmd: Command, marker: &str) -> Result<f64> {
    env.note(&cmd);
    let started = Instant::now();
    let (mut p, _) = Proc::spawn(env, name, cmd, Stop::Signal(libc::SIGINT), false)?;
    loop {
        if p.log_text().contains(marker) {
            let ms = started.elapsed().as_secs_f64() * 1e3;
            p.stop(STOP_GRACE)?;
            return Ok(ms);
        }
        if !p.alive() {
            bail!("{name} exited before it was ready: {}", p.log_tail());
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("{name} not ready after {READY_TIMEOUT:?}: {}", p.log_tail());
        }
        check_interrupt()?;
        thread::sleep(Duration::from_millis(2));
    }
}

/// `memtrace trace -e oom` and bpftrace's one-probe script, alternating, `runs` times each.
fn oom_trace_against_bpftrace(env: &Env) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut memtrace, mut bpftrace) = (Vec::new(), Vec::new());
    for i in 0..env.args.runs {
        let mut cmd = Command::new(&env.bins.memtrace);
        cmd.args(TRACE_OOM_ARGS).env("PATH", &env.ctx.path);
        let ms = time_to_ready(env, "memtrace-trace-oom", cmd, TRACE_READY_MARKER)?;
        say(format!("trace -e oom start-up {}: {ms:.0} ms", i + 1));
        memtrace.push(ms);
        pause(Duration::from_millis(200))?;
        if let Some(bin) = &env.bpftrace {
            let mut cmd = Command::new(bin);
            cmd.args(["-e", BPFTRACE_OOM]).env("PATH", &env.ctx.path);
            let ms = time_to_ready(env, "bpftrace-oom", cmd, BPFTRACE_READY)?;
            say(format!("bpftrace oom start-up {}: {ms:.0} ms", i + 1));
            bpftrace.push(ms);
            pause(Duration::from_millis(200))?;
        }
    }
    Ok((memtrace, bpftrace))
}

pub(super) fn bench_startup(env: &Env) -> Result<Section> {
    let mut times = Vec::new();
    for i in 0..env.args.runs {
        let (mut p, t) = env.start_memtrace()?;
        say(format!(
            "start-up {}: {:.0} ms",
            i + 1,
            t.as_secs_f64() * 1e3
        ));
        times.push(t.as_secs_f64() * 1e3);
        p.stop(STOP_GRACE)?;
        pause(Duration::from_millis(200))?;
    }
    let mut section = render_startup(
        &times,
        env.running,
        env.running_label(),
        env.args.runs,
        process_count(),
    );
    let (memtrace, bpftrace) = oom_trace_against_bpftrace(env)?;
    render_oom_startup(&mut section, &memtrace, &bpftrace);
    Ok(section)
}

/// The OOM trace's start-up against bpftrace's, in `section`.
pub(super) fn render_oom_startup(section: &mut Section, memtrace: &[f64], bpftrace: &[f64]) {
    md!(
        section.body,
        "`memtrace {}` start → `{TRACE_READY_MARKER} … probes attached` against `bpftrace -e '{BPFTRACE_OOM}'` start → its `BEGIN` output `ready` (after its attach), alternating, polled every 2 ms.\n",
        TRACE_OOM_ARGS.join(" "),
    );
    md!(
        section.body,
        "| One OOM probe, start → ready | median (min–max) |"
    );
    md!(section.body, "|---|---|");
    let (m, b) = (summarize(memtrace), summarize(bpftrace));
    md!(
        section.body,
        "| memtrace trace -e oom | {} |",
        fmt_summary(m, 0, " ms")
    );
    md!(
        section.body,
        "| bpftrace (same tracepoint) | {} |\n",
        match b {
            Some(_) => fmt_summary(b, 0, " ms"),
            None => "not installed".to_owned(),
        }
    );
    let (value, status) = match (m, b) {
        (Some(m), Some(b)) => (
            format!("{:.0} ms vs {:.0} ms", m.median, b.median),
            Status::of(m.median < b.median),
        ),
        (Some(m), None) => (format!("{:.0} ms (no bpftrace)", m.median), Status::NotRun),
        _ => ("not run".to_owned(), Status::NotRun),
    };
    section.verdicts.push(Verdict::new(
        "trace -e oom ready before bpftrace (median)",
        value,
        "< bpftrace",
        status,
    ));
}

pub(super) fn render_startup(
    times: &[f64],
    running: Running,
    running_label: &str,
    runs: u32,
    processes: usize,
) -> Section {
    let mut section = Section::new(Benchmark::Startup);
    let s = summarize(times);
    let what = match running {
        Running::Daemon => "process start → `/readyz` 200 (polled every 5 ms)",
        Running::Trace => {
            "daemon missing: `memtrace trace` start → `tracing with … probes attached` on stderr (polled every 5 ms)"
        }
    };
    md!(
        section.body,
        "{what}; {} runs, {} processes on the system.\n",
        runs,
        processes
    );
    md!(section.body, "| Start → ready | median (min–max) |");
    md!(section.body, "|---|---|");
    md!(
        section.body,
        "| {} | {} |\n",
        running_label,
        fmt_summary(s, 0, " ms")
    );
    if let Some(s) = s {
        section.verdicts.push(Verdict::new(
            "start → ready (median)",
            format!("{:.0} ms", s.median),
            "≤ 1 s",
            if running == Running::Daemon {
                Status::of(s.median <= 1000.0)
            } else {
                Status::NotRun
            },
        ));
    }
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oom_comparison_is_met_only_when_memtrace_is_ready_first() {
        let mut section = Section::new(Benchmark::Startup);
        render_oom_startup(&mut section, &[40.0, 42.0, 45.0], &[120.0, 150.0, 130.0]);
        assert!(
            section
                .body
                .contains("| memtrace trace -e oom | 42 ms (40–45) |"),
            "{}",
            section.body
        );
        assert!(
            section
                .body
                .contains("| bpftrace (same tracepoint) | 130 ms (120–150) |")
        );
        assert!(section.verdicts[0].status == Status::Met);
        let mut slower = Section::new(Benchmark::Startup);
        render_oom_startup(&mut slower, &[400.0], &[300.0]);
        assert!(slower.verdicts[0].status == Status::NotMet);
        let mut alone = Section::new(Benchmark::Startup);
        render_oom_startup(&mut alone, &[40.0], &[]);
        assert!(
            alone
                .body
                .contains("| bpftrace (same tracepoint) | not installed |")
        );
        assert!(alone.verdicts[0].status == Status::NotRun);
    }
}
