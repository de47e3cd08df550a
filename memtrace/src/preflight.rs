//! Checks run before loading anything, so that a missing privilege or kernel facility is one
//! clear line that says what to do, instead of an errno from deep inside the loader.
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability};

use crate::host::HostPaths;
use crate::tracefs::{Tracefs, TracefsError};

/// Where the kernel exposes its BTF.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "memtrace needs root, or the capabilities CAP_BPF and CAP_PERFMON (missing: {missing}): run it with sudo, or grant them with `setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep <path-to-memtrace>`"
    )]
    Privileges { missing: String },
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
}

/// What the checks found.
#[derive(Debug)]
pub struct Preflight {
    pub tracefs: Tracefs,
    /// Non-fatal findings to show the user once.
    pub warnings: Vec<String>,
}

/// Privileges, tracefs, BTF, on this machine.
pub fn check() -> Result<Preflight, PreflightError> {
    check_in(&HostPaths::default())
}

/// Privileges, then tracefs and BTF where `host` says they are.
pub fn check_in(host: &HostPaths) -> Result<Preflight, PreflightError> {
    check_privileges()?;
    let (tracefs, warnings) = kernel_facilities(host)?;
    Ok(Preflight { tracefs, warnings })
}

/// tracefs (required) and BTF (a warning if absent) under `host`'s paths.
fn kernel_facilities(host: &HostPaths) -> Result<(Tracefs, Vec<String>), PreflightError> {
    let tracefs = Tracefs::discover_in(&host.tracefs_candidates, &host.proc_mounts())?;
    let warnings = btf_warning(&host.btf).into_iter().collect();
    Ok((tracefs, warnings))
}

/// CAP_BPF + CAP_PERFMON (Linux ≥ 5.8), or CAP_SYS_ADMIN which implies both on older kernels.
pub fn check_privileges() -> Result<(), PreflightError> {
    let has = |cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false);
    if has(Capability::CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&str> = [
        (Capability::CAP_BPF, "CAP_BPF"),
        (Capability::CAP_PERFMON, "CAP_PERFMON"),
    ]
    .into_iter()
    .filter(|(cap, _)| !has(*cap))
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::Privileges {
            missing: missing.join(", "),
        })
    }
}

/// memtrace runs without kernel BTF: tracepoint layouts come from tracefs. BTF only enables the
/// cheaper hooks (struct offsets for the raw `rss_stat` program, the task pointer for reading
/// syscall arguments at exit), so its absence is a warning saying what it costs.
pub fn btf_warning(path: &Path) -> Option<String> {
    (!path.exists()).then(|| {
        format!(
            "kernel BTF not found at {}: continuing with the slower fallbacks (classic kmem:rss_stat tracepoint, syscall entry+exit pairs); a kernel with CONFIG_DEBUG_INFO_BTF=y costs less per page fault and mmap",
            PathBuf::from(path).display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btf_absence_is_a_warning_naming_the_path() {
        let warning = btf_warning(Path::new("/nonexistent/vmlinux")).expect("warning");
        assert!(
            warning.starts_with("kernel BTF not found at /nonexistent/vmlinux"),
            "{warning}"
        );
        assert_eq!(btf_warning(Path::new("/")), None);
    }

    /// A host tree with tracefs at its standard place and no BTF: the facilities are found
    /// under the root, and the warning names the rooted BTF path.
    #[test]
    fn facilities_are_found_under_the_host_root() {
        let root = tempfile::tempdir().unwrap();
        let tracing = root.path().join("sys/kernel/tracing");
        std::fs::create_dir_all(tracing.join("events")).unwrap();
        let host = HostPaths::under(root.path());
        let (tracefs, warnings) = kernel_facilities(&host).unwrap();
        assert_eq!(tracefs.root(), tracing);
        assert_eq!(warnings.len(), 1);
        let btf = root.path().join("sys/kernel/btf/vmlinux");
        assert!(
            warnings[0].contains(&*btf.to_string_lossy()),
            "{}",
            warnings[0]
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            kernel_facilities(&HostPaths::under(empty.path())),
            Err(PreflightError::Tracefs(_))
        ));
    }
}
