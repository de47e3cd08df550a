//! `memtrace top`: parse the arguments, open the source (failing with one line before the
//! screen is taken), then run [`crate::top`].
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::cluster::fanout::FanoutArgs;
use crate::cluster::targets::TargetArgs;
use crate::daemon::{Flags, Settings};
use crate::record::Recording;
use crate::top::app::{App, SourceKind};
use crate::top::source::{self, Source, cluster::ClusterSource, daemon::DaemonSource};
use crate::units::duration_in;
use crate::web::client::ClientOptions;

const EXAMPLES: &str = "\
Examples:
  memtrace top                               this machine, probes loaded here (root)
  memtrace top --url 10.0.0.5:9847           a running daemon
  memtrace top --nodes a:9847,b:9847,c:9847  workloads across the fleet; Enter on a node drills in
  memtrace top --replay incident.mtr --at 03:12
                                             a recording, from 03:12 (UTC) on its first day
  memtrace top --cgroup-root /kubepods       only the processes of one cgroup subtree

Keys: Tab or 1-4 views, s/S sort, / filter, Enter detail, p pause, +/- interval, ? help, q quit.
Replay: ←/→ one interval, o/O next/previous OOM kill, Home/End, p play.";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct TopArgs {
    /// A running `memtrace daemon` to show: host:port or http(s)://host:port (TLS and basic
    /// auth with the client options below). Default: load the probes in this process.
    #[arg(long, value_name = "URL", conflicts_with_all = ["replay", "nodes", "nodes_file", "dns", "prometheus", "kubernetes"])]
    pub url: Option<String>,

    /// Replay a recording (`memtrace record -o FILE`, a daemon's --record-dir) instead of
    /// watching live.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["nodes", "nodes_file", "dns", "prometheus", "kubernetes"])]
    pub replay: Option<PathBuf>,

    /// Where the replay starts: RFC 3339 (2026-11-30T03:12:00Z), a time of day in UTC on the
    /// recording's first day (03:12, 03:12:30), an offset from its start (+90s), or Unix
    /// seconds. Default: its first frame.
    #[arg(long, value_name = "TIME", requires = "replay")]
    pub at: Option<String>,

    /// Time between refreshes (a replay: between frames while playing); `+` and `-` change it.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration_in(Duration::from_millis(250), Duration::from_secs(60)))]
    pub interval: Duration,

    /// Local probes: read the host's /proc, /sys under PATH (as `memtrace daemon --host-root`).
    #[arg(long, value_name = "PATH")]
    pub host_root: Option<PathBuf>,

    /// Local probes: only the processes in this cgroup subtree (as `memtrace daemon
    /// --cgroup-root`).
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<String>,

    /// The fleet (as `memtrace cluster`): any of these shows the workloads across nodes.
    #[command(flatten)]
    pub targets: TargetArgs,

    #[command(flatten)]
    pub fanout: FanoutArgs,

    /// TLS and basic auth for daemons with a `--web-config-file`.
    #[command(flatten)]
    pub client: ClientOptions,
}

impl TopArgs {
    fn cluster(&self) -> bool {
        let t = &self.targets;
        !t.nodes.is_empty()
            || t.nodes_file.is_some()
            || !t.dns.is_empty()
            || t.prometheus.is_some()
            || t.kubernetes.is_some()
    }
}

/// The daemon's settings for the probes loaded by `top` itself: its sampling, a short rate
/// window (rates that follow the screen), and a history step the detail pane can use.
pub fn local_settings(
    host_root: Option<PathBuf>,
    cgroup_root: Option<String>,
) -> anyhow::Result<Settings> {
    let flags = Flags {
        interval: Some(Duration::from_secs(1)),
        rate_window: Some(Duration::from_secs(3)),
        host_root,
        cgroup_root,
        // The user's own terminal, run as root: the whole command line helps tell processes
        // apart.
        cmdline: Some(crate::model::CmdlineMode::Full),
        history_step: Some(Duration::from_secs(5)),
        history_points: Some(720),
        ..Flags::default()
    };
    Settings::resolve(&flags, None).context("settings of the local probes")
}

pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    let (source, kind, warnings) = open(&args).await?;
    let mut app = App::new(kind, args.interval);
    app.warnings = warnings;
    let mut source = source;
    let first = source.answer(&source::SourceCommand::Refresh).await;
    if first.nodes.is_empty() {
        source.stop().await;
        if args.cluster() {
            let reasons: Vec<String> = first
                .failures
                .iter()
                .map(|f| format!("{}: {}", f.target, f.error))
                .collect();
            anyhow::bail!("no node answered: {}", reasons.join("; "));
        }
        // One source, one failure: its line names the URL (or the local model).
        let reason = first
            .failures
            .first()
            .map_or("no frame", |f| f.error.as_str());
        let hint = if args.url.is_some() {
            " (is `memtrace daemon` running there? give its address with --url)"
        } else {
            ""
        };
        anyhow::bail!("{reason}{hint}");
    }
    crate::top::run(source, app, first).await
}

