//! `memtrace-alloc`: uprobes on one process's allocator for `memtrace profile --alloc`.
//!
//! Entry probes (`alloc_malloc`, `alloc_calloc`, `alloc_realloc`, `alloc_memalign`,
//! `alloc_posix_memalign`) note the size, the caller's return address (`*(u64 *)sp` at the
//! allocator's first instruction: the exact leaf without frame pointers) and the sampling
//! decision per thread in `ALLOC_INFLIGHT`; the return probe (`alloc_return`) takes the pointer,
//! counts it on its site in `ALLOC_STACKS` and keeps it in `ALLOC_OUTSTANDING` until
//! `alloc_free` sees it freed. Sampled allocations (every new site in unsampled mode) also send
//! the registers and a copy of the stack through `ALLOC_SAMPLES` for userspace to unwind.
//!
//! With `flag::SITES_ONLY` (`--duty-cycle`) only the entry probes are attached: each counts its
//! allocation on its site at once and sends its snapshot from the entry, with the return address
//! popped; there is no pointer, no outstanding map, no in-use bytes.
//!
//! The allocation is recorded at the return, before the caller runs again, so no other thread
//! can free the pointer before it is known; a free is seen at its entry, before the allocator can
//! hand the memory out again (realloc's old pointer likewise, at realloc's entry).
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd: BPF has no compare-and-swap for fetch_add"
)]
#![warn(clippy::pedantic)]
#![expect(
    clippy::inline_always,
    reason = "BPF: helpers are inlined into each program rather than BPF-to-BPF calls"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand each program its context by value"
)]

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::{
    Global,
    bindings::{BPF_ANY, BPF_F_USER_STACK, BPF_NOEXIST, pt_regs},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::bpf_probe_read_user as probe_read_user_raw,
    },
    macros::{map, uprobe, uretprobe},
    maps::{Array, HashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{ProbeContext, RetProbeContext, tracing::StackIdContext},
};
use memtrace_common::alloc::{
    AllocConfig, AllocSample, Inflight, NO_STACK_ID, OBJECT_UNIT, Outstanding, OutstandingKey,
    SAMPLE_TABLE_LEN, STACK_COPY, SampleThresholds, StackCounts, StackKey, THRESHOLD_ALWAYS, call,
    flag, loss, threshold_for,
};

#[unsafe(no_mangle)]
static ALLOC_CONFIG: Global<AllocConfig> = Global::new(AllocConfig {
    tgid: 0,
    flags: 0,
    sample_rate: 1,
    x_divisor: 1,
    linear_below: 0,
});

#[unsafe(no_mangle)]
static ALLOC_THRESHOLDS: Global<SampleThresholds> = Global::new([0; SAMPLE_TABLE_LEN]);

/// Sizes are defaults; userspace resizes them.
#[map]
static ALLOC_STACKS: HashMap<StackKey, StackCounts> = HashMap::with_max_entries(65_536, 0);
#[map]
static ALLOC_STACK_TRACES: StackTrace = StackTrace::with_max_entries(16_384, 0);
/// Not an LRU: an LRU would evict the oldest entries, which are the leak suspects. Full:
/// counted in `ALLOC_LOSSES`.
#[map]
static ALLOC_OUTSTANDING: HashMap<OutstandingKey, Outstanding> =
    HashMap::with_max_entries(262_144, 0);
#[map]
static ALLOC_INFLIGHT: HashMap<u64, Inflight> = HashMap::with_max_entries(16_384, 0);
#[map]
static ALLOC_SAMPLES: RingBuf = RingBuf::with_byte_size(8 << 20, 0);
#[map]
static ALLOC_LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::SLOTS, 0);
/// Non-zero while `--duty-cycle` pauses between bursts. Userspace sets it before detaching the
/// probes: detaching one waits out a grace period under a kernel-wide mutex, so the last of
/// them is gone hundreds of milliseconds after the first, and must count nothing meanwhile.
#[map]
static ALLOC_PAUSED: Array<u32> = Array::with_max_entries(1, 0);

const EEXIST: i32 = 17;

#[inline(always)]
fn config() -> AllocConfig {
    ALLOC_CONFIG.load()
}

