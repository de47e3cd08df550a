//! mmap family: entry saves the arguments, exit (which knows the result) counts and reports, so
//! failed calls never count as mapped memory. With `syscall_args_from_regs` the entry programs
//! are not attached and the exit programs read the arguments from the saved user registers.
//!
//! madvise is counted only (no event): the bytes allocators and garbage-collected runtimes hand
//! back with `MADV_DONTNEED` / `MADV_FREE`, which lower RSS without a munmap.

use aya_ebpf::{
    EbpfContext, helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
#[cfg(bpf_target_arch = "x86_64")]
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_task_btf, bpf_task_pt_regs},
};
use memtrace_common::{MemSyscallEvent, SyscallArgs, SyscallEnterOffsets, kind, loss};

use crate::{
    helpers::{
        add, count_loss, current, emit, events_wakeup, field, filter_pass, header_with_comm,
        stats_entry, tgid_of,
    },
    maps::{CONFIG, EVENTS, SYSCALL_INFLIGHT, offset},
};

/// `SyscallArgs::kind` of a saved madvise call: not an event kind (madvise only counts), just a
/// tag no event kind has, so an exit never takes another call's arguments for its own.
const MADVISE_INFLIGHT: u32 = kind::COUNT;
/// `behavior` values counted (include/uapi/asm-generic/mman-common.h).
const MADV_DONTNEED: u32 = 4;
const MADV_FREE: u32 = 8;

#[inline(always)]
fn on_syscall_enter(
    ctx: &TracePointContext,
    tag: u32,
    offsets: &SyscallEnterOffsets,
    nargs: usize,
) {
    let (pid_tgid, _) = current();
    let mut saved = SyscallArgs {
        kind: tag,
        reserved: 0,
        args: [0; 5],
    };
    let mut i = 0;
    while i < nargs && i < 5 {
        match field::<u64>(ctx, offsets.args[i]) {
            Some(value) => saved.args[i] = value,
            None => return,
        }
        i += 1;
    }
    if SYSCALL_INFLIGHT.insert(pid_tgid, saved, 0).is_err() {
        count_loss(loss::MAP_SYSCALL_INFLIGHT);
    }
}

#[tracepoint(category = "syscalls", name = "sys_enter_mmap")]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    // addr, len, prot, flags, fd
    on_syscall_enter(&ctx, kind::MMAP, &offset!(mmap_enter), 5);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_munmap")]
