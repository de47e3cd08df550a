//! What every family's programs share: loss counting, the per-process counter entry, event
//! headers and submission (with the reader wake-up policy), the live-trace filter, and readers of
//! tracepoint fields and kernel memory.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE,
    },
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_task_btf, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel_str_bytes,
    },
    maps::RingBuf,
    programs::TracePointContext,
};
use memtrace_common::{
    COMM_LEN, Config, EventHeader, FIELD_ABSENT, ProcStats, TaskOffsets, config_flag, filter,
    helper_flag, loss,
};

use crate::maps::{
    CONFIG, EVENTS, FILTER_COMMS, FILTER_PIDS, LOSSES, PROC_STATS, ZERO_PROC_STATS, offset,
};

const EEXIST: i32 = 17;

#[inline(always)]
pub fn count_loss(slot: u32) {
    if let Some(counter) = LOSSES.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, programs do not nest on one CPU for these hooks.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub fn add(counter: *mut u64, value: u64) {
    // SAFETY: `counter` points into a map value, valid for the program's run. Atomic because a
    // multi-threaded process updates its entry from several CPUs at once.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, value) };
}

/// The process's counters, creating the entry on first sight.
#[inline(always)]
pub fn stats_entry(tgid: u32) -> Option<*mut ProcStats> {
    if let Some(stats) = PROC_STATS.get_ptr_mut(tgid) {
        return Some(stats);
    }
    let Some(zero) = ZERO_PROC_STATS.get_ptr(0) else {
        count_loss(loss::MAP_PROC_STATS);
        return None;
    };
    // SAFETY: a map value, valid for the program's run and never written. Passed by reference:
    // a copy would be the stack frame this avoids.
    let zero: &ProcStats = unsafe { &*zero };
    match PROC_STATS.insert(tgid, zero, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        Err(err) if err == -EEXIST => {} // another CPU created it first
        Err(_) => {
            count_loss(loss::MAP_PROC_STATS);
            return None;
        }
    }
    PROC_STATS.get_ptr_mut(tgid)
}

/// The current task's `pid_tgid` (tgid in the upper half, thread id in the lower) and tgid.
#[inline(always)]
pub fn current() -> (u64, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    (pid_tgid, tgid_of(pid_tgid))
}

/// The tgid half of a `pid_tgid`.
#[inline(always)]
pub const fn tgid_of(pid_tgid: u64) -> u32 {
    (pid_tgid >> 32) as u32
}

/// The thread-id half of a `pid_tgid`.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "the lower half of `pid_tgid`"
)]
pub const fn tid_of(pid_tgid: u64) -> u32 {
    pid_tgid as u32
}

#[inline(always)]
pub fn header(kind: u32, pid_tgid: u64) -> EventHeader {
    header_with_comm(kind, pid_tgid, current_comm())
}

/// [`header`] with the comm already read (by [`filter_pass`]).
#[inline(always)]
pub fn header_with_comm(kind: u32, pid_tgid: u64, comm: [u8; COMM_LEN]) -> EventHeader {
    EventHeader {
        kind,
        pid: tgid_of(pid_tgid),
        tid: tid_of(pid_tgid),
        // SAFETY: helper without preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        comm,
    }
}

/// The current task as a BTF pointer, where the kernel has `bpf_get_current_task_btf` (5.11+):
/// fields load from it directly, checked by the verifier against the task's type. The flag is
/// read-only data, so on older kernels the verifier never walks the call.
#[inline(always)]
fn current_task_btf() -> Option<u64> {
    if offset!(helpers) & helper_flag::CURRENT_TASK_BTF == 0 {
        return None;
    }
    // SAFETY: helper without preconditions.
    Some(unsafe { bpf_get_current_task_btf() } as u64)
}

/// The current task's comm. With BTF it is two loads from the task (`bpf_get_current_comm`
/// copies it with `strscpy_pad` behind a helper call: ~45 ns, a sixth of a streamed fault's
/// program); `OFFSETS` is read-only data, so the verifier loads only one of the two ways.
#[inline(always)]
pub fn current_comm() -> [u8; COMM_LEN] {
    let offset = offset!(task.task_comm);
    let Some(task) = current_task_btf().filter(|_| offset != FIELD_ABSENT) else {
        return bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    };
    let comm = task + u64::from(offset);
    let words = [load_btf::<u64>(comm), load_btf::<u64>(comm + 8)];
    // SAFETY: 16 plain bytes either way.
    unsafe { core::mem::transmute::<[u64; 2], [u8; COMM_LEN]>(words) }
}

/// The live-trace filter (pids and/or comms). `Some(comm)` if the current task passes (always,
/// when no filter is configured): the comm is read once, for the filter and the event header.
#[inline(always)]
pub fn filter_pass(config: &Config, tgid: u32) -> Option<[u8; COMM_LEN]> {
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
pub fn emit<T: 'static>(ring: &RingBuf, kind: u32, event: T, flags: u64) {
    if let Some(mut entry) = ring.reserve::<T>(0) {
        entry.write(event);
        entry.submit(flags);
    } else {
        count_loss(kind);
    }
}

