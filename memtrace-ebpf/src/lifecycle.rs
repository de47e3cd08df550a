//! Process lifecycle: exec and exit events, per-thread and per-process state cleared at exit,
//! and the live-trace filter kept complete across forks.

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_get_current_task, macros::tracepoint,
    programs::TracePointContext,
};
use memtrace_common::{
    ExecEvent, ExitEvent, FIELD_ABSENT, FILENAME_LEN, ProcStats, filter, kind, loss,
};

use crate::{
    helpers::{
        count_loss, current, current_cgroup_id, data_loc_str, events_wakeup, field, header,
        leader_comm, read_kernel, task_faults, tid_of,
    },
    maps::{
        CONFIG, EVENTS, EXIT_CLAIMS, FILTER_CGROUPS, FILTER_PIDS, PROC_STATS, RECLAIM_INFLIGHT,
        SYSCALL_INFLIGHT, offset,
    },
    rss::release_mm_owner,
};

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
    let sched = offset!(sched);
    // Filled in place: the event is too large to build on the 512-byte BPF stack and copy.
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, exclusively owned ring-buffer record.
    unsafe {
        (*event).header = header(kind::EXEC, pid_tgid);
        (*event).old_pid = field::<i32>(&ctx, sched.exec_old_pid).map_or(tgid, i32::cast_unsigned);
        (*event).filename = [0; FILENAME_LEN];
        #[expect(
            clippy::cast_possible_truncation,
            reason = "at most FILENAME_LEN bytes are copied"
        )]
        let filename_len = data_loc_str(&ctx, sched.exec_filename, &mut (*event).filename) as u32;
        (*event).filename_len = filename_len;
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
        let _ = FILTER_PIDS.remove(tid_of(pid_tgid));
    }

    let group_dead = match field::<u8>(&ctx, offset!(sched.exit_group_dead)) {
        Some(dead) => dead != 0,
        None => process_ends_here(tgid, tid_of(pid_tgid)),
    };
    if !group_dead {
        return 0;
    }
    let stats = PROC_STATS.get_ptr(tgid);
    if config.wants(kind::EXIT) {
        if let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) {
            let event = entry.as_mut_ptr();
            // SAFETY: exclusively owned ring-buffer record; `stats` is a map value pointer.
            unsafe {
                (*event).header = header(kind::EXIT, pid_tgid);
                // The process's name and cgroup, known here for a process no sampler saw.
                (*event).header.comm = leader_comm();
                (*event).cgroup_id = current_cgroup_id();
                if let Some(stats) = stats {
                    core::ptr::copy_nonoverlapping(stats, &raw mut (*event).stats, 1);
                    (*event).tracked = 1;
                } else {
                    (*event).stats = ProcStats::default();
                    (*event).tracked = 0;
                }
                if let Some((minor, major)) = final_task_faults() {
                    (*event).task_counters = 1;
                    (*event).task_faults_minor = minor;
                    (*event).task_faults_major = major;
                } else {
                    (*event).task_counters = 0;
                    (*event).task_faults_minor = 0;
                    (*event).task_faults_major = 0;
                }
            }
            entry.submit(events_wakeup());
        } else {
            count_loss(kind::EXIT);
        }
    }
    if let Some(stats) = stats {
        // SAFETY: map value pointer, read before removal.
        release_mm_owner(unsafe { (*stats).mm_key }, tgid);
        let _ = PROC_STATS.remove(tgid);
    }
    if config.filter_flags & filter::FOLLOW_FORKS != 0 {
        let _ = FILTER_PIDS.remove(tgid);
    }
    0
}

/// Whether this thread's exit ends its process, on kernels whose `sched_process_exit` does not
/// say (`group_dead`): `signal->live` has reached 0 (`do_exit` decrements it before the
/// tracepoint) and no other thread of the process claimed the end first. Without BTF, the
/// leader's exit stands for the process's, which misses what threads outliving it do.
#[inline(always)]
#[expect(
    clippy::similar_names,
    reason = "`tid` and `tgid`, as the kernel names them"
)]
fn process_ends_here(tgid: u32, tid: u32) -> bool {
    let t = offset!(task);
    if t.signal_live == FIELD_ABSENT {
        return tid == tgid;
    }
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let signal = read_kernel::<u64>(task + u64::from(t.task_signal));
    if signal == 0 || read_kernel::<i32>(signal + u64::from(t.signal_live)) != 0 {
        return false;
    }
    // The leader's start time tells this process from an earlier one with the same pid.
    let leader = read_kernel::<u64>(task + u64::from(t.task_group_leader));
    let started = read_kernel::<u64>(leader + u64::from(t.task_start_time));
    if EXIT_CLAIMS
        .insert(tgid, started, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        return true;
    }
    // SAFETY: map value pointer.
    if EXIT_CLAIMS
        .get_ptr(tgid)
        .is_some_and(|claimed| unsafe { *claimed } == started)
    {
        return false;
    }
    // An earlier process's claim (pid reuse): this one's end replaces it.
    let _ = EXIT_CLAIMS.insert(tgid, started, 0);
    true
}

/// Keeps a cgroup (or pid) filter complete: children of filtered processes are filtered in.
#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let (_, tgid) = current();
    if FILTER_PIDS.get_ptr(tgid).is_none() {
        return 0;
    }
    if let Some(child) = field::<i32>(&ctx, offset!(sched.fork_child_pid))
        && FILTER_PIDS.insert(child.cast_unsigned(), 1u8, 0).is_err()
    {
        count_loss(loss::MAP_FILTER_PIDS);
    }
    0
}

/// Keeps a cgroup filter complete from the moment a task is moved in (writing its pid to
/// `cgroup.procs`), so what it does next (typically an exec) is seen, not only after a rescan.
#[tracepoint(category = "cgroup", name = "cgroup_attach_task")]
pub fn cgroup_attach_task(ctx: TracePointContext) -> u32 {
    let a = offset!(attach);
    let (Some(root), Some(id), Some(pid)) = (
        field::<i32>(&ctx, a.dst_root),
        field::<u64>(&ctx, a.dst_id),
        field::<i32>(&ctx, a.pid),
    ) else {
        return 0;
    };
    if root.cast_unsigned() != a.filter_root || FILTER_CGROUPS.get_ptr(id).is_none() {
        return 0;
    }
    if FILTER_PIDS.insert(pid.cast_unsigned(), 1u8, 0).is_err() {
        count_loss(loss::MAP_FILTER_PIDS);
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
            let (leader_min, leader_maj) = task_faults(leader, &t, read_kernel::<u64>);
            minor += leader_min;
            major += leader_maj;
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
            let (thread_min, thread_maj) =
                task_faults(node - u64::from(t.task_thread_node), &t, read_kernel::<u64>);
            minor += thread_min;
            major += thread_maj;
            node = read_kernel::<u64>(node);
        }
        total = (minor, major);
        if reaped() == before {
            break;
        }
    }
    Some(total)
}
