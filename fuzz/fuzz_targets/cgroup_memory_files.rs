//! A cgroup's memory files as the reader reads them: the input is split at NUL bytes into the
//! files of a v1 cgroup and of a v2 cgroup (a missing piece is a missing file), written under a
//! tmpfs directory, and read with `CgroupFs::memory` like the daemon reads `/sys/fs/cgroup`. The
//! files go through the filesystem because the v1 and v2 readers parse them where they read them.
#![no_main]

use std::{fs, path::PathBuf, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use memtrace::cgroup::CgroupFs;

const V1_FILES: [&str; 4] = [
    "memory.oom_control",
    "memory.stat",
    "memory.usage_in_bytes",
    "memory.limit_in_bytes",
];
const V2_FILES: [&str; 5] = [
    "memory.max",
    "memory.current",
    "memory.swap.current",
    "memory.pressure",
    "memory.events",
];

/// `<dir>/v1` is a hybrid host's root (`memory/` is the v1 controller), `<dir>/v2` a unified one.
fn roots() -> &'static (PathBuf, PathBuf) {
    static ROOTS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let base = ["/dev/shm", "/tmp"]
            .iter()
            .map(PathBuf::from)
            .find(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("memtrace-fuzz-cgroup-{}", std::process::id()));
        let (v1, v2) = (base.join("v1"), base.join("v2"));
        fs::create_dir_all(v1.join("memory/fuzz")).expect("create the v1 fixture");
        fs::create_dir_all(v2.join("fuzz")).expect("create the v2 fixture");
        fs::write(v2.join("cgroup.controllers"), "memory\n").expect("write cgroup.controllers");
        (v1, v2)
    })
}

fn lay_out(dir: PathBuf, names: &[&str], pieces: &mut dyn Iterator<Item = &[u8]>) {
    for name in names {
        let path = dir.join(name);
        match pieces.next() {
            Some(content) => fs::write(&path, content).expect("write a cgroup file"),
            None => match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
                _ => {}
            },
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (v1, v2) = roots();
    let mut pieces = data.split(|&b| b == 0);
    lay_out(v1.join("memory/fuzz"), &V1_FILES, &mut pieces);
    lay_out(v2.join("fuzz"), &V2_FILES, &mut pieces);
    for root in [v1, v2] {
        if let Ok(memory) = CgroupFs::new(root).memory("/fuzz") {
            if let (Some(usage), Some(limit)) = (memory.usage_bytes, memory.limit_bytes) {
                let _ = usage.checked_sub(limit);
            }
        }
    }
});
