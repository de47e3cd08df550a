//! Where the host's kernel files are. Every reader takes its root from here, so a containerised
//! daemon reads the host's `/proc` and `/sys` mounted under one prefix (`--host-root /host`), and
//! tests point the readers at fixture trees.
use std::path::{Path, PathBuf};

/// The kernel interfaces memtrace reads, as paths on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPaths {
    /// The prefix everything below was resolved under (`/` on the host itself).
    pub root: PathBuf,
    /// procfs (`/proc`): processes, `/proc/pressure`, `/proc/meminfo`, `/proc/vmstat`.
    pub proc: PathBuf,
    /// The cgroup filesystem (`/sys/fs/cgroup`).
    pub cgroup: PathBuf,
    /// tracefs mount points to try, in order.
    pub tracefs_candidates: Vec<PathBuf>,
    /// Kernel BTF (`/sys/kernel/btf/vmlinux`).
    pub btf: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self::under("/")
    }
}

impl HostPaths {
    /// The standard layout under `root` (`/` on the host; `/host` when the host's `/proc` and
    /// `/sys` are mounted there).
    pub fn under(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        let join = |path: &str| root.join(path.trim_start_matches('/'));
        Self {
            root: root.to_path_buf(),
            proc: join("/proc"),
            cgroup: join("/sys/fs/cgroup"),
            tracefs_candidates: crate::tracefs::DEFAULT_CANDIDATES
                .iter()
                .map(|candidate| join(candidate))
                .collect(),
            btf: join(crate::preflight::KERNEL_BTF),
        }
    }

    /// The mount table that tells where tracefs is mounted.
    pub fn proc_mounts(&self) -> PathBuf {
        self.proc.join("mounts")
    }
}

#[cfg(test)]
mod tests {
    use super::HostPaths;
    use std::path::Path;

    #[test]
    fn paths_resolve_under_the_root() {
        let host = HostPaths::default();
        assert_eq!(host.proc, Path::new("/proc"));
        assert_eq!(host.btf, Path::new("/sys/kernel/btf/vmlinux"));
        let container = HostPaths::under("/host");
        assert_eq!(container.proc, Path::new("/host/proc"));
        assert_eq!(container.cgroup, Path::new("/host/sys/fs/cgroup"));
        assert_eq!(
            container.tracefs_candidates[0],
            Path::new("/host/sys/kernel/tracing")
        );
        assert_eq!(container.proc_mounts(), Path::new("/host/proc/mounts"));
    }
}
