//! Least privilege after attach, as Cloudflare's ebpf_exporter does: once every probe is attached
//! and the maps and rings are open, the daemon keeps only the capability its tick needs and sets
//! `no_new_privs`, so a compromise of the HTTP side cannot load programs, read tracefs or other
//! users' files, or regain anything through exec.
//!
//! What the tick still does: re-attach the task iterator (`BPF_LINK_CREATE` on the loaded
//! program, then `read`) and look up/delete `PROC_STATS` entries through the map fds. Linux ≥ 6.5
//! checks no capability for those (tried on 6.18: the daemon samples with an empty set); older
//! kernels with `kernel.unprivileged_bpf_disabled` set (the distributions' default) refuse every
//! `bpf()` call without CAP_BPF. Which of the two this kernel is, is asked of it
//! ([`bpf_needs_capability`]), and CAP_BPF is kept only where it is needed. The
//! `/proc/<pid>/{stat,status,cmdline,cgroup}` and cgroup files the tick reads are world-readable
//! (unlike `environ`, `io` or `smaps`, which need CAP_SYS_PTRACE and are not read); tracefs is not
//! read after attach. Everything else goes: CAP_PERFMON, CAP_DAC_READ_SEARCH, CAP_SYS_ADMIN and
//! the rest of a root daemon's set, from the effective, permitted, inheritable and ambient sets
//! and (when CAP_SETPCAP allows it) the bounding set.
//!
//! Capabilities and `no_new_privs` belong to each thread, and the async runtime's threads exist
//! before the probes attach: the calling thread drops its own, then every other thread of the
//! process is signalled to drop its own (libcap's psx does the same), and each thread's
//! `/proc/self/task/<tid>/status` is checked.
use std::{
    fs, io,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use caps::{CapSet, Capability};

/// What the running daemon keeps on a kernel that gates `bpf()` behind it (see the module
/// documentation); nothing on one that does not.
pub const KEPT_WHERE_BPF_IS_GATED: Capability = Capability::CAP_BPF;

/// `BPF_OBJ_GET_INFO_BY_FD` (uapi/linux/bpf.h).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// How long the other threads get to run their handler.
const THREAD_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("reading this process's capabilities")]
    Read(#[source] caps::errors::CapsError),
    #[error("listing this process's threads in /proc/self/task")]
    Threads(#[source] io::Error),
    #[error("installing the signal handler that drops other threads' capabilities")]
    Handler(#[source] io::Error),
    #[error("dropping capabilities on thread {tid}")]
    Drop {
        tid: i32,
        #[source]
        source: io::Error,
    },
    #[error("threads {tids:?} still hold capabilities after {THREAD_TIMEOUT:?}")]
    Stuck { tids: Vec<i32> },
}

/// What is left after [`drop_after_attach`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remaining {
    /// Effective and permitted set, as a `CapEff` bit mask.
    pub capabilities: u64,
    /// Whether the bounding set was reduced too (it needs CAP_SETPCAP; under systemd the unit's
    /// `CapabilityBoundingSet=` has done it already).
    pub bounding_reduced: bool,
}

/// Target of the drop, read by every thread's handler.
static KEEP: AtomicU64 = AtomicU64::new(0);
static DROP_FROM_BOUNDING: AtomicU64 = AtomicU64::new(0);
/// Handlers run, and the first errno a handler met (0: none).
static HANDLED: AtomicUsize = AtomicUsize::new(0);
static FAILED_ERRNO: AtomicUsize = AtomicUsize::new(0);

/// Keep what the tick needs ([`KEPT_WHERE_BPF_IS_GATED`] if [`bpf_needs_capability`], else
/// nothing) and set `no_new_privs`, on every thread.
pub fn drop_after_attach() -> Result<Remaining, PrivilegeError> {
    let permitted = caps::read(None, CapSet::Permitted).map_err(PrivilegeError::Read)?;
    // CAP_SYS_ADMIN passes the kernel's check too: kept only by a process given it without
    // CAP_BPF.
    let keep = [KEPT_WHERE_BPF_IS_GATED, Capability::CAP_SYS_ADMIN]
        .into_iter()
        .find(|cap| permitted.contains(cap))
        .filter(|_| bpf_needs_capability().unwrap_or(true))
        .map_or(0, |cap| cap.bitmask());
    let can_set_bounding = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
        .map_err(PrivilegeError::Read)?;
    let bounding_drop = if can_set_bounding {
        caps::read(None, CapSet::Bounding)
            .map_err(PrivilegeError::Read)?
            .iter()
            .fold(0, |mask, cap| mask | cap.bitmask())
            & !keep
    } else {
        0
    };
    KEEP.store(keep, Ordering::SeqCst);
    DROP_FROM_BOUNDING.store(bounding_drop, Ordering::SeqCst);

    let own = current_tid();
    apply_on_this_thread().map_err(|source| PrivilegeError::Drop { tid: own, source })?;
    drop_on_other_threads(own, keep)?;
    Ok(Remaining {
        capabilities: keep,
        bounding_reduced: can_set_bounding,
    })
}

/// Whether this kernel refuses `bpf()` commands to a caller without CAP_BPF (before Linux 6.5,
/// with `kernel.unprivileged_bpf_disabled` set, every command was). Asked of the kernel with
/// CAP_BPF and CAP_SYS_ADMIN (which also passes the check) lowered from this thread's effective
/// set, by a command that fails either way, an info query on fd -1: EPERM says the call was
/// refused before it was looked at, EBADF that it got through.
pub fn bpf_needs_capability() -> Result<bool, PrivilegeError> {
    let lowered: Vec<Capability> = [Capability::CAP_BPF, Capability::CAP_SYS_ADMIN]
        .into_iter()
        .filter(|&cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false))
        .collect();
    for &cap in &lowered {
        caps::drop(None, CapSet::Effective, cap).map_err(PrivilegeError::Read)?;
    }
    // `union bpf_attr` for this command: bpf_fd, info_len, info; the rest must be zero.
    let attr: [u32; 4] = [u32::MAX, 0, 0, 0];
    // SAFETY: `attr` is valid for its size; the kernel only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    let refused = rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    for &cap in &lowered {
        caps::raise(None, CapSet::Effective, cap).map_err(PrivilegeError::Read)?;
    }
    Ok(refused)
}

