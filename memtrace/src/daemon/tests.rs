//! The daemon's readers against a host tree: the fixture `/proc`, cgroup filesystem and tracefs
//! laid out under one root, read through `--host-root` as a container would read the host's.
use std::{
    path::Path,
    time::{Instant, SystemTime},
};

use memtrace_common::ProcStats;

use super::{Flags, Sampler, Settings, kernel_release};
use crate::model::{Model, ModelConfig};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// `root/proc` (the node files of `node/live` and the processes of `proc`),
/// `root/sys/fs/cgroup` (`cgroup/v2`), `root/sys/kernel/tracing` (`tracefs/6.18`).
fn host_tree(root: &Path) {
    let fixtures = Path::new(FIXTURES);
    let link = |target: &Path, at: &Path| {
        std::fs::create_dir_all(at.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, at).expect("symlink");
    };
    let node = fixtures.join("node/live/proc");
    for entry in std::fs::read_dir(&node).expect("node fixture") {
        let entry = entry.expect("entry");
        link(&entry.path(), &root.join("proc").join(entry.file_name()));
    }
    for entry in std::fs::read_dir(fixtures.join("proc")).expect("proc fixture") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            link(&entry.path(), &root.join("proc").join(name));
        }
    }
    link(&fixtures.join("cgroup/v2"), &root.join("sys/fs/cgroup"));
    link(
        &fixtures.join("tracefs/6.18"),
        &root.join("sys/kernel/tracing"),
    );
}

const JAVA_SCOPE: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-3b1d5a9c0e2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8e0f2a4b.scope";

#[test]
fn a_tick_reads_processes_node_and_cgroups_under_the_host_root() {
    let root = tempfile::tempdir().expect("tempdir");
    host_tree(root.path());
    let flags = Flags {
        host_root: Some(root.path().to_path_buf()),
        ..Flags::default()
    };
    let settings = Settings::resolve(&flags, None).expect("settings");
    assert_eq!(settings.host.proc, root.path().join("proc"));
    assert_eq!(kernel_release(&settings.host.proc), "6.18.44-fc-v669");

    let mut sampler = Sampler::new(&settings.host, 16);
    let mut model = Model::new(ModelConfig::default());
    let now = Instant::now();
    let java = sampler
        .identify(3000, now)
        .expect("pid 3000 in the fixture /proc");
    assert_eq!(java.comm, "java");
    assert_eq!(java.cgroup.as_deref(), Some(JAVA_SCOPE));
    let stats = ProcStats {
        faults_user: 10,
        ..ProcStats::default()
    };
    let samples = vec![
        (3000, stats, Some(java)),
        (1234, stats, sampler.identify(1234, now)),
    ];
    model.observe_processes(now, &samples);
    sampler.observe_host(&mut model, now);

    let snapshot = model.snapshot(now, SystemTime::now(), Default::default());
    assert_eq!(
        snapshot.node.hostname, "vm",
        "the host's, not this machine's"
    );
    assert_eq!(snapshot.node.kernel_release, "6.18.44-fc-v669");
    assert_eq!(
        snapshot.node_memory.mem_total_bytes,
        24_684_084 * 1024,
        "meminfo under the root"
    );
    assert!(snapshot.node_memory.psi.is_some(), "PSI under the root");
    let comms: Vec<&str> = snapshot.processes.iter().map(|p| p.comm.as_str()).collect();
    assert!(
        comms.contains(&"java") && comms.contains(&"my (weird) proc"),
        "{comms:?}"
    );
    let scope = snapshot
        .cgroups
        .iter()
        .find(|c| c.path == JAVA_SCOPE)
        .expect("java's cgroup");
    assert_eq!(
        scope.usage_bytes,
        Some(209_715_200),
        "memory.current under the root"
    );
    // weird.service has no directory in the fixture hierarchy: known from /proc, unread.
    let weird = snapshot
        .cgroups
        .iter()
        .find(|c| c.path == "/system.slice/weird.service")
        .expect("weird.service");
    assert_eq!(weird.usage_bytes, None);
}

#[test]
fn probes_read_btf_under_the_host_root() {
    let settings = Settings::resolve(
        &Flags {
            host_root: Some("/host".into()),
            ..Flags::default()
        },
        None,
    )
    .expect("settings");
    assert_eq!(
        super::probe_options(&settings).btf_path,
        Path::new("/host/sys/kernel/btf/vmlinux")
    );
}
