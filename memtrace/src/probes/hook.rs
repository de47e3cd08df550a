//! Where a program attaches, and loading, attaching and unloading one program: the code every
//! family shares.
use std::io;

use aya::{
    Ebpf,
    programs::{
        Iter, PerfEvent, ProgramError, RawTracePoint, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
    util::online_cpus,
};

/// Where a program attaches.
#[derive(Clone, Debug)]
pub enum Hook {
    /// Raw tracepoint (TP_PROTO arguments, no record): `tracepoint` is checked in tracefs.
    RawTracepoint {
        program: &'static str,
        category: &'static str,
        name: &'static str,
    },
    /// Classic tracepoint, record fields at offsets from its format file.
    Tracepoint {
        program: &'static str,
        category: &'static str,
        name: &'static str,
    },
    /// Perf software event, period 1, on every online CPU.
    PerfSoftware {
        program: &'static str,
        event: SoftwareEvent,
        label: &'static str,
    },
    /// BPF task iterator: loaded here, run (attached) once per read, see
    /// [`super::Probes::task_iterator`].
    TaskIterator { program: &'static str },
}

impl Hook {
    /// A classic tracepoint whose program is named after it (`syscalls:sys_exit_mmap` →
    /// `sys_exit_mmap`), as most are.
    pub const fn tracepoint(category: &'static str, name: &'static str) -> Self {
        Hook::Tracepoint {
            program: name,
            category,
            name,
        }
    }

    /// The program in the eBPF object.
    pub fn program(&self) -> &'static str {
        match self {
            Hook::RawTracepoint { program, .. }
            | Hook::Tracepoint { program, .. }
            | Hook::PerfSoftware { program, .. }
            | Hook::TaskIterator { program } => program,
        }
    }

    /// How the hook is named in reports: `raw_tp kmem:rss_stat`, `oom:mark_victim`, …
    pub fn label(&self) -> String {
        match self {
            Hook::RawTracepoint { category, name, .. } => format!("raw_tp {category}:{name}"),
            Hook::Tracepoint { category, name, .. } => format!("{category}:{name}"),
            Hook::PerfSoftware { label, .. } => format!("perf {label}"),
            Hook::TaskIterator { .. } => "iter/task".to_owned(),
        }
    }
}

/// Why one program could not be loaded or attached. The message is one line (it goes into the
/// attach report), with the verifier's last lines when it refused the program.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("program {program} missing from the eBPF object")]
    MissingProgram { program: &'static str },
    /// The object's program is not of the kind the hook needs.
    #[error("{}", with_causes(source))]
    WrongKind {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("the verifier refused {program} ({io_error}): {log_tail}")]
    Verifier {
        program: &'static str,
        io_error: io::Error,
        /// The last lines of the verifier's log before its statistics, joined by ` | `.
        log_tail: String,
    },
    /// Loading or attaching failed for another reason than the verifier.
    #[error("{}", with_causes(source))]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("the kernel's BTF could not be parsed")]
    NoKernelBtf { program: &'static str },
    #[error("reading {path}: {source}")]
    OnlineCpus {
        program: &'static str,
        path: &'static str,
        #[source]
        source: io::Error,
    },
}

/// `err` and its causes on one line: aya's syscall errors say only which call failed and keep
/// the errno as their source, and the errno is what tells a missing capability (EPERM), a
/// perf_event_open policy (EACCES) and a missing hook (ENOENT) apart.
pub(crate) fn with_causes(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        line.push_str(": ");
        line.push_str(&err.to_string());
        cause = err.source();
    }
    line
}

impl AttachError {
    /// `err` from loading or attaching `program`, with the verifier's reason pulled out of its
    /// log.
    fn from_program(program: &'static str, err: ProgramError) -> Self {
        match err {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                // The reason is the last line before the verifier's statistics.
                let log = verifier_log.to_string();
                let is_stats = |l: &&str| {
                    ["verification time", "stack depth", "processed "]
                        .iter()
                        .any(|s| l.starts_with(s))
                };
                let tail: Vec<&str> = log
                    .lines()
                    .filter(|l| !l.trim().is_empty() && !is_stats(l))
                    .rev()
                    .take(2)
                    .collect();
                AttachError::Verifier {
                    program,
                    io_error,
                    log_tail: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                }
            }
            source => AttachError::Program { program, source },
        }
    }
}

/// Load (verify) and attach one program.
pub(super) fn attach_hook(
    ebpf: &mut Ebpf,
    hook: &Hook,
    kernel_btf: Option<&aya::Btf>,
) -> Result<(), AttachError> {
    let name = hook.program();
    let program = ebpf
        .program_mut(name)
        .ok_or(AttachError::MissingProgram { program: name })?;
    let failed = |err| AttachError::from_program(name, err);
    let wrong_kind = |source| AttachError::WrongKind {
        program: name,
        source,
    };
    match hook {
        Hook::RawTracepoint { name: tp_name, .. } => {
            let program: &mut RawTracePoint = program.try_into().map_err(wrong_kind)?;
            program.load().map_err(failed)?;
            program.attach(tp_name).map_err(failed)?;
        }
        Hook::Tracepoint {
            category,
            name: tp_name,
            ..
        } => {
            let program: &mut TracePoint = program.try_into().map_err(wrong_kind)?;
            program.load().map_err(failed)?;
            program.attach(category, tp_name).map_err(failed)?;
        }
        Hook::TaskIterator { .. } => {
            let program: &mut Iter = program.try_into().map_err(wrong_kind)?;
            let btf = kernel_btf.ok_or(AttachError::NoKernelBtf { program: name })?;
            program.load("task", btf).map_err(failed)?;
            // Checked now, so a kernel that refuses to run it is reported at start-up.
            let link = program.attach().map_err(failed)?;
            program.detach(link).map_err(failed)?;
        }
        Hook::PerfSoftware { event, .. } => {
            let program: &mut PerfEvent = program.try_into().map_err(wrong_kind)?;
            program.load().map_err(failed)?;
            let cpus = online_cpus().map_err(|(path, source)| AttachError::OnlineCpus {
                program: name,
                path,
                source,
            })?;
            for cpu in cpus {
                program
                    .attach(
                        PerfEventConfig::Software(*event),
                        PerfEventScope::AllProcessesOneCpu { cpu },
                        SamplePolicy::Period(1),
                        true,
                    )
                    .map_err(failed)?;
            }
        }
    }
    Ok(())
}

/// Detach and unload one program (a failure is only logged: the object's drop unloads it too).
pub(super) fn unload(ebpf: &mut Ebpf, name: &str) {
    if let Some(program) = ebpf.program_mut(name) {
        let result = match program {
            aya::programs::Program::TracePoint(p) => p.unload(),
            aya::programs::Program::RawTracePoint(p) => p.unload(),
            aya::programs::Program::PerfEvent(p) => p.unload(),
            aya::programs::Program::Iter(p) => p.unload(),
            _ => Ok(()),
        };
        if let Err(err) = result {
            tracing::warn!("unloading {name}: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's `perf_event_paranoid` 3 refuses every tracepoint with EACCES: the report must
    /// carry the errno, not only the call's name.
    #[test]
    fn a_failed_syscall_is_reported_with_its_errno() {
        let err = AttachError::Program {
            program: "mmap_exit",
            source: ProgramError::SyscallError(aya::sys::SyscallError {
                call: "perf_event_open_trace_point",
                io_error: io::Error::from_raw_os_error(libc::EACCES),
            }),
        };
        assert_eq!(
            err.to_string(),
            "`perf_event_open_trace_point` failed: Permission denied (os error 13)"
        );
    }
}
