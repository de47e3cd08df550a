//! Probe families: which hooks each needs, whether this kernel can run it (`can_run`), and
//! attaching it.
use std::collections::BTreeMap;

use aya::{
    Ebpf,
    programs::{
        Iter, PerfEvent, RawTracePoint, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
    util::online_cpus,
};
use memtrace_common::{FIELD_ABSENT, Offsets, SyscallEnterOffsets, TaskOffsets, filter};

use super::{FamilyStatus, btf::RssLayout};

/// What vmlinux BTF says (or why it could not), for the families that read kernel structs.
#[derive(Clone, Debug)]
pub struct BtfLayouts {
    pub rss: Result<RssLayout, String>,
    pub task: Result<TaskOffsets, String>,
    pub task_iterator: bool,
}
use crate::tracefs::{Tracefs, TracefsError, TracepointFormat};

pub use memtrace_api::Family;

/// What a live trace attaches: every hook, for exact per-event streams.
pub const TRACE_FAMILIES: [Family; 6] = [
    Family::Faults,
    Family::Mmap,
    Family::Rss,
    Family::Reclaim,
    Family::Oom,
    Family::Lifecycle,
];

/// What the daemon attaches by default: the task sampler instead of the per-fault hooks
/// (which [`super::Probes::load`] attaches instead if the sampler cannot run), and no
/// mmap-family hooks (`daemon --mmap-calls` adds them).
pub const DAEMON_FAMILIES: [Family; 4] = [
    Family::Tasks,
    Family::Reclaim,
    Family::Oom,
    Family::Lifecycle,
];

/// The hook families the task sampler replaces.
pub const REPLACED_BY_TASKS: [Family; 2] = [Family::Faults, Family::Rss];

/// Where a program attaches.
#[derive(Clone, Debug)]
pub enum Hook {
    /// Raw tracepoint (TP_PROTO arguments, no record): `tracepoint` is checked in tracefs.
    RawTracepoint {
        program: &'static str,
        category: &'static str,
        name: &'static str,
    },
    /// Classic tracepoint, record fields at offsets from its format file.
    Tracepoint {
        program: &'static str,
        category: &'static str,
        name: &'static str,
    },
    /// Perf software event, period 1, on every online CPU.
    PerfSoftware {
        program: &'static str,
        event: SoftwareEvent,
        label: &'static str,
    },
    /// BPF task iterator: loaded here, run (attached) once per read, see
    /// [`super::Probes::task_iterator`].
    TaskIterator { program: &'static str },
}

impl Hook {
    fn program(&self) -> &'static str {
        match self {
            Hook::RawTracepoint { program, .. }
            | Hook::Tracepoint { program, .. }
            | Hook::PerfSoftware { program, .. }
            | Hook::TaskIterator { program } => program,
        }
    }

    fn label(&self) -> String {
        match self {
            Hook::RawTracepoint { category, name, .. } => format!("raw_tp {category}:{name}"),
            Hook::Tracepoint { category, name, .. } => format!("{category}:{name}"),
            Hook::PerfSoftware { label, .. } => format!("perf {label}"),
            Hook::TaskIterator { .. } => "iter/task".to_owned(),
        }
    }
}

/// One hook of a family with whether the family needs it, and why not if it cannot be used.
#[derive(Clone, Debug)]
struct PlannedHook {
    hook: Hook,
    required: bool,
    /// `Some(reason)`: the kernel lacks what this hook needs (checked before loading).
    unusable: Option<String>,
}

/// The result of `can_run` for every family, and the offsets for the programs.
#[derive(Clone, Debug)]
pub struct FamilyPlan {
    pub offsets: Offsets,
    pub filter_flags: u32,
    hooks: BTreeMap<Family, Vec<PlannedHook>>,
}

fn tp(program: &'static str, category: &'static str, name: &'static str) -> Hook {
    Hook::Tracepoint {
        program,
        category,
        name,
    }
}

/// Offsets of a syscall entry record's named arguments (each a `unsigned long`, 8 bytes).
fn syscall_args(
    format: &TracepointFormat,
    names: &[&str],
) -> Result<SyscallEnterOffsets, TracefsError> {
    let mut offsets = SyscallEnterOffsets {
        args: [FIELD_ABSENT; 6],
    };
    for (slot, name) in offsets.args.iter_mut().zip(names) {
        *slot = format.offset_of(name, 8)?;
    }
    Ok(offsets)
}

impl FamilyPlan {
    /// `can_run` for every family: check each hook's tracepoint and fields in tracefs, and
    /// collect the offsets the programs will read.
    ///
    /// With [`Family::Tasks`] requested, the families it replaces are planned too, so they can be
    /// attached instead if the sampler cannot be.
    pub fn new(
        tracefs: &Tracefs,
        families: &[Family],
        filter_flags: u32,
        btf: &BtfLayouts,
    ) -> Self {
        let rss_layout = &btf.rss;
        let mut offsets = Offsets::ABSENT;
        // Every family's programs read the comm; with BTF they load it from the task directly.
        if let Ok(task) = &btf.task {
            offsets.task.task_comm = task.task_comm;
        }
        let mut hooks = BTreeMap::new();
        let fallback = families.contains(&Family::Tasks);
        for family in Family::ALL {
            let as_fallback = fallback && REPLACED_BY_TASKS.contains(&family);
            if !families.contains(&family) && !as_fallback {
                continue;
            }
            let planned = match family {
                Family::Tasks => Self::plan_tasks(&mut offsets, btf),
                Family::Faults => Self::plan_faults(tracefs),
                Family::Mmap => Self::plan_mmap(tracefs, &mut offsets, rss_layout.is_ok()),
                Family::Rss => Self::plan_rss(tracefs, &mut offsets, rss_layout),
                Family::Reclaim => Self::plan_reclaim(tracefs, &mut offsets),
                Family::Oom => Self::plan_oom(tracefs, &mut offsets),
                Family::Lifecycle => Self::plan_lifecycle(tracefs, &mut offsets, filter_flags),
            };
            hooks.insert(family, planned);
        }
        Self {
            offsets,
            filter_flags,
            hooks,
        }
    }

    fn plan_tasks(offsets: &mut Offsets, btf: &BtfLayouts) -> Vec<PlannedHook> {
        let unusable = match (&btf.rss, &btf.task, btf.task_iterator) {
            (Ok(rss), Ok(task), true) => {
                offsets.task = *task;
                offsets.rss.task_mm = rss.task_mm;
                offsets.rss.mm_rss_stat = rss.mm_rss_stat;
                offsets.rss.counter_size = rss.counter_size;
                offsets.rss.counter_count = rss.counter_count;
                None
            }
            (Err(reason), _, _) | (_, Err(reason), _) => Some(reason.clone()),
            (_, _, false) => Some("this kernel has no BPF task iterator (Linux 5.8+)".to_owned()),
        };
        vec![PlannedHook {
            hook: Hook::TaskIterator {
                program: "task_sampler",
            },
            required: true,
            unusable,
        }]
    }

    fn plan_faults(tracefs: &Tracefs) -> Vec<PlannedHook> {
        let raw = |program, name, required| PlannedHook {
            hook: Hook::RawTracepoint {
                program,
                category: "exceptions",
                name,
            },
            required,
            unusable: (!tracefs.has_tracepoint("exceptions", name))
                .then(|| format!("tracepoint exceptions:{name} not in this kernel")),
        };
        vec![
            raw("page_fault_user", "page_fault_user", true),
            raw("page_fault_kernel", "page_fault_kernel", false),
            PlannedHook {
                hook: Hook::PerfSoftware {
                    program: "fault_major",
                    event: SoftwareEvent::PageFaultsMaj,
                    label: "PAGE_FAULTS_MAJ",
                },
                required: false,
                unusable: None,
            },
        ]
    }

    /// With BTF on x86-64 only the exit tracepoints are attached: they read the arguments from
    /// the task's saved registers, which halves the programs per call and needs no per-thread
    /// map. Otherwise entry saves the arguments for exit.
    fn plan_mmap(tracefs: &Tracefs, offsets: &mut Offsets, have_btf: bool) -> Vec<PlannedHook> {
        let args_from_regs = have_btf && cfg!(target_arch = "x86_64");
        offsets.syscall_args_from_regs = u32::from(args_from_regs);
        // (syscall, argument names read at entry, required)
        let calls: [(&str, &[&str], bool); 4] = [
            ("mmap", &["addr", "len", "prot", "flags", "fd"], true),
            ("munmap", &["addr", "len"], true),
            ("brk", &["brk"], false),
            (
                "mremap",
                &["addr", "old_len", "new_len", "flags", "new_addr"],
                false,
            ),
        ];
        let mut planned = Vec::new();
        let mut exit_ret: Option<u32> = None;
        for (call, args, required) in calls {
            let enter = format!("sys_enter_{call}");
            let exit = format!("sys_exit_{call}");
            let checked = (|| -> Result<(SyscallEnterOffsets, u32), TracefsError> {
                let entry = syscall_args(&tracefs.format("syscalls", &enter)?, args)?;
                let ret = tracefs.format("syscalls", &exit)?.offset_of("ret", 8)?;
                Ok((entry, ret))
            })();
            let unusable = match checked {
                Ok((entry, ret)) => match exit_ret {
                    // One exit offset serves all four programs; a kernel where they differ
                    // would be misread, so refuse the odd one out.
                    Some(shared) if shared != ret => Some(format!(
                        "syscalls:{exit} has `ret` at offset {ret}, others at {shared}"
                    )),
                    _ => {
                        exit_ret = Some(ret);
                        match call {
                            "mmap" => offsets.mmap_enter = entry,
                            "munmap" => offsets.munmap_enter = entry,
                            "brk" => offsets.brk_enter = entry,
                            _ => offsets.mremap_enter = entry,
                        }
                        None
                    }
                },
                Err(err) => Some(err.to_string()),
            };
            // `&'static str` program names for the pair.
            let (enter_prog, exit_prog): (&'static str, &'static str) = match call {
                "mmap" => ("sys_enter_mmap", "sys_exit_mmap"),
                "munmap" => ("sys_enter_munmap", "sys_exit_munmap"),
                "brk" => ("sys_enter_brk", "sys_exit_brk"),
                _ => ("sys_enter_mremap", "sys_exit_mremap"),
            };
            // Exit first: attaching entry without exit would fill SYSCALL_INFLIGHT.
            planned.push(PlannedHook {
                hook: tp(exit_prog, "syscalls", exit_prog),
                required,
                unusable: unusable.clone(),
            });
            if !args_from_regs {
                planned.push(PlannedHook {
                    hook: tp(enter_prog, "syscalls", enter_prog),
                    required,
                    unusable,
                });
            }
        }
        if let Some(ret) = exit_ret {
            offsets.syscall_exit_ret = ret;
        }
        planned
    }

    /// The raw tracepoint with BTF offsets when the kernel has BTF; else the classic tracepoint
    /// (reported as a partial attach, since it costs several times more per fault).
    fn plan_rss(
        tracefs: &Tracefs,
        offsets: &mut Offsets,
        rss_layout: &Result<RssLayout, String>,
    ) -> Vec<PlannedHook> {
        let raw = Hook::RawTracepoint {
            program: "rss_stat_raw",
            category: "kmem",
            name: "rss_stat",
        };
        match rss_layout {
            Ok(layout) if tracefs.has_tracepoint("kmem", "rss_stat") => {
                offsets.rss.task_mm = layout.task_mm;
                offsets.rss.mm_rss_stat = layout.mm_rss_stat;
                offsets.rss.counter_size = layout.counter_size;
                offsets.rss.counter_count = layout.counter_count;
                return vec![PlannedHook {
                    hook: raw,
                    required: true,
                    unusable: None,
                }];
            }
            Ok(_) => {
                return vec![PlannedHook {
                    hook: raw,
                    required: true,
                    unusable: Some("tracepoint kmem:rss_stat not in this kernel".to_owned()),
                }];
            }
            Err(_) => {}
        }
        let mut planned = Self::plan_rss_classic(tracefs, offsets);
        if let Err(reason) = rss_layout {
            planned.push(PlannedHook {
                hook: raw,
                required: false,
                unusable: Some(format!(
                    "{reason}; using the classic tracepoint, which costs more per fault"
                )),
            });
        }
        planned
    }

    fn plan_rss_classic(tracefs: &Tracefs, offsets: &mut Offsets) -> Vec<PlannedHook> {
        let checked = (|| -> Result<(), TracefsError> {
            let format = tracefs.format("kmem", "rss_stat")?;
            offsets.rss.mm_id = format.offset_of("mm_id", 4)?;
            offsets.rss.curr = format.offset_of("curr", 4)?;
            offsets.rss.member = format.offset_of("member", 4)?;
            offsets.rss.size = format.offset_of("size", 8)?;
            Ok(())
        })();
        vec![PlannedHook {
            hook: tp("rss_stat", "kmem", "rss_stat"),
            required: true,
            unusable: checked.err().map(|err| err.to_string()),
        }]
    }

    fn plan_reclaim(tracefs: &Tracefs, offsets: &mut Offsets) -> Vec<PlannedHook> {
        let direct = (|| -> Result<(u32, u32, u32), TracefsError> {
            let begin = tracefs.format("vmscan", "mm_vmscan_direct_reclaim_begin")?;
            let end = tracefs.format("vmscan", "mm_vmscan_direct_reclaim_end")?;
            Ok((
                begin.offset_of("order", 4)?,
                begin.offset_or_absent("gfp_flags", 8),
                end.offset_or_absent("nr_reclaimed", 8),
            ))
        })();
        let direct_unusable = match &direct {
            Ok((order, gfp, nr)) => {
                offsets.reclaim.begin_order = *order;
                offsets.reclaim.begin_gfp_flags = *gfp;
                offsets.reclaim.end_nr_reclaimed = *nr;
                None
            }
            Err(err) => Some(err.to_string()),
        };
        // memcg reclaim shares the programs' offsets: usable only with the same layout.
        let memcg_unusable = (|| -> Result<Option<String>, TracefsError> {
            let begin = tracefs.format("vmscan", "mm_vmscan_memcg_reclaim_begin")?;
            let end = tracefs.format("vmscan", "mm_vmscan_memcg_reclaim_end")?;
            let same = direct.as_ref().is_ok_and(|(order, gfp, nr)| {
                begin.offset_or_absent("order", 4) == *order
                    && begin.offset_or_absent("gfp_flags", 8) == *gfp
                    && end.offset_or_absent("nr_reclaimed", 8) == *nr
            });
            Ok((!same).then(|| "memcg reclaim records differ from direct reclaim's".to_owned()))
        })()
        .unwrap_or_else(|err| Some(err.to_string()));
        let hook = |program, name, unusable: &Option<String>| PlannedHook {
            hook: tp(program, "vmscan", name),
            required: false,
            unusable: unusable.clone(),
        };
        let mut planned = vec![
            hook(
                "direct_reclaim_end",
                "mm_vmscan_direct_reclaim_end",
                &direct_unusable,
            ),
            hook(
                "direct_reclaim_begin",
                "mm_vmscan_direct_reclaim_begin",
                &direct_unusable,
            ),
            hook(
                "memcg_reclaim_end",
                "mm_vmscan_memcg_reclaim_end",
                &memcg_unusable,
            ),
            hook(
                "memcg_reclaim_begin",
                "mm_vmscan_memcg_reclaim_begin",
                &memcg_unusable,
            ),
        ];
        // The family stands if either pair works.
        if direct_unusable.is_some() && memcg_unusable.is_some() {
            planned.iter_mut().for_each(|p| p.required = true);
        }
        planned
    }

    fn plan_oom(tracefs: &Tracefs, offsets: &mut Offsets) -> Vec<PlannedHook> {
        let checked = (|| -> Result<(), TracefsError> {
            let format = tracefs.format("oom", "mark_victim")?;
            let o = &mut offsets.oom;
            o.pid = format.offset_of("pid", 4)?;
            // Everything else varies across kernel versions: optional.
            o.comm = match format.field("comm") {
                Some(field) if field.data_loc => field.offset,
                _ => FIELD_ABSENT,
            };
            o.total_vm = format.offset_or_absent("total_vm", 8);
            o.anon_rss = format.offset_or_absent("anon_rss", 8);
            o.file_rss = format.offset_or_absent("file_rss", 8);
            o.shmem_rss = format.offset_or_absent("shmem_rss", 8);
            o.uid = format.offset_or_absent("uid", 4);
            o.pgtables = format.offset_or_absent("pgtables", 8);
            o.oom_score_adj = format.offset_or_absent("oom_score_adj", 2);
            Ok(())
        })();
        vec![PlannedHook {
            hook: tp("oom_mark_victim", "oom", "mark_victim"),
            required: true,
            unusable: checked.err().map(|err| err.to_string()),
        }]
    }

    fn plan_lifecycle(
        tracefs: &Tracefs,
        offsets: &mut Offsets,
        filter_flags: u32,
    ) -> Vec<PlannedHook> {
        let exit = (|| -> Result<(), TracefsError> {
            let format = tracefs.format("sched", "sched_process_exit")?;
            offsets.sched.exit_pid = format.offset_of("pid", 4)?;
            offsets.sched.exit_group_dead = format.offset_or_absent("group_dead", 1);
            Ok(())
        })();
        let exec = (|| -> Result<(), TracefsError> {
            let format = tracefs.format("sched", "sched_process_exec")?;
            offsets.sched.exec_old_pid = format.offset_of("old_pid", 4)?;
            offsets.sched.exec_filename = match format.field("filename") {
                Some(field) if field.data_loc => field.offset,
                _ => FIELD_ABSENT,
            };
            Ok(())
        })();
        let mut planned = vec![
            PlannedHook {
                hook: tp("sched_process_exit", "sched", "sched_process_exit"),
                required: true,
                unusable: exit.err().map(|err| err.to_string()),
            },
            PlannedHook {
                hook: tp("sched_process_exec", "sched", "sched_process_exec"),
                required: false,
                unusable: exec.err().map(|err| err.to_string()),
            },
        ];
        // Fork following is only needed (and only paid for) when a filter asks for it.
        if filter_flags & filter::FOLLOW_FORKS != 0 {
            let fork = (|| -> Result<(), TracefsError> {
                let format = tracefs.format("sched", "sched_process_fork")?;
                offsets.sched.fork_parent_pid = format.offset_of("parent_pid", 4)?;
                offsets.sched.fork_child_pid = format.offset_of("child_pid", 4)?;
                Ok(())
            })();
            planned.push(PlannedHook {
                hook: tp("sched_process_fork", "sched", "sched_process_fork"),
                required: true,
                unusable: fork.err().map(|err| err.to_string()),
            });
        }
        planned
    }

    /// Load and attach one family's programs. Optional hooks that fail are reported; a required
    /// one that fails detaches the family's others again.
    pub fn attach(
        &self,
        family: Family,
        ebpf: &mut Ebpf,
        kernel_btf: Option<&aya::Btf>,
    ) -> FamilyStatus {
        let Some(planned) = self.hooks.get(&family) else {
            return FamilyStatus::Disabled;
        };
        if let Some(blocker) = planned.iter().find(|p| p.required && p.unusable.is_some()) {
            return FamilyStatus::Skipped {
                reason: format!(
                    "{}: {}",
                    blocker.hook.label(),
                    blocker.unusable.clone().unwrap_or_default()
                ),
            };
        }
        let mut attached = Vec::new();
        let mut missing = Vec::new();
        for p in planned {
            if let Some(reason) = &p.unusable {
                missing.push(format!("{} ({reason})", p.hook.label()));
                continue;
            }
            match attach_hook(ebpf, &p.hook, kernel_btf) {
                Ok(()) => attached.push(p.hook.label()),
                Err(reason) if p.required => {
                    for done in planned
                        .iter()
                        .filter(|d| attached.contains(&d.hook.label()))
                    {
                        unload(ebpf, done.hook.program());
                    }
                    return FamilyStatus::Skipped {
                        reason: format!("{}: {reason}", p.hook.label()),
                    };
                }
                Err(reason) => missing.push(format!("{} ({reason})", p.hook.label())),
            }
        }
        if missing.is_empty() {
            FamilyStatus::Attached { hooks: attached }
        } else {
            FamilyStatus::Partial {
                hooks: attached,
                missing,
            }
        }
    }
}

fn unload(ebpf: &mut Ebpf, name: &str) {
    if let Some(program) = ebpf.program_mut(name) {
        let result = match program {
            aya::programs::Program::TracePoint(p) => p.unload(),
            aya::programs::Program::RawTracePoint(p) => p.unload(),
            aya::programs::Program::PerfEvent(p) => p.unload(),
            aya::programs::Program::Iter(p) => p.unload(),
            _ => Ok(()),
        };
        if let Err(err) = result {
            tracing::warn!("unloading {name}: {err}");
        }
    }
}

/// Load (verify) and attach one program. Errors are flattened to a one-line reason, with the
/// verifier's last lines when it refused the program.
fn attach_hook(ebpf: &mut Ebpf, hook: &Hook, kernel_btf: Option<&aya::Btf>) -> Result<(), String> {
    let name = hook.program();
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the eBPF object"))?;
    let reason = |err: aya::programs::ProgramError| match err {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            // The reason is the last line before the verifier's statistics.
            let log = verifier_log.to_string();
            let is_stats = |l: &&str| {
                ["verification time", "stack depth", "processed "]
                    .iter()
                    .any(|s| l.starts_with(s))
            };
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| !l.trim().is_empty() && !is_stats(l))
                .rev()
                .take(2)
                .collect();
            format!(
                "the verifier refused {name} ({io_error}): {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }
        other => format!("{other}"),
    };
    match hook {
        Hook::RawTracepoint { name: tp_name, .. } => {
            let program: &mut RawTracePoint = program.try_into().map_err(|e| format!("{e}"))?;
            program.load().map_err(reason)?;
            program.attach(tp_name).map_err(reason)?;
        }
        Hook::Tracepoint {
            category,
            name: tp_name,
            ..
        } => {
            let program: &mut TracePoint = program.try_into().map_err(|e| format!("{e}"))?;
            program.load().map_err(reason)?;
            program.attach(category, tp_name).map_err(reason)?;
        }
        Hook::TaskIterator { .. } => {
            let program: &mut Iter = program.try_into().map_err(|e| format!("{e}"))?;
            let btf = kernel_btf.ok_or("the kernel's BTF could not be parsed")?;
            program.load("task", btf).map_err(reason)?;
            // Checked now, so a kernel that refuses to run it is reported at start-up.
            let link = program.attach().map_err(reason)?;
            program.detach(link).map_err(reason)?;
        }
        Hook::PerfSoftware { event, .. } => {
            let program: &mut PerfEvent = program.try_into().map_err(|e| format!("{e}"))?;
            program.load().map_err(reason)?;
            let cpus = online_cpus().map_err(|(path, err)| format!("reading {path}: {err}"))?;
            for cpu in cpus {
                program
                    .attach(
                        PerfEventConfig::Software(*event),
                        PerfEventScope::AllProcessesOneCpu { cpu },
                        SamplePolicy::Period(1),
                        true,
                    )
                    .map_err(reason)?;
            }
        }
    }
    Ok(())
}
