//! Planning against the tracefs fixtures of two kernels (`tests/fixtures/tracefs`: 6.18 as
//! copied from a real kernel, and a 5.4-like tree with most tracepoints and fields absent), with
//! BTF layouts given as values: which families and hooks are chosen, which offsets are filled,
//! what is reported as skipped and why. No root, no kernel.
use std::{fs, path::Path};

use memtrace_common::{
    CgroupOffsets, FIELD_ABSENT, SyscallEnterOffsets, TaskOffsets, filter, helper_flag,
};

use super::*;
use crate::probes::{
    DAEMON_FAMILIES, REPLACED_BY_TASKS, TRACE_FAMILIES,
    btf::{BtfError, CgroupLayouts, RssLayout},
    families::REGISTRY,
};

const V6_18: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tracefs/6.18");
const V5_4: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tracefs/5.4");
const NO_BTF: &str = "/nonexistent/vmlinux";

const RSS_LAYOUT: RssLayout = RssLayout {
    task_mm: 2384,
    mm_rss_stat: 1040,
    counter_size: 40,
    counter_count: 8,
    flags: 0,
};

const TASK_LAYOUT: TaskOffsets = TaskOffsets {
    task_pid: 2584,
    task_tgid: 2588,
    task_flags: 44,
    task_min_flt: 3056,
    task_maj_flt: 3064,
    task_mm: 2384,
    task_signal: 3296,
    task_group_leader: 2640,
    task_start_time: 3016,
    signal_min_flt: 720,
    signal_maj_flt: 728,
    signal_thread_head: 16,
    task_thread_node: 2760,
    task_comm: 3128,
    mm_total_vm: 200,
    signal_live: 4,
};

/// A kernel with BTF and the task iterator.
fn btf() -> BtfLayouts {
    BtfLayouts {
        rss: Ok(RSS_LAYOUT),
        task: Ok(TASK_LAYOUT),
        task_iterator: true,
        cgroup: Err(BtfError::NoStruct {
            name: "css_set".to_owned(),
        }),
        oom_victim_task: false,
        helpers: helper_flag::CURRENT_TASK_BTF | helper_flag::TASK_PT_REGS,
    }
}

/// A kernel without BTF, as [`BtfLayouts::read`] finds it.
fn no_btf() -> BtfLayouts {
    BtfLayouts::read(Path::new(NO_BTF))
}

fn plan_with(tree: &Path, btf: &BtfLayouts, families: &[Family], filter_flags: u32) -> ProbePlan {
    let tracefs = Tracefs::new(tree);
    let mut ctx = PlanContext::new(&tracefs, btf, filter_flags);
    ctx.syscall_args_in_regs = true;
    ProbePlan::new(&ctx, families)
}

fn plan(tree: &str, btf: &BtfLayouts, families: &[Family]) -> ProbePlan {
    plan_with(Path::new(tree), btf, families, 0)
}

fn family(plan: &ProbePlan, id: Family) -> &FamilyPlan {
    plan.family(id)
        .unwrap_or_else(|| panic!("{id} not planned: {plan:?}"))
}

/// Every hook of a family as `(label, required, why unusable)`.
fn hooks(plan: &ProbePlan, id: Family) -> Vec<(String, bool, Option<String>)> {
    family(plan, id)
        .hooks
        .iter()
        .map(|p| {
            let unusable = p.unusable.as_ref().map(ToString::to_string);
            (p.hook.label(), p.required, unusable)
        })
        .collect()
}

fn usable(plan: &ProbePlan, id: Family) -> Vec<String> {
    family(plan, id).usable_labels()
}

/// The report if the kernel accepted every usable hook.
fn attach_all(plan: &ProbePlan) -> AttachReport {
    plan.attach_with(|family| family.attach_each(&mut (), |_, _| Ok(()), |_, _| {}))
}

fn skipped(report: &AttachReport, id: Family) -> &str {
    match &report.families[&id] {
        FamilyStatus::Skipped { reason } => reason,
        other => panic!("{id}: expected skipped, got {other:?}\n{report}"),
    }
}

fn args(offsets: &[u32]) -> SyscallEnterOffsets {
    let mut args = [FIELD_ABSENT; 6];
    args[..offsets.len()].copy_from_slice(offsets);
    SyscallEnterOffsets { args }
}

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