pub fn sys_enter_munmap(ctx: TracePointContext) -> u32 {
    // addr, len
    on_syscall_enter(&ctx, kind::MUNMAP, &offset!(munmap_enter), 2);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_brk")]
pub fn sys_enter_brk(ctx: TracePointContext) -> u32 {
    // brk
    on_syscall_enter(&ctx, kind::BRK, &offset!(brk_enter), 1);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mremap")]
pub fn sys_enter_mremap(ctx: TracePointContext) -> u32 {
    // addr, old_len, new_len, flags, new_addr
    on_syscall_enter(&ctx, kind::MREMAP, &offset!(mremap_enter), 5);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_madvise")]
pub fn sys_enter_madvise(ctx: TracePointContext) -> u32 {
    // start, len_in, behavior
    on_syscall_enter(&ctx, MADVISE_INFLIGHT, &offset!(madvise_enter), 3);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mmap")]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    on_syscall_exit(&ctx, kind::MMAP);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_munmap")]
pub fn sys_exit_munmap(ctx: TracePointContext) -> u32 {
    on_syscall_exit(&ctx, kind::MUNMAP);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_brk")]
pub fn sys_exit_brk(ctx: TracePointContext) -> u32 {
    on_syscall_exit(&ctx, kind::BRK);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mremap")]
pub fn sys_exit_mremap(ctx: TracePointContext) -> u32 {
    on_syscall_exit(&ctx, kind::MREMAP);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_madvise")]
pub fn sys_exit_madvise(ctx: TracePointContext) -> u32 {
    if let Some((pid_tgid, args, ret)) = exiting_call(&ctx, MADVISE_INFLIGHT) {
        account_madvise(pid_tgid, args, ret);
    }
    0
}

/// The current syscall's first five arguments, from the user register frame the kernel saved at
/// entry (`struct pt_regs` is the architecture's uapi frame; x86-64 passes arguments in rdi,
/// rsi, rdx, r10, r8). `None` where that is not available.
#[inline(always)]
#[cfg_attr(
    bpf_target_arch = "x86_64",
    expect(
        clippy::unnecessary_wraps,
        reason = "`None` on the architectures without a register read here"
    )
)]
fn syscall_args_from_regs() -> Option<[u64; 5]> {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: `bpf_task_pt_regs` returns a BTF-typed pointer to the current task's user
        // register frame: the verifier checks these loads against `struct pt_regs` and the JIT
        // makes them fault-safe, so they need no `bpf_probe_read_kernel` call (which cost more
        // than the rest of the program here).
        unsafe {
            let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
            Some([
                (*regs).rdi,
                (*regs).rsi,
                (*regs).rdx,
                (*regs).r10,
                (*regs).r8,
            ])
        }
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        None
    }
}

/// `len` rounded up to whole pages, as the kernel counts a mapping's (or a madvise range's)
/// length.
#[inline(always)]
const fn page_align(len: u64, page_size: u32) -> u64 {
    let mask = page_size as u64 - 1;
    (len + mask) & !mask
}

/// Where `ret` is in a `syscalls:sys_exit_*` record on every kernel since syscall tracepoints
/// exist (after the 8-byte common header and `int __syscall_nr`).
const SYSCALL_EXIT_RET_USUAL: u32 = 16;

/// `ret` of a `syscalls:sys_exit_*` record. A direct load from the context costs a third of a
/// `bpf_probe_read_kernel` call here (measured: ~40 ns of a ~150 ns program), but the verifier
/// only allows context loads at constant offsets; so the usual layout is read directly and any
/// other one the format file reports takes the checked read. `OFFSETS` is read-only data the
/// verifier knows, so it loads only the branch this kernel needs.
#[inline(always)]
fn syscall_ret(ctx: &TracePointContext) -> Option<i64> {
    let offset = offset!(syscall_exit_ret);
    if offset == SYSCALL_EXIT_RET_USUAL {
        // SAFETY: the format file puts `long ret` at this offset of the record the context
        // points to; an aligned 8-byte context load the verifier checks.
        #[expect(
            clippy::cast_ptr_alignment,
            reason = "the record is 8-byte aligned and `ret` at offset 16"
        )]
        Some(unsafe {
            ctx.as_ptr()
                .cast::<u8>()
                .add(SYSCALL_EXIT_RET_USUAL as usize)
                .cast::<i64>()
                .read()
        })
    } else {
        field::<i64>(ctx, offset)
    }
}

/// A syscall return value in `[-4095, -1]` is an errno.
#[inline(always)]
const fn is_error(ret: i64) -> bool {
    ret < 0 && ret >= -4095
}

/// The call now exiting, if it is a `tag` call: (`pid_tgid`, its arguments, its return value).
#[inline(always)]
fn exiting_call(ctx: &TracePointContext, tag: u32) -> Option<(u64, [u64; 5], i64)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let saved = if offset!(syscall_args_from_regs) == 0 {
        let saved = SYSCALL_INFLIGHT.get_ptr(pid_tgid)?;
        // SAFETY: map value pointer; copied before the entry is removed.
        let saved = unsafe { *saved };
        let _ = SYSCALL_INFLIGHT.remove(pid_tgid);
        saved
    } else {
        // The arguments are still in the task's saved user registers at syscall exit: one
        // program per call and no per-thread map (needs BTF for the task pointer).
        SyscallArgs {
            kind: tag,
            reserved: 0,
            args: syscall_args_from_regs()?,
        }
    };
    if saved.kind != tag {
        return None;
    }
    let ret = syscall_ret(ctx)?;
    Some((pid_tgid, saved.args, ret))
}

#[inline(always)]
fn on_syscall_exit(ctx: &TracePointContext, kind: u32) {
    if let Some((pid_tgid, args, ret)) = exiting_call(ctx, kind) {
        account_syscall(pid_tgid, kind, args, ret);
    }
}

