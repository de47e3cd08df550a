//! Address-space growth: successful mmap, brk and mremap calls, weighted by the bytes they add.
//! The arguments and the return value are read from the task's saved user registers at the
//! syscall's exit (x86-64 with BTF), so mmap and mremap need one program each; brk needs its
//! entry too, for the break before the call.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use memtrace_common::sites::{site_kind, sites_stat};

use crate::site::{
    BRK_INFLIGHT, SITES_CONFIG, Site, count, current_task, load_btf, profiled, record,
    return_address_at, tgid_of, user_regs,
};

/// `len` rounded up to whole pages, as the kernel counts a mapping's length.
#[inline(always)]
const fn page_align(len: u64, page_size: u32) -> u64 {
    let mask = page_size as u64 - 1;
    (len + mask) & !mask
}

/// A syscall return value in `[-4095, -1]` is an errno.
#[inline(always)]
#[expect(
    clippy::cast_possible_wrap,
    reason = "the register holds a signed long"
)]
const fn is_error(ret: u64) -> bool {
    let ret = ret as i64;
    ret < 0 && ret >= -4095
}

/// Count `bytes` of growth by the current call, at the wrapper's instruction and its caller.
#[inline(always)]
fn grew(ctx: &TracePointContext, tgid: u32, kind: u32, ip: u64, sp: u64, bytes: u64) {
    count(sites_stat::GROWTH_CALLS);
    let config = SITES_CONFIG.load();
    record(
        ctx,
        &config,
        &Site {
            tgid,
            kind,
            ip,
            caller: return_address_at(sp),
            bytes,
            kernel_stack: true,
        },
    );
}

#[tracepoint(category = "syscalls", name = "sys_exit_mmap")]
pub fn sites_mmap_exit(ctx: TracePointContext) -> u32 {
    let tgid = tgid_of(bpf_get_current_pid_tgid());
    let config = SITES_CONFIG.load();
    if !profiled(&config, tgid) {
        return 0;
    }
    let regs = user_regs();
    if is_error(regs.ax) {
        return 0;
    }
    // mmap(addr, len, …)
    let bytes = page_align(regs.args[1], config.page_size);
    grew(&ctx, tgid, site_kind::MMAP, regs.ip, regs.sp, bytes);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mremap")]
pub fn sites_mremap_exit(ctx: TracePointContext) -> u32 {
    let tgid = tgid_of(bpf_get_current_pid_tgid());
    let config = SITES_CONFIG.load();
    if !profiled(&config, tgid) {
        return 0;
    }
    let regs = user_regs();
    if is_error(regs.ax) {
        return 0;
    }
    // mremap(addr, old_len, new_len, …)
    let old = page_align(regs.args[1], config.page_size);
    let new = page_align(regs.args[2], config.page_size);
    if new > old {
        grew(&ctx, tgid, site_kind::MREMAP, regs.ip, regs.sp, new - old);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_brk")]
pub fn sites_brk_enter(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let config = SITES_CONFIG.load();
    if !profiled(&config, tgid_of(pid_tgid)) {
        return 0;
    }
    let mm: u64 = load_btf(current_task() + u64::from(config.task_mm));
    if mm == 0 {
        return 0;
    }
    let brk: u64 = load_btf(mm + u64::from(config.mm_brk));
    if BRK_INFLIGHT.insert(pid_tgid, brk, 0).is_err() {
        count(sites_stat::BRK_INFLIGHT_FULL);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_brk")]
pub fn sites_brk_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(old) = BRK_INFLIGHT.get_ptr(pid_tgid) else {
        return 0;
    };
    // SAFETY: map value pointer, copied before the entry is removed.
    let old = unsafe { *old };
    let _ = BRK_INFLIGHT.remove(pid_tgid);
    // brk returns the new break on success and the old one on failure.
    let regs = user_regs();
    if regs.ax > old {
        grew(
            &ctx,
            tgid_of(pid_tgid),
            site_kind::BRK,
            regs.ip,
            regs.sp,
            regs.ax - old,
        );
    }
    0
}
