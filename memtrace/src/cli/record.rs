//! `memtrace record -o FILE [--url URL]`: the snapshot and workloads views every interval, of a
//! daemon or of the daemon's model run in this process, as frames of a recording
//! (`crate::record`), until `--duration` or Ctrl-C / SIGTERM.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use memtrace_api::{Snapshot, frame::Frame, workloads::WorkloadsResponse};
use tokio::signal::unix::{SignalKind, signal};

use crate::record::{RecordWriter, WriterOptions};
use crate::units::{duration_in, human_bytes};
use crate::web::client::{ClientOptions, RequestError};

const EXAMPLES: &str = "\
Examples:
  memtrace record -o node-a.mtr                                     this node, probes loaded here
  memtrace record -o node-a.mtr --url 127.0.0.1:9847               a daemon's views, until Ctrl-C
  memtrace record -o incident.mtr --url node-a:9847 --interval 5s --duration 1h
  memtrace replay incident.mtr --list                               frames and OOM kills
  memtrace replay incident.mtr --at 2026-11-30T03:12:00Z -o json    one frame for scripts

A daemon can also keep a rolling recording itself: memtrace daemon --record-dir DIR.";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct RecordArgs {
    /// The recording to write (created, or emptied if it exists); `.mtr` by convention.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,

    /// The daemon to record: host:port or an http(s):// URL. Default: load the probes in this
    /// process and record the daemon's model run here (root or CAP_BPF + CAP_PERFMON, as
    /// `memtrace daemon`), with the daemon's default settings.
    #[arg(long, value_name = "URL", env = "MEMTRACE_URL")]
    pub url: Option<String>,

    /// Without --url: where the host's /proc and /sys are (as `memtrace daemon --host-root`).
    #[arg(long, value_name = "DIR", conflicts_with = "url")]
    pub host_root: Option<PathBuf>,

    /// Without --url: record only this cgroup subtree (as `memtrace daemon --cgroup-root`).
    #[arg(long, value_name = "PATH", conflicts_with = "url")]
    pub cgroup_root: Option<String>,

    /// Time between two frames; a daemon's views change once per its own --interval, so a
    /// frame that repeats the previous one is not written again.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration_in(Duration::from_millis(100), Duration::from_secs(3600)))]
    pub interval: Duration,

    /// Stop after DURATION [default: at Ctrl-C or SIGTERM].
    #[arg(long, value_name = "DURATION", value_parser = duration_in(Duration::from_secs(1), Duration::from_secs(365 * 24 * 3600)))]
    pub duration: Option<Duration>,

    /// Workload history kept in each frame (?history= of /api/v1/workloads): what `memtrace
    /// cluster diagnose --recordings` sees of the time before a frame. It costs little: frames
    /// are compressed against each other.
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = duration_in(Duration::ZERO, Duration::from_secs(7 * 24 * 3600)))]
    pub history: Duration,

    /// TLS and basic auth for a daemon with a `--web-config-file`.
    #[command(flatten)]
    pub client: ClientOptions,
}

pub async fn run(args: RecordArgs) -> anyhow::Result<()> {
    let source = match &args.url {
        Some(url) => {
            let client = args
                .client
                .build(args.interval.max(Duration::from_secs(5)))
                .context("building the HTTP client")?;
            Source::Daemon(DaemonSource {
                client,
                options: args.client.clone(),
                target: url.clone(),
                history: args.history,
            })
        }
        None => Source::Local(LocalSource::start(&args).await?),
    };
    let recorded = record(&args, &source).await;
    if let Source::Local(local) = source {
        local.daemon.stop().await;
    }
    recorded
}

