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
    #[arg(long, value_name = "URL", conflicts_with_all = ["replay", "nodes", "nodes_file", "dns", "prometheus", "kubernetes", "recordings"])]
    pub url: Option<String>,

    /// Replay a recording (`memtrace record -o FILE`, a file of a daemon's --record-dir, or the
    /// directory: its files as one timeline) instead of watching live, from --at (below)
    /// [default: its first frame].
    #[arg(long, value_name = "FILE|DIR", conflicts_with_all = ["nodes", "nodes_file", "dns", "prometheus", "kubernetes", "recordings"])]
    pub replay: Option<PathBuf>,

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

/// The daemon's settings for the probes loaded by `top` itself: its sampling, short rate and
/// growth windows (numbers that follow the screen), and a history step the detail pane can use.
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
        // GROW/s within seconds of starting, rather than the daemon's minute.
        growth_window: Some(Duration::from_secs(10)),
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
    recording_args(args)?;
    if let Some(path) = &args.replay {
        let recording = Recording::open(path)?;
        let Some(first) = recording.frames().first() else {
            anyhow::bail!("{}: the recording has no frames", path.display());
        };
        let index = match &args.targets.at {
            Some(at) => {
                let last = recording.frames().last().unwrap_or(first);
                let unix_ms = crate::record::resolve_time(
                    at,
                    first.timestamp_unix_ms(),
                    last.timestamp_unix_ms(),
                )
                .map_err(|reason| anyhow::anyhow!("--at: {reason}"))?;
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

/// `--at` and `--recordings` (shared with `memtrace cluster`) as top takes them.
fn recording_args(args: &TopArgs) -> anyhow::Result<()> {
    if !args.targets.recordings.is_empty() {
        anyhow::bail!(
            "memtrace top replays one recording (--replay FILE); recordings read as nodes are \
             memtrace cluster … --recordings"
        );
    }
    if args.targets.at.is_some() && args.replay.is_none() {
        anyhow::bail!("--at picks where a replay starts: give --replay FILE");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let top = |argv: &[&str]| {
            let parsed = Cli::try_parse_from(["memtrace", "top"].iter().chain(argv)).unwrap();
            let Command::Top(args) = parsed.command else {
                panic!("not top");
            };
            recording_args(&args).map_err(|err| err.to_string())
        };
        assert_eq!(
            top(&["--at", "03:12"]),
            Err("--at picks where a replay starts: give --replay FILE".to_owned())
        );
        assert!(top(&["--replay", "f", "--at", "03:12"]).is_ok());
        assert!(top(&["--recordings", "a.mtr", "b.mtr"]).is_err());
        assert!(Cli::try_parse_from(["memtrace", "top", "--replay", "f", "--nodes", "b"]).is_err());
        assert!(Cli::try_parse_from(["memtrace", "top", "--interval", "10ms"]).is_err());
    }
}
