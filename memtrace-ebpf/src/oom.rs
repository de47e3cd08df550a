//! OOM: one event per task the OOM killer marks (a memory.oom.group kill marks each member).
//! The current task is the one whose allocation invoked the OOM killer: the trigger.
//!
//! The tracepoint's record names the victim only by pid, and a victim that is not the trigger
//! (a sibling or a bigger process of the cgroup) is often reaped before userspace could read its
//! cgroup from `/proc`. Since Linux 6.8 the tracepoint passes the victim's task, so a raw hook
//! on it reads the victim's cgroup in the kernel, at the kill, into `OOM_VICTIM_CGROUPS`.

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::info;
use memtrace_common::{FIELD_ABSENT, OomEvent, kind, oom_field};

use crate::{
    helpers::{
        current, current_cgroup_id, data_loc_str, emit, field, header, read_kernel, task_cgroup_id,
        tid_of,
    },
    maps::{CONFIG, EVENTS, OOM_VICTIM_CGROUPS, offset},
};

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    let config = CONFIG.load();
    if !config.wants(kind::OOM) {
        return 0;
    }
    let o = offset!(oom);
    let (pid_tgid, tgid) = current();
    let victim_pid = field::<i32>(&ctx, o.pid).unwrap_or(0).cast_unsigned();
    let trigger_cgroup_id = current_cgroup_id();
    let mut event = OomEvent {
        header: header(kind::OOM, pid_tgid),
        victim_pid,
        trigger_cgroup_id,
        // The record names the victim only by pid; when it is the trigger itself (a process
        // that hits its cgroup's limit and is chosen, the usual memcg OOM), its cgroup is
        // known here even if it dies before anyone reads /proc.
        victim_cgroup_id: if victim_pid == tgid || victim_pid == tid_of(pid_tgid) {
            trigger_cgroup_id
        } else {
            0
        },
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

/// `mark_victim(struct task_struct *task, uid_t uid)` (Linux 6.8+; userspace attaches this only
/// where the kernel's BTF says so): the victim's memory cgroup id by its pid.
#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn oom_mark_victim_task(ctx: RawTracePointContext) -> u32 {
    let task_pid = offset!(task.task_pid);
    if task_pid == FIELD_ABSENT {
        return 0;
    }
    let task: u64 = ctx.arg(0);
    if task == 0 {
        return 0;
    }
    let cgroup_id = task_cgroup_id(task, read_kernel::<u64>);
    if cgroup_id == 0 {
        return 0;
    }
    let pid = read_kernel::<i32>(task + u64::from(task_pid)).cast_unsigned();
    // A full map evicts the oldest kill: nothing to count, userspace falls back to /proc.
    let _ = OOM_VICTIM_CGROUPS.insert(pid, cgroup_id, 0);
    0
}