/// The signal every other thread drops its privileges on.
fn drop_signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

fn drop_on_other_threads(own: i32, keep: u64) -> Result<(), PrivilegeError> {
    install_handler()?;
    let deadline = Instant::now() + THREAD_TIMEOUT;
    loop {
        let pending: Vec<i32> = threads()?
            .into_iter()
            .filter(|&tid| tid != own && !thread_dropped(tid, keep))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if let Some(errno) = std::num::NonZero::new(FAILED_ERRNO.load(Ordering::SeqCst)) {
            return Err(PrivilegeError::Drop {
                tid: pending[0],
                source: io::Error::from_raw_os_error(errno.get() as i32),
            });
        }
        if Instant::now() > deadline {
            return Err(PrivilegeError::Stuck { tids: pending });
        }
        let before = HANDLED.load(Ordering::SeqCst);
        // SAFETY: tgkill only sends a signal; a thread that exited meanwhile gives ESRCH, which
        // the next listing settles.
        let sent = pending
            .iter()
            .filter(|&&tid| unsafe {
                libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, drop_signal()) == 0
            })
            .count();
        let round_end = Instant::now() + Duration::from_millis(200);
        while HANDLED.load(Ordering::SeqCst) < before + sent && Instant::now() < round_end {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn install_handler() -> Result<(), PrivilegeError> {
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the handler only makes
    // async-signal-safe system calls and touches atomics.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_drop_signal as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(drop_signal(), &action, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(PrivilegeError::Handler(io::Error::last_os_error()))
    }
}

extern "C" fn on_drop_signal(_signal: libc::c_int) {
    // SAFETY: errno is thread-local; the handler restores what the interrupted code saw.
    let errno = unsafe { *libc::__errno_location() };
    if let Err(err) = apply_on_this_thread() {
        let code = err.raw_os_error().unwrap_or(libc::EINVAL);
        let _ = FAILED_ERRNO.compare_exchange(
            0,
            code.unsigned_abs() as usize,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
    HANDLED.fetch_add(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// `struct __user_cap_header_struct` and `__user_cap_data_struct` (capability.h).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: two data structs, 64 capabilities.
const CAP_VERSION_3: u32 = 0x2008_0522;
const PR_CAP_AMBIENT_CLEAR_ALL: libc::c_ulong = 4;

/// The bounding set first (it needs CAP_SETPCAP, which the capset below drops), then ambient,
/// inheritable, permitted and effective in one capset, then `no_new_privs`. Only system calls:
/// this runs in a signal handler.
fn apply_on_this_thread() -> io::Result<()> {
    let keep = KEEP.load(Ordering::SeqCst);
    let bounding_drop = DROP_FROM_BOUNDING.load(Ordering::SeqCst);
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    for cap in 0..64 {
        if bounding_drop & (1 << cap) != 0 {
            // SAFETY: prctl with integer arguments.
            check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) })?;
        }
    }
    // SAFETY: as above. Lowering the permitted set below clears the ambient set anyway; this
    // says so explicitly (EINVAL before Linux 4.3, which has no ambient set: ignored).
    let _ = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            PR_CAP_AMBIENT_CLEAR_ALL,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    let header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let half = |shift: u32| CapData {
        effective: (keep >> shift) as u32,
        permitted: (keep >> shift) as u32,
        inheritable: 0,
    };
    let data = [half(0), half(32)];
    // SAFETY: header and data are the kernel's layout, alive for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    check(rc as libc::c_int)?;
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) })
}

