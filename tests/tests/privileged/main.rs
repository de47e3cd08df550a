//! Privileged integration tests: memtrace's real eBPF programs in the running kernel, checked
//! against the kernel's own accounting. One test binary (aya's convention); run as root by
//! `cargo xtask test`. Without root every test fails (never skips).
#![expect(
    clippy::await_holding_lock,
    reason = "SERIAL orders whole tests, each on its own runtime: holding it across awaits is the point"
)]
use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

mod daemon;

use memtrace::{events::Event, probes::ProbeOptions};
use memtrace_common::{Config, filter, kind};
use memtrace_tests::{MemoryCgroup, Tracer, Workload, memtrace_bin, proc_faults, require_root};

/// Tests share the kernel (ring sizes, cgroups, CPU): one at a time keeps them deterministic.
pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn options(event_mask: u32) -> ProbeOptions {
    let mut options = ProbeOptions::default();
    options.config = Config {
        event_mask,
        mmap_min_bytes: 0,
        reclaim_min_ns: 0,
        ..options.config
    };
    options
}

fn mask(kinds: &[u32]) -> u32 {
    kinds.iter().fold(0, |m, k| m | (1 << k))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minor_faults_match_the_kernels_count() {
    require_root();
    let _serial = serial();
    let tracer = Tracer::load(&options(0));
    const PAGES: u64 = 20_000;
    let mut workload = Workload::start(&["touch-anon", &PAGES.to_string()]);
    let results = workload.run();
    assert_eq!(results["pages"], PAGES);

    let (minflt, majflt) = proc_faults(workload.pid());
    let stats = tracer
        .probes
        .process_stats(workload.pid())
        .expect("map read")
        .expect("workload tracked");
    let minor = stats.faults_minor();
    assert!(
        minor >= PAGES,
        "memtrace saw {minor} minor faults, fewer than the {PAGES} pages touched"
    );
    let diff = minor.abs_diff(minflt) as f64 / minflt as f64;
    assert!(
        diff <= 0.01,
        "memtrace minor {minor} vs /proc minflt {minflt}: {:.2}% apart (> 1%)",
        diff * 100.0
    );
    assert_eq!(stats.faults_major, majflt, "major faults differ from /proc");
    assert!(workload.finish().success());
}

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
    assert!(anon >= THREADS * PAGES * 4096, "anon RSS {anon}");
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

/// RSS by type from `kmem:rss_stat`, through the raw tracepoint with BTF offsets (the default)
/// and through the classic tracepoint (the fallback without BTF), against `/proc/<pid>/status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_matches_proc_status_with_and_without_btf() {
    require_root();
    let _serial = serial();
    for btf in [true, false] {
        let mut options = options(0);
        if !btf {
            options.btf_path = "/nonexistent/vmlinux".into();
        }
        let tracer = Tracer::load(&options);
        let status = tracer.probes.report().families[&memtrace::probes::Family::Rss].clone();
        let hooks = match &status {
            memtrace::probes::FamilyStatus::Attached { hooks } if btf => hooks.clone(),
            memtrace::probes::FamilyStatus::Partial { hooks, missing } if !btf => {
                assert!(missing[0].contains("/nonexistent/vmlinux"), "{missing:?}");
                hooks.clone()
            }
            other => panic!("rss family with btf={btf}: {other:?}"),
        };
        assert_eq!(
            hooks,
            [if btf {
                "raw_tp kmem:rss_stat"
            } else {
                "kmem:rss_stat"
            }]
        );

        let mut workload = Workload::start(&["touch-anon", "20000"]);
        workload.run();
        let stats = tracer
            .probes
            .process_stats(workload.pid())
            .expect("map")
            .expect("tracked");
        let status = memtrace::procfs::ProcFs::new("/proc")
            .status_rss(workload.pid())
            .expect("status");
        let anon = stats.rss[memtrace_common::rss_member::ANON];
        let proc_anon = status.rss_anon_bytes.expect("RssAnon");
        // `kmem:rss_stat` reports the kernel's approximate per-CPU counter (as does `mm->
        // rss_stat.count`): each CPU may hold back up to one batch, max(32, 2 × CPUs) pages.
        let cpus = memtrace_tests::online_cpus() as u64;
        let batch_pages = 32.max(2 * cpus);
        assert!(
            anon + cpus * batch_pages * 4096 >= 20_000 * 4096,
            "btf={btf}: anon RSS {anon} below the 20,000 pages touched (less one counter batch \
             per CPU)"
        );
        // The kernel's per-CPU counters are read without summing their per-CPU deltas, like
        // the tracepoint itself: allow a batch of pages per CPU.
        assert!(
            anon.abs_diff(proc_anon) <= 1 << 20,
            "btf={btf}: anon RSS {anon} vs /proc {proc_anon}"
        );
        let file = stats.rss[memtrace_common::rss_member::FILE];
        let proc_file = status.rss_file_bytes.expect("RssFile");
        assert!(
            file.abs_diff(proc_file) <= 1 << 20,
            "btf={btf}: file RSS {file} vs /proc {proc_file}"
        );
        assert!(workload.finish().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn major_faults_equal_the_kernels_count() {
    require_root();
    let _serial = serial();
    // A file on a disk filesystem (not tmpfs: page-cache drops must cause real reads).
    let path = std::env::temp_dir().join(format!("memtrace-major-{}", std::process::id()));
    let data: Vec<u8> = (0..32u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, &data).expect("write test file");
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .expect("fsync");

    let tracer = Tracer::load(&options(0));
    let mut workload = Workload::start(&["major-file", path.to_str().expect("utf-8 path")]);
    workload.run();
    let (minflt, majflt) = proc_faults(workload.pid());
    let stats = tracer
        .probes
        .process_stats(workload.pid())
        .expect("map read")
        .expect("workload tracked");
    std::fs::remove_file(&path).ok();
    assert!(
        majflt > 0,
        "the workload took no major faults: the page cache was not dropped"
    );
    assert_eq!(
        stats.faults_major, majflt,
        "memtrace majors vs /proc majflt"
    );
    let minor = stats.faults_minor();
    assert!(
        minor.abs_diff(minflt) as f64 <= 0.01 * minflt as f64 + 2.0,
        "minor {minor} vs /proc {minflt}"
    );
    assert!(workload.finish().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mmap_family_events_and_counters_carry_exact_sizes() {
    require_root();
    let _serial = serial();
    let mut tracer = Tracer::load(&options(mask(&[
        kind::MMAP,
        kind::MUNMAP,
        kind::BRK,
        kind::MREMAP,
    ])));
    let mut workload = Workload::start(&["syscalls"]);
    let pid = workload.pid();
    // Let start-up (dynamic loader, std runtime) settle, then take the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = tracer
        .probes
        .process_stats(pid)
        .expect("map")
        .expect("tracked");
    let r = workload.run();
    let after = tracer
        .probes
        .process_stats(pid)
        .expect("map")
        .expect("tracked");

    let u = |key: &str| r[key].as_u64().unwrap_or_else(|| panic!("{key} in {r}"));
    // Counters: only successful calls, page-aligned sizes.
    assert_eq!(
        after.mmap_calls - before.mmap_calls,
        2,
        "two successful mmaps"
    );
    assert_eq!(
        after.mmap_bytes - before.mmap_bytes,
        (3 << 20) + (2 << 20),
        "mmap bytes: 3 MiB + 2 MiB"
    );
    assert_eq!(after.munmap_calls - before.munmap_calls, 1);
    assert_eq!(after.munmap_bytes - before.munmap_bytes, 1 << 20);
    assert_eq!(after.brk_grow_bytes - before.brk_grow_bytes, 256 << 10);
    assert_eq!(after.brk_shrink_bytes - before.brk_shrink_bytes, 64 << 10);
    assert_eq!(after.mremap_calls - before.mremap_calls, 1);
    assert_eq!(after.mremap_grow_bytes - before.mremap_grow_bytes, 2 << 20);
    assert_eq!(
        after.failed_calls - before.failed_calls,
        2,
        "the failed mmap and munmap"
    );

    // Events: exactly those calls, with those sizes and addresses.
    let events = tracer
        .collect_until(Duration::from_secs(5), |events| {
            events.iter().any(|e| matches!(e, Event::MemSyscall(m) if m.header.pid == pid && m.header.kind == kind::MREMAP))
                && events.iter().filter(|e| matches!(e, Event::MemSyscall(m) if m.header.pid == pid && m.header.kind == kind::MUNMAP && m.ret < 0)).count() == 1
        })
        .await;
    let mine: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::MemSyscall(m) if m.header.pid == pid => Some(*m),
            _ => None,
        })
        .collect();
    let find = |k: u32, pred: &dyn Fn(&memtrace_common::MemSyscallEvent) -> bool| {
        mine.iter()
            .find(|m| m.header.kind == k && pred(m))
            .copied()
            .unwrap_or_else(|| panic!("no {k} event matching in {mine:#?}"))
    };
    let mmap = find(kind::MMAP, &|m| m.len == 3 << 20);
    assert_eq!(mmap.addr, u("mmap_addr"));
    assert!(mmap.ret >= 0 && mmap.fd == -1);
    let munmap = find(kind::MUNMAP, &|m| m.ret == 0 && m.addr == u("munmap_addr"));
    assert_eq!(munmap.len, 1 << 20);
    let grow = find(kind::BRK, &|m| m.grew == 1 && m.addr == u("brk1"));
    assert_eq!((grow.old_addr, grow.len), (u("brk0"), 256 << 10));
    let shrink = find(kind::BRK, &|m| m.grew == 0 && m.addr == u("brk2"));
    assert_eq!((shrink.old_addr, shrink.len), (u("brk1"), 64 << 10));
    let mremap = find(kind::MREMAP, &|_| true);
    assert_eq!(
        (mremap.old_addr, mremap.old_len, mremap.addr, mremap.len),
        (u("mremap_old"), 2 << 20, u("mremap_new"), 4 << 20)
    );
    let failed = find(kind::MMAP, &|m| m.len == 5 << 20);
    assert_eq!(
        failed.ret,
        -i64::from(libc::EINVAL),
        "the failed mmap reports its errno"
    );
    let failed_unmap = find(kind::MUNMAP, &|m| m.ret < 0);
    assert_eq!(failed_unmap.ret, -i64::from(libc::EINVAL));
    assert!(workload.finish().success());
}

/// Run `hog` in a 64 MiB memory cgroup until the OOM killer ends it; returns (pid, cgroup).
pub(crate) fn oom_kill_in_cgroup() -> (u32, MemoryCgroup) {
    let cgroup = MemoryCgroup::new("memtrace-oom", 64 << 20);
    let mut hog = Workload::start_in(&cgroup, &["hog"]);
    hog.go();
    let pid = hog.pid();
    let status = hog.finish();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the hog was not OOM-killed: {status:?}"
    );
    (pid, cgroup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_kill_names_victim_size_and_trigger() {
    require_root();
    let _serial = serial();
    let mut tracer = Tracer::load(&options(mask(&[kind::OOM])));
    let (pid, _cgroup) = oom_kill_in_cgroup();
    let events = tracer
        .collect_until(Duration::from_secs(10), |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::Oom(o) if o.victim_pid == pid))
        })
        .await;
    let oom = events
        .iter()
        .find_map(|e| match e {
            Event::Oom(o) if o.victim_pid == pid => Some(*o),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no OOM event for victim {pid}; got {events:?}"));
    assert_eq!(
        memtrace::events::comm_str(&oom.victim_comm),
        "memtrace-worklo"
    );
    let anon = oom.anon_rss_kb * 1024;
    assert!(
        (48 << 20..=(64 << 20) + (4 << 20)).contains(&anon),
        "anon_rss {anon} not near the 64 MiB limit"
    );
    // The hog's own allocation invoked the OOM killer: it is also the trigger.
    assert_eq!(oom.header.pid, pid, "trigger pid");
    assert_eq!(
        memtrace::events::comm_str(&oom.header.comm),
        "memtrace-worklo"
    );
    assert!(oom.total_vm_kb * 1024 >= anon);
    assert_eq!(
        oom.present & memtrace_common::oom_field::ANON_RSS,
        memtrace_common::oom_field::ANON_RSS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_churn_leaves_no_kernel_entries_and_every_exit_arrives() {
    require_root();
    let _serial = serial();
    let mut options = options(mask(&[kind::EXIT]));
    options.events_ring_bytes = 4 << 20;
    let mut tracer = Tracer::load(&options);
    const CHILDREN: usize = 5000;
    let mut workload = Workload::start(&["churn", &CHILDREN.to_string()]);
    let r = workload.run();
    let children: HashSet<u32> = r["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|p| p.as_u64().expect("pid") as u32)
        .collect();
    assert_eq!(children.len(), CHILDREN);

    let events = tracer
        .collect_until(Duration::from_secs(20), |events| {
            events
                .iter()
                .filter(|e| matches!(e, Event::Exit(x) if children.contains(&x.header.pid)))
                .count()
                >= CHILDREN
        })
        .await;
    let exits: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Exit(x) if children.contains(&x.header.pid) => Some(*x),
            _ => None,
        })
        .collect();
    let losses = tracer.probes.kernel_losses().expect("losses");
    assert_eq!(
        losses.ring_full[kind::EXIT as usize],
        0,
        "exit events lost in the kernel"
    );
    assert_eq!(exits.len(), CHILDREN, "exit events for every child");
    // Each child dirtied a page: its final counters came with its exit.
    assert!(
        exits
            .iter()
            .all(|x| x.tracked == 1 && x.stats.faults_user >= 1),
        "exit events carry final counters"
    );
    // And no child left an entry behind in the kernel map.
    let live: HashSet<u32> = tracer
        .probes
        .all_process_stats()
        .expect("map")
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    let leaked: Vec<_> = children.iter().filter(|p| live.contains(p)).collect();
    assert!(
        leaked.is_empty(),
        "{} children still in PROC_STATS: {:?}",
        leaked.len(),
        &leaked[..leaked.len().min(10)]
    );
    assert_eq!(
        tracer
            .probes
            .kernel_losses()
            .expect("losses")
            .proc_stats_full,
        0
    );
    assert!(workload.finish().success());
}

/// `trace --faults`: every fault of the filtered process is streamed with its address and
/// cause; with `--sample N` one in N per CPU; either way delivered + dropped = produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_stream_is_complete_sampled_and_accounted() {
    require_root();
    let _serial = serial();
    for sample in [1u32, 10] {
        let mut options = options(mask(&[kind::FAULT]));
        options.config.fault_sample_every = sample;
        options.config.filter_flags = filter::COMMS;
        options.fault_ring_bytes = 16 << 20;
        let mut tracer = Tracer::load(&options);
        tracer
            .probes
            .add_filter_comms(&["memtrace-worklo".to_owned()])
            .expect("comm filter");
        let mut workload = Workload::start(&["touch-anon", "20000"]);
        let pid = workload.pid();
        let r = workload.run();
        let base = r["addr"].as_u64().expect("addr");
        let stats = tracer
            .probes
            .process_stats(pid)
            .expect("map")
            .expect("tracked");
        let faults = stats.faults_user + stats.faults_kernel;
        let events = tracer
            .collect_until(Duration::from_secs(2), |_| false)
            .await;
        let mine: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Fault(f) if f.header.pid == pid => Some(*f),
                _ => None,
            })
            .collect();
        let dropped =
            tracer.probes.kernel_losses().expect("losses").ring_full[kind::FAULT as usize];
        assert_eq!(
            dropped, 0,
            "sample {sample}: a 16 MiB ring should not overflow"
        );
        let in_region = mine
            .iter()
            .filter(|f| (base..base + 20_000 * 4096).contains(&f.address))
            .collect::<Vec<_>>();
        // The touched pages: user-mode write faults on not-present pages, by an instruction in
        // the workload's executable mappings, under its comm.
        assert!(
            in_region
                .iter()
                .all(|f| f.user == 1 && f.error_code & 0x6 == 0x6),
            "sample {sample}"
        );
        let text = executable_ranges(pid);
        for f in &in_region {
            assert!(
                text.iter().any(|r| r.contains(&f.ip)),
                "ip {:#x} outside the workload's code {text:x?}",
                f.ip
            );
            assert_eq!(
                memtrace::events::comm_str(&f.header.comm),
                "memtrace-worklo"
            );
        }
        if sample == 1 {
            assert_eq!(in_region.len(), 20_000, "one event per touched page");
            // The few faults the child took between fork and exec ran under the test's own
            // comm, which the comm filter rightly excludes.
            let unstreamed = faults - mine.len() as u64;
            assert!(
                unstreamed <= 8,
                "{unstreamed} of {faults} faults not streamed"
            );
        } else {
            // One in N per CPU: the per-CPU remainders make it at most one short per CPU.
            let expected = faults / u64::from(sample);
            let cpus = memtrace_tests::online_cpus() as u64;
            assert!(
                (expected.saturating_sub(cpus)..=expected + cpus).contains(&(mine.len() as u64)),
                "sample {sample}: {} events for {faults} faults",
                mine.len()
            );
        }
        assert!(workload.finish().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflowing_a_tiny_ring_loses_nothing_silently() {
    require_root();
    let _serial = serial();
    let mut options = options(mask(&[kind::MMAP]));
    // One page: ~39 mmap records fit.
    options.events_ring_bytes = memtrace::probes::page_size();
    options.config.filter_flags = filter::COMMS;
    // Nobody reads the ring during the burst (a live reader can keep up with it), so it must
    // overflow; reading starts after.
    let tracefs = memtrace::tracefs::Tracefs::discover().expect("tracefs");
    let mut probes = memtrace::probes::Probes::load(&tracefs, &options).expect("load probes");
    probes
        .add_filter_comms(&["memtrace-worklo".to_owned()])
        .expect("comm filter");
    const MMAPS: usize = 2000;
    let mut workload = Workload::start(&["burst", &MMAPS.to_string(), "65536"]);
    let pid = workload.pid();
    workload.run();
    let mut tracer = Tracer::from_probes(probes);
    // Produced: every mmap the workload made (start-up included), as the kernel counted them.
    let stats = tracer
        .probes
        .process_stats(pid)
        .expect("map")
        .expect("tracked");
    assert_eq!(stats.failed_calls, 0);
    let produced = stats.mmap_calls;
    assert!(produced >= MMAPS as u64);
    let events = tracer
        .collect_until(Duration::from_secs(3), |_| false) // drain everything that made it
        .await;
    let delivered = events.iter().filter(|e| matches!(e, Event::MemSyscall(m) if m.header.pid == pid && m.header.kind == kind::MMAP)).count() as u64;
    let dropped = tracer.probes.kernel_losses().expect("losses").ring_full[kind::MMAP as usize];
    assert!(
        dropped > 0,
        "a one-page ring should have overflowed ({delivered} delivered)"
    );
    assert!(delivered > 0);
    assert_eq!(
        delivered + dropped,
        produced,
        "delivered {delivered} + dropped {dropped} != produced {produced}"
    );
    assert_eq!(tracer.stream.counters.snapshot().queue_drops, 0);
    assert!(workload.finish().success());
}

// ---------------------------------------------------------------------------------------------
// The CLI, as a user runs it.

fn memtrace(args: &[&str]) -> std::process::Output {
    Command::new(memtrace_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run memtrace")
}

fn stderr_line(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

#[test]
fn cli_unknown_event_kind_is_one_clear_line() {
    let out = memtrace(&["trace", "--event", "oom,bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_line(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("memtrace: error: invalid value 'oom,bogus' for '--event <KINDS>': unknown event kind 'bogus' (expected one of: fault, mmap"), "{err}");
}

#[test]
fn cli_bad_pid_and_values() {
    require_root();
    let out = memtrace(&["trace", "--pid", "999999999"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_line(&out),
        "memtrace: error: no such process: 999999999 (--pid takes the pid of a running process)"
    );

    let out = memtrace(&["trace", "--min-size", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_line(&out).contains("invalid size 'lots' (examples: 4096, 64K, 1M, 2GiB)"),
        "{}",
        stderr_line(&out)
    );

    let out = memtrace(&["trace", "--sample", "10"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr_line(&out),
        "memtrace: error: the following required arguments were not provided: --faults (see --help)"
    );

    let out = memtrace(&["trace", "--cgroup", "/no/such/group"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_line(&out).starts_with("memtrace: error: no such cgroup: /no/such/group"),
        "{}",
        stderr_line(&out)
    );
}

#[test]
fn cli_without_privileges_says_what_is_needed() {
    require_root();
    use std::os::unix::process::CommandExt;
    let out = Command::new(memtrace_bin())
        .args(["trace", "-d", "1s"])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .expect("run as nobody");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_line(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("memtrace: error: memtrace needs root, or the capabilities CAP_BPF and CAP_PERFMON (missing: CAP_BPF, CAP_PERFMON)"),
        "{err}"
    );
}

/// Run memtrace in a private mount namespace after `setup` (shell commands).
fn memtrace_in_mount_namespace(setup: &str, args: &str) -> std::process::Output {
    let script = format!("{setup}; exec {} {args}", memtrace_bin().display());
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("unshare (util-linux)")
}

#[test]
fn cli_without_tracefs_says_how_to_mount_it() {
    require_root();
    let out = memtrace_in_mount_namespace(
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; true",
        "trace -d 1s",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr_line(&out));
    let err = stderr_line(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("tracefs is not mounted")
            && err.contains("mount -t tracefs tracefs /sys/kernel/tracing"),
        "{err}"
    );
}

#[test]
fn cli_without_btf_warns_once_and_still_traces() {
    require_root();
    let out = memtrace_in_mount_namespace(
        "mount -t tmpfs none /sys/kernel/btf",
        "trace -e oom -d 1s --no-summary",
    );
    let err = stderr_line(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.lines()
            .any(|l| l
                .starts_with("memtrace: warning: kernel BTF not found at /sys/kernel/btf/vmlinux")),
        "{err}"
    );
    assert!(
        err.lines().any(|l| l.starts_with(
            "memtrace: tracing with faults, mmap, rss, reclaim, oom, lifecycle probes attached"
        )),
        "{err}"
    );
}

/// Start `memtrace trace ARGS` with piped output and wait until its probes are attached. The
/// stderr reader is returned too: keep it alive, or memtrace's later stderr writes would fail.
fn spawn_attached_trace(
    args: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStderr>) {
    let mut child = Command::new(memtrace_bin())
        .arg("trace")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn memtrace");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("read stderr");
    assert!(
        line.starts_with("memtrace: tracing with"),
        "unexpected start: {line}"
    );
    (child, stderr)
}

/// The "done" criterion: `memtrace trace --event oom,mmap` shows a real OOM kill and
/// real mmaps, live, as JSON lines; Ctrl-C (SIGINT) ends it cleanly with a summary.
#[test]
fn cli_trace_shows_a_real_oom_kill_and_mmaps_live() {
    require_root();
    let _serial = serial();
    let (mut child, _stderr) = spawn_attached_trace(&[
        "--event",
        "oom,mmap",
        "--output",
        "json",
        "--duration",
        "60s",
    ]);

    let mut syscalls = Workload::start(&["syscalls"]);
    let mapped = syscalls.run();
    let syscalls_pid = syscalls.pid();
    let (victim, _cgroup) = oom_kill_in_cgroup();
    assert!(syscalls.finish().success());

    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let (mut saw_oom, mut saw_mmap, mut summary) = (false, false, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut interrupted = false;
    for line in stdout.lines() {
        let line = line.expect("stdout line");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        if !matches!(v["kind"].as_str(), Some("summary" | "losses")) {
            for key in ["kind", "ts", "pid", "comm"] {
                assert!(v.get(key).is_some(), "{key} missing in {line}");
            }
        }
        match v["kind"].as_str() {
            Some("oom") if v["victim_pid"] == victim => {
                assert_eq!(v["victim_comm"], "memtrace-worklo");
                assert!(v["anon_rss_bytes"].as_u64().expect("anon_rss_bytes") >= 48 << 20);
                assert!(v["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')));
                saw_oom = true;
            }
            Some("mmap") if v["pid"] == syscalls_pid && v["len"] == 3 << 20 => {
                assert_eq!(v["addr"], mapped["mmap_addr"]);
                saw_mmap = true;
            }
            Some("losses") => {
                summary = true;
                assert_eq!(v["lost_kernel_ring_full"], 0, "{line}");
            }
            _ => {}
        }
        if saw_oom && saw_mmap && !interrupted {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            interrupted = true;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: oom {saw_oom}, mmap {saw_mmap}"
        );
    }
    let status = child.wait().expect("wait memtrace");
    assert!(saw_oom, "no OOM event for victim {victim}");
    assert!(saw_mmap, "no 3 MiB mmap event for pid {syscalls_pid}");
    assert!(summary, "no final summary after Ctrl-C");
    assert!(status.success(), "memtrace exited with {status:?}");
}

/// `trace --cgroup`: only processes in the cgroup, including ones that join it after the trace
/// started; the same calls made outside it are not shown.
#[test]
fn cli_trace_cgroup_filter_shows_only_its_processes() {
    require_root();
    let _serial = serial();
    let cgroup = MemoryCgroup::new("memtrace-filter", 1 << 30);
    let (child, _stderr) = spawn_attached_trace(&[
        "--cgroup",
        &cgroup.path,
        "--event",
        "vm",
        "--output",
        "json",
        "--no-summary",
        "--duration",
        "30s",
    ]);

    let mut inside = Workload::start_in(&cgroup, &["syscalls"]);
    let mut outside = Workload::start(&["syscalls"]);
    // Joining after the trace started: picked up by the once-a-second cgroup rescan.
    std::thread::sleep(Duration::from_millis(1500));
    let inside_map = inside.run();
    outside.run();
    let (inside_pid, outside_pid) = (inside.pid(), outside.pid());
    assert!(inside.finish().success() && outside.finish().success());
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().expect("memtrace output");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(
        events.iter().any(|e| e["pid"] == inside_pid
            && e["kind"] == "mmap"
            && e["addr"] == inside_map["mmap_addr"]),
        "the 3 MiB mmap of the process in the cgroup is missing: {events:?}"
    );
    // Only the process in the cgroup: nothing from the identical process outside it. (The
    // `cgroup` field shown is not asserted: in the full suite it was once "/" for a process
    // placed in the cgroup before exec — an enrichment race under investigation, see README.)
    assert!(
        events.iter().all(|e| e["pid"] == inside_pid),
        "an event from outside the cgroup: {events:?}"
    );
    assert!(
        !events.iter().any(|e| e["pid"] == outside_pid),
        "the process outside the cgroup was shown"
    );
}

/// The least-privilege claim of the README and the systemd unit: no root, only CAP_BPF,
/// CAP_PERFMON and CAP_DAC_READ_SEARCH (as ambient capabilities of an unprivileged user).
#[test]
fn cli_runs_as_an_unprivileged_user_with_three_capabilities() {
    require_root();
    let caps = "+bpf,+perfmon,+dac_read_search";
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(memtrace_bin())
        .args(["trace", "-e", "oom", "-d", "1s", "--no-summary"])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)");
    let err = stderr_line(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.lines().any(|l| l == "memtrace: tracing with faults, mmap, rss, reclaim, oom, lifecycle probes attached; Ctrl-C to stop"),
        "{err}"
    );
    assert!(
        !err.contains("warning"),
        "nothing may be degraded without root: {err}"
    );
}

/// The executable mappings of `pid`, from `/proc/<pid>/maps`.
fn executable_ranges(pid: u32) -> Vec<std::ops::Range<u64>> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("maps")
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .nth(1)
                .is_some_and(|p| p.contains('x'))
        })
        .map(|line| {
            let (start, end) = line
                .split_whitespace()
                .next()
                .unwrap()
                .split_once('-')
                .unwrap();
            u64::from_str_radix(start, 16).unwrap()..u64::from_str_radix(end, 16).unwrap()
        })
        .collect()
}
