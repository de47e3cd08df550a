//! Benchmark 2: mmap churn (`bench-mmap`), with the attach floor and the opt-in call hooks.
use std::path::PathBuf;

use anyhow::Result;

use super::{
    Benchmark,
    harness::{Env, Running},
    overhead::{OverheadResults, OverheadSpec, measure_overhead, render_overhead},
    report::{Section, md},
};

pub(super) const BPFTRACE_MMAP: &str =
    "tracepoint:syscalls:sys_enter_mmap,tracepoint:syscalls:sys_enter_munmap { @[pid] = count(); }";

/// Empty programs on the tracepoints memtrace's mmap family uses: what attaching there costs
/// before any program does work (the syscall-tracepoint slow path and dispatch).
pub(super) const FLOOR_MMAP: &str =
    "tracepoint:syscalls:sys_exit_mmap,tracepoint:syscalls:sys_exit_munmap {}";

pub(super) fn bench_mmap(env: &Env) -> Result<Section> {
    let spec = mmap_spec(env.bins.mmap.clone(), env.args.mmap_iters, env.running);
    let results = measure_overhead(env, &spec)?;
    Ok(mmap_section(env.args.mmap_iters, &spec, &results))
}

pub(super) fn mmap_spec(bin: PathBuf, mmap_iters: u32, running: Running) -> OverheadSpec {
    OverheadSpec {
        bin,
        args: vec!["--iters".into(), mmap_iters.to_string()],
        wall_key: "ns_per_iter",
        cpu_key: "cpu_ns_per_iter",
        unit: "ns/iteration",
        bpftrace: BPFTRACE_MMAP,
        floor: Some(FLOOR_MMAP),
        memtrace_extra: (running == Running::Daemon).then_some(&["--mmap-calls"][..]),
        target_pct: 5.0,
        target_frac: 1.0,
        target_frac_text: "< 1 (below bpftrace)",
        measure_cpu: false,
    }
}

pub(super) fn mmap_section(
    mmap_iters: u32,
    spec: &OverheadSpec,
    results: &OverheadResults,
) -> Section {
    let mut section = Section::new(Benchmark::Mmap);
    md!(
        section.body,
        "`bench-mmap` does mmap 64 KiB + write its first page + munmap, {} times; ns/iteration = loop time / iterations.\n",
        mmap_iters
    );
    render_overhead(spec, results, &mut section);
    section
}
