//! `memtrace daemon`: parse the arguments and the config file, then run [`crate::daemon`].
use std::path::PathBuf;

use clap::Args;

use crate::daemon::{self, Flags, Settings};

pub use crate::daemon::DEFAULT_LISTEN;

const EXAMPLES: &str = "\
Examples:
  memtrace daemon                                   serve on 127.0.0.1:9847
  memtrace daemon --listen 0.0.0.0:9847 --top 100   expose to a Prometheus on the network
  memtrace daemon --config /etc/memtrace/daemon.toml
  memtrace daemon --mmap-calls                      also count mmap/munmap/brk/mremap/madvise
  memtrace daemon --host-root /host                 in a container with the host's / at /host
  memtrace daemon --cmdline comm-only               show commands, not their arguments, in the API
  memtrace daemon --web-config-file /etc/memtrace/web.yml   HTTPS and basic auth (exporter-toolkit format)
  memtrace daemon --kubernetes on                   require pod metadata from the API server
  memtrace daemon --node-name node-a --cgroup-root /kubepods --pin 'redis-server\\.service'
                                                    name the node, model only /kubepods, always
                                                    export redis-server.service's own series
  memtrace daemon --leak-window 30m --leak-min-growth 10MiB/h
                                                    hint leaks slower and longer than 1 MiB/min
                                                    over 10 min
  memtrace daemon --record-dir /var/lib/memtrace/recordings   keep a rolling recording
                                                    (memtrace replay, memtrace top --replay)

Endpoints: /metrics (Prometheus), /api/v1/snapshot, /api/v1/oom, /api/v1/workloads (JSON;
?history=2h by default, 0 for none; gzip with Accept-Encoding: gzip), /healthz, /readyz.
Config file keys (TOML; flags win) are the flags' names with `_` for `-`: listen, top,
max_cgroups, interval, rate_window, max_processes, oom_retention, mmap_calls, host_root,
allow_degraded, cmdline, max_connections, state_dir, web_config_file, kubernetes, history_step,
history_points, node_name, cgroup_root, pin, growth_window, leak_window, leak_min_growth,
record_dir, record_max_bytes, record_max_age.
Logs: RUST_LOG=info (default), debug, …";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct DaemonArgs {
    /// TOML configuration file; command-line flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub flags: Flags,
}

pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => Some((path.as_path(), daemon::load_file(path)?)),
        None => None,
    };
    let settings = Settings::resolve(&args.flags, file)?;
    daemon::run(settings).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_every_config_key() {
        for key in daemon::config::key_table().keys() {
            assert!(
                EXAMPLES.contains(key.as_str()),
                "--help lacks the key {key}"
            );
        }
    }

    #[test]
    fn host_root_flag_reaches_the_settings() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            daemon: DaemonArgs,
        }
        let cli = Cli::try_parse_from(["memtrace", "--host-root", "/host", "--top", "3"]).unwrap();
        let settings = Settings::resolve(&cli.daemon.flags, None).unwrap();
        assert_eq!(settings.host, crate::host::HostPaths::under("/host"));
        assert_eq!(settings.top, 3);
    }
}