/// Submit flags that batch reader wake-ups. A wake-up is an IRQ work item, a self-IPI (a VM exit
/// under virtualisation: microseconds) and a reader wake-up; per record it costs more than the
/// record, at a million faults a second or a thousand exits. So the reader is woken only once a
/// quarter of `ring` is filled; below that it drains on its own timer (every 10 ms in a live
/// trace, 100 ms in the daemon: see `memtrace::pipeline`). Only OOM events wake it at once.
#[inline(always)]
pub fn batched_wakeup(ring: &RingBuf) -> u64 {
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
pub fn events_wakeup() -> u64 {
    if CONFIG.load().flags & config_flag::BATCH_WAKEUPS == 0 {
        0
    } else {
        batched_wakeup(&EVENTS)
    }
}

/// Read a tracepoint field; `None` for absent fields or a failed read.
#[inline(always)]
pub fn field<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == FIELD_ABSENT {
        return None;
    }
    // SAFETY: the offset comes from this tracepoint's format file; the read is a checked
    // `bpf_probe_read_kernel`.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

/// Copy a `__data_loc char[]` field into `dst`; returns the number of bytes copied.
#[inline(always)]
pub fn data_loc_str(ctx: &TracePointContext, offset: u32, dst: &mut [u8]) -> usize {
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

/// A kernel value at `addr`, 0 if it cannot be read.
///
/// Branch-free on purpose: the helper zeroes the destination when the read fails, so its
/// return value is not looked at. A branch per read multiplies the paths the verifier walks
/// through the exit hook's thread-list loop (seconds of load time instead of milliseconds).
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "`T` is a kernel scalar: its size fits the helper's u32"
)]
pub fn read_kernel<T: Default>(addr: u64) -> T {
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

/// A field of a BTF-typed kernel object (`base` derived from a BTF pointer the verifier knows,
/// `base + offset` a member by vmlinux BTF): a plain load the verifier checks against the type
/// and the JIT makes fault-safe, about a tenth of a `bpf_probe_read_kernel` call here. A NULL
/// base (a task without an mm) reads as 0.
#[inline(always)]
pub fn load_btf<T: Copy>(addr: u64) -> T {
    // SAFETY: see above; the verifier refuses the program rather than allow a bad access.
    unsafe { core::ptr::read_volatile(addr as *const T) }
}

/// One task's own (`min_flt`, `maj_flt`), through `load` ([`read_kernel`] for a plain task
/// address, [`load_btf`] for a BTF-typed one).
#[inline(always)]
pub fn task_faults(task: u64, t: &TaskOffsets, load: fn(u64) -> u64) -> (u64, u64) {
    (
        load(task + u64::from(t.task_min_flt)),
        load(task + u64::from(t.task_maj_flt)),
    )
}

/// A task's cgroup id (`memtrace_common::CgroupOffsets`), through `load` as in
/// [`task_faults`]; 0 without the layout or when a link is NULL. `OFFSETS` is read-only, so the
/// verifier keeps only the path this host uses (v1 memory controller or default hierarchy).
#[inline(always)]
pub fn task_cgroup_id(task: u64, load: fn(u64) -> u64) -> u64 {
    let c = offset!(cgroup);
    if c.task_cgroups == FIELD_ABSENT {
        return 0;
    }
    let cset = load(task + u64::from(c.task_cgroups));
    if cset == 0 {
        return 0;
    }
    let mut cgroup = load(cset + u64::from(c.cset_link));
    if c.css_cgroup != FIELD_ABSENT {
        if cgroup == 0 {
            return 0;
        }
        cgroup = load(cgroup + u64::from(c.css_cgroup));
    }
    if cgroup == 0 {
        return 0;
    }
    let kn = load(cgroup + u64::from(c.cgroup_kn));
    if kn == 0 {
        return 0;
    }
    load(kn + u64::from(c.kn_id))
}

/// The current task's cgroup id ([`task_cgroup_id`]): BTF loads from the current task, or
/// checked reads where the kernel lacks `bpf_get_current_task_btf` (before 5.11).
#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    if offset!(cgroup.task_cgroups) == FIELD_ABSENT {
        return 0;
    }
    match current_task_btf() {
        Some(task) => task_cgroup_id(task, load_btf::<u64>),
        // SAFETY: helper without preconditions.
        None => task_cgroup_id(unsafe { bpf_get_current_task() }, read_kernel::<u64>),
    }
}

/// The current process's name: its thread-group leader's comm (the last thread to exit may be
/// a helper thread named otherwise): BTF loads, or checked reads where the kernel lacks
/// `bpf_get_current_task_btf` (before 5.11). Without BTF, the current task's.
#[inline(always)]
pub fn leader_comm() -> [u8; COMM_LEN] {
    let t = offset!(task);
    if t.task_comm == FIELD_ABSENT || t.task_group_leader == FIELD_ABSENT {
        return current_comm();
    }
    // Each branch passes its own loader (inlined: no indirect call, which BPF has not).
    match current_task_btf() {
        Some(task) => task_leader_comm(task, &t, load_btf::<u64>),
        // SAFETY: helper without preconditions.
        None => task_leader_comm(unsafe { bpf_get_current_task() }, &t, read_kernel::<u64>),
    }
}

/// `task`'s thread-group leader's comm through `load` ([`load_btf`] or [`read_kernel`]).
#[inline(always)]
fn task_leader_comm(task: u64, t: &TaskOffsets, load: fn(u64) -> u64) -> [u8; COMM_LEN] {
    let leader = load(task + u64::from(t.task_group_leader));
    if leader == 0 {
        return current_comm();
    }
    let comm = leader + u64::from(t.task_comm);
    let words = [load(comm), load(comm + 8)];
    // SAFETY: 16 plain bytes either way.
    unsafe { core::mem::transmute::<[u64; 2], [u8; COMM_LEN]>(words) }
}
