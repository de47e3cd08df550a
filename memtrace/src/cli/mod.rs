//! The command line: one file per verb.
pub mod check;
pub mod cluster;
pub mod daemon;
pub mod oom;
pub mod profile;
pub mod record;
pub mod replay;
pub mod top;
pub mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand, error::ErrorKind};

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn clap_errors_fold_to_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  --faults\n\nUsage: memtrace trace --faults --sample <N>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(rendered),
            "the following required arguments were not provided: --faults"
        );
        let rendered = "error: unexpected argument '--bogus' found\n\n  tip: to pass '--bogus' as a value, use '-- --bogus'\n\nUsage: x\n";
        assert_eq!(one_line(rendered), "unexpected argument '--bogus' found");
    }
}

/// memtrace: per-process kernel memory tracing with eBPF — page faults, mmap churn, RSS,
/// reclaim stalls and OOM kills, live.
#[derive(Debug, Parser)]
#[command(
    name = "memtrace",
    version,
    propagate_version = true,
    after_help = "Needs root (or CAP_BPF + CAP_PERFMON) and tracefs. Logs go to stderr; set RUST_LOG=debug for more.\n\nExamples:\n  memtrace trace --event oom,mmap          OOM kills and mmaps ≥ 1 MiB, live\n  memtrace trace --pid 1234 --faults       everything pid 1234 does, every fault included\n  memtrace trace --cgroup /kubepods.slice --event oom,reclaim --output json\n  memtrace daemon                          metrics on http://127.0.0.1:9847/metrics\n  memtrace oom                             recent OOM kills with their last 60 s\n  memtrace cluster diagnose --nodes a:9847,b:9847,c:9847   findings across nodes\n  memtrace top                             full-screen live view (--url, --nodes, --replay FILE)\n  memtrace record -o a.mtr --url 127.0.0.1:9847   record a daemon's views over time\n  memtrace replay a.mtr --at -5m           the node five minutes before the recording ends\n  memtrace profile --alloc -p 1234 --leaks which code of pid 1234 leaks
  memtrace check                           which probes this kernel supports"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream memory events live, then print a per-process summary.
    Trace(trace::TraceArgs),
    /// Keep a per-process/per-cgroup memory-pressure model; serve Prometheus metrics and a JSON API.
    Daemon(daemon::DaemonArgs),
    /// Show recent OOM kills with the 60 s before each, from a running daemon.
    Oom(oom::OomArgs),
    /// Ask many daemons at once: workloads, nodes and OOM kills across the fleet, and the
    /// cross-node diagnostics (hot shard, leak, OOM storm, noisy neighbour, app or node).
    Cluster(Box<cluster::ClusterArgs>),
    /// Full-screen live view: processes, workloads, cgroups and nodes by pressure, RSS, faults,
    /// reclaim and growth, with history and OOM kills; local, a daemon, the fleet or a recording.
    Top(Box<top::TopArgs>),
    /// Which code grows memory (page faults and mmap/brk by stack) or, with --alloc, which code
    /// allocates and what it leaks (allocator uprobes); text, flame graph, pprof, folded, JSON.
    Profile(Box<profile::ProfileArgs>),
    /// Record a daemon's snapshot and workloads every interval to a compact, crash-safe file.
    Record(record::RecordArgs),
    /// Show a recording's frame at a time (text or JSON), or list its frames and OOM kills.
    Replay(replay::ReplayArgs),
    /// Can memtrace run here? Attach every probe family of the daemon and of the trace, report
    /// what attached, what fell back and why, and detach.
    Check(check::CheckArgs),
}

/// Parse arguments; clap's own errors become one line (`memtrace: error: …`) and exit code 2.
pub fn parse() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(err) => match err.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                let _ = err.print();
                Err(ExitCode::SUCCESS)
            }
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
                let _ = err.print();
                Err(ExitCode::from(2))
            }
            _ => {
                eprintln!(
                    "memtrace: error: {} (see --help)",
                    one_line(&err.render().to_string())
                );
                Err(ExitCode::from(2))
            }
        },
    }
}

/// Clap's message up to the usage block, on one line: `error: the following required arguments
/// were not provided:\n  --faults\n\nUsage: …` → `the following required arguments were not
/// provided: --faults`.
pub(crate) fn one_line(rendered: &str) -> String {
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("tip:"))
        .collect();
    let message = message.join(" ");
    message
        .strip_prefix("error: ")
        .unwrap_or(&message)
        .to_owned()
}

/// Run the parsed command on a tokio runtime; errors print as one line and exit 1.
pub fn run(cli: Cli) -> ExitCode {
    // The daemon's logs are its operational record; a trace keeps stderr for what matters.
    crate::logging::init(match cli.command {
        Command::Daemon(_) => "info",
        // The screen is `top`'s: what it must say is on it (the status line).
        Command::Top(_) => "off",
        _ => "warn",
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("memtrace: error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Trace(args) => trace::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Daemon(args) => daemon::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Oom(args) => tokio::task::spawn_blocking(move || oom::run(args))
                .await
                .unwrap_or_else(|err| Err(anyhow::anyhow!("oom report task: {err}")))
                .map(|()| ExitCode::SUCCESS),
            // Its status says whether every node answered.
            Command::Cluster(args) => cluster::run(*args).await,
            Command::Check(args) => check::run(args),
            Command::Top(args) => top::run(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Profile(args) => profile::run(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Record(args) => record::run(args).await.map(|()| ExitCode::SUCCESS),
            // Its status says whether the recording was damaged.
            Command::Replay(args) => tokio::task::spawn_blocking(move || replay::run(&args))
                .await
                .unwrap_or_else(|err| Err(anyhow::anyhow!("replay task: {err}"))),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` joins the context chain on one line: "loading probes: map EVENTS: …".
            eprintln!("memtrace: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
