//! Benchmark 1: the fault path's overhead (`bench-faults`).
use std::path::PathBuf;

use anyhow::Result;

use super::{
    Benchmark,
    harness::Env,
    overhead::{OverheadResults, OverheadSpec, measure_overhead, render_overhead},
    report::{Section, md},
};

pub(super) const BPFTRACE_FAULTS: &str =
    "tracepoint:exceptions:page_fault_user { @[pid] = count(); }";

pub(super) fn bench_faults(env: &Env) -> Result<Section> {
    let spec = faults_spec(env.bins.faults.clone(), env.args.fault_iters);
    let results = measure_overhead(env, &spec)?;
    Ok(faults_section(env.args.fault_iters, &spec, &results))
}

pub(super) fn faults_spec(bin: PathBuf, fault_iters: u32) -> OverheadSpec {
    OverheadSpec {
        bin,
        args: vec![
            "--iters".into(),
            fault_iters.to_string(),
            "--mib".into(),
            "128".into(),
        ],
        wall_key: "ns_per_fault",
        cpu_key: "cpu_ns_per_fault",
        unit: "ns/fault",
        bpftrace: BPFTRACE_FAULTS,
        floor: None,
        memtrace_extra: None,
        target_pct: 2.0,
        target_frac: 1.0 / 3.0,
        target_frac_text: "≤ 0.33",
        measure_cpu: true,
    }
}

pub(super) fn faults_section(
    fault_iters: u32,
    spec: &OverheadSpec,
    results: &OverheadResults,
) -> Section {
    let mut section = Section::new(Benchmark::Faults);
    md!(
        section.body,
        "`bench-faults` maps 128 MiB, writes one byte per page (one minor fault each), unmaps; {} times ({} faults per run). Only the touching loops are timed; ns/fault = time / faults counted by the kernel (getrusage). Wall time is the figure; CPU time (the thread's CPU clock, immune to preemption by other processes) is shown beside it.\n",
        fault_iters,
        fault_iters as u64 * (128 << 20) / 4096
    );
    render_overhead(spec, results, &mut section);
    section
}
