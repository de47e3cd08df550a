//! `memtrace cluster {top,nodes,oom,diagnose,serve}`: the fleet's daemons asked at once.
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use memtrace_api::cluster::Coverage;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::cluster::diagnose::Thresholds;
use crate::cluster::fanout::{FanoutArgs, Round, fan_out};
use crate::cluster::relay::{self, Poller};
use crate::cluster::targets::{Target, TargetArgs, discover};
use crate::cluster::{render, views};
use crate::units::duration_in;
use crate::web::client::ClientOptions;
use crate::web::server::WebServer;

/// Exit status when some targets answered and some did not (the output says which and why).
pub const EXIT_PARTIAL: u8 = 3;
/// Exit status when no target answered.
pub const EXIT_NONE_ANSWERED: u8 = 4;

const EXAMPLES: &str = "\
Examples:
  memtrace cluster diagnose --nodes a:9847,b:9847,c:9847
        hot shards, leaks, OOM storms, noisy neighbours, app-or-node, with their evidence
  memtrace cluster top --nodes-file fleet.txt          workloads across nodes, by pressure
  memtrace cluster nodes --dns memtrace.memtrace.svc.cluster.local:9847
        every pod of a headless Service: health, pressure, PSI, memory
  memtrace cluster diagnose --kubernetes memtrace/memtrace:http
        the ready endpoints of the memtrace Service (in-cluster config or kubeconfig)
  memtrace cluster diagnose --nodes a,b,c --ca-file ca.pem --username ops --password-file pw
        daemons with a web config (HTTPS, basic auth)
  memtrace cluster oom --prometheus http://prometheus:9090 --job memtrace
        the OOM kills of every node Prometheus scrapes, storms marked
  memtrace cluster top --nodes https://a:9847 --timeout 1s --deadline 5s -o json
  memtrace cluster serve --nodes-file fleet.txt --listen 0.0.0.0:9848 --interval 15s
  memtrace cluster diagnose --recordings a.mtr b.mtr c.mtr --at 2026-11-30T03:12:00Z
        a post-mortem: each recording read as a node, at that instant

Targets: host:port, host (port 9847) or http(s) URL; sources combine and duplicates are asked once.
Every node that does not answer is named with its reason, first line of the text or \"coverage\" in JSON.

Exit status: 0 every target answered; 3 some did not (partial result); 4 none did;
1 other errors (no targets, discovery failed); 2 usage.";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub view: View,
}

#[derive(Debug, Subcommand)]
pub enum View {
    /// Workloads across nodes: nodes, instances, total and max RSS, skew, max pressure, OOM kills.
    #[command(after_help = EXAMPLES)]
    Top(Common),
    /// Per node: answered or why not, version, readiness, pressure, PSI, memory, fragmentation.
    #[command(after_help = EXAMPLES)]
    Nodes(Common),
    /// OOM kills of every node merged by time, storms marked.
    #[command(after_help = EXAMPLES)]
    Oom(OomArgs),
    /// The cross-node diagnostics, each finding with its evidence and a verdict.
    #[command(after_help = EXAMPLES)]
    Diagnose(DiagnoseArgs),
    /// A relay: polls the fleet every --interval and serves the views as JSON
    /// (/api/v1/cluster/{top,nodes,oom,diagnose}) and the findings as Prometheus /metrics.
    #[command(after_help = EXAMPLES)]
    Serve(ServeArgs),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for a terminal.
    #[default]
    Text,
    /// The view as one JSON document (memtrace_api::cluster).
    Json,
}

/// What every view takes: whom to ask, how, and how to print.
#[derive(Debug, Args)]
pub struct Common {
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub fanout: FanoutArgs,
    #[command(flatten)]
    pub client: ClientOptions,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// The storm rule of `cluster oom`: the same flags and defaults as `cluster diagnose`'s.
#[derive(Clone, Debug, Args)]
pub struct StormArgs {
    /// Kills of one workload and scope with no gap longer than DURATION between them are one
    /// episode…
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = duration_in(Duration::from_secs(1), Duration::from_secs(24 * 3600)))]
    pub storm_window: Duration,
    /// …and a storm when it hits at least N nodes.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub storm_min_nodes: u32,
}

impl StormArgs {
    fn rule(&self) -> views::StormRule {
        views::StormRule {
            window: self.storm_window,
            min_nodes: self.storm_min_nodes,
        }
    }
}

#[derive(Debug, Args)]
pub struct OomArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub storms: StormArgs,
}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub thresholds: Thresholds,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub fanout: FanoutArgs,
    #[command(flatten)]
    pub client: ClientOptions,
    #[command(flatten)]
    pub thresholds: Thresholds,
    /// Address to serve on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9848")]
    pub listen: SocketAddr,
    /// TLS and basic authentication of the relay's own endpoints, in the Prometheus
    /// exporter-toolkit web-config format (as `memtrace daemon --web-config-file`).
    #[arg(long, value_name = "FILE")]
    pub web_config_file: Option<std::path::PathBuf>,
    /// Time between the starts of two rounds (a round longer than this delays the next).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = duration_in(Duration::from_secs(1), Duration::from_secs(3600)))]
    pub interval: Duration,
    /// Series of memtrace_cluster_finding_info at most; the rest are counted in
    /// memtrace_cluster_finding_info_omitted.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_finding_series: usize,
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<ExitCode> {
    match args.view {
        View::Top(common) => {
            let round = ask(&common, None).await?;
            emit(&common, &round, &views::top(&round), render::top)
        }
        View::Nodes(common) => {
            let round = ask(&common, None).await?;
            emit(&common, &round, &views::nodes(&round), render::nodes)
        }
        View::Oom(args) => {
            let round = ask(&args.common, None).await?;
            let view = views::oom(&round, args.storms.rule());
            emit(&args.common, &round, &view, render::oom)
        }
        View::Diagnose(args) => {
            let round = ask(&args.common, Some(&args.thresholds)).await?;
            let report = views::diagnose_report(&round, &args.thresholds);
            emit(&args.common, &round, &report, render::diagnose)
        }
        View::Serve(args) => serve(args).await.map(|()| ExitCode::SUCCESS),
    }
}

