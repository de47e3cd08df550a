//! Page faults: raw tracepoints (no trace-record marshalling: the cheapest hook on kernels
//! without fentry). One lookup and one atomic add per fault; everything else is pruned by the
//! verifier unless a live trace streams faults.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs},
    macros::{perf_event, raw_tracepoint},
    programs::{PerfEventContext, RawTracePointContext},
};
use memtrace_common::{FaultEvent, helper_flag, kind};

use crate::{
    helpers::{add, batched_wakeup, current, emit, filter_pass, header_with_comm, stats_entry},
    maps::{CONFIG, FAULT_EVENTS, PROC_STATS, SAMPLE_COUNTER, offset},
};

#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user(ctx: RawTracePointContext) -> i32 {
    on_fault(&ctx, 1);
    0
}

#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: RawTracePointContext) -> i32 {
    on_fault(&ctx, 0);
    0
}

#[inline(always)]
fn on_fault(ctx: &RawTracePointContext, user: u32) {
    let (pid_tgid, tgid) = current();
    if tgid == 0 {
        return;
    }
    if let Some(stats) = stats_entry(tgid) {
        // SAFETY: map value pointer.
        let counter = unsafe {
            if user == 0 {
                &raw mut (*stats).faults_kernel
            } else {
                &raw mut (*stats).faults_user
            }
        };
        add(counter, 1);
    }

    let config = CONFIG.load();
    if config.fault_sample_every == 0 || !config.wants(kind::FAULT) {
        return;
    }
    let Some(comm) = filter_pass(&config, tgid) else {
        return;
    };
    if config.fault_sample_every > 1 {
        let Some(counter) = SAMPLE_COUNTER.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: per-CPU slot.
        let n = unsafe {
            *counter += 1;
            *counter
        };
        if n % u64::from(config.fault_sample_every) != 0 {
            return;
        }
    }
    // TP_PROTO(unsigned long address, struct pt_regs *regs, unsigned long error_code)
    let address: u64 = ctx.arg(0);
    let regs: *const pt_regs = ctx.arg(1);
    let error_code: u64 = ctx.arg(2);
    let ip = if user != 0 && offset!(helpers) & helper_flag::TASK_PT_REGS != 0 {
        // A user fault's frame is the task's saved user registers: where the kernel has
        // `bpf_task_pt_regs` (5.15+, with BTF), it gives a pointer the verifier checks, so this
        // is one load instead of a `bpf_probe_read_kernel` call.
        // SAFETY: BTF-typed pointer to the current task's `struct pt_regs`.
        unsafe { (*(bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs)).rip }
    } else {
        // SAFETY: `regs` is the faulting context's register frame; checked read.
        unsafe { bpf_probe_read_kernel(&raw const (*regs).rip) }.unwrap_or(0)
    };
    emit(
        &FAULT_EVENTS,
        kind::FAULT,
        FaultEvent {
            header: header_with_comm(kind::FAULT, pid_tgid, comm),
            address,
            ip,
            error_code,
            user,
            reserved: 0,
        },
        batched_wakeup(&FAULT_EVENTS),
    );
}

/// Major faults: the perf software event `PAGE_FAULTS_MAJ` (period 1) fires exactly where the
/// kernel accounts `maj_flt`. Rare, so a perf sample per major fault is cheap.
#[perf_event]
pub fn fault_major(_ctx: PerfEventContext) -> u32 {
    let (_, tgid) = current();
    // The same fault already went through `page_fault_*`, which created the entry.
    if let Some(stats) = PROC_STATS.get_ptr_mut(tgid) {
        // SAFETY: map value pointer.
        add(unsafe { &raw mut (*stats).faults_major }, 1);
    }
    0
}
