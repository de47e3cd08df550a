//! Privileges: what memtrace says and does without CAP_DAC_READ_SEARCH (tracefs unreadable), the
//! daemon's least privilege after attach, and what its API reveals of command lines.
use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_api::Snapshot;
use memtrace_tests::{Workload, memtrace_bin, require_root, workload_bin};

use crate::{
    daemon::get,
    support::{serial, spawn_daemon},
};

/// CAP_BPF and CAP_PERFMON without CAP_DAC_READ_SEARCH: tracefs (mode 0700) is unreadable.
const TWO_CAPS: &str = "+bpf,+perfmon";
/// What the systemd unit grants.
const THREE_CAPS: &str = "+bpf,+perfmon,+dac_read_search";

/// `memtrace` as `nobody` with `caps` (inheritable and ambient, so they survive the exec).
fn as_nobody_with(caps: &str) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(memtrace_bin());
    command
}

/// A running `memtrace daemon` (its log drained), stopped with SIGTERM on drop.
struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Daemon {
    /// `command` is memtrace itself or a wrapper around it; `daemon` and its flags are added.
    fn start(mut command: Command, extra: &[&str]) -> Self {
        command
            .args(["daemon", "--listen", "127.0.0.1:0", "--interval", "500ms"])
            .args(extra);
        let (child, serving) = spawn_daemon(command);
        let addr = serving
            .trim_start_matches("http://")
            .parse()
            .expect("address");
        Self { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A snapshot taken after at least one sample (its processes listed).
    fn sampled_snapshot(&self) -> Snapshot {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = get(self.addr, "/api/v1/snapshot");
            if status == 200 {
                let snapshot: Snapshot = serde_json::from_str(&body).expect("snapshot JSON");
                if !snapshot.processes.is_empty() {
                    return snapshot;
                }
            }
            assert!(Instant::now() < deadline, "no sampled snapshot within 10 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = get(self.addr, "/readyz");
            if status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "not ready within 10 s: {body}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child (setpriv execs memtrace in place: same pid).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[test]
fn trace_without_cap_dac_read_search_names_it_not_the_kernel() {
    require_root();
    let _serial = serial();
    // Every family (the default events: `-e oom` attaches the OOM hook alone).
    let out = as_nobody_with(TWO_CAPS)
        .args(["trace", "-d", "1s", "--no-summary"])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        !err.contains("not in this kernel"),
        "an unreadable tracefs is not an old kernel: {err}"
    );
    // Every family that needs tracefs says why it is skipped, and the fix.
    for family in ["faults", "oom", "lifecycle"] {
        let line = err
            .lines()
            .find(|l| l.trim_start().starts_with(family))
            .unwrap_or_else(|| panic!("no line for {family}: {err}"));
        assert!(
            line.contains("permission denied")
                && line.contains("grant CAP_DAC_READ_SEARCH or run as root"),
            "{line}"
        );
    }
}

/// Without CAP_DAC_READ_SEARCH the OOM, reclaim and exit hooks cannot attach: the daemon serves
/// what it counts, but is not ready, says why, and names the flag that accepts it.
#[test]
fn daemon_missing_a_family_is_not_ready_unless_degraded_is_allowed() {
    require_root();
    let _serial = serial();
    let daemon = Daemon::start(as_nobody_with(TWO_CAPS), &[]);
    // Sampled (the task sampler needs no tracefs), which made it "ready" before.
    let snapshot = daemon.sampled_snapshot();
    assert!(
        !snapshot
            .pipeline
            .families
            .contains(memtrace_api::Family::Oom)
    );
    std::thread::sleep(Duration::from_secs(1));
    let (status, body) = get(daemon.addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    for expected in [
        "not ready: degraded: ",
        "the oom family is not attached (oom:mark_victim: cannot read ",
        "the reclaim family is not attached",
        "the lifecycle family is not attached",
        "grant CAP_DAC_READ_SEARCH or run as root",
        "start with --allow-degraded to accept it",
    ] {
        assert!(body.contains(expected), "{expected:?} not in {body}");
    }
    drop(daemon);

    let degraded = Daemon::start(as_nobody_with(TWO_CAPS), &["--allow-degraded"]);
    degraded.wait_ready();
    let (status, body) = get(degraded.addr, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ready"));
}

/// CAP_BPF's bit in `/proc/<pid>/status` masks (capability 39, linux/capability.h).
const CAP_BPF: u64 = 1 << 39;

/// The sets of every thread of `pid`: (CapInh, CapPrm, CapEff, CapBnd, CapAmb, NoNewPrivs).
pub(crate) fn thread_privileges(pid: u32) -> Vec<(u64, u64, u64, u64, u64, bool)> {
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let status =
            std::fs::read_to_string(entry.expect("task").path().join("status")).expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(":"))
                .unwrap_or_else(|| panic!("no {name} in {status}"))
                .trim()
                .to_owned()
        };
        let mask = |name: &str| u64::from_str_radix(&field(name), 16).expect("hex mask");
        threads.push((
            mask("CapInh"),
            mask("CapPrm"),
            mask("CapEff"),
            mask("CapBnd"),
            mask("CapAmb"),
            field("NoNewPrivs") == "1",
        ));
    }
    threads
}

/// What the daemon must keep: CAP_BPF where this kernel refuses `bpf()` calls without it, else
/// nothing, asked of the kernel as the daemon asks it (the tests below then check the tick still
/// samples). The version alone says too little: Debian's 6.1 with `unprivileged_bpf_disabled` = 2
/// gates only map and program creation, not the lookups and links the tick does (seen in a VM).
pub(crate) fn expected_kept() -> u64 {
    let gated = memtrace::daemon::privileges::bpf_needs_capability()
        .expect("asking the kernel whether bpf() needs CAP_BPF");
    if gated { CAP_BPF } else { 0 }
}

/// As root: every thread of the running daemon keeps only what the tick needs, in the effective,
/// permitted and bounding sets, with no_new_privs; and it still samples: a workload's faults
/// after the drop are counted.
#[test]
fn daemon_keeps_only_what_the_tick_needs_after_attach_and_still_samples() {
    require_root();
    let _serial = serial();
    let mut workload = Workload::start(&["touch-anon", "20000"]);
    let daemon = Daemon::start(Command::new(memtrace_bin()), &[]);
    daemon.wait_ready();
    let kept = expected_kept();
    let threads = thread_privileges(daemon.pid());
    assert!(threads.len() > 1, "the runtime's threads too: {threads:?}");
    for thread in &threads {
        assert_eq!(*thread, (0, kept, kept, kept, 0, true), "{threads:?}");
    }

    let pid = workload.pid();
    let faults = |snapshot: &Snapshot| {
        snapshot
            .processes
            .iter()
            .find(|p| p.pid == pid)
            .map(|p| p.counters.faults_minor)
    };
    let before = faults(&daemon.sampled_snapshot()).expect("workload sampled");
    workload.run();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = faults(&daemon.sampled_snapshot()).expect("workload sampled");
        if after >= before + 20_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "faults after the drop not counted: {before} → {after}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // As the systemd unit runs it: no CAP_SETPCAP, so the bounding set stays as given, the rest
    // goes the same way; everything attaches, so it is ready.
    let unprivileged = Daemon::start(as_nobody_with(THREE_CAPS), &[]);
    unprivileged.wait_ready();
    let bounding_given = thread_privileges(std::process::id())[0].3;
    for thread in thread_privileges(unprivileged.pid()) {
        assert_eq!(thread, (0, kept, kept, bounding_given, 0, true));
    }
    workload.finish();
}

/// `--cmdline`: by default the API shows no command line (`--db-password=…` stays private),
/// `comm-only` the command without arguments, `full` everything.
#[test]
fn cmdline_mode_limits_what_the_api_reveals() {
    require_root();
    let _serial = serial();
    let workload = Workload::start(&["touch-anon", "1", "--db-password=hunter2"]);
    let command = workload_bin().display().to_string();
    for (flags, expected) in [
        (&[][..], String::new()),
        (&["--cmdline", "off"][..], String::new()),
        (&["--cmdline", "comm-only"][..], command.clone()),
        (
            &["--cmdline", "full"][..],
            format!("{command} touch-anon 1 --db-password=hunter2"),
        ),
    ] {
        let daemon = Daemon::start(Command::new(memtrace_bin()), flags);
        let deadline = Instant::now() + Duration::from_secs(10);
        let shown = loop {
            let snapshot = daemon.sampled_snapshot();
            if let Some(p) = snapshot.processes.iter().find(|p| p.pid == workload.pid()) {
                break p.cmdline.clone();
            }
            assert!(Instant::now() < deadline, "workload not in the snapshot");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(shown, expected, "{flags:?}");
    }
    workload.finish();
}
