//! Task sampler: a BPF task iterator the daemon reads once per sampling tick. It writes each
//! task's fault counters and RSS, which the kernel keeps anyway, so the daemon needs no program
//! on the fault path at all (the fault and `rss_stat` hooks cost 60–110 ns per fault). Tracing
//! programs of this kind need BTF but no trampoline, so they work where fentry does not.

use aya_ebpf::{bindings::seq_file, helpers::bpf_seq_write};
use memtrace_common::{ProcStats, TaskSample, rss_flag, task_sample_flag};

use crate::{
    helpers::{load_btf, read_kernel, task_faults},
    maps::{PROC_STATS, offset},
};

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

/// Bytes written per record: a [`TaskSample`], then a [`ProcStats`] when it says so.
#[expect(clippy::cast_possible_truncation, reason = "a few hundred bytes")]
const TASK_SAMPLE_SIZE: u32 = size_of::<TaskSample>() as u32;
#[expect(clippy::cast_possible_truncation, reason = "a few hundred bytes")]
const PROC_STATS_SIZE: u32 = size_of::<ProcStats>() as u32;

/// The `iter/task` program.
///
/// # Safety
///
/// The kernel calls it with a valid `struct bpf_iter__task` (the verifier checks the loads
/// against that context type).
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
#[expect(
    clippy::similar_names,
    reason = "`tid` and `tgid`, as the kernel names them"
)]
pub unsafe extern "C" fn task_sampler(ctx: *mut BpfIterTask) -> i32 {
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
    let tid = load_btf::<i32>(task + u64::from(t.task_pid)).cast_unsigned();
    let tgid = load_btf::<i32>(task + u64::from(t.task_tgid)).cast_unsigned();
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
        let atomic = rss.flags & rss_flag::ATOMIC_COUNTERS != 0;
        let mut counter = mm + u64::from(rss.mm_rss_stat) + u64::from(rss.counter_count);
        for pages in &mut sample.rss_pages {
            // `OFFSETS` is read-only: the verifier keeps only this kernel's branch.
            let count = if atomic {
                read_kernel::<i64>(counter)
            } else {
                load_btf::<i64>(counter)
            };
            // `percpu_counter_read_positive`, as /proc/<pid>/status reports it.
            *pages = count.max(0).cast_unsigned();
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
        bpf_seq_write(seq, (&raw const sample).cast(), TASK_SAMPLE_SIZE);
        if let Some(stats) = hooks {
            bpf_seq_write(seq, stats.cast(), PROC_STATS_SIZE);
        }
    }
    0
}
