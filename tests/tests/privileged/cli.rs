//! The CLI, as a user runs it.
use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::Duration,
};

use memtrace_tests::{MemoryCgroup, Workload, memtrace_bin, require_root};

use crate::support::{oom_kill_in_cgroup, serial, spawn_attached_trace};

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
        // Every family (the default events), to see each one degrade or not without BTF.
        "trace -d 1s --no-summary",
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
    let mut setpriv = Command::new("setpriv");
    // As the README says for kernels before 5.11 (which charge BPF maps to RLIMIT_MEMLOCK):
    // raise the limit as root, before dropping privileges. Later kernels ignore it.
    // SAFETY: only setrlimit(2), async-signal-safe, between fork and exec.
    unsafe {
        setpriv.pre_exec(|| {
            let unlimited = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            // Best effort: without CAP_SYS_RESOURCE the limit stays, and memtrace says why.
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited);
            Ok(())
        })
    };
    let out = setpriv
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(memtrace_bin())
        // Every family (the default events: `-e oom` attaches the OOM hook alone).
        .args(["trace", "-d", "1s", "--no-summary"])
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

/// `memtrace ARGS` that must end by itself within `within`: killed and failed otherwise (an
/// unbounded read or a blocking open must not hang the suite).
fn memtrace_within(args: &[&str], within: Duration) -> std::process::Output {
    let mut child = Command::new(memtrace_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn memtrace");
    let deadline = std::time::Instant::now() + within;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("memtrace {args:?} still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Issue 10, defects 4, 8, 11: periods and sizes out of range are one line naming the flag and
/// its range, before anything is loaded (no panic, no flood, no kernel error repeated).
#[test]
fn cli_out_of_range_values_name_the_flag_and_range() {
    for (args, expected) in [
        (
            &["trace", "--interval", "0s"][..],
            "memtrace: error: invalid value '0s' for '--interval <INTERVAL>': must be between 100ms and 1day (got 0s) (see --help)",
        ),
        (
            &["trace", "--interval", "1ns"],
            "memtrace: error: invalid value '1ns' for '--interval <INTERVAL>': must be between 100ms and 1day (got 1ns) (see --help)",
        ),
        (
            &["trace", "--duration", "0"],
            "memtrace: error: invalid value '0' for '--duration <DURATION>': must be between 100ms and 30days (got 0s) (see --help)",
        ),
        (
            &["trace", "--cgroup", ""],
            "memtrace: error: invalid value '' for '--cgroup <PATH>': must not be empty (see --help)",
        ),
        (
            &["oom", "--last", "0"],
            "memtrace: error: invalid value '0' for '--last <N>': 0 is not in 1..18446744073709551615 (see --help)",
        ),
    ] {
        let out = memtrace_within(args, Duration::from_secs(10));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr_line(&out)
        );
        assert_eq!(stderr_line(&out), expected, "{args:?}");
    }
    let out = memtrace_within(
        &["daemon", "--max-processes", "2147483648"],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_line(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "memtrace: error: --max-processes must be between 1024 and 4194304 (got 2147483648;"
        ),
        "{err}"
    );
    let out = memtrace_within(&["daemon", "--help"], Duration::from_secs(10));
    let help = String::from_utf8_lossy(&out.stdout);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("Each costs ~488 bytes of kernel memory, allocated at start"),
        "--help states what --max-processes costs: {help}"
    );
}

/// Issue 10, defect 11: `--duration 25` is 25 seconds, as `timeout` takes it.
#[test]
fn cli_bare_seconds_are_a_duration() {
    require_root();
    let start = std::time::Instant::now();
    let out = memtrace_within(
        &["trace", "-e", "oom", "--duration", "1", "--no-summary"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr_line(&out));
    assert!(start.elapsed() >= Duration::from_secs(1));
}

/// Issue 10, defect 7: `--config` on a device or a FIFO with no writer is refused at once, in one
/// line, instead of reading forever or waiting for a writer.
#[test]
fn cli_daemon_config_must_be_a_small_regular_file() {
    let out = memtrace_within(
        &["daemon", "--config", "/dev/zero", "--listen", "127.0.0.1:0"],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_line(&out),
        "memtrace: error: config file /dev/zero is a character device, not a regular file: give the path of a TOML file"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("daemon.toml");
    let c_path = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let fifo = fifo.to_str().expect("utf-8");
    let out = memtrace_within(
        &["daemon", "--config", fifo, "--listen", "127.0.0.1:0"],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_line(&out),
        format!(
            "memtrace: error: config file {fifo} is a FIFO, not a regular file: give the path of a TOML file"
        )
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "top = 3\n\ninterval = \n").expect("write");
    let out = memtrace_within(
        &["daemon", "--config", bad.to_str().expect("utf-8")],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_line(&out);
    assert!(err.contains("bad.toml: line 3, column "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Issue 10, defect 5: a process that names itself with prctl(PR_SET_NAME) with a newline and
/// an escape sequence cannot forge lines or recolour the terminal in the text output.
#[test]
fn cli_trace_text_escapes_a_hostile_process_name() {
    require_root();
    let _serial = serial();
    // Renames itself, says so, maps 4 MiB when told to, then waits for its stdin to close.
    let script = "import ctypes, mmap, sys\n\
        assert ctypes.CDLL(None).prctl(15, b'x\\n# TYPE y\\x1b[31m', 0, 0, 0) == 0\n\
        print('ready', flush=True)\n\
        sys.stdin.readline()\n\
        m = mmap.mmap(-1, 4 << 20)\n\
        m[0] = 1\n\
        print('mapped', flush=True)\n\
        sys.stdin.read()\n";
    let mut renamed = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let pid = renamed.id();
    let mut said = BufReader::new(renamed.stdout.take().expect("stdout"));
    let mut line = String::new();
    said.read_line(&mut line).expect("ready");
    assert_eq!(line, "ready\n");
    assert_eq!(
        std::fs::read(format!("/proc/{pid}/comm")).expect("comm"),
        b"x\n# TYPE y\x1b[31m\n"
    );
    let pid_arg = pid.to_string();
    let (child, _stderr) =
        spawn_attached_trace(&["--pid", &pid_arg, "--event", "vm", "--duration", "30s"]);
    let mut stdin = renamed.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, b"go\n").expect("go");
    line.clear();
    said.read_line(&mut line).expect("mapped");
    assert_eq!(line, "mapped\n");
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().expect("memtrace output");
    drop(stdin);
    assert!(renamed.wait().expect("python3").success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let escaped = "x\\n# TYPE y\\e[31m";
    assert!(
        stdout.lines().any(|line| line.contains(&format!(" {pid} "))
            && line.contains(" mmap ")
            && line.contains(escaped)),
        "no mmap line of the renamed process with its name escaped: {stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with(&pid_arg) && line.contains(escaped)),
        "the summary row shows the escaped name: {stdout}"
    );
    assert!(
        stdout
            .lines()
            .all(|line| !line.starts_with("# TYPE") && !line.chars().any(char::is_control)),
        "a forged line or a control character reached the terminal: {stdout:?}"
    );
}

/// Issue 10, defect 6: two memory cgroups whose names differ only in bytes that are
/// not UTF-8 (`rel_\xff\xfe`, `rel_\xfe\xff`) stay two cgroups in the daemon's snapshot, each
/// with its own process, usage and limit (lossy UTF-8 had merged them and lost both).
#[test]
fn cli_daemon_keeps_non_utf8_cgroups_apart() {
    require_root();
    let _serial = serial();
    let cgroup = |raw: &[u8], limit: u64| {
        MemoryCgroup::with_raw_name(
            &[raw, format!("-{}", std::process::id()).as_bytes()].concat(),
            limit,
        )
    };
    let a = cgroup(b"rel_\xff\xfe", 32 << 20);
    let b = cgroup(b"rel_\xfe\xff", 64 << 20);
    assert_ne!(a.path, b.path);
    let mut in_a = Workload::start_in(&a, &["touch-anon", "1024"]);
    let mut in_b = Workload::start_in(&b, &["touch-anon", "2048"]);
    in_a.run();
    in_b.run();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = Command::new(memtrace_bin())
        .args(["daemon", "--listen", &listen, "--interval", "1s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn memtrace daemon");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let found = loop {
        let snapshot = agent
            .get(&format!("http://{listen}/api/v1/snapshot"))
            .call()
            .ok()
            .filter(|response| response.status() == 200)
            .and_then(|mut response| {
                response
                    .body_mut()
                    .read_json::<memtrace_api::Snapshot>()
                    .ok()
            });
        if let Some(snapshot) = snapshot {
            let views: Vec<_> = [&a, &b]
                .iter()
                .map(|cg| {
                    snapshot
                        .cgroups
                        .iter()
                        .find(|view| view.path == cg.path)
                        .cloned()
                })
                .collect();
            if views
                .iter()
                .all(|view| view.as_ref().is_some_and(|v| v.processes >= 1))
            {
                break (snapshot, views);
            }
        }
        if std::time::Instant::now() > deadline {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
            let _ = daemon.wait();
            panic!(
                "the two cgroups {:?} and {:?} never both appeared",
                a.path, b.path
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    let (snapshot, views) = found;
    for ((cg, workload, limit), view) in [(&a, &in_a, 32u64 << 20), (&b, &in_b, 64 << 20)]
        .into_iter()
        .zip(views)
    {
        let view = view.expect("found");
        assert_eq!(view.processes, 1, "{view:?}");
        assert_eq!(view.limit_bytes, Some(limit), "{view:?}");
        assert!(view.usage_bytes.is_some_and(|usage| usage > 0), "{view:?}");
        let process = snapshot
            .processes
            .iter()
            .find(|p| p.pid == workload.pid())
            .expect("the workload is in the snapshot");
        assert_eq!(process.cgroup.as_deref(), Some(cg.path.as_str()));
    }
    assert!(in_a.finish().success() && in_b.finish().success());
}
