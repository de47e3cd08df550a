//! Address-space calls: `mmap`, `munmap`, `brk`, `mremap`, and `madvise` (counted only) from
//! their `syscalls` tracepoints.
use memtrace_api::Family;
use memtrace_common::{Offsets, SyscallEnterOffsets, helper_flag};

use super::ProbeFamily;
use crate::{
    probes::{
        hook::Hook,
        plan::{PlanContext, PlannedHook, Unusable, syscall_args},
    },
    tracefs::TracefsError,
};

/// One traced syscall: its `syscalls:sys_{enter,exit}_*` tracepoints (each with the program of
/// the same name), the entry arguments the programs read, and where their offsets go.
struct Syscall {
    enter: &'static str,
    exit: &'static str,
    /// Field names in `sys_enter_*`'s format, in the order the programs expect them.
    args: &'static [&'static str],
    /// Whether the family stands without it.
    required: bool,
    offsets: fn(&mut Offsets) -> &mut SyscallEnterOffsets,
}

/// The family's syscalls: a new one is an entry here plus its programs and `Offsets` field.
const SYSCALLS: &[Syscall] = &[
    Syscall {
        enter: "sys_enter_mmap",
        exit: "sys_exit_mmap",
        args: &["addr", "len", "prot", "flags", "fd"],
        required: true,
        offsets: |o| &mut o.mmap_enter,
    },
    Syscall {
        enter: "sys_enter_munmap",
        exit: "sys_exit_munmap",
        args: &["addr", "len"],
        required: true,
        offsets: |o| &mut o.munmap_enter,
    },
    Syscall {
        enter: "sys_enter_brk",
        exit: "sys_exit_brk",
        args: &["brk"],
        required: false,
        offsets: |o| &mut o.brk_enter,
    },
    Syscall {
        enter: "sys_enter_mremap",
        exit: "sys_exit_mremap",
        args: &["addr", "old_len", "new_len", "flags", "new_addr"],
        required: false,
        offsets: |o| &mut o.mremap_enter,
    },
    Syscall {
        enter: "sys_enter_madvise",
        exit: "sys_exit_madvise",
        args: &["start", "len_in", "behavior"],
        required: false,
        offsets: |o| &mut o.madvise_enter,
    },
];

pub struct Mmap;

impl ProbeFamily for Mmap {
    fn id(&self) -> Family {
        Family::Mmap
    }

    /// With BTF on x86-64 only the exit tracepoints are attached: they read the arguments from
    /// the task's saved registers, which halves the programs per call and needs no per-thread
    /// map. Otherwise entry saves the arguments for exit.
    fn plan(&self, ctx: &PlanContext<'_>, offsets: &mut Offsets) -> Vec<PlannedHook> {
        // The RSS layout stands for "the kernel has usable BTF" (`bpf_task_pt_regs` needs it).
        let args_from_regs = ctx.btf.rss.is_ok()
            && ctx.btf.helpers & helper_flag::TASK_PT_REGS != 0
            && ctx.syscall_args_in_regs;
        offsets.syscall_args_from_regs = u32::from(args_from_regs);
        let mut planned = Vec::new();
        let mut exit_ret: Option<u32> = None;
        for call in SYSCALLS {
            let checked = (|| -> Result<(SyscallEnterOffsets, u32), TracefsError> {
                let entry = syscall_args(&ctx.tracefs.format("syscalls", call.enter)?, call.args)?;
                let ret = ctx
                    .tracefs
                    .format("syscalls", call.exit)?
                    .offset_of("ret", 8)?;
                Ok((entry, ret))
            })();
            let unusable = match checked {
                Ok((entry, ret)) => match exit_ret {
                    // One exit offset serves every exit program: refuse the odd one out.
                    Some(shared) if shared != ret => Some(Unusable::ExitRetDiffers {
                        exit: call.exit,
                        ret,
                        shared,
                    }),
                    _ => {
                        exit_ret = Some(ret);
                        *(call.offsets)(offsets) = entry;
                        None
                    }
                },
                Err(err) => Some(err.into()),
            };
            // Exit first: attaching entry without exit would fill SYSCALL_INFLIGHT.
            let exit = PlannedHook::new(
                Hook::tracepoint("syscalls", call.exit),
                call.required,
                unusable,
            );
            if !args_from_regs {
                planned.push(exit.clone());
                planned.push(PlannedHook {
                    hook: Hook::tracepoint("syscalls", call.enter),
                    ..exit
                });
            } else {
                planned.push(exit);
            }
        }
        if let Some(ret) = exit_ret {
            offsets.syscall_exit_ret = ret;
        }
        planned
    }
}
