//! What the privileged tests share: one test at a time, probe options, an OOM kill on demand,
//! a trace started and attached.
use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::Mutex,
};

use memtrace::probes::ProbeOptions;
use memtrace_common::Config;
use memtrace_tests::{MemoryCgroup, Workload, memtrace_bin};

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

/// Start `memtrace trace ARGS` with piped output and wait until its probes are attached. The
/// stderr reader is returned too: keep it alive, or memtrace's later stderr writes would fail.
pub(crate) fn spawn_attached_trace(
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

/// Spawns `command` (a `memtrace daemon …` with its flags; logs at info, stderr drained for good
/// so the daemon never blocks on a full pipe) and waits for its start-up line: what follows
/// `serving on `, e.g. `http://127.0.0.1:41234` or `https://127.0.0.1:41234 (basic auth)`.
pub(crate) fn spawn_daemon(mut command: Command) -> (std::process::Child, String) {
    let mut child = command
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn memtrace daemon");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(rest) = line.split("serving on ").nth(1) {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    // Seconds on a host; in the kernel matrix's TCG guests on a slow host, loading and verifying
    // the daemon's programs has taken longer than 15 s.
    let serving = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("daemon did not report its address");
    (child, serving)
}