#[test]
fn the_registry_holds_every_family_once_and_replacers_first() {
    let ids: Vec<Family> = REGISTRY.iter().map(|f| f.id()).collect();
    assert_eq!(
        ids,
        Family::ALL,
        "one entry per family, in Family::ALL order"
    );
    for (at, family) in REGISTRY.iter().enumerate() {
        for replaced in family.replaces() {
            let replaced_at = ids.iter().position(|id| id == replaced).unwrap();
            assert!(
                replaced_at > at,
                "{} must come before {replaced}",
                family.id()
            );
        }
    }
    assert_eq!(REGISTRY[0].replaces(), REPLACED_BY_TASKS);
}

#[test]
fn a_6_18_kernel_with_btf_gets_every_fast_hook() {
    let plan = plan(V6_18, &btf(), &TRACE_FAMILIES);
    let planned: Vec<(Family, Role)> = plan.families.iter().map(|f| (f.id(), f.role)).collect();
    assert_eq!(
        planned,
        TRACE_FAMILIES.map(|id| (id, Role::Requested)),
        "no task sampler, no fallbacks"
    );
    for id in TRACE_FAMILIES {
        assert_eq!(family(&plan, id).skip_reason(), None, "{id}");
        assert_eq!(family(&plan, id).missing(), Vec::<String>::new(), "{id}");
    }
    assert_eq!(
        usable(&plan, Family::Faults),
        [
            "raw_tp exceptions:page_fault_user",
            "raw_tp exceptions:page_fault_kernel",
            "perf PAGE_FAULTS_MAJ"
        ]
    );
    // Arguments from the saved registers: exit tracepoints only.
    assert_eq!(
        hooks(&plan, Family::Mmap),
        [
            ("syscalls:sys_exit_mmap".to_owned(), true, None),
            ("syscalls:sys_exit_munmap".to_owned(), true, None),
            ("syscalls:sys_exit_brk".to_owned(), false, None),
            ("syscalls:sys_exit_mremap".to_owned(), false, None),
            ("syscalls:sys_exit_madvise".to_owned(), false, None),
        ]
    );
    assert_eq!(plan.offsets.madvise_enter, args(&[16, 24, 32]));
    assert_eq!(usable(&plan, Family::Rss), ["raw_tp kmem:rss_stat"]);
    assert_eq!(
        usable(&plan, Family::Reclaim),
        [
            "vmscan:mm_vmscan_direct_reclaim_end",
            "vmscan:mm_vmscan_direct_reclaim_begin",
            "vmscan:mm_vmscan_memcg_reclaim_end",
            "vmscan:mm_vmscan_memcg_reclaim_begin",
        ]
    );
    assert_eq!(usable(&plan, Family::Oom), ["oom:mark_victim"]);
    assert_eq!(
        usable(&plan, Family::Lifecycle),
        ["sched:sched_process_exit", "sched:sched_process_exec"],
        "no fork hook without a filter that follows forks"
    );
    assert!(!plan.needs_kernel_btf());

    let o = plan.offsets;
    assert_eq!(o.syscall_args_from_regs, 1);
    assert_eq!(o.mmap_enter, args(&[16, 24, 32, 40, 48]));
    assert_eq!(o.munmap_enter, args(&[16, 24]));
    assert_eq!(o.brk_enter, args(&[16]));
    assert_eq!(o.mremap_enter, args(&[16, 24, 32, 40, 48]));
    assert_eq!(o.syscall_exit_ret, 16);
    let rss = o.rss;
    assert_eq!(
        [
            rss.task_mm,
            rss.mm_rss_stat,
            rss.counter_size,
            rss.counter_count
        ],
        [2384, 1040, 40, 8]
    );
    assert_eq!(
        [rss.mm_id, rss.curr, rss.member, rss.size],
        [FIELD_ABSENT; 4],
        "the classic record is not read"
    );
    let r = o.reclaim;
    assert_eq!(
        [r.begin_order, r.begin_gfp_flags, r.end_nr_reclaimed],
        [8, 16, 8]
    );
    let oom = o.oom;
    assert_eq!(
        [
            oom.pid,
            oom.comm,
            oom.total_vm,
            oom.anon_rss,
            oom.file_rss,
            oom.shmem_rss,
            oom.uid,
            oom.pgtables,
            oom.oom_score_adj
        ],
        [8, 12, 16, 24, 32, 40, 48, 56, 64]
    );
    let s = o.sched;
    assert_eq!(
        [
            s.exit_pid,
            s.exit_group_dead,
            s.exec_old_pid,
            s.exec_filename
        ],
        [24, 32, 16, 8]
    );
    assert_eq!([s.fork_parent_pid, s.fork_child_pid], [FIELD_ABSENT; 2]);
    // The comm comes from the task with BTF; the rest of the task layout only with the sampler.
    assert_eq!(o.task.task_comm, TASK_LAYOUT.task_comm);
    assert_eq!(o.task.task_min_flt, FIELD_ABSENT);

    let report = attach_all(&plan);
    assert_eq!(report.families[&Family::Tasks], FamilyStatus::Disabled);
    for id in TRACE_FAMILIES {
        assert!(
            matches!(report.families[&id], FamilyStatus::Attached { .. }),
            "{report}"
        );
    }
    assert_eq!(report.counts(), (3 + 5 + 1 + 4 + 1 + 2, 0));
}

