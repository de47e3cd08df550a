//! memtrace's kernel programs.
//!
//! Hot signals (page faults, RSS updates) only bump counters in `PROC_STATS`; discrete events
//! (mmap-family calls over a size threshold, reclaim stalls, OOM kills, exec, exit) go through the
//! `EVENTS` ring buffer, and sampled per-fault events through `FAULT_EVENTS` only while a live
//! trace asks for them. Every failed ring reserve and every failed map insert is counted in
//! `LOSSES`, so nothing is lost silently.
//!
//! Tracepoint record layouts are not hard-coded: the loader parses each tracepoint's tracefs
//! `format` and passes the field offsets in the read-only global `OFFSETS`. `CONFIG` is read-only
//! too, so the verifier sees constants and prunes disabled features (e.g. the fault stream)
//! from the hot path entirely.
#![no_std]
#![no_main]
// `AtomicU64::fetch_add` is not offered for the BPF target (it lacks compare-and-swap), but the
// instruction we need, BPF_ATOMIC|BPF_ADD, is exactly what the intrinsic lowers to. The eBPF crate is
// built with RUSTC_BOOTSTRAP=1 already (for `-Z build-std`).
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "atomic_xadd: see above")]

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    EbpfContext, Global,
    bindings::{
        BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE,
        pt_regs, seq_file,
    },
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_task_btf, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, bpf_seq_write, bpf_task_pt_regs,
    },
    macros::{map, perf_event, raw_tracepoint, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{PerfEventContext, RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::info;
use memtrace_common::{
    COMM_LEN, Config, EventHeader, ExecEvent, ExitEvent, FIELD_ABSENT, FILENAME_LEN, FaultEvent,
    MemSyscallEvent, Offsets, OomEvent, ProcStats, ReclaimEvent, ReclaimStart, SyscallArgs,
    SyscallEnterOffsets, TaskSample, config_flag, filter, kind, loss, oom_field, rss_member,
    task_sample_flag,
};

#[unsafe(no_mangle)]
static CONFIG: Global<Config> = Global::new(Config {
    event_mask: 0,
    filter_flags: 0,
    fault_sample_every: 0,
    page_size: 4096,
    mmap_min_bytes: u64::MAX,
    reclaim_min_ns: u64::MAX,
    flags: 0,
    reserved: 0,
});

#[unsafe(no_mangle)]
static OFFSETS: Global<Offsets> = Global::new(Offsets::ABSENT);

/// One part of `OFFSETS`, e.g. `offset!(task.task_mm)`. `OFFSETS.load()` is a volatile copy of
/// the whole struct (about 250 bytes of stack and as many loads); hot programs read only what
/// they use.
macro_rules! offset {
    ($($field:tt)+) => {
        // SAFETY: `Global` is `repr(transparent)` over an initialised `Offsets`; a volatile read
        // of one of its fields, like `Global::load` of the whole.
        unsafe {
            core::ptr::read_volatile(
                &raw const (*(&raw const OFFSETS).cast::<Offsets>()).$($field)+,
            )
        }
    };
}

// Sizes are defaults; the loader resizes them (`map_max_entries`) from its options.

/// Per-process counters. Full: new processes are not tracked (counted in `LOSSES`), existing
/// ones keep counting; entries are removed when a process exits.
#[map]
static PROC_STATS: HashMap<u32, ProcStats> = HashMap::with_max_entries(32768, 0);
/// mmap-family arguments between syscall entry and exit, per thread.
#[map]
static SYSCALL_INFLIGHT: HashMap<u64, SyscallArgs> = HashMap::with_max_entries(8192, 0);
/// Reclaim stalls in progress, per thread.
#[map]
static RECLAIM_INFLIGHT: HashMap<u64, ReclaimStart> = HashMap::with_max_entries(8192, 0);
/// `kmem:rss_stat` `mm_id` → tgid, to attribute RSS changes made from another task's context
/// (reclaim, the OOM reaper, page migration).
#[map]
static MM_OWNER: HashMap<u64, u32> = HashMap::with_max_entries(32768, 0);
/// Live-trace filter: tgids (and, with FOLLOW_FORKS, their descendants' task ids).
#[map]
static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(8192, 0);
/// Live-trace filter: task names, zero-padded to 16 bytes.
#[map]
static FILTER_COMMS: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(64, 0);
/// Loss counters, indexed by `memtrace_common::loss`.
#[map]
static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::SLOTS, 0);
/// Per-CPU: the (mm, type) of the last RSS update, to thin bursts (see `rss_stat_raw`).
#[map]
static RSS_LAST: PerCpuArray<RssLast> = PerCpuArray::with_max_entries(1, 0);

/// See `rss_stat_raw`: at most this many consecutive updates of one (mm, type) on one CPU are
/// folded into one.
const RSS_SAMPLE_EVERY: u64 = 32;

#[repr(C)]
struct RssLast {
    mm: u64,
    member: u64,
    skipped: u64,
}

/// Per-CPU fault counter for 1-in-N sampling of the fault stream.
#[map]
static SAMPLE_COUNTER: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
/// Page-sized until a live trace with `--faults` resizes it.
#[map]
static FAULT_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);

