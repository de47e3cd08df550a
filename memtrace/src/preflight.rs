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
    let held = Held {
        sys_admin: has_cap(Capability::CAP_SYS_ADMIN),
        sys_resource: has_cap(Capability::CAP_SYS_RESOURCE),
    };
    let (tracefs, mut warnings) = kernel_facilities(host, held.sys_admin)?;
    warnings.extend(memlock_warning(
        &host.proc,
        soft_memlock(),
        held.sys_resource,
    ));
    Ok(Preflight { tracefs, warnings })
}

/// The capabilities that change what the kernel lets memtrace do beyond CAP_BPF+CAP_PERFMON.
struct Held {
    sys_admin: bool,
    sys_resource: bool,
}

/// The soft `RLIMIT_MEMLOCK` in bytes, `None` when unlimited.
fn soft_memlock() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: writes only `limit`.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Before Linux 5.11 the kernel charges BPF maps to `RLIMIT_MEMLOCK` instead of the memory
/// cgroup. aya raises the limit to infinity, which needs CAP_SYS_RESOURCE; without it the maps
/// (~12 MiB at the default `--max-processes`) do not fit the usual 8 MiB and loading fails with
/// a bare EPERM, so say why first.
pub fn memlock_warning(proc: &Path, soft_limit: Option<u64>, sys_resource: bool) -> Option<String> {
    let limit = soft_limit?;
    if sys_resource {
        return None;
    }
    let release = std::fs::read_to_string(proc.join("sys/kernel/osrelease")).ok()?;
    let mut numbers = release.trim().split(['.', '-', '+']).map(str::parse::<u32>);
    let (Some(Ok(major)), Some(Ok(minor))) = (numbers.next(), numbers.next()) else {
        return None;
    };
    ((major, minor) < (5, 11)).then(|| {
        format!(
            "Linux {major}.{minor} charges BPF maps to RLIMIT_MEMLOCK, which is {} here and memtrace cannot raise without CAP_SYS_RESOURCE: creating its maps will fail (EPERM) unless the limit is raised (`LimitMEMLOCK=infinity` in a systemd unit, `ulimit -l unlimited` as root before dropping privileges), or memtrace runs as root",
            crate::units::human_bytes(limit)
        )
    })
}

/// tracefs (required), BTF (a warning if absent) and the perf_event_open policy (a warning if
/// it refuses memtrace) under `host`'s paths.
fn kernel_facilities(
    host: &HostPaths,
    sys_admin: bool,
) -> Result<(Tracefs, Vec<String>), PreflightError> {
    let tracefs = Tracefs::discover_in(&host.tracefs_candidates, &host.proc_mounts())?;
    let warnings = btf_warning(&host.btf)
        .into_iter()
        .chain(perf_paranoid_warning(&host.proc, sys_admin))
        .collect();
    Ok((tracefs, warnings))
}

fn has_cap(cap: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
}