#[test]
fn a_6_18_kernel_without_btf_gets_the_slower_hooks() {
    let plan = plan(V6_18, &no_btf(), &TRACE_FAMILIES);
    // Entry and exit, exit first.
    assert_eq!(
        usable(&plan, Family::Mmap),
        [
            "syscalls:sys_exit_mmap",
            "syscalls:sys_enter_mmap",
            "syscalls:sys_exit_munmap",
            "syscalls:sys_enter_munmap",
            "syscalls:sys_exit_brk",
            "syscalls:sys_enter_brk",
            "syscalls:sys_exit_mremap",
            "syscalls:sys_enter_mremap",
            "syscalls:sys_exit_madvise",
            "syscalls:sys_enter_madvise",
        ]
    );
    assert_eq!(plan.offsets.syscall_args_from_regs, 0);
    assert_eq!(plan.offsets.mmap_enter, args(&[16, 24, 32, 40, 48]));

    // The classic rss_stat record, and the raw hook listed as missing, saying why.
    let rss = hooks(&plan, Family::Rss);
    assert_eq!(rss[0], ("kmem:rss_stat".to_owned(), true, None));
    let (raw, required, reason) = &rss[1];
    assert_eq!((raw.as_str(), *required), ("raw_tp kmem:rss_stat", false));
    let reason = reason.as_deref().unwrap();
    assert!(
        reason.starts_with(&format!("reading kernel BTF {NO_BTF}: "))
            && reason.ends_with("; using the classic tracepoint, which costs more per fault"),
        "{reason}"
    );
    assert!(matches!(
        family(&plan, Family::Rss).hooks[1].unusable.as_deref(),
        Some(Unusable::SlowerWithoutBtf {
            source: BtfError::Read { .. },
            ..
        })
    ));
    let o = plan.offsets.rss;
    assert_eq!([o.mm_id, o.curr, o.member, o.size], [8, 12, 16, 24]);
    assert_eq!(o.task_mm, FIELD_ABSENT);
    assert_eq!(plan.offsets.task.task_comm, FIELD_ABSENT);

    // What the privileged rss test checks on a real kernel.
    let report = attach_all(&plan);
    match &report.families[&Family::Rss] {
        FamilyStatus::Partial { hooks, missing } => {
            assert_eq!(hooks, &["kmem:rss_stat"]);
            assert!(missing[0].contains(NO_BTF), "{missing:?}");
        }
        other => panic!("rss without BTF: {other:?}"),
    }
    assert!(report.attached(Family::Mmap) && report.attached(Family::Faults));
}

#[test]
fn registers_hold_syscall_arguments_only_where_the_architecture_says_so() {
    let tracefs = Tracefs::new(V6_18);
    let layouts = btf();
    let mut ctx = PlanContext::new(&tracefs, &layouts, 0);
    ctx.syscall_args_in_regs = false;
    let plan = ProbePlan::new(&ctx, &[Family::Mmap]);
    assert_eq!(plan.offsets.syscall_args_from_regs, 0);
    assert_eq!(usable(&plan, Family::Mmap).len(), 10, "entry and exit");
    assert_eq!(
        PlanContext::new(&tracefs, &layouts, 0).syscall_args_in_regs,
        cfg!(target_arch = "x86_64")
    );
}