/// One round over the targets of `common`. Only `diagnose` (`reduce`: its thresholds) asks for
/// history, reduced as each node answers.
async fn ask(common: &Common, reduce: Option<&Thresholds>) -> anyhow::Result<Round> {
    if !common.targets.recordings.is_empty() {
        let (files, at) = (common.targets.recordings.clone(), common.targets.at.clone());
        let reduce = reduce.cloned();
        return tokio::task::spawn_blocking(move || {
            crate::cluster::recordings::round(&files, at.as_deref(), reduce.as_ref())
        })
        .await
        .context("reading the recordings")?;
    }
    let mut targets = discover(&common.targets, common.fanout.timeout).await?;
    if common.client.scheme() == "https" {
        targets.iter_mut().for_each(Target::prefer_https);
    }
    let client = common
        .client
        .build(common.fanout.timeout)
        .context("building the HTTP client")?;
    let mut fanout = common.fanout.clone();
    if reduce.is_none() {
        fanout.history = Duration::ZERO;
    }
    Ok(fan_out(&client, &targets, &fanout, reduce).await)
}

fn emit<T: Serialize>(
    common: &Common,
    round: &Round,
    view: &T,
    text: fn(&T) -> String,
) -> anyhow::Result<ExitCode> {
    let out = match common.output {
        Output::Text => text(view),
        Output::Json => {
            let mut json = serde_json::to_string_pretty(view).context("serializing the view")?;
            json.push('\n');
            json
        }
    };
    print!("{out}");
    Ok(exit_code(&round.coverage))
}

/// 0 when every target answered, [`EXIT_PARTIAL`] when some did, [`EXIT_NONE_ANSWERED`] when
/// none did.
pub fn exit_code(coverage: &Coverage) -> ExitCode {
    if coverage.failures.is_empty() {
        ExitCode::SUCCESS
    } else if coverage.answered > 0 {
        ExitCode::from(EXIT_PARTIAL)
    } else {
        ExitCode::from(EXIT_NONE_ANSWERED)
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Fail now on targets that can never work, rather than log it every round.
    discover(&args.targets, args.fanout.timeout).await?;
    let client = args
        .client
        .build(args.fanout.timeout)
        .context("building the HTTP client")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::warn!(
        addr = %args.listen,
        "cluster serve: serving /api/v1/cluster/{{top,nodes,oom,diagnose}} and /metrics"
    );
    let web = WebServer::from_flag(args.web_config_file.as_deref()).context("--web-config-file")?;
    let poller = Poller {
        https: args.client.scheme() == "https",
        client,
        targets: args.targets,
        fanout: args.fanout,
        storms: views::StormRule::from(&args.thresholds),
        thresholds: args.thresholds,
        interval: args.interval,
        max_finding_series: args.max_finding_series,
    };
    // SIGTERM is how a Deployment or systemd stops the relay; both end it cleanly.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    };
    relay::serve(listener, poller, Arc::new(web), shutdown)
        .await
        .context("serving")
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;
    use crate::cli::{Cli, Command};

    /// Flags flattened from other modules (client options, thresholds) must not collide with
    /// the views' own: clap checks that only when asked.
    #[test]
    fn the_command_line_is_consistent_and_teaches() {
        Cli::command().debug_assert();
        let mut cli = Cli::command();
        let cluster = cli.find_subcommand_mut("cluster").unwrap();
        for view in ["top", "nodes", "oom", "diagnose", "serve"] {
            let help = cluster
                .find_subcommand_mut(view)
                .unwrap()
                .render_long_help()
                .to_string();
            assert!(
                help.contains("memtrace cluster diagnose --nodes a:9847,b:9847,c:9847"),
                "{view}: {help}"
            );
            assert!(
                help.contains("Exit status: 0 every target answered"),
                "{view}"
            );
        }
        let parsed = Cli::try_parse_from([
            "memtrace",
            "cluster",
            "oom",
            "--nodes",
            "a,b:1",
            "--nodes",
            "c",
            "-o",
            "json",
            "--timeout",
            "500ms",
            "--storm-window",
            "10m",
        ])
        .unwrap();
        let Command::Cluster(cluster) = parsed.command else {
            panic!("not cluster");
        };
        let ClusterArgs {
            view: View::Oom(args),
        } = *cluster
        else {
            panic!("not cluster oom");
        };
        assert_eq!(args.common.targets.nodes, ["a", "b:1", "c"]);
        assert_eq!(args.common.output, Output::Json);
        assert_eq!(args.common.fanout.timeout, Duration::from_millis(500));
        assert_eq!(args.common.fanout.deadline, Duration::from_secs(10));
        assert_eq!(args.common.fanout.concurrency, 64);
        assert_eq!(args.storms.storm_window, Duration::from_secs(600));
        assert!(
            Cli::try_parse_from(["memtrace", "cluster", "top", "--job", "x"]).is_err(),
            "--job without --prometheus"
        );
    }
}