fn current_tid() -> i32 {
    // SAFETY: gettid cannot fail.
    unsafe { libc::gettid() }
}

fn threads() -> Result<Vec<i32>, PrivilegeError> {
    fs::read_dir("/proc/self/task")
        .and_then(|dir| {
            dir.map(|entry| Ok(entry?.file_name().to_string_lossy().parse().unwrap_or(-1)))
                .collect::<io::Result<Vec<i32>>>()
        })
        .map(|tids| tids.into_iter().filter(|&tid| tid > 0).collect())
        .map_err(PrivilegeError::Threads)
}

/// Whether thread `tid` of this process shows the target sets and `no_new_privs` (a thread gone
/// meanwhile counts as done).
fn thread_dropped(tid: i32, keep: u64) -> bool {
    match fs::read_to_string(format!("/proc/self/task/{tid}/status")) {
        Ok(status) => {
            let state = ThreadPrivileges::parse(&status);
            state.effective == Some(keep)
                && state.permitted == Some(keep)
                && state.no_new_privs == Some(true)
        }
        Err(_) => true,
    }
}

/// The privilege lines of a `/proc/<pid>/status` file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadPrivileges {
    pub effective: Option<u64>,
    pub permitted: Option<u64>,
    pub bounding: Option<u64>,
    pub ambient: Option<u64>,
    pub no_new_privs: Option<bool>,
}

impl ThreadPrivileges {
    pub fn parse(status: &str) -> Self {
        let mut state = Self::default();
        for line in status.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let mask = || u64::from_str_radix(value, 16).ok();
            match key {
                "CapEff" => state.effective = mask(),
                "CapPrm" => state.permitted = mask(),
                "CapBnd" => state.bounding = mask(),
                "CapAmb" => state.ambient = mask(),
                "NoNewPrivs" => state.no_new_privs = Some(value == "1"),
                _ => {}
            }
        }
        state
    }
}

/// Names of the capabilities in `mask`, for the log.
pub fn names(mask: u64) -> Vec<String> {
    caps::all()
        .into_iter()
        .filter(|cap| mask & cap.bitmask() != 0)
        .map(|cap| cap.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_parsed() {
        let status = "Name:\tmemtrace\nCapInh:\t0000000000000000\nCapPrm:\t0000008000000000\n\
                      CapEff:\t0000008000000000\nCapBnd:\t0000008000000000\n\
                      CapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t0\n";
        assert_eq!(
            ThreadPrivileges::parse(status),
            ThreadPrivileges {
                effective: Some(Capability::CAP_BPF.bitmask()),
                permitted: Some(Capability::CAP_BPF.bitmask()),
                bounding: Some(Capability::CAP_BPF.bitmask()),
                ambient: Some(0),
                no_new_privs: Some(true),
            }
        );
        assert_eq!(names(Capability::CAP_BPF.bitmask()), ["CAP_BPF"]);
    }
}