/// Count one finished mmap-family call (`args` as the syscall got them) and report it if asked.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the event carries the raw register values: addresses from `ret`, the int arguments \
              (prot, flags, fd) from the low half of their registers, as the kernel reads them"
)]
fn account_syscall(pid_tgid: u64, kind: u32, args: [u64; 5], ret: i64) {
    let tgid = tgid_of(pid_tgid);
    let config = CONFIG.load();
    let Some(stats) = stats_entry(tgid) else {
        return;
    };
    let page = config.page_size;
    let failed = is_error(ret);
    // The header (comm, time, CPU: three helper calls) is filled only if the event is sent;
    // the daemon counts these calls without streaming them.
    let mut event = MemSyscallEvent {
        ret,
        ..MemSyscallEvent::default()
    };

    // SAFETY (block): `stats` is a map value pointer.
    unsafe {
        match kind {
            kind::MMAP => {
                let [_addr, len, prot, flags, fd] = args;
                event.addr = if failed { 0 } else { ret as u64 };
                event.len = len;
                event.prot = prot as u32;
                event.flags = flags as u32;
                event.fd = fd as i32;
                if !failed {
                    add(&raw mut (*stats).mmap_calls, 1);
                    add(&raw mut (*stats).mmap_bytes, page_align(len, page));
                }
            }
            kind::MUNMAP => {
                let [addr, len, ..] = args;
                event.addr = addr;
                event.len = len;
                if !failed {
                    add(&raw mut (*stats).munmap_calls, 1);
                    add(&raw mut (*stats).munmap_bytes, page_align(len, page));
                }
            }
            kind::BRK => {
                let requested = args[0];
                let new_brk = ret as u64;
                let old_brk = (*stats).brk_current;
                (*stats).brk_current = new_brk;
                if requested == 0 {
                    return; // a query of the current break, not a change
                }
                // brk() returns the new break on success and the old one on failure.
                if new_brk == requested {
                    add(&raw mut (*stats).brk_calls, 1);
                    event.addr = new_brk;
                    event.old_addr = old_brk;
                    if old_brk != 0 {
                        event.len = new_brk.abs_diff(old_brk);
                        if new_brk >= old_brk {
                            event.grew = 1;
                            add(&raw mut (*stats).brk_grow_bytes, new_brk - old_brk);
                        } else {
                            add(&raw mut (*stats).brk_shrink_bytes, old_brk - new_brk);
                        }
                    }
                } else {
                    add(&raw mut (*stats).failed_calls, 1);
                    event.ret = -12; // ENOMEM: what the libc wrapper reports
                    event.addr = new_brk;
                    event.len = requested.abs_diff(new_brk);
                    event.old_addr = new_brk;
                }
            }
            kind::MREMAP => {
                let [addr, old_len, new_len, flags, _new_addr] = args;
                event.old_addr = addr;
                event.old_len = old_len;
                event.addr = if failed { 0 } else { ret as u64 };
                event.len = new_len;
                event.prot = flags as u32;
                if !failed {
                    add(&raw mut (*stats).mremap_calls, 1);
                    let (old, new) = (page_align(old_len, page), page_align(new_len, page));
                    if new >= old {
                        add(&raw mut (*stats).mremap_grow_bytes, new - old);
                    } else {
                        add(&raw mut (*stats).mremap_shrink_bytes, old - new);
                    }
                }
            }
            _ => return,
        }
        if failed && kind != kind::BRK {
            add(&raw mut (*stats).failed_calls, 1);
        }
    }

    let size = if kind == kind::MREMAP && event.old_len > event.len {
        event.old_len
    } else {
        event.len
    };
    if config.wants(kind)
        && size >= config.mmap_min_bytes
        && let Some(comm) = filter_pass(&config, tgid)
    {
        event.header = header_with_comm(kind, pid_tgid, comm);
        emit(&EVENTS, kind, event, events_wakeup());
    }
}

/// Count one finished madvise call: successful `MADV_DONTNEED` and `MADV_FREE` only, by the
/// page-aligned length the kernel applies the advice to (`PAGE_ALIGN(len_in)`). Other advice
/// does not create an entry.
#[inline(always)]
fn account_madvise(pid_tgid: u64, args: [u64; 5], ret: i64) {
    if ret != 0 {
        return;
    }
    let [_start, len_in, behavior, ..] = args;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "`int behavior`: the upper half of the register is not part of the argument"
    )]
    let behavior = behavior as u32;
    if behavior != MADV_DONTNEED && behavior != MADV_FREE {
        return;
    }
    let Some(stats) = stats_entry(tgid_of(pid_tgid)) else {
        return;
    };
    let bytes = page_align(len_in, CONFIG.load().page_size);
    // SAFETY: `stats` is a map value pointer.
    let counter = unsafe {
        if behavior == MADV_DONTNEED {
            &raw mut (*stats).madvise_dontneed_bytes
        } else {
            &raw mut (*stats).madvise_free_bytes
        }
    };
    add(counter, bytes);
}
