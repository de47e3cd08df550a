//! The per-fault hooks: minor and major faults against the kernel's own counts.

use memtrace_tests::{Tracer, Workload, proc_faults, require_root};

use crate::support::{options, serial};

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