async fn open(args: &TopArgs) -> anyhow::Result<(Source, SourceKind, Vec<String>)> {
    if let Some(path) = &args.replay {
        let recording = Recording::open(path)?;
        let Some(first) = recording.frames().first() else {
            anyhow::bail!("{}: the recording has no frames", path.display());
        };
        let index = match &args.at {
            Some(at) => {
                let unix_ms = resolve_at(at, first.timestamp_unix_ms())?;
                recording.index_at(unix_ms).unwrap_or(0)
            }
            None => 0,
        };
        let shown = path.display().to_string();
        let replay = source::replay::Replay::new(recording, shown.clone(), index);
        return Ok((
            Source::Replay(replay),
            SourceKind::Replay(shown),
            Vec::new(),
        ));
    }
    if let Some(url) = &args.url {
        let daemon = DaemonSource::new(url, args.client.clone(), args.fanout.timeout)?;
        return Ok((
            Source::Daemon(daemon),
            SourceKind::Daemon(url.clone()),
            Vec::new(),
        ));
    }
    if args.cluster() {
        let cluster =
            ClusterSource::new(&args.targets, args.fanout.clone(), args.client.clone()).await?;
        return Ok((Source::Cluster(cluster), SourceKind::Cluster, Vec::new()));
    }
    let settings = local_settings(args.host_root.clone(), args.cgroup_root.clone())?;
    let local = source::local::Local::start(&settings)
        .await
        .context("loading the probes (or watch a daemon with --url, a recording with --replay)")?;
    let warnings = local.warnings().to_vec();
    Ok((Source::Local(local), SourceKind::Local, warnings))
}

/// `--at` in Unix milliseconds, for a recording that starts at `start_unix_ms`.
pub fn resolve_at(at: &str, start_unix_ms: u64) -> anyhow::Result<u64> {
    let at = at.trim();
    if let Some(offset) = at.strip_prefix('+') {
        let offset =
            crate::units::parse_duration(offset).map_err(|e| anyhow::anyhow!("--at {at}: {e}"))?;
        return Ok(start_unix_ms + u64::try_from(offset.as_millis()).unwrap_or(u64::MAX));
    }
    if let Ok(seconds) = at.parse::<u64>() {
        return Ok(seconds.saturating_mul(1000));
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(at) {
        let since = time
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| anyhow::anyhow!("--at {at}: before 1970"))?;
        return Ok(u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
    }
    let parts: Vec<&str> = at.split(':').collect();
    let numbers: Option<Vec<u64>> = parts.iter().map(|p| p.parse::<u64>().ok()).collect();
    match numbers.as_deref() {
        Some([h, m]) if *h < 24 && *m < 60 => {
            Ok(day_of(start_unix_ms) + (h * 3600 + m * 60) * 1000)
        }
        Some([h, m, s]) if *h < 24 && *m < 60 && *s < 60 => {
            Ok(day_of(start_unix_ms) + (h * 3600 + m * 60 + s) * 1000)
        }
        _ => anyhow::bail!(
            "--at {at}: not a time (give 2026-11-30T03:12:00Z, 03:12, 03:12:30, +90s or Unix seconds)"
        ),
    }
}

/// Midnight UTC of the day of `unix_ms`.
fn day_of(unix_ms: u64) -> u64 {
    unix_ms - unix_ms % 86_400_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_takes_times_offsets_and_dates() {
        // 2026-11-30 03:10:00 UTC.
        let start = 1_796_008_200_000;
        assert_eq!(resolve_at("03:12", start).unwrap(), start + 120_000);
        assert_eq!(resolve_at("03:12:04", start).unwrap(), start + 124_000);
        assert_eq!(resolve_at("+90s", start).unwrap(), start + 90_000);
        assert_eq!(
            resolve_at("2026-11-30T03:12:04Z", start).unwrap(),
            start + 124_000
        );
        assert_eq!(resolve_at("1796008324", start).unwrap(), start + 124_000);
        let err = resolve_at("yesterday", start).unwrap_err().to_string();
        assert!(err.contains("--at yesterday: not a time"), "{err}");
    }

    #[test]
    fn sources_are_exclusive() {
        use crate::cli::{Cli, Command};
        use clap::Parser as _;
        let parsed =
            Cli::try_parse_from(["memtrace", "top", "--nodes", "a,b", "--timeout", "1s"]).unwrap();
        let Command::Top(args) = parsed.command else {
            panic!("not top");
        };
        assert!(args.cluster());
        assert!(Cli::try_parse_from(["memtrace", "top", "--url", "a:1", "--nodes", "b"]).is_err());
        assert!(
            Cli::try_parse_from(["memtrace", "top", "--at", "03:12"]).is_err(),
            "--at needs --replay"
        );
        assert!(Cli::try_parse_from(["memtrace", "top", "--replay", "f", "--nodes", "b"]).is_err());
        assert!(Cli::try_parse_from(["memtrace", "top", "--interval", "10ms"]).is_err());
    }
}