#[inline(always)]
fn threshold_entry(index: usize) -> u64 {
    if index >= SAMPLE_TABLE_LEN {
        return THRESHOLD_ALWAYS;
    }
    // SAFETY: in bounds of the initialised global; volatile so the read is not folded to the
    // object's initial zeros (userspace overrides the global at load).
    unsafe { core::ptr::read_volatile((&raw const ALLOC_THRESHOLDS).cast::<u64>().add(index)) }
}

#[inline(always)]
fn count(slot: u32) {
    if let Some(counter) = ALLOC_LOSSES.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot; uprobe programs do not nest on one CPU.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
fn add(counter: *mut u64, value: u64) {
    // SAFETY: `counter` points into a map value, valid for the program's run; atomic because
    // threads of the process update one site from several CPUs.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, value) };
}

/// [`STACK_COPY`] as the helpers take it.
#[expect(clippy::cast_possible_truncation, reason = "STACK_COPY is 16 KiB")]
const STACK_COPY_BYTES: u32 = STACK_COPY as u32;

/// The thread's `pid_tgid` if it belongs to the profiled process.
#[inline(always)]
fn ours(config: &AllocConfig) -> Option<u64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    (tgid == config.tgid).then_some(pid_tgid)
}

#[inline(always)]
fn regs(ctx: &ProbeContext) -> *const pt_regs {
    ctx.regs.cast_const()
}

/// The caller's return address: at the first instruction of the allocator, the top of stack.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
fn return_address(ctx: &ProbeContext) -> u64 {
    // SAFETY: `regs` is the probe's register frame; the read is of user memory, checked.
    unsafe {
        let sp = (*regs(ctx)).rsp;
        bpf_probe_read_user(sp as *const u64).unwrap_or(0)
    }
}

/// The caller's return address: on arm64, the link register at the first instruction.
#[cfg(not(bpf_target_arch = "x86_64"))]
#[inline(always)]
fn return_address(ctx: &ProbeContext) -> u64 {
    // SAFETY: `regs` is the probe's register frame.
    unsafe { (*regs(ctx)).regs[30] }
}

/// Weighted bytes and objects of one taken allocation: `1/p` each.
#[inline(always)]
fn weights(size: u64, threshold: u64) -> (u64, u64) {
    if threshold >= THRESHOLD_ALWAYS || threshold == 0 {
        (size, OBJECT_UNIT)
    } else {
        ((size << 32) / threshold, (OBJECT_UNIT << 32) / threshold)
    }
}

/// The sampling decision for an allocation of `size`: its threshold if taken, else 0.
#[inline(always)]
fn take(config: &AllocConfig, size: u64) -> u64 {
    let threshold = threshold_for(config, threshold_entry, size);
    if config.flags & flag::UNSAMPLED == 0 && threshold < THRESHOLD_ALWAYS {
        // SAFETY: helper without preconditions.
        let random = u64::from(unsafe { bpf_get_prandom_u32() });
        if random >= threshold {
            return 0;
        }
    }
    threshold
}

/// An entry probe: note the call for the return probe (or, sites only, count it now).
#[inline(always)]
fn enter(ctx: &ProbeContext, kind: u32, size: u64, old: u64) -> u32 {
    let config = config();
    let Some(pid_tgid) = ours(&config) else {
        return 0;
    };
    if config.flags & flag::SITES_ONLY != 0 {
        enter_site_only(ctx, &config, pid_tgid, kind, size, old);
        return 0;
    }
    let threshold = take(&config, size);
    // realloc frees its old pointer: matter whether or not the new one is taken.
    if threshold == 0 && kind != call::REALLOC {
        return 0;
    }
    if kind == call::REALLOC && old != 0 {
        free_pointer(config.tgid, old);
    }
    if threshold == 0 {
        return 0;
    }
    let mut inflight = Inflight {
        size,
        old,
        return_address: return_address(ctx),
        threshold,
        kind,
        reserved: 0,
    };
    match ALLOC_INFLIGHT.insert(pid_tgid, inflight, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        Err(err) if err == -EEXIST => {
            // An allocator calling another (glibc's realloc(NULL, n) jumps to malloc): the inner
            // call's return address is in the outer allocator, or is the uretprobe trampoline
            // the outer call's return was redirected to. The site is the outer call's caller.
            // SAFETY: a copy of the map value.
            if let Some(outer) = unsafe { ALLOC_INFLIGHT.get(pid_tgid) } {
                inflight.return_address = outer.return_address;
            }
            count(loss::NESTED);
            if ALLOC_INFLIGHT
                .insert(pid_tgid, inflight, u64::from(BPF_ANY))
                .is_err()
            {
                count(loss::INFLIGHT_FULL);
            }
        }
        Err(_) => count(loss::INFLIGHT_FULL),
    }
    0
}

