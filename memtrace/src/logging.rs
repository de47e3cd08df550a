//! `tracing` set-up, with `log` records (aya and aya-log use `log`) bridged into it.
use tokio::io::{Interest, unix::AsyncFd};
use tracing_subscriber::EnvFilter;

/// Log to stderr; level from `RUST_LOG` (default `warn`, so a trace's stdout stays data).
pub fn init(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // `try_init` also installs the log→tracing bridge (tracing-subscriber's `tracing-log`).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Forward the eBPF programs' aya-log records to `tracing` (through `log`). Needs a tokio
/// runtime; without one the records stay in the kernel buffer.
pub(crate) fn spawn_ebpf_logger(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    if tokio::runtime::Handle::try_current().is_err() {
        tracing::debug!("no tokio runtime: eBPF log records are not read");
        return;
    }
    // SAFETY: the logger owns its ring buffer's fd for as long as the `AsyncFd` owns the logger.
    let mut logger = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(err) => {
            tracing::warn!("eBPF log reader: {err}");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