/// CAP_BPF + CAP_PERFMON (Linux ≥ 5.8), or CAP_SYS_ADMIN which implies both on older kernels.
pub fn check_privileges() -> Result<(), PreflightError> {
    if has_cap(Capability::CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&str> = [
        (Capability::CAP_BPF, "CAP_BPF"),
        (Capability::CAP_PERFMON, "CAP_PERFMON"),
    ]
    .into_iter()
    .filter(|(cap, _)| !has_cap(*cap))
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

/// Debian's and Ubuntu's kernels carry a patch giving `kernel.perf_event_paranoid` a level 3
/// (their default; Ubuntu's newer ones 4) at which perf_event_open is refused to anyone without
/// CAP_SYS_ADMIN, CAP_PERFMON notwithstanding. Every tracepoint is attached through
/// perf_event_open, so a memtrace with only its capabilities keeps just its raw tracepoints and
/// task iterator there. Still a warning, not an error: those keep working, and the attach report
/// names each family that did not attach.
pub fn perf_paranoid_warning(proc: &Path, sys_admin: bool) -> Option<String> {
    let path = proc.join("sys/kernel/perf_event_paranoid");
    let level: i32 = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
    (level > 2 && !sys_admin).then(|| {
        format!(
            "kernel.perf_event_paranoid is {level} and memtrace runs without CAP_SYS_ADMIN: Debian's and Ubuntu's kernels then refuse perf_event_open (EACCES), so no classic tracepoint nor perf counter attaches (the mmap, oom and lifecycle families and part of reclaim are lost), only raw tracepoints and the task sampler; set it to 2 (`sysctl -w kernel.perf_event_paranoid=2`, and across boots `kernel.perf_event_paranoid = 2` in /etc/sysctl.d/60-memtrace.conf), or run memtrace as root"
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
        let (tracefs, warnings) = kernel_facilities(&host, false).unwrap();
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
            kernel_facilities(&HostPaths::under(empty.path()), false),
            Err(PreflightError::Tracefs(_))
        ));
    }

    /// A fixture procfs at each level: above 2 without CAP_SYS_ADMIN is the one line saying
    /// what is lost and what to do; at 2, with CAP_SYS_ADMIN, or without the file, nothing.
    #[test]
    fn perf_paranoid_above_two_without_sys_admin_is_a_warning() {
        let proc = tempfile::tempdir().unwrap();
        let kernel = proc.path().join("sys/kernel");
        assert_eq!(perf_paranoid_warning(proc.path(), false), None);
        std::fs::create_dir_all(&kernel).unwrap();
        let set = |level: &str| {
            std::fs::write(kernel.join("perf_event_paranoid"), format!("{level}\n")).unwrap();
        };
        set("3");
        let warning = perf_paranoid_warning(proc.path(), false).expect("warning at 3");
        assert!(
            warning.starts_with(
                "kernel.perf_event_paranoid is 3 and memtrace runs without CAP_SYS_ADMIN"
            ),
            "{warning}"
        );
        assert!(
            warning.contains("sysctl -w kernel.perf_event_paranoid=2")
                && warning.contains("/etc/sysctl.d/60-memtrace.conf")
                && !warning.contains('\n'),
            "{warning}"
        );
        assert_eq!(perf_paranoid_warning(proc.path(), true), None);
        set("4");
        assert!(perf_paranoid_warning(proc.path(), false).is_some_and(|w| w.contains("is 4")));
        for level in ["2", "-1"] {
            set(level);
            assert_eq!(perf_paranoid_warning(proc.path(), false), None, "{level}");
        }
    }

    /// Linux before 5.11 with a finite `RLIMIT_MEMLOCK` and no CAP_SYS_RESOURCE: a warning
    /// naming the limit; on 5.11+, unlimited, or with the capability, nothing.
    #[test]
    fn memlock_matters_only_before_5_11_and_without_cap_sys_resource() {
        let proc = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(proc.path().join("sys/kernel")).unwrap();
        let release = |r: &str| {
            std::fs::write(proc.path().join("sys/kernel/osrelease"), format!("{r}\n")).unwrap();
        };
        release("5.10.0-32-cloud-amd64");
        let warning = memlock_warning(proc.path(), Some(8 << 20), false).expect("5.10");
        assert!(
            warning.starts_with(
                "Linux 5.10 charges BPF maps to RLIMIT_MEMLOCK, which is 8.0 MiB here"
            ),
            "{warning}"
        );
        assert_eq!(memlock_warning(proc.path(), None, false), None);
        assert_eq!(memlock_warning(proc.path(), Some(8 << 20), true), None);
        for newer in ["5.11.0", "6.1.0-50-cloud-amd64", "7.3.4+deb13-cloud-amd64"] {
            release(newer);
            assert_eq!(
                memlock_warning(proc.path(), Some(8 << 20), false),
                None,
                "{newer}"
            );
        }
    }
}
