//! The task sampler (the daemon's default), and its fallback to the fault hooks without BTF.
use std::time::Duration;

use memtrace::events::Event;
use memtrace_common::kind;
use memtrace_tests::{Tracer, Workload, proc_faults, require_root};

use crate::support::{mask, options, serial};

/// The daemon's default: faults and RSS from the kernel's own per-task counters through the
/// task iterator, with no program on the fault path. Exact against `/proc` while the process
/// lives, and against `wait4`'s final count at its exit, with threads reaped before and a thread
/// killed by `exit_group` (the race the exit hook's list walk exists for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_sampler_counts_what_the_kernel_counts_live_and_at_exit() {
    use memtrace::probes::{Family, FamilyStatus, tasks::TaskSampler};
    require_root();
    let _serial = serial();
    let mut options = options(mask(&[kind::EXIT]));
    // With the mmap hooks (`daemon --mmap-calls`): their counters ride along in the pass.
    options.families = [&memtrace::probes::DAEMON_FAMILIES[..], &[Family::Mmap]].concat();
    let mut tracer = Tracer::load(&options);
    let report = tracer.probes.report().clone();
    assert!(report.attached(Family::Tasks), "{report}");
    for family in memtrace::probes::REPLACED_BY_TASKS {
        assert_eq!(
            report.families[&family],
            FamilyStatus::Disabled,
            "no fault-path hook may run with the sampler:\n{report}"
        );
    }

    const THREADS: u64 = 4;
    const PAGES: u64 = 5_000;
    let mut workload = Workload::start(&["threads", &THREADS.to_string(), &PAGES.to_string()]);
    let pid = workload.pid();
    assert_eq!(workload.run()["pages"], THREADS * PAGES);

    let mut sampler = TaskSampler::default();
    let pass = tracer
        .probes
        .task_iterator()
        .expect("run iterator")
        .expect("tasks attached");
    let totals = *sampler
        .read(pass)
        .expect("read pass")
        .get(&pid)
        .expect("workload sampled");
    // The workload is idle now: the kernel's counters hold still.
    let (minflt, majflt) = proc_faults(pid);
    assert!(totals.faults_minor >= THREADS * PAGES, "{totals:?}");
    assert_eq!(totals.faults_minor, minflt, "sampler vs /proc minflt");
    assert_eq!(totals.faults_major, majflt, "sampler vs /proc majflt");
    let status = memtrace::procfs::ProcFs::new("/proc")
        .status_rss(pid)
        .expect("status");
    let anon = totals.rss_pages[memtrace_common::rss_member::ANON] * 4096;
    let proc_anon = status.rss_anon_bytes.expect("RssAnon");
    // The kernel's counters may hold back a few pages (the parked thread's, before 6.2).
    let slack = memtrace_tests::rss_counter_slack_pages();
    assert!(
        anon + slack * 4096 >= THREADS * PAGES * 4096,
        "anon RSS {anon}, less than {} pages touched minus {slack}",
        THREADS * PAGES
    );
    // Per-CPU counter batches, as in the rss test.
    assert!(
        anon.abs_diff(proc_anon) <= 1 << 20,
        "anon RSS {anon} vs /proc {proc_anon}"
    );
    // The virtual size is the kernel's: /proc shows total_vm as VmSize.
    let vm_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmSize");
    assert_eq!(
        totals.vm_pages * 4,
        vm_kib,
        "sampler total_vm vs /proc VmSize"
    );
    assert!(totals.vm_pages >= THREADS * PAGES, "{totals:?}");
    // The leader's record carries the hook counters: the same as the process's map entry
    // (the workload is idle), and its threads' stacks were mmapped.
    let entry = tracer
        .probes
        .process_stats(pid)
        .expect("map")
        .expect("mmap hooks made an entry");
    assert_eq!(totals.hooks, entry, "sampler's hook counters vs PROC_STATS");
    assert!(totals.hooks.mmap_calls >= THREADS, "{:?}", totals.hooks);

    let (final_minor, final_major) = workload.finish_with_faults();
    let events = tracer
        .collect_until(Duration::from_secs(10), |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::Exit(x) if x.header.pid == pid))
        })
        .await;
    let exit = events
        .iter()
        .find_map(|e| match e {
            Event::Exit(x) if x.header.pid == pid => Some(x),
            _ => None,
        })
        .expect("exit event");
    assert_eq!(exit.task_counters, 1);
    assert_eq!(
        (exit.task_faults_minor, exit.task_faults_major),
        (final_minor, final_major),
        "exit event vs wait4 rusage"
    );
    assert!(final_minor >= minflt);
}

/// Without BTF the task iterator cannot load: the daemon's families fall back to the per-fault
/// hooks, which still count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_btf_the_sampler_falls_back_to_the_fault_hooks() {
    use memtrace::probes::{Family, FamilyStatus};
    require_root();
    let _serial = serial();
    let mut options = options(0);
    options.families = memtrace::probes::DAEMON_FAMILIES.to_vec();
    options.btf_path = "/nonexistent/vmlinux".into();
    let tracer = Tracer::load(&options);
    let report = tracer.probes.report();
    match &report.families[&Family::Tasks] {
        FamilyStatus::Skipped { reason } => {
            assert!(reason.contains("/nonexistent/vmlinux"), "{reason}")
        }
        other => panic!("tasks family without BTF: {other:?}"),
    }
    assert!(report.attached(Family::Faults), "{report}");
    assert!(report.attached(Family::Rss), "{report}");

    let mut workload = Workload::start(&["touch-anon", "2000"]);
    workload.run();
    let stats = tracer
        .probes
        .process_stats(workload.pid())
        .expect("map")
        .expect("tracked by the fault hooks");
    assert!(stats.faults_minor() >= 2000, "{stats:?}");
    assert!(workload.finish().success());
}