/// Sites only: the allocation is counted on its site at its entry, with no pointer to track.
#[inline(always)]
fn enter_site_only(
    ctx: &ProbeContext,
    config: &AllocConfig,
    pid_tgid: u64,
    kind: u32,
    size: u64,
    old: u64,
) {
    if ALLOC_PAUSED.get(0).is_some_and(|paused| *paused != 0) {
        return;
    }
    let return_address = return_address(ctx);
    // glibc's realloc(NULL, n) jumps to malloc(n): the malloc entry right after it on the thread,
    // from the same call, is the same allocation.
    // SAFETY: copied out before removal.
    if let Some(previous) = (unsafe { ALLOC_INFLIGHT.get(pid_tgid) }).copied() {
        let _ = ALLOC_INFLIGHT.remove(pid_tgid);
        if kind == call::MALLOC
            && previous.return_address == return_address
            && previous.size == size
        {
            count(loss::NESTED);
            return;
        }
    }
    if kind == call::REALLOC && old == 0 {
        let realloc_null = Inflight {
            size,
            old,
            return_address,
            threshold: 0,
            kind,
            reserved: 0,
        };
        if ALLOC_INFLIGHT
            .insert(pid_tgid, realloc_null, u64::from(BPF_ANY))
            .is_err()
        {
            count(loss::INFLIGHT_FULL);
        }
    }
    let threshold = take(config, size);
    if threshold == 0 {
        return;
    }
    let key = stack_key(ctx, return_address);
    let Some(Counted { new_site, .. }) = count_site(key, size, threshold) else {
        return;
    };
    if config.flags & flag::UNSAMPLED == 0 || new_site {
        // SAFETY: `regs` is the probe's register frame.
        #[cfg(bpf_target_arch = "x86_64")]
        let (sp, bp) = unsafe { ((*regs(ctx)).rsp, (*regs(ctx)).rbp) };
        #[cfg(not(bpf_target_arch = "x86_64"))]
        let (sp, bp) = unsafe { ((*regs(ctx)).sp, (*regs(ctx)).regs[29]) };
        // At the allocator's first instruction the frame is the caller's but for the pushed
        // return address: popping it gives the registers the caller has after the return.
        #[cfg(bpf_target_arch = "x86_64")]
        let sp = sp + 8;
        let taken = Taken {
            key,
            pointer: 0,
            size,
            threshold,
            return_address,
            // SAFETY: helper without preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            new_site,
        };
        send_sample(pid_tgid, &taken, sp, bp);
    }
}

#[inline(always)]
fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    ctx.arg::<u64>(n).unwrap_or(0)
}

#[uprobe]
pub fn alloc_malloc(ctx: ProbeContext) -> u32 {
    enter(&ctx, call::MALLOC, arg(&ctx, 0), 0)
}

#[uprobe]
pub fn alloc_calloc(ctx: ProbeContext) -> u32 {
    // An overflowing product makes calloc fail (NULL, not recorded).
    let size = arg(&ctx, 0).wrapping_mul(arg(&ctx, 1));
    enter(&ctx, call::MALLOC, size, 0)
}

/// realloc(ptr, size), jemalloc's rallocx(ptr, size, flags).
#[uprobe]
pub fn alloc_realloc(ctx: ProbeContext) -> u32 {
    enter(&ctx, call::REALLOC, arg(&ctx, 1), arg(&ctx, 0))
}

/// `memalign(alignment, size)`, `aligned_alloc(alignment, size)`.
#[uprobe]
pub fn alloc_memalign(ctx: ProbeContext) -> u32 {
    enter(&ctx, call::MALLOC, arg(&ctx, 1), 0)
}

/// `posix_memalign(memptr, alignment, size)`.
#[uprobe]
pub fn alloc_posix_memalign(ctx: ProbeContext) -> u32 {
    enter(&ctx, call::POSIX_MEMALIGN, arg(&ctx, 2), arg(&ctx, 0))
}