const EEXIST: i32 = 17;

#[inline(always)]
fn count_loss(slot: u32) {
    if let Some(counter) = LOSSES.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, programs do not nest on one CPU for these hooks.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
fn add(counter: *mut u64, value: u64) {
    // SAFETY: `counter` points into a map value, valid for the program's run. Atomic because a
    // multi-threaded process updates its entry from several CPUs at once.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, value) };
}

/// The process's counters, creating the entry on first sight.
#[inline(always)]
fn stats_entry(tgid: u32) -> Option<*mut ProcStats> {
    if let Some(stats) = PROC_STATS.get_ptr_mut(tgid) {
        return Some(stats);
    }
    match PROC_STATS.insert(tgid, ProcStats::default(), u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        Err(err) if err == -EEXIST => {} // another CPU created it first
        Err(_) => {
            count_loss(loss::MAP_PROC_STATS);
            return None;
        }
    }
    PROC_STATS.get_ptr_mut(tgid)
}

#[inline(always)]
fn current() -> (u64, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    (pid_tgid, (pid_tgid >> 32) as u32)
}

#[inline(always)]
fn header(kind: u32, pid_tgid: u64) -> EventHeader {
    header_with_comm(kind, pid_tgid, current_comm())
}

/// [`header`] with the comm already read (by [`filter_pass`]).
#[inline(always)]
fn header_with_comm(kind: u32, pid_tgid: u64, comm: [u8; COMM_LEN]) -> EventHeader {
    EventHeader {
        kind,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        // SAFETY: helper without preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        comm,
    }
}

/// Whether the loader found kernel BTF (it then sets `task_comm`, whatever families run): the
/// programs may then load from BTF-typed task and register pointers directly.
#[inline(always)]
fn have_btf() -> bool {
    offset!(task.task_comm) != FIELD_ABSENT
}

/// The current task's comm. With BTF it is two loads from the task (`bpf_get_current_comm`
/// copies it with `strscpy_pad` behind a helper call: ~45 ns, a sixth of a streamed fault's
/// program); `OFFSETS` is read-only data, so the verifier loads only one of the two ways.
#[inline(always)]
fn current_comm() -> [u8; COMM_LEN] {
    if !have_btf() {
        return bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    }
    // SAFETY: helper without preconditions; a BTF pointer to the current task.
    let comm = unsafe { bpf_get_current_task_btf() } as u64 + u64::from(offset!(task.task_comm));
    let words = [load_btf::<u64>(comm), load_btf::<u64>(comm + 8)];
    // SAFETY: 16 plain bytes either way.
    unsafe { core::mem::transmute::<[u64; 2], [u8; COMM_LEN]>(words) }
}

/// The live-trace filter (pids and/or comms). `Some(comm)` if the current task passes (always,
/// when no filter is configured): the comm is read once, for the filter and the event header.
#[inline(always)]
fn filter_pass(config: &Config, tgid: u32) -> Option<[u8; COMM_LEN]> {
    if config.filter_flags & filter::PIDS != 0 && FILTER_PIDS.get_ptr(tgid).is_none() {
        return None;
    }
    let comm = current_comm();
    if config.filter_flags & filter::COMMS != 0 && FILTER_COMMS.get_ptr(comm).is_none() {
        return None;
    }
    Some(comm)
}

/// Send `event` to `ring`, counting a full ring as a loss of that kind. `flags` are the
/// submit flags (0: the kernel's adaptive wake-up).
#[inline(always)]
fn emit<T: 'static>(ring: &RingBuf, kind: u32, event: T, flags: u64) {
    match ring.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(flags);
        }
        None => count_loss(kind),
    }
}

