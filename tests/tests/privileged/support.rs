//! What the privileged tests share: one test at a time, probe options, an OOM kill on demand.
use std::sync::Mutex;

use memtrace::probes::ProbeOptions;
use memtrace_common::Config;
use memtrace_tests::{MemoryCgroup, Workload};

/// Tests share the kernel (ring sizes, cgroups, CPU): one at a time keeps them deterministic.
pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn options(event_mask: u32) -> ProbeOptions {
    let mut options = ProbeOptions::default();
    options.config = Config {
        event_mask,
        mmap_min_bytes: 0,
        reclaim_min_ns: 0,
        ..options.config
    };
    options
}

pub(crate) fn mask(kinds: &[u32]) -> u32 {
    kinds.iter().fold(0, |m, k| m | (1 << k))
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