/// free(ptr), jemalloc's dallocx(ptr, flags) and sdallocx(ptr, size, flags).
#[uprobe]
pub fn alloc_free(ctx: ProbeContext) -> u32 {
    let config = config();
    if ours(&config).is_none() {
        return 0;
    }
    free_pointer(config.tgid, arg(&ctx, 0));
    0
}

#[inline(always)]
fn free_pointer(tgid: u32, pointer: u64) {
    if pointer == 0 {
        return;
    }
    let key = OutstandingKey {
        tgid,
        reserved: 0,
        pointer,
    };
    // SAFETY: the value is copied out before the entry is removed.
    let Some(outstanding) = (unsafe { ALLOC_OUTSTANDING.get(key) }).copied() else {
        count(loss::FREE_UNKNOWN);
        return;
    };
    let _ = ALLOC_OUTSTANDING.remove(key);
    count(loss::FREES_MATCHED);
    if let Some(counts) = ALLOC_STACKS.get_ptr_mut(outstanding.stack) {
        // SAFETY: a map value, valid for the program's run.
        unsafe {
            add(&raw mut (*counts).free_bytes, outstanding.weighted_bytes);
            add(
                &raw mut (*counts).free_objects,
                outstanding.weighted_objects,
            );
        }
    }
}

/// Every allocator's return: the pointer is the return value, or for `posix_memalign` in
/// `*memptr` when it returns 0.
#[uretprobe]
pub fn alloc_return(ctx: RetProbeContext) -> u32 {
    let config = config();
    let Some(pid_tgid) = ours(&config) else {
        return 0;
    };
    // SAFETY: copied out before removal.
    let Some(inflight) = (unsafe { ALLOC_INFLIGHT.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = ALLOC_INFLIGHT.remove(pid_tgid);
    let returned: u64 = ctx.ret();
    let pointer = if inflight.kind == call::POSIX_MEMALIGN {
        if returned != 0 {
            return 0;
        }
        // SAFETY: a user pointer, read checked.
        unsafe { bpf_probe_read_user(inflight.old as *const u64) }.unwrap_or(0)
    } else {
        returned
    };
    if pointer == 0 {
        return 0;
    }
    record(&ctx, &config, pid_tgid, pointer, &inflight);
    0
}

/// The site of a call: its return address and the kernel's frame-pointer stack (whose first
/// frame is the probe's own address: the return address at a return probe, the allocator's
/// entry at an entry probe).
#[inline(always)]
fn stack_key<C: StackIdContext>(ctx: &C, return_address: u64) -> StackKey {
    // A stack id is an index into the stack map: it fits in u32.
    let stack_id = if let Some(id) = ctx
        .get_stackid(&ALLOC_STACK_TRACES, u64::from(BPF_F_USER_STACK))
        .ok()
        .and_then(|id| u32::try_from(id).ok())
    {
        id
    } else {
        count(loss::STACK_ID);
        NO_STACK_ID
    };
    StackKey {
        return_address,
        stack_id,
        reserved: 0,
    }
}

/// A taken allocation as counted: whether its site is new, and its weighted bytes and objects.
struct Counted {
    new_site: bool,
    weighted_bytes: u64,
    weighted_objects: u64,
}

/// Counts a taken allocation on its site; `None` if the site map is full (the allocation is not
/// counted).
#[inline(always)]
fn count_site(key: StackKey, size: u64, threshold: u64) -> Option<Counted> {
    let (weighted_bytes, weighted_objects) = weights(size, threshold);
    let mut new_site = false;
    let counts = if let Some(counts) = ALLOC_STACKS.get_ptr_mut(key) {
        counts
    } else {
        match ALLOC_STACKS.insert(key, StackCounts::default(), u64::from(BPF_NOEXIST)) {
            Ok(()) => new_site = true,
            Err(err) if err == -EEXIST => {}
            Err(_) => {
                count(loss::STACKS_FULL);
                return None;
            }
        }
        ALLOC_STACKS.get_ptr_mut(key)?
    };
    // SAFETY: a map value, valid for the program's run.
    unsafe {
        add(&raw mut (*counts).alloc_bytes, weighted_bytes);
        add(&raw mut (*counts).alloc_objects, weighted_objects);
        add(&raw mut (*counts).samples, 1);
    }
    count(loss::TAKEN);
    Some(Counted {
        new_site,
        weighted_bytes,
        weighted_objects,
    })
}

#[inline(always)]
fn record(
    ctx: &RetProbeContext,
    config: &AllocConfig,
    pid_tgid: u64,
    pointer: u64,
    inflight: &Inflight,
) {
    let key = stack_key(ctx, inflight.return_address);
    let Some(Counted {
        new_site,
        weighted_bytes,
        weighted_objects,
    }) = count_site(key, inflight.size, inflight.threshold)
    else {
        return;
    };
    // SAFETY: helper without preconditions.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let outstanding = Outstanding {
        stack: key,
        size: inflight.size,
        weighted_bytes,
        weighted_objects,
        ts_ns,
    };
    let outstanding_key = OutstandingKey {
        tgid: config.tgid,
        reserved: 0,
        pointer,
    };
    if ALLOC_OUTSTANDING
        .insert(outstanding_key, outstanding, u64::from(BPF_ANY))
        .is_err()
    {
        count(loss::OUTSTANDING_FULL);
    }
    if config.flags & flag::UNSAMPLED == 0 || new_site {
        // The uretprobe reports the caller's registers after the return (the kernel sets `ip`
        // back from its trampoline to the return address).
        let regs = ctx.regs.cast_const();
        // SAFETY: `regs` is the probe's register frame.
        #[cfg(bpf_target_arch = "x86_64")]
        let (sp, bp) = unsafe { ((*regs).rsp, (*regs).rbp) };
        #[cfg(not(bpf_target_arch = "x86_64"))]
        let (sp, bp) = unsafe { ((*regs).sp, (*regs).regs[29]) };
        let taken = Taken {
            key,
            pointer,
            size: inflight.size,
            threshold: inflight.threshold,
            return_address: inflight.return_address,
            ts_ns,
            new_site,
        };
        send_sample(pid_tgid, &taken, sp, bp);
    }
}

/// A taken allocation, as its sample record tells it.
struct Taken {
    key: StackKey,
    pointer: u64,
    size: u64,
    threshold: u64,
    return_address: u64,
    ts_ns: u64,
    new_site: bool,
}

/// Sends `taken` with the caller's `sp` and `bp` after the return and a copy of its stack.
#[inline(always)]
fn send_sample(pid_tgid: u64, taken: &Taken, sp: u64, bp: u64) {
    let Some(mut entry) = ALLOC_SAMPLES.reserve::<AllocSample>(0) else {
        count(loss::RING_FULL);
        return;
    };
    let sample = entry.as_mut_ptr();
    // SAFETY: `sample` is the reserved record (large: written field by field, never built on the
    // 512-byte BPF stack).
    unsafe {
        #[expect(clippy::cast_possible_truncation, reason = "pid_tgid halves")]
        {
            (*sample).tgid = (pid_tgid >> 32) as u32;
            (*sample).tid = pid_tgid as u32;
        }
        (*sample).stack = taken.key;
        (*sample).pointer = taken.pointer;
        (*sample).size = taken.size;
        (*sample).threshold = taken.threshold;
        (*sample).ts_ns = taken.ts_ns;
        (*sample).ip = taken.return_address;
        (*sample).sp = sp;
        (*sample).bp = bp;
        (*sample).new_site = u32::from(taken.new_site);
        let dst = (&raw mut (*sample).stack_bytes).cast::<c_void>();
        let src = sp as *const c_void;
        // The stack ends somewhere above `sp` (a thread's first frames): a read crossing the end
        // fails as a whole, so smaller copies are tried.
        let mut len = 0u32;
        if probe_read_user_raw(dst, STACK_COPY_BYTES, src) == 0 {
            len = STACK_COPY_BYTES;
        } else if probe_read_user_raw(dst, STACK_COPY_BYTES / 4, src) == 0 {
            len = STACK_COPY_BYTES / 4;
        } else if probe_read_user_raw(dst, STACK_COPY_BYTES / 16, src) == 0 {
            len = STACK_COPY_BYTES / 16;
        } else if probe_read_user_raw(dst, 256, src) == 0 {
            len = 256;
        }
        (*sample).stack_len = len;
    }
    entry.submit(0);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