#[test]
fn a_5_4_kernel_skips_what_it_lacks_and_says_why() {
    let plan = plan(V5_4, &no_btf(), &TRACE_FAMILIES);
    let report = attach_all(&plan);
    assert_eq!(
        skipped(&report, Family::Faults),
        "raw_tp exceptions:page_fault_user: tracepoint exceptions:page_fault_user not in this kernel"
    );
    assert!(matches!(
        family(&plan, Family::Faults).hooks[0].unusable.as_deref(),
        Some(Unusable::NoTracepoint {
            category: "exceptions",
            name: "page_fault_user"
        })
    ));
    // The first required hook names the family's blocker; the cause is the entry format, read
    // first.
    assert_eq!(
        skipped(&report, Family::Mmap),
        format!(
            "syscalls:sys_exit_mmap: tracepoint syscalls:sys_enter_mmap not found under {V5_4}"
        )
    );
    // Neither reclaim pair: the family cannot stand.
    let reclaim = hooks(&plan, Family::Reclaim);
    assert!(
        reclaim.iter().all(|(_, required, _)| *required),
        "{reclaim:?}"
    );
    assert_eq!(
        skipped(&report, Family::Reclaim),
        format!(
            "vmscan:mm_vmscan_direct_reclaim_end: tracepoint vmscan:mm_vmscan_direct_reclaim_begin \
             not found under {V5_4}"
        )
    );
    // oom:mark_victim with only the pid.
    assert_eq!(
        report.families[&Family::Oom],
        FamilyStatus::Attached {
            hooks: labels(&["oom:mark_victim"])
        }
    );
    let oom = plan.offsets.oom;
    assert_eq!(oom.pid, 8);
    assert_eq!(
        [
            oom.comm,
            oom.total_vm,
            oom.anon_rss,
            oom.uid,
            oom.oom_score_adj
        ],
        [FIELD_ABSENT; 5]
    );
    // Exit without group_dead; no exec tracepoint in the tree.
    assert_eq!(
        report.families[&Family::Lifecycle],
        FamilyStatus::Partial {
            hooks: labels(&["sched:sched_process_exit"]),
            missing: vec![format!(
                "sched:sched_process_exec (tracepoint sched:sched_process_exec not found under \
                 {V5_4})"
            )],
        }
    );
    let s = plan.offsets.sched;
    assert_eq!([s.exit_pid, s.exit_group_dead], [24, FIELD_ABSENT]);
    assert_eq!([s.exec_old_pid, s.exec_filename], [FIELD_ABSENT; 2]);
    // The classic rss_stat of 5.5–5.10.
    assert!(report.attached(Family::Rss), "{report}");
    let rss = plan.offsets.rss;
    assert_eq!([rss.mm_id, rss.curr, rss.member, rss.size], [8, 12, 16, 24]);
    assert_eq!(
        report
            .to_string()
            .lines()
            .filter(|l| l.contains("SKIPPED"))
            .count(),
        3,
        "{report}"
    );

    // Without BTF the exit hook has only the leader's exit to end a process by.
    assert_eq!(plan.offsets.task.signal_live, FIELD_ABSENT);

    // With BTF the raw rss_stat hook is chosen there too, and the exit hook reads
    // `signal->live` (and the leader's start time, to report each process's end once).
    let plan = self::plan(V5_4, &btf(), &[Family::Rss, Family::Lifecycle]);
    assert_eq!(
        hooks(&plan, Family::Rss),
        [("raw_tp kmem:rss_stat".to_owned(), true, None)]
    );
    let t = plan.offsets.task;
    assert_eq!(
        [
            t.task_signal,
            t.signal_live,
            t.task_group_leader,
            t.task_start_time
        ],
        [
            TASK_LAYOUT.task_signal,
            TASK_LAYOUT.signal_live,
            TASK_LAYOUT.task_group_leader,
            TASK_LAYOUT.task_start_time
        ]
    );
    // The task sampler's layout is not implied.
    assert_eq!(t.task_min_flt, FIELD_ABSENT);
}