async fn record(args: &RecordArgs, source: &Source) -> anyhow::Result<()> {
    // The first frame is asked before the file is created: a wrong URL leaves no empty file.
    let first = source.frame().await.map_err(|err| match source {
        Source::Daemon(_) => anyhow::anyhow!(
            "{err} (is `memtrace daemon` running there? give its address with --url)"
        ),
        Source::Local(_) => err,
    })?;
    let mut writer = RecordWriter::create(&args.output, WriterOptions::default())?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let started = Instant::now();
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::from_std(started + d));
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = first.timestamp_unix_ms();
    writer.append(&first)?;
    let mut failures = 0_u64;
    loop {
        let until_deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {}
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = until_deadline => break,
        }
        match source.frame().await {
            // The daemon has not sampled since: the same frame again.
            Ok(frame) if frame.timestamp_unix_ms() <= last => {}
            Ok(frame) => {
                last = frame.timestamp_unix_ms();
                writer.append(&frame)?;
            }
            Err(err) => {
                failures += 1;
                tracing::warn!("{err} (frame skipped; {failures} so far)");
            }
        }
    }
    let (frames, bytes, path) = (writer.frames(), writer.bytes(), writer.path().to_owned());
    writer.finish()?;
    eprintln!(
        "memtrace record: {frames} frames in {:.0} s, {} in {}{}",
        started.elapsed().as_secs_f64(),
        human_bytes(bytes),
        crate::escape::terminal(&path.display().to_string()),
        if failures > 0 {
            format!(" ({failures} intervals without an answer)")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Where frames come from.
enum Source {
    Daemon(DaemonSource),
    Local(LocalSource),
}

impl Source {
    async fn frame(&self) -> anyhow::Result<Frame> {
        match self {
            Self::Daemon(daemon) => daemon.frame().await,
            Self::Local(local) => local.frame().await,
        }
    }
}

/// The daemon's model in this process (`daemon::start_local`), sampling every --interval.
struct LocalSource {
    daemon: crate::daemon::LocalDaemon,
    history: Duration,
}

impl LocalSource {
    async fn start(args: &RecordArgs) -> anyhow::Result<Self> {
        let flags = crate::daemon::Flags {
            // The model samples at most once a second; a shorter --interval repeats frames,
            // which are not written twice.
            interval: Some(args.interval.max(Duration::from_secs(1))),
            host_root: args.host_root.clone(),
            cgroup_root: args.cgroup_root.clone(),
            ..crate::daemon::Flags::default()
        };
        let settings = crate::daemon::Settings::resolve(&flags, None)
            .context("settings of the local model")?;
        let daemon = crate::daemon::start_local(&settings)
            .await
            .context("loading the probes (or record a running daemon with --url)")?;
        for warning in &daemon.warnings {
            eprintln!("memtrace record: warning: {warning}");
        }
        Ok(Self {
            daemon,
            history: args.history,
        })
    }

    async fn frame(&self) -> anyhow::Result<Frame> {
        let mut frame = self
            .daemon
            .frame()
            .await
            .context("the in-process model stopped")?;
        if let Some(workloads) = &mut frame.workloads {
            // As `?history=` trims a daemon's answer.
            crate::model::workloads::limit_history(workloads, self.history);
        }
        Ok(frame)
    }
}

/// A daemon's views, asked for together.
struct DaemonSource {
    client: reqwest::Client,
    options: ClientOptions,
    target: String,
    history: Duration,
}

impl DaemonSource {
    /// Both views of one daemon tick: asked together, they may straddle a tick (the workloads
    /// view then carries another time than the snapshot), and are asked again, twice at most.
    async fn frame(&self) -> anyhow::Result<Frame> {
        let mut frame = self.ask().await?;
        for _ in 0..2 {
            let same_tick = frame
                .workloads
                .as_ref()
                .is_none_or(|w| w.timestamp_unix_ms == frame.timestamp_unix_ms());
            if same_tick {
                break;
            }
            frame = self.ask().await?;
        }
        Ok(frame)
    }

    async fn ask(&self) -> anyhow::Result<Frame> {
        let workloads_path = format!("/api/v1/workloads?history={}s", self.history.as_secs());
        let (snapshot, workloads) = tokio::join!(
            self.get(memtrace_api::client::SNAPSHOT_PATH),
            self.get(&workloads_path)
        );
        let snapshot: Snapshot = serde_json::from_slice(
            &snapshot?.ok_or_else(|| anyhow::anyhow!("{}: no snapshot API (404)", self.target))?,
        )
        .with_context(|| format!("{}: not a memtrace snapshot", self.target))?;
        // A daemon older than the workloads API has none: the frame goes without.
        let workloads: Option<WorkloadsResponse> = workloads?
            .map(|body| crate::cluster::fanout::decode(&body))
            .transpose()
            .map_err(|err| anyhow::anyhow!("{}: workloads: {err}", self.target))?;
        Ok(Frame {
            snapshot,
            workloads,
        })
    }

    /// The body of `path`, `None` on a 404.
    async fn get(&self, path: &str) -> Result<Option<bytes::Bytes>, RequestError> {
        let explain = |err: reqwest::Error| crate::web::client::explain(&err, &self.target);
        let response = self
            .client
            .get(self.options.url(&self.target, path))
            .send()
            .await
            .map_err(explain)?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = self.options.check(response, &self.target)?;
        response.bytes().await.map(Some).map_err(explain)
    }
}
