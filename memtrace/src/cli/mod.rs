//! The command line: one file per verb.
pub mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand, error::ErrorKind};

/// memtrace: per-process kernel memory tracing with eBPF — page faults, mmap churn, RSS,
/// reclaim stalls and OOM kills, live.
#[derive(Debug, Parser)]
#[command(
    name = "memtrace",
    version,
    propagate_version = true,
    after_help = "Needs root (or CAP_BPF + CAP_PERFMON) and tracefs. Logs go to stderr; set RUST_LOG=debug for more.\n\nExamples:\n  memtrace trace --event oom,mmap          OOM kills and mmaps ≥ 1 MiB, live\n  memtrace trace --pid 1234 --faults       everything pid 1234 does, every fault included\n  memtrace trace --cgroup /kubepods.slice --event oom,reclaim --output json"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream memory events live, then print a per-process summary.
    Trace(trace::TraceArgs),
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
                let rendered = err.render().to_string();
                let first = rendered.lines().next().unwrap_or("invalid arguments");
                let message = first.strip_prefix("error: ").unwrap_or(first);
                eprintln!("memtrace: error: {message} (see --help)");
                Err(ExitCode::from(2))
            }
        },
    }
}

/// Run the parsed command on a tokio runtime; errors print as one line and exit 1.
pub fn run(cli: Cli) -> ExitCode {
    crate::logging::init("warn");
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
            Command::Trace(args) => trace::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` joins the context chain on one line: "loading probes: map EVENTS: …".
            eprintln!("memtrace: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
