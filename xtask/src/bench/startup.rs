//! Benchmark 6: start-up, process start to ready.
use std::time::Duration;

use anyhow::Result;

use super::{
    Benchmark,
    harness::{Env, Running, STOP_GRACE, pause},
    procfs::process_count,
    report::{Section, Status, Verdict, md},
    stats::{fmt_summary, summarize},
};
use crate::say;

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
    Ok(render_startup(
        &times,
        env.running,
        env.running_label(),
        env.args.runs,
        process_count(),
    ))
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
