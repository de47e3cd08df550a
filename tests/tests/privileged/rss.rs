//! RSS by type from `kmem:rss_stat`, with and without BTF.

use memtrace_tests::{Tracer, Workload, require_root};

use crate::support::{options, serial};

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
        // `kmem:rss_stat` reports the kernel's approximate counter (as does `mm->rss_stat`).
        let slack = memtrace_tests::rss_counter_slack_pages();
        assert!(
            anon + slack * 4096 >= 20_000 * 4096,
            "btf={btf}: anon RSS {anon} below the 20,000 pages touched (less {slack} pages the \
             kernel's counters may hold back)"
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
