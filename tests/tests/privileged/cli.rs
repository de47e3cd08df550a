//! The CLI, as a user runs it.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use memtrace_tests::{MemoryCgroup, Workload, memtrace_bin, require_root};

use crate::support::{oom_kill_in_cgroup, serial};

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