#[test]
fn the_daemon_plans_the_fault_hooks_as_fallbacks_for_the_sampler() {
    let plan = plan(V6_18, &btf(), &DAEMON_FAMILIES);
    let planned: Vec<(Family, Role)> = plan.families.iter().map(|f| (f.id(), f.role)).collect();
    assert_eq!(
        planned,
        [
            (Family::Tasks, Role::Requested),
            (Family::Faults, Role::FallbackFor(Family::Tasks)),
            (Family::Rss, Role::FallbackFor(Family::Tasks)),
            (Family::Reclaim, Role::Requested),
            (Family::Oom, Role::Requested),
            (Family::Lifecycle, Role::Requested),
        ],
        "no mmap hooks unless asked for"
    );
    assert_eq!(
        hooks(&plan, Family::Tasks),
        [("iter/task".to_owned(), true, None)]
    );
    assert!(plan.needs_kernel_btf());
    assert_eq!(plan.offsets.task, TASK_LAYOUT);
    assert_eq!(plan.offsets.rss.mm_rss_stat, RSS_LAYOUT.mm_rss_stat);

    // The sampler attaches: its fallbacks are not.
    let report = attach_all(&plan);
    assert_eq!(
        report.families[&Family::Tasks],
        FamilyStatus::Attached {
            hooks: labels(&["iter/task"])
        }
    );
    for id in [Family::Faults, Family::Rss, Family::Mmap] {
        assert_eq!(report.families[&id], FamilyStatus::Disabled, "{id}");
    }
    for id in [Family::Reclaim, Family::Oom, Family::Lifecycle] {
        assert!(report.attached(id), "{report}");
    }
}

#[test]
fn without_the_sampler_the_daemon_falls_back_to_faults_and_rss() {
    let missing_member = BtfError::NoMember {
        parent: "task_struct".to_owned(),
        member: "min_flt".to_owned(),
    };
    let cases = [
        (
            no_btf(),
            format!("iter/task: reading kernel BTF {NO_BTF}: "),
            "kmem:rss_stat",
        ),
        (
            BtfLayouts {
                task_iterator: false,
                ..btf()
            },
            "iter/task: this kernel has no BPF task iterator (Linux 5.8+)".to_owned(),
            "raw_tp kmem:rss_stat",
        ),
        (
            BtfLayouts {
                task: Err(missing_member),
                ..btf()
            },
            "iter/task: kernel BTF: struct task_struct has no member min_flt".to_owned(),
            "raw_tp kmem:rss_stat",
        ),
    ];
    for (layouts, reason, rss_hook) in cases {
        let plan = plan(V6_18, &layouts, &DAEMON_FAMILIES);
        assert!(!plan.needs_kernel_btf());
        assert_eq!(plan.offsets.task.task_min_flt, FIELD_ABSENT);
        let report = attach_all(&plan);
        let skipped = skipped(&report, Family::Tasks);
        assert!(skipped.starts_with(&reason), "{skipped} vs {reason}");
        assert!(report.attached(Family::Faults), "{report}");
        assert!(report.attached(Family::Rss), "{report}");
        let (FamilyStatus::Attached { hooks } | FamilyStatus::Partial { hooks, .. }) =
            &report.families[&Family::Rss]
        else {
            unreachable!()
        };
        assert_eq!(hooks, &[rss_hook]);
        assert_eq!(report.families[&Family::Mmap], FamilyStatus::Disabled);
    }

    // The sampler can be planned but the kernel refuses it at attach: same fallback.
    let plan = plan(V6_18, &btf(), &DAEMON_FAMILIES);
    let report = plan.attach_with(|family| {
        family.attach_each(
            &mut (),
            |_, hook| match hook {
                Hook::TaskIterator { program } => Err(AttachError::NoKernelBtf { program }),
                _ => Ok(()),
            },
            |_, _| {},
        )
    });
    assert_eq!(
        skipped(&report, Family::Tasks),
        "iter/task: the kernel's BTF could not be parsed"
    );
    assert!(report.attached(Family::Faults) && report.attached(Family::Rss));
}