/// Submit flags that batch reader wake-ups. A wake-up is an IRQ work item, a self-IPI (a VM exit
/// under virtualisation: microseconds) and a reader wake-up; per record it costs more than the
/// record, at a million faults a second or a thousand exits. So the reader is woken only once a
/// quarter of `ring` is filled; below that it drains on its own timer (every 10 ms in a live
/// trace, 100 ms in the daemon: see `memtrace::pipeline`). Only OOM events wake it at once.
#[inline(always)]
fn batched_wakeup(ring: &RingBuf) -> u64 {
    let pending = ring.query(u64::from(BPF_RB_AVAIL_DATA));
    let size = ring.query(u64::from(BPF_RB_RING_SIZE));
    if pending >= size / 4 {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Submit flags for the discrete-event ring: batched in the daemon, immediate for a live trace
/// (see `memtrace_common::config_flag::BATCH_WAKEUPS`).
#[inline(always)]
fn events_wakeup() -> u64 {
    if CONFIG.load().flags & config_flag::BATCH_WAKEUPS != 0 {
        batched_wakeup(&EVENTS)
    } else {
        0
    }
}

/// Read a tracepoint field; `None` for absent fields or a failed read.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == FIELD_ABSENT {
        return None;
    }
    // SAFETY: the offset comes from this tracepoint's format file; the read is a checked
    // `bpf_probe_read_kernel`.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

/// Copy a `__data_loc char[]` field into `dst`; returns the number of bytes copied.
#[inline(always)]
fn data_loc_str(ctx: &TracePointContext, offset: u32, dst: &mut [u8]) -> usize {
    let Some(loc) = field::<u32>(ctx, offset) else {
        return 0;
    };
    let start = (loc & 0xffff) as usize;
    // SAFETY: `start` is the record-relative offset the kernel stored; bounded string read.
    match unsafe {
        bpf_probe_read_kernel_str_bytes(ctx.as_ptr().cast::<u8>().add(start).cast_const(), dst)
    } {
        Ok(bytes) => bytes.len(),
        Err(_) => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Page faults: raw tracepoints (no trace-record marshalling: the cheapest hook on kernels
// without fentry). One lookup and one atomic add per fault; everything else is pruned by the
// verifier unless a live trace streams faults.

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
            if user != 0 {
                &raw mut (*stats).faults_user
            } else {
                &raw mut (*stats).faults_kernel
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
    let ip = if user != 0 && have_btf() {
        // A user fault's frame is the task's saved user registers: with BTF (as for the comm),
        // `bpf_task_pt_regs` gives a pointer the verifier checks, so this is one load instead
        // of a `bpf_probe_read_kernel` call.
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

// ---------------------------------------------------------------------------------------------
// mmap family: entry saves the arguments, exit (which knows the result) counts and reports, so
// failed calls never count as mapped memory.

#[inline(always)]
fn on_syscall_enter(
    ctx: &TracePointContext,
    kind: u32,
    offsets: &SyscallEnterOffsets,
    nargs: usize,
) {
    let (pid_tgid, _) = current();
    let mut saved = SyscallArgs {
        kind,
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
    on_syscall_enter(&ctx, kind::MMAP, &OFFSETS.load().mmap_enter, 5);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_munmap")]
pub fn sys_enter_munmap(ctx: TracePointContext) -> u32 {
    // addr, len
    on_syscall_enter(&ctx, kind::MUNMAP, &OFFSETS.load().munmap_enter, 2);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_brk")]
pub fn sys_enter_brk(ctx: TracePointContext) -> u32 {
    // brk
    on_syscall_enter(&ctx, kind::BRK, &OFFSETS.load().brk_enter, 1);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mremap")]
pub fn sys_enter_mremap(ctx: TracePointContext) -> u32 {
    // addr, old_len, new_len, flags, new_addr
    on_syscall_enter(&ctx, kind::MREMAP, &OFFSETS.load().mremap_enter, 5);
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

/// The current syscall's first five arguments, from the user register frame the kernel saved at
/// entry (`struct pt_regs` is the architecture's uapi frame; x86-64 passes arguments in rdi,
/// rsi, rdx, r10, r8). `None` where that is not available.
#[inline(always)]
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

#[inline(always)]
fn on_syscall_exit(ctx: &TracePointContext, kind: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let saved = if offset!(syscall_args_from_regs) != 0 {
        // The arguments are still in the task's saved user registers at syscall exit: one
        // program per call and no per-thread map (needs BTF for the task pointer).
        match syscall_args_from_regs() {
            Some(args) => SyscallArgs {
                kind,
                reserved: 0,
                args,
            },
            None => return,
        }
    } else {
        let Some(saved) = SYSCALL_INFLIGHT.get_ptr(pid_tgid) else {
            return;
        };
        // SAFETY: map value pointer; copied before the entry is removed.
        let saved = unsafe { *saved };
        let _ = SYSCALL_INFLIGHT.remove(pid_tgid);
        saved
    };
    if saved.kind != kind {
        return;
    }
    let Some(ret) = syscall_ret(ctx) else {
        return;
    };
    account_syscall(pid_tgid, kind, saved.args, ret);
}

/// Count one finished mmap-family call (`args` as the syscall got them) and report it if asked.
#[inline(always)]
fn account_syscall(pid_tgid: u64, kind: u32, args: [u64; 5], ret: i64) {
    let tgid = (pid_tgid >> 32) as u32;
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
                if new_brk != requested {
                    add(&raw mut (*stats).failed_calls, 1);
                    event.ret = -12; // ENOMEM: what the libc wrapper reports
                    event.addr = new_brk;
                    event.len = requested.abs_diff(new_brk);
                    event.old_addr = new_brk;
                } else {
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

// ---------------------------------------------------------------------------------------------
// RSS by type. `curr` says whether the mm is the current task's; otherwise (reclaim, the OOM
// reaper, migration) the owner is found through `MM_OWNER`, and entries are never created, so a
// process tearing down its mm after exit cannot resurrect its entry.
//
// `kmem:rss_stat` fires on every RSS counter change, i.e. on nearly every page fault, so it is as
// hot as the fault hook. The raw-tracepoint variant (`rss_stat_raw`, used when vmlinux BTF gives
// the struct layout) skips the kernel's trace-record marshalling (hashing the mm pointer, reading
// the counter, filling a perf buffer) and reads the one counter it needs itself. The classic
// variant (`rss_stat`) is the fallback for kernels without BTF.

/// Record `bytes` as the RSS of type `member` of the mm identified by `mm_key`.
#[inline(always)]
fn rss_update(mm_key: u64, curr: bool, member: u32, bytes: u64) {
    if member as usize >= rss_member::COUNT {
        return;
    }
    let (stats, tgid) = if curr {
        let (_, tgid) = current();
        (stats_entry(tgid), tgid)
    } else {
        match MM_OWNER.get_ptr(mm_key) {
            // SAFETY: map value pointer.
            Some(owner) => {
                let owner = unsafe { *owner };
                (PROC_STATS.get_ptr_mut(owner), owner)
            }
            None => return,
        }
    };
    let Some(stats) = stats else {
        return;
    };
    // The mask (COUNT is 4) is a bound the verifier can see whatever the compiler makes of the
    // check above; an index it cannot bound is refused as an unbounded map-value access.
    let index = member as usize & (rss_member::COUNT - 1);
    // SAFETY (block): map value pointer; `index` < COUNT.
    unsafe {
        *(&raw mut (*stats).rss).cast::<u64>().add(index) = bytes;
        if curr && (*stats).mm_key != mm_key {
            let old = (*stats).mm_key;
            if old != 0 && MM_OWNER.get_ptr(old).is_some_and(|owner| *owner == tgid) {
                let _ = MM_OWNER.remove(old);
            }
            if MM_OWNER.insert(mm_key, tgid, 0).is_err() {
                count_loss(loss::MAP_MM_OWNER);
            }
            (*stats).mm_key = mm_key;
        }
    }
}

#[tracepoint(category = "kmem", name = "rss_stat")]
pub fn rss_stat(ctx: TracePointContext) -> u32 {
    let offsets = OFFSETS.load().rss;
    let (Some(mm_id), Some(curr), Some(member), Some(size)) = (
        field::<u32>(&ctx, offsets.mm_id),
        field::<u32>(&ctx, offsets.curr),
        field::<i32>(&ctx, offsets.member),
        field::<i64>(&ctx, offsets.size),
    ) else {
        return 0;
    };
    rss_update(
        u64::from(mm_id),
        curr != 0,
        member as u32,
        size.max(0) as u64,
    );
    0
}

/// TP_PROTO(struct mm_struct *mm, int member): the same value the classic record carries
/// (`percpu_counter_read_positive(&mm->rss_stat[member])` pages), read directly.
#[raw_tracepoint(tracepoint = "rss_stat")]
pub fn rss_stat_raw(ctx: RawTracePointContext) -> i32 {
    let o = OFFSETS.load().rss;
    let mm: u64 = ctx.arg(0);
    let member: u64 = ctx.arg(1);
    if member >= rss_member::COUNT as u64 || mm == 0 {
        return 0;
    }
    // During a burst of changes to one (mm, type) on one CPU (a process faulting in memory),
    // record one in RSS_SAMPLE_EVERY. The value recorded is `percpu_counter_read`, which the
    // kernel itself lets lag the true RSS by up to a per-CPU batch (dozens of pages per CPU), so
    // this adds error of the same order, and a skipped call costs a per-CPU array slot instead
    // of a hash lookup and a kernel read. The first change of a burst is always recorded.
    if let Some(last) = RSS_LAST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; programs do not nest on one CPU for this hook.
        unsafe {
            if (*last).mm == mm && (*last).member == member {
                (*last).skipped += 1;
                if (*last).skipped < RSS_SAMPLE_EVERY {
                    return 0;
                }
            }
            (*last).mm = mm;
            (*last).member = member;
            (*last).skipped = 0;
        }
    }
    // SAFETY (block): kernel pointers read through checked `bpf_probe_read_kernel`, at offsets
    // from this kernel's BTF.
    let (count, current_mm) = unsafe {
        let counter = mm
            + u64::from(o.mm_rss_stat)
            + member * u64::from(o.counter_size)
            + u64::from(o.counter_count);
        let Ok(count) = bpf_probe_read_kernel(counter as *const i64) else {
            return 0;
        };
        // Fast path (nearly every call: a process faulting in its own memory): the mm is the
        // one already recorded for the current process, so `current->mm` need not be read.
        let (_, tgid) = current();
        if let Some(stats) = PROC_STATS.get_ptr_mut(tgid)
            && (*stats).mm_key == mm
        {
            let bytes = count.max(0) as u64 * u64::from(CONFIG.load().page_size);
            let index = member as usize & (rss_member::COUNT - 1);
            *(&raw mut (*stats).rss).cast::<u64>().add(index) = bytes;
            return 0;
        }
        let task = bpf_get_current_task();
        let current_mm =
            bpf_probe_read_kernel((task + u64::from(o.task_mm)) as *const u64).unwrap_or(0);
        (count, current_mm)
    };
    let bytes = count.max(0) as u64 * u64::from(CONFIG.load().page_size);
    rss_update(mm, current_mm == mm, member as u32, bytes);
    0
}

// ---------------------------------------------------------------------------------------------
// Reclaim stalls: global direct reclaim and memory-cgroup (limit) reclaim, begin → end.

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_begin")]
pub fn direct_reclaim_begin(ctx: TracePointContext) -> u32 {
    on_reclaim_begin(&ctx, 0);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_reclaim_begin(ctx: TracePointContext) -> u32 {
    on_reclaim_begin(&ctx, 1);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_end")]
pub fn direct_reclaim_end(ctx: TracePointContext) -> u32 {
    on_reclaim_end(&ctx);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_reclaim_end(ctx: TracePointContext) -> u32 {
    on_reclaim_end(&ctx);
    0
}

#[inline(always)]
fn on_reclaim_begin(ctx: &TracePointContext, memcg: u32) {
    let offsets = OFFSETS.load().reclaim;
    let (pid_tgid, _) = current();
    let start = ReclaimStart {
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        gfp_flags: field::<u64>(ctx, offsets.begin_gfp_flags).unwrap_or(0),
        order: field::<i32>(ctx, offsets.begin_order).unwrap_or(-1),
        memcg,
    };
    if RECLAIM_INFLIGHT.insert(pid_tgid, start, 0).is_err() {
        count_loss(loss::MAP_RECLAIM_INFLIGHT);
    }
}

#[inline(always)]
fn on_reclaim_end(ctx: &TracePointContext) {
    let (pid_tgid, tgid) = current();
    let Some(start) = RECLAIM_INFLIGHT.get_ptr(pid_tgid) else {
        return;
    };
    // SAFETY: map value pointer, copied before removal.
    let start = unsafe { *start };
    let _ = RECLAIM_INFLIGHT.remove(pid_tgid);
    // SAFETY: helper without preconditions.
    let duration_ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(start.ts_ns);
    if let Some(stats) = stats_entry(tgid) {
        // SAFETY: map value pointer.
        unsafe {
            add(&raw mut (*stats).reclaim_stalls, 1);
            add(&raw mut (*stats).reclaim_ns, duration_ns);
        }
    }
    let config = CONFIG.load();
    if config.wants(kind::RECLAIM)
        && duration_ns >= config.reclaim_min_ns
        && let Some(comm) = filter_pass(&config, tgid)
    {
        let nr_reclaimed = field::<u64>(ctx, OFFSETS.load().reclaim.end_nr_reclaimed).unwrap_or(0);
        emit(
            &EVENTS,
            kind::RECLAIM,
            ReclaimEvent {
                header: header_with_comm(kind::RECLAIM, pid_tgid, comm),
                duration_ns,
                nr_reclaimed,
                gfp_flags: start.gfp_flags,
                order: start.order,
                memcg: start.memcg,
            },
            events_wakeup(),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// OOM: one event per task the OOM killer marks (a memory.oom.group kill marks each member).
// The current task is the one whose allocation invoked the OOM killer: the trigger.

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    let config = CONFIG.load();
    if !config.wants(kind::OOM) {
        return 0;
    }
    let o = OFFSETS.load().oom;
    let (pid_tgid, _) = current();
    let mut event = OomEvent {
        header: header(kind::OOM, pid_tgid),
        victim_pid: field::<i32>(&ctx, o.pid).unwrap_or(0) as u32,
        ..OomEvent::default()
    };
    let mut present = 0;
    let mut kb = |offset: u32, bit: u32| match field::<u64>(&ctx, offset) {
        Some(value) => {
            present |= bit;
            value
        }
        None => 0,
    };
    event.total_vm_kb = kb(o.total_vm, oom_field::TOTAL_VM);
    event.anon_rss_kb = kb(o.anon_rss, oom_field::ANON_RSS);
    event.file_rss_kb = kb(o.file_rss, oom_field::FILE_RSS);
    event.shmem_rss_kb = kb(o.shmem_rss, oom_field::SHMEM_RSS);
    event.pgtables_kb = kb(o.pgtables, oom_field::PGTABLES);
    if let Some(uid) = field::<u32>(&ctx, o.uid) {
        event.victim_uid = uid;
        present |= oom_field::UID;
    }
    if let Some(adj) = field::<i16>(&ctx, o.oom_score_adj) {
        event.oom_score_adj = i32::from(adj);
        present |= oom_field::OOM_SCORE_ADJ;
    }
    if data_loc_str(&ctx, o.comm, &mut event.victim_comm) > 0 {
        present |= oom_field::COMM;
    }
    event.present = present;
    info!(
        &ctx,
        "oom: victim pid {} marked (trigger pid {})", event.victim_pid, event.header.pid
    );
    emit(&EVENTS, kind::OOM, event, 0);
    0
}

// ---------------------------------------------------------------------------------------------
// Process lifecycle.

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let config = CONFIG.load();
    let (pid_tgid, tgid) = current();
    if !config.wants(kind::EXEC) {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_loss(kind::EXEC);
        return 0;
    };
    // Filled in place: the event is too large to build on the 512-byte BPF stack and copy.
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, exclusively owned ring-buffer record.
    unsafe {
        (*event).header = header(kind::EXEC, pid_tgid);
        (*event).old_pid =
            field::<i32>(&ctx, OFFSETS.load().sched.exec_old_pid).map_or(tgid, |p| p as u32);
        (*event).filename = [0; FILENAME_LEN];
        (*event).filename_len = data_loc_str(
            &ctx,
            OFFSETS.load().sched.exec_filename,
            &mut (*event).filename,
        ) as u32;
    }
    entry.submit(events_wakeup());
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let (pid_tgid, tgid) = current();
    let config = CONFIG.load();
    // Per-thread state: a thread that dies never reaches the matching exit/end hook.
    let _ = SYSCALL_INFLIGHT.remove(pid_tgid);
    let _ = RECLAIM_INFLIGHT.remove(pid_tgid);
    if config.filter_flags & filter::FOLLOW_FORKS != 0 {
        let _ = FILTER_PIDS.remove(pid_tgid as u32);
    }

    let group_dead = match field::<u8>(&ctx, OFFSETS.load().sched.exit_group_dead) {
        Some(dead) => dead != 0,
        // Older kernels: treat the leader's exit as the process's.
        None => pid_tgid as u32 == tgid,
    };
    if !group_dead {
        return 0;
    }
    let stats = PROC_STATS.get_ptr(tgid);
    if config.wants(kind::EXIT) {
        match EVENTS.reserve::<ExitEvent>(0) {
            Some(mut entry) => {
                let event = entry.as_mut_ptr();
                // SAFETY: exclusively owned ring-buffer record; `stats` is a map value pointer.
                unsafe {
                    (*event).header = header(kind::EXIT, pid_tgid);
                    match stats {
                        Some(stats) => {
                            core::ptr::copy_nonoverlapping(stats, &raw mut (*event).stats, 1);
                            (*event).tracked = 1;
                        }
                        None => {
                            (*event).stats = ProcStats::default();
                            (*event).tracked = 0;
                        }
                    }
                    match final_task_faults() {
                        Some((minor, major)) => {
                            (*event).task_counters = 1;
                            (*event).task_faults_minor = minor;
                            (*event).task_faults_major = major;
                        }
                        None => {
                            (*event).task_counters = 0;
                            (*event).task_faults_minor = 0;
                            (*event).task_faults_major = 0;
                        }
                    }
                }
                entry.submit(events_wakeup());
            }
            None => count_loss(kind::EXIT),
        }
    }
    if let Some(stats) = stats {
        // SAFETY: map value pointer, read before removal.
        let mm_key = unsafe { (*stats).mm_key };
        if mm_key != 0
            && MM_OWNER
                .get_ptr(mm_key)
                .is_some_and(|owner| unsafe { *owner } == tgid)
        {
            let _ = MM_OWNER.remove(mm_key);
        }
        let _ = PROC_STATS.remove(tgid);
    }
    if config.filter_flags & filter::FOLLOW_FORKS != 0 {
        let _ = FILTER_PIDS.remove(tgid);
    }
    0
}

/// Threads walked at a process's exit (see `final_task_faults`); a larger group may be counted
/// short, which userspace bounds below by the last sampler pass.
const EXIT_MAX_THREADS: u32 = 256;

/// A process's (minor, major) faults by the kernel's per-task counters, read as its last thread
/// exits: what `/proc/<pid>/stat` sums, i.e. the reaped threads' total in `signal` plus every
/// thread still on the group's list. At `exit_group` all threads die at once and others may
/// still be between their exit and their reaping (which moves their counts into `signal`), so
/// the list is walked and `signal`'s totals are read before and after: equal, nothing moved
/// meanwhile and the sum is exact; else it is read again.
#[inline(always)]
fn final_task_faults() -> Option<(u64, u64)> {
    let t = offset!(task);
    if t.task_min_flt == FIELD_ABSENT {
        return None;
    }
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let signal = read_kernel::<u64>(task + u64::from(t.task_signal));
    if signal == 0 {
        return Some(task_faults(task, &t, read_kernel::<u64>));
    }
    let reaped = || {
        (
            read_kernel::<u64>(signal + u64::from(t.signal_min_flt)),
            read_kernel::<u64>(signal + u64::from(t.signal_maj_flt)),
        )
    };
    if t.signal_thread_head == FIELD_ABSENT || t.task_thread_node == FIELD_ABSENT {
        // Older kernels: the exiting thread and a zombie leader, not threads exiting with it.
        let (mut minor, mut major) = reaped();
        let (own_min, own_maj) = task_faults(task, &t, read_kernel::<u64>);
        minor += own_min;
        major += own_maj;
        let leader = read_kernel::<u64>(task + u64::from(t.task_group_leader));
        if leader != 0 && leader != task {
            let (lmin, lmaj) = task_faults(leader, &t, read_kernel::<u64>);
            minor += lmin;
            major += lmaj;
        }
        return Some((minor, major));
    }
    let head = signal + u64::from(t.signal_thread_head);
    let mut total = (0, 0);
    for _attempt in 0..2 {
        let before = reaped();
        let (mut minor, mut major) = before;
        let mut node = read_kernel::<u64>(head);
        for _ in 0..EXIT_MAX_THREADS {
            if node == head || node == 0 {
                break;
            }
            let (tmin, tmaj) =
                task_faults(node - u64::from(t.task_thread_node), &t, read_kernel::<u64>);
            minor += tmin;
            major += tmaj;
            node = read_kernel::<u64>(node);
        }
        total = (minor, major);
        if reaped() == before {
            break;
        }
    }
    Some(total)
}

/// A kernel value at `addr`, 0 if it cannot be read.
///
/// Branch-free on purpose: the helper zeroes the destination when the read fails, so its
/// return value is not looked at. A branch per read multiplies the paths the verifier walks
/// through the exit hook's thread-list loop (seconds of load time instead of milliseconds).
#[inline(always)]
fn read_kernel<T: Default>(addr: u64) -> T {
    let mut value = T::default();
    // SAFETY: checked kernel read into a local of the right size; the address is built from a
    // kernel pointer and a BTF offset.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (&raw mut value).cast(),
            size_of::<T>() as u32,
            addr as *const core::ffi::c_void,
        );
    }
    value
}

/// One task's own (min_flt, maj_flt), through `load` ([`read_kernel`] for a plain task
/// address, [`load_btf`] for a BTF-typed one).
#[inline(always)]
fn task_faults(task: u64, t: &memtrace_common::TaskOffsets, load: fn(u64) -> u64) -> (u64, u64) {
    (
        load(task + u64::from(t.task_min_flt)),
        load(task + u64::from(t.task_maj_flt)),
    )
}

/// A field of a BTF-typed kernel object (`base` derived from a BTF pointer the verifier knows,
/// `base + offset` a member by vmlinux BTF): a plain load the verifier checks against the type
/// and the JIT makes fault-safe, about a tenth of a `bpf_probe_read_kernel` call here. A NULL
/// base (a task without an mm) reads as 0.
#[inline(always)]
fn load_btf<T: Copy>(addr: u64) -> T {
    // SAFETY: see above; the verifier refuses the program rather than allow a bad access.
    unsafe { core::ptr::read_volatile(addr as *const T) }
}

// ---------------------------------------------------------------------------------------------
// Task sampler: a BPF task iterator the daemon reads once per sampling tick. It writes each
// task's fault counters and RSS, which the kernel keeps anyway, so the daemon needs no program
// on the fault path at all (the fault and rss_stat hooks cost 60–110 ns per fault). Tracing
// programs of this kind need BTF but no trampoline, so they work where fentry does not.

/// `struct bpf_iter_meta` (include/linux/bpf.h, stable since 5.8).
#[repr(C)]
pub struct BpfIterMeta {
    seq: *mut seq_file,
    session_id: u64,
    seq_num: u64,
}

/// `struct bpf_iter__task`: the context of a task iterator; `task` is NULL once, at the end.
#[repr(C)]
pub struct BpfIterTask {
    meta: *mut BpfIterMeta,
    task: *mut core::ffi::c_void,
}

/// `PF_EXITING` / `PF_KTHREAD` (include/linux/sched.h; unchanged since 2.6).
const PF_EXITING: u32 = 0x0000_0004;
const PF_KTHREAD: u32 = 0x0020_0000;

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub extern "C" fn task_sampler(ctx: *mut BpfIterTask) -> i32 {
    // SAFETY: the iterator context; `meta` is always valid, `task` is checked below.
    let (meta, task) = unsafe { ((*ctx).meta, (*ctx).task as u64) };
    if task == 0 {
        return 0;
    }
    let t = offset!(task);
    let flags = load_btf::<u32>(task + u64::from(t.task_flags));
    if flags & PF_KTHREAD != 0 {
        return 0;
    }
    let tid = load_btf::<i32>(task + u64::from(t.task_pid)) as u32;
    let tgid = load_btf::<i32>(task + u64::from(t.task_tgid)) as u32;
    let leader = tid == tgid;
    let mut sample = TaskSample {
        tgid,
        tid,
        ..TaskSample::default()
    };
    // A non-leader thread that is exiting is about to move its counts into `signal`: counting
    // it now could count it twice, so it is left out until then (the daemon keeps counters
    // monotonic). A leader's counts only move there once the whole process is gone, so an
    // exited leader (a zombie while its other threads run) still counts.
    if leader || flags & PF_EXITING == 0 {
        (sample.min_flt, sample.maj_flt) = task_faults(task, &t, load_btf::<u64>);
    }
    let mut mm = load_btf::<u64>(task + u64::from(t.task_mm));
    if leader {
        let signal = load_btf::<u64>(task + u64::from(t.task_signal));
        if signal != 0 {
            sample.group_min_flt = load_btf::<u64>(signal + u64::from(t.signal_min_flt));
            sample.group_maj_flt = load_btf::<u64>(signal + u64::from(t.signal_maj_flt));
        }
        sample.start_time_ns = load_btf::<u64>(task + u64::from(t.task_start_time));
    } else if mm != 0 {
        // Threads share the leader's mm: its RSS is read once, from the leader, unless the
        // leader has none left (it exited first).
        let group_leader = load_btf::<u64>(task + u64::from(t.task_group_leader));
        if group_leader != 0 && load_btf::<u64>(group_leader + u64::from(t.task_mm)) != 0 {
            mm = 0;
        }
    }
    if mm != 0 {
        let rss = offset!(rss);
        let mut counter = mm + u64::from(rss.mm_rss_stat) + u64::from(rss.counter_count);
        for pages in sample.rss_pages.iter_mut() {
            // `percpu_counter_read_positive`, as /proc/<pid>/status reports it.
            *pages = load_btf::<i64>(counter).max(0) as u64;
            counter += u64::from(rss.counter_size);
        }
        sample.total_vm_pages = load_btf::<u64>(mm + u64::from(t.mm_total_vm));
        sample.mm = mm;
    }
    // The leader carries its process's hook counters, so the daemon reads every per-process
    // counter in this one pass: batch-reading `PROC_STATS` as well cost it more than the pass.
    let hooks = if leader {
        PROC_STATS.get_ptr(tgid)
    } else {
        None
    };
    if hooks.is_some() {
        sample.flags |= task_sample_flag::HOOK_STATS;
    }
    // SAFETY: `meta` is the iterator's metadata; the record is a plain struct on the stack and
    // the counters a map value (copied as they are: each field is written atomically). If the
    // seq buffer fills (-EOVERFLOW) the kernel discards all this task wrote and runs it again
    // for the next read(), so a record never comes without its counters.
    unsafe {
        let seq = (*meta).seq;
        bpf_seq_write(
            seq,
            (&raw const sample).cast(),
            size_of::<TaskSample>() as u32,
        );
        if let Some(stats) = hooks {
            bpf_seq_write(seq, stats.cast(), size_of::<ProcStats>() as u32);
        }
    }
    0
}

/// Keeps a cgroup (or pid) filter complete: children of filtered processes are filtered in.
#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let (_, tgid) = current();
    if FILTER_PIDS.get_ptr(tgid).is_none() {
        return 0;
    }
    if let Some(child) = field::<i32>(&ctx, OFFSETS.load().sched.fork_child_pid)
        && FILTER_PIDS.insert(child as u32, 1u8, 0).is_err()
    {
        count_loss(loss::MAP_FILTER_PIDS);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
