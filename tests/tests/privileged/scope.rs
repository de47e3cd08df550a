//! Node identity and scope: a daemon started with `--node-name` and `--cgroup-root` on a test
//! cgroup models only the processes inside it (also one that moves in later), names the node in
//! the snapshot and in `memtrace_node_info`, and labels the workload's series with its key.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memtrace_api::Snapshot;
use memtrace_api::workloads::WorkloadKind;
use memtrace_tests::{MemoryCgroup, Workload, memtrace_bin, require_root};

use crate::daemon::{Daemon, get, samples};
use crate::support::serial;

fn snapshot(daemon: &Daemon) -> Snapshot {
    let (status, body) = get(daemon.addr, "/api/v1/snapshot");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("snapshot schema")
}

/// The first snapshot `ready` accepts, within `within`.
fn snapshot_when(
    daemon: &Daemon,
    what: &str,
    within: Duration,
    ready: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let deadline = Instant::now() + within;
    loop {
        let snap = snapshot(daemon);
        if ready(&snap) {
            return snap;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {within:?}: {snap:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn has_pid(snap: &Snapshot, pid: u32) -> bool {
    snap.processes.iter().any(|p| p.pid == pid)
}

#[test]
fn a_cgroup_root_limits_the_model_and_the_node_is_named() {
    require_root();
    let _serial = serial();
    let cgroup = MemoryCgroup::new("memtrace-scope", 256 << 20);
    let mut inside = Workload::start_in(&cgroup, &["touch-anon", "256"]);
    let mut outside = Workload::start(&["touch-anon", "256"]);
    let daemon = Daemon::start(&[
        "--node-name",
        "node-scope-test",
        "--cgroup-root",
        &cgroup.path,
        "--pin",
        "memtrace-worklo",
    ]);

    let snap = snapshot_when(
        &daemon,
        "the process inside",
        Duration::from_secs(10),
        |s| has_pid(s, inside.pid()),
    );
    assert!(
        !has_pid(&snap, outside.pid()),
        "the process outside the root is modelled"
    );
    let under_root =
        |path: &str| path == cgroup.path || path.starts_with(&format!("{}/", cgroup.path));
    for p in &snap.processes {
        let path = p.cgroup.as_deref().unwrap_or("");
        assert!(under_root(path), "pid {} ({}) in {path}", p.pid, p.comm);
    }
    for c in &snap.cgroups {
        assert!(under_root(&c.path), "cgroup {} listed", c.path);
    }
    assert_eq!(snap.node.name.as_deref(), Some("node-scope-test"));
    let p = snap
        .processes
        .iter()
        .find(|p| p.pid == inside.pid())
        .expect("inside");
    // A cgroup that is no pod, container or service: the workload is the comm.
    assert_eq!(p.workload.as_deref(), Some("memtrace-worklo"));
    assert_eq!(p.workload_kind, Some(WorkloadKind::Comm));
    assert_eq!(p.instance, Some(format!("pid/{}", inside.pid())));

    let metrics = daemon.metrics();
    let info = samples(&metrics, "memtrace_node_info");
    assert_eq!(info.len(), 1, "{info:?}");
    assert!(
        info[0].0.contains("node=\"node-scope-test\"") && info[0].1 == 1.0,
        "{info:?}"
    );
    let processes = samples(&metrics, "memtrace_process_processes");
    let ours = processes
        .iter()
        .find(|(labels, _)| labels.contains(&format!("cgroup=\"{}\"", cgroup.path)))
        .unwrap_or_else(|| panic!("no series of the cgroup: {processes:?}"));
    assert!(ours.0.contains("workload=\"memtrace-worklo\""), "{ours:?}");
    assert_eq!(ours.1, 1.0, "only the process inside: {ours:?}");
    for (labels, _) in &processes {
        assert!(
            labels.contains(&format!("cgroup=\"{}", cgroup.path)) || labels.contains("~other"),
            "a series outside the root: {labels}"
        );
    }

    // The process outside moves in: modelled from then on. No event announces a move; the
    // daemon re-reads a process's cgroup at least every `procfs::TRUSTED_TTL` (30 s).
    cgroup.add(outside.pid());
    let snap = snapshot_when(
        &daemon,
        "the process that moved in",
        Duration::from_secs(40),
        |s| has_pid(s, outside.pid()),
    );
    assert!(has_pid(&snap, inside.pid()));

    inside.go();
    inside.finish();
    outside.go();
    outside.finish();
}

#[test]
fn a_missing_cgroup_root_is_a_clear_error() {
    require_root();
    let output = Command::new(memtrace_bin())
        .args([
            "daemon",
            "--listen",
            "127.0.0.1:0",
            "--cgroup-root",
            "/memtrace-no-such-cgroup",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run memtrace daemon");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "--cgroup-root /memtrace-no-such-cgroup: no such cgroup under /sys/fs/cgroup"
        ),
        "{stderr}"
    );
}