#[test]
fn a_failed_required_hook_detaches_the_family_and_an_optional_one_is_listed() {
    let plan = plan(V6_18, &no_btf(), &[Family::Mmap]);
    let mmap = family(&plan, Family::Mmap);
    let fail_on = |failing: &'static str| {
        let mut detached = Vec::new();
        let status = mmap.attach_each(
            &mut detached,
            |_, hook| match hook.program() {
                program if program == failing => Err(AttachError::MissingProgram { program }),
                _ => Ok(()),
            },
            |detached, hooks| detached.extend(hooks.iter().map(|hook| hook.program())),
        );
        (status, detached)
    };
    let (status, detached) = fail_on("sys_exit_munmap");
    assert_eq!(
        status,
        FamilyStatus::Skipped {
            reason: "syscalls:sys_exit_munmap: program sys_exit_munmap missing from the eBPF \
                     object"
                .to_owned()
        }
    );
    assert_eq!(detached, ["sys_exit_mmap", "sys_enter_mmap"]);

    let (status, detached) = fail_on("sys_enter_brk");
    assert!(detached.is_empty());
    match status {
        FamilyStatus::Partial { hooks, missing } => {
            assert_eq!(hooks.len(), 9);
            assert_eq!(
                missing,
                ["syscalls:sys_enter_brk (program sys_enter_brk missing from the eBPF object)"]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn following_forks_adds_the_required_fork_hook() {
    let plan = plan_with(
        Path::new(V6_18),
        &btf(),
        &[Family::Lifecycle],
        filter::FOLLOW_FORKS,
    );
    assert_eq!(
        hooks(&plan, Family::Lifecycle)[2],
        ("sched:sched_process_fork".to_owned(), true, None)
    );
    let s = plan.offsets.sched;
    assert_eq!([s.fork_parent_pid, s.fork_child_pid], [12, 20]);

    let plan = plan_with(
        Path::new(V5_4),
        &btf(),
        &[Family::Lifecycle],
        filter::FOLLOW_FORKS,
    );
    assert_eq!(
        skipped(&attach_all(&plan), Family::Lifecycle),
        format!(
            "sched:sched_process_fork: tracepoint sched:sched_process_fork not found under {V5_4}"
        )
    );
}

/// A copy of the 6.18 tree with `(category, name, from, to)` replacements in format files.
fn edited_6_18(edits: &[(&str, &str, &str, &str)]) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(Path::new(V6_18), dir.path());
    for (category, name, from, to) in edits {
        let path = dir
            .path()
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{path:?} has no {from:?}");
        fs::write(&path, text.replace(from, to)).unwrap();
    }
    dir
}

#[test]
fn hooks_that_would_share_offsets_they_do_not_share_are_refused() {
    let tree = edited_6_18(&[
        (
            "syscalls",
            "sys_exit_brk",
            "long ret;\toffset:16;",
            "long ret;\toffset:24;",
        ),
        (
            "vmscan",
            "mm_vmscan_memcg_reclaim_end",
            "nr_reclaimed;\toffset:8;",
            "nr_reclaimed;\toffset:16;",
        ),
    ]);
    let plan = plan_with(tree.path(), &btf(), &[Family::Mmap, Family::Reclaim], 0);
    let report = attach_all(&plan);
    assert_eq!(
        report.families[&Family::Mmap],
        FamilyStatus::Partial {
            hooks: labels(&[
                "syscalls:sys_exit_mmap",
                "syscalls:sys_exit_munmap",
                "syscalls:sys_exit_mremap",
                "syscalls:sys_exit_madvise"
            ]),
            missing: labels(&[
                "syscalls:sys_exit_brk (syscalls:sys_exit_brk has `ret` at offset 24, others at 16)"
            ]),
        }
    );
    assert_eq!(
        plan.offsets.brk_enter,
        args(&[]),
        "brk's offsets are not set"
    );
    assert_eq!(plan.offsets.syscall_exit_ret, 16);
    let differ = "memcg reclaim records differ from direct reclaim's";
    assert_eq!(
        report.families[&Family::Reclaim],
        FamilyStatus::Partial {
            hooks: labels(&[
                "vmscan:mm_vmscan_direct_reclaim_end",
                "vmscan:mm_vmscan_direct_reclaim_begin"
            ]),
            missing: vec![
                format!("vmscan:mm_vmscan_memcg_reclaim_end ({differ})"),
                format!("vmscan:mm_vmscan_memcg_reclaim_begin ({differ})"),
            ],
        }
    );
}

#[test]
fn a_field_of_another_size_is_refused_with_the_tracepoint_named() {
    let tree = edited_6_18(&[(
        "oom",
        "mark_victim",
        "int pid;\toffset:8;\tsize:4;",
        "int pid;\toffset:8;\tsize:8;",
    )]);
    let plan = plan_with(tree.path(), &btf(), &[Family::Oom, Family::Lifecycle], 0);
    let report = attach_all(&plan);
    assert_eq!(
        skipped(&report, Family::Oom),
        "oom:mark_victim: tracepoint mark_victim field `pid` is 8 bytes on this kernel, expected \
         4: refusing to misread it"
    );
    assert!(matches!(
        family(&plan, Family::Oom).hooks[0].unusable.as_deref(),
        Some(Unusable::Tracefs(TracefsError::FieldSize { .. }))
    ));
    assert_eq!(plan.offsets.oom.pid, FIELD_ABSENT);
    assert!(report.attached(Family::Lifecycle));
}

/// Linux 5.10's reclaim records carry a 4-byte `gfp_t`, not an `unsigned long`: read as such,
/// not dropped; memcg's pair, the same, still shares the programs.
#[test]
fn a_four_byte_gfp_flags_is_read_at_its_size() {
    let four = [
        "unsigned long gfp_flags;\toffset:16;\tsize:8;",
        "gfp_t gfp_flags;\toffset:16;\tsize:4;",
    ];
    let tree = edited_6_18(&[
        ("vmscan", "mm_vmscan_direct_reclaim_begin", four[0], four[1]),
        ("vmscan", "mm_vmscan_memcg_reclaim_begin", four[0], four[1]),
    ]);
    let plan = plan_with(tree.path(), &btf(), &[Family::Reclaim], 0);
    let report = attach_all(&plan);
    assert_eq!(
        report.families[&Family::Reclaim],
        FamilyStatus::Attached {
            hooks: labels(&[
                "vmscan:mm_vmscan_direct_reclaim_end",
                "vmscan:mm_vmscan_direct_reclaim_begin",
                "vmscan:mm_vmscan_memcg_reclaim_end",
                "vmscan:mm_vmscan_memcg_reclaim_begin"
            ])
        }
    );
    let r = plan.offsets.reclaim;
    assert_eq!([r.begin_gfp_flags, r.begin_gfp_flags_size], [16, 4]);
    // 6.18 as it is: 8 bytes.
    let r = self::plan(V6_18, &btf(), &[Family::Reclaim])
        .offsets
        .reclaim;
    assert_eq!([r.begin_gfp_flags, r.begin_gfp_flags_size], [16, 8]);
}

/// The madvise pair the mmap family's table gains with the kernel's madvise programs.
#[test]
fn the_6_18_madvise_records_have_the_fields_the_mmap_family_reads() {
    let tracefs = Tracefs::new(V6_18);
    let enter = tracefs.format("syscalls", "sys_enter_madvise").unwrap();
    assert_eq!(
        syscall_args(&enter, &["start", "len_in", "behavior"]).unwrap(),
        args(&[16, 24, 32])
    );
    let exit = tracefs.format("syscalls", "sys_exit_madvise").unwrap();
    assert_eq!(exit.offset_of("ret", 8).unwrap(), 16);
}

#[test]
fn without_btf_every_layout_names_the_file() {
    let layouts = no_btf();
    assert!(!layouts.task_iterator);
    for err in [layouts.rss.unwrap_err(), layouts.task.unwrap_err()] {
        assert!(matches!(&err, BtfError::Read { path, .. } if path == Path::new(NO_BTF)));
        assert!(
            err.to_string()
                .starts_with(&format!("reading kernel BTF {NO_BTF}: ")),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}

/// An unreadable tracefs (mode 0700 and no CAP_DAC_READ_SEARCH, as for an unprivileged user)
/// is a missing privilege, named with its fix, for raw tracepoints (which only check the
/// tracepoint exists) and format-reading ones alike: never "not in this kernel". The planning
/// thread lowers its own CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (capabilities are per thread),
/// so the kernel answers EACCES even when the tests run as root.
#[test]
fn an_unreadable_tracefs_is_a_missing_privilege_not_an_old_kernel() {
    use std::os::unix::fs::PermissionsExt;
    let tree = edited_6_18(&[]);
    fs::set_permissions(tree.path(), fs::Permissions::from_mode(0o000)).unwrap();
    let root = tree.path().to_path_buf();
    let (faults, reasons) = std::thread::spawn(move || {
        for cap in [
            caps::Capability::CAP_DAC_OVERRIDE,
            caps::Capability::CAP_DAC_READ_SEARCH,
        ] {
            caps::drop(None, caps::CapSet::Effective, cap).unwrap();
        }
        let plan = plan_with(&root, &btf(), &TRACE_FAMILIES, 0);
        let faults = family(&plan, Family::Faults).hooks[0]
            .unusable
            .as_ref()
            .map(|unusable| unusable.is_permission_denied());
        let report = attach_all(&plan);
        let reasons: Vec<String> = [Family::Faults, Family::Rss, Family::Oom, Family::Lifecycle]
            .into_iter()
            .map(|id| skipped(&report, id).to_owned())
            .collect();
        (faults, reasons)
    })
    .join()
    .unwrap();
    fs::set_permissions(tree.path(), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(faults, Some(true));
    let root = tree.path().display();
    assert_eq!(
        reasons[0],
        format!(
            "raw_tp exceptions:page_fault_user: cannot read {root}/events/exceptions/page_fault_user: \
             permission denied (tracefs format files are not readable: grant CAP_DAC_READ_SEARCH or \
             run as root)"
        )
    );
    for reason in &reasons {
        assert!(
            reason.contains("permission denied")
                && reason.contains("grant CAP_DAC_READ_SEARCH or run as root")
                && !reason.contains("not in this kernel"),
            "{reason}"
        );
    }
}

/// A victim other than the trigger is attributed from the task the kernel passes to raw hooks
/// (Linux 6.8+): its hook comes first and the programs learn the task's pid offset. Without the
/// task argument (older kernels) or the cgroup layout, only the tracepoint is planned.
#[test]
fn the_oom_victims_cgroup_is_read_from_its_task_where_the_kernel_passes_it() {
    let cgroup = CgroupOffsets {
        task_cgroups: 2400,
        cset_link: 136,
        css_cgroup: 0,
        cgroup_kn: 264,
        kn_id: 96,
        reserved: 0,
    };
    let with_task = BtfLayouts {
        cgroup: Ok(CgroupLayouts {
            memory: cgroup,
            default_hierarchy: cgroup,
        }),
        oom_victim_task: true,
        ..btf()
    };
    let daemon = plan(V6_18, &with_task, &DAEMON_FAMILIES);
    assert_eq!(
        usable(&daemon, Family::Oom),
        ["raw_tp oom:mark_victim", "oom:mark_victim"]
    );
    assert_eq!(daemon.offsets.task.task_pid, TASK_LAYOUT.task_pid);

    for layouts in [
        BtfLayouts {
            oom_victim_task: false,
            ..with_task.clone()
        },
        BtfLayouts {
            cgroup: Err(BtfError::NoStruct {
                name: "css_set".to_owned(),
            }),
            ..with_task.clone()
        },
        no_btf(),
    ] {
        let oom_only = plan(V6_18, &layouts, &[Family::Oom]);
        assert_eq!(usable(&oom_only, Family::Oom), ["oom:mark_victim"]);
        assert_eq!(oom_only.offsets.task.task_pid, FIELD_ABSENT);
    }
}

/// Linux 5.10 has BTF but not `bpf_get_current_task_btf` (5.11), and 5.11–5.14 not
/// `bpf_task_pt_regs` (5.15, RHEL 9 runs 5.14): the programs learn which helpers there are
/// (`OFFSETS.helpers`) and keep off the paths that call the others; the mmap family reads the
/// syscall arguments at entry instead of from the saved registers.
#[test]
fn kernels_without_the_newer_helpers_plan_the_paths_that_do_not_call_them() {
    for (helpers, args_from_regs) in [
        (0, false),
        (helper_flag::CURRENT_TASK_BTF, false),
        (
            helper_flag::CURRENT_TASK_BTF | helper_flag::TASK_PT_REGS,
            true,
        ),
    ] {
        let layouts = BtfLayouts { helpers, ..btf() };
        let plan = plan(V6_18, &layouts, &TRACE_FAMILIES);
        let o = plan.offsets;
        assert_eq!(o.helpers, helpers);
        assert_eq!(
            o.syscall_args_from_regs != 0,
            args_from_regs,
            "helpers {helpers:#x}"
        );
        let report = attach_all(&plan);
        assert!(report.attached(Family::Mmap), "{report}");
        assert_eq!(
            usable(&plan, Family::Mmap)
                .iter()
                .any(|hook| hook.contains("sys_enter_mmap")),
            !args_from_regs,
            "helpers {helpers:#x}"
        );
    }
}
