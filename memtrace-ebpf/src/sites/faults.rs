//! Sampled page faults: a perf software event `PAGE_FAULTS` per CPU with a sample period, so
//! this program runs once per period of the CPU's faults (the counting itself is the kernel's,
//! a few nanoseconds per fault).

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::perf_event, programs::PerfEventContext};
use memtrace_common::sites::{site_kind, sites_stat};

use crate::site::{
    SITES_CONFIG, Site, count, profiled, record, return_address_at, tgid_of, user_regs,
};

#[perf_event]
pub fn sites_fault_sample(ctx: PerfEventContext) -> u32 {
    let tgid = tgid_of(bpf_get_current_pid_tgid());
    let config = SITES_CONFIG.load();
    if !profiled(&config, tgid) {
        count(sites_stat::FAULT_SAMPLES_OTHER);
        return 0;
    }
    count(sites_stat::FAULT_SAMPLES);
    let (ip, user_mode) = fault_ip(&ctx);
    // A fault taken in user mode has the faulting instruction in the sample's registers. One
    // taken in the kernel (copying to or from user memory in a syscall) has a kernel address
    // there: its user leaf is where the task entered the kernel, in a libc wrapper that built no
    // frame, so the wrapper's caller is the return address at the user stack pointer (as for the
    // growth calls); its kernel stack says which syscall path faulted.
    let (ip, caller) = if user_mode {
        (ip, 0)
    } else {
        let regs = user_regs();
        (regs.ip, return_address_at(regs.sp))
    };
    record(
        &ctx,
        &config,
        &Site {
            tgid,
            kind: site_kind::FAULT,
            ip,
            caller,
            bytes: 0,
            kernel_stack: !user_mode,
        },
    );
    0
}

/// The sampled registers' instruction pointer and whether they are user mode (`cs` RPL 3).
#[inline(always)]
#[cfg(bpf_target_arch = "x86_64")]
fn fault_ip(ctx: &PerfEventContext) -> (u64, bool) {
    // SAFETY: `bpf_perf_event_data.regs` is readable context; single 8-byte loads.
    unsafe {
        let regs = &raw const (*ctx.ctx).regs;
        let ip = core::ptr::read_volatile(&raw const (*regs).rip);
        let cs = core::ptr::read_volatile(&raw const (*regs).cs);
        (ip, cs & 3 == 3)
    }
}

#[inline(always)]
#[cfg(not(bpf_target_arch = "x86_64"))]
fn fault_ip(_ctx: &PerfEventContext) -> (u64, bool) {
    (0, false)
}
