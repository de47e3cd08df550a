//! `memtrace cluster serve`: a relay that asks the fleet every `--interval` and serves the merged
//! views as JSON and the findings as Prometheus metrics, for dashboards.
//!
//! One task, the poller, owns the rounds: it discovers the targets (again each round, so nodes
//! that come and go are followed), fans out, builds every view and publishes them at once on a
//! `watch` channel, which holds exactly the latest publication (bounded by construction; a slow
//! reader never holds the poller back). Handlers only read the latest publication, so a request
//! never triggers a fan-out and any number of dashboards cost the fleet nothing more.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use memtrace_api::cluster::{NodesView, OomView, TopView};
use memtrace_api::diagnose::{DiagnoseReport, FindingKind};
use prometheus::{Gauge, GaugeVec, Opts, Registry, TextEncoder};
use serde::Serialize;
use tokio::sync::watch;

use super::diagnose::Thresholds;
use super::fanout::{FanoutArgs, Round, fan_out};
use super::targets::{Target, TargetArgs, discover};
use super::views::{self, StormRule};

/// The views of one round, published together.
#[derive(Debug)]
pub struct Publication {
    pub top: TopView,
    pub nodes: NodesView,
    pub oom: OomView,
    pub diagnose: DiagnoseReport,
    /// `/metrics`, rendered once per round.
    pub metrics: String,
}

/// What the poller needs.
#[derive(Clone, Debug)]
pub struct Poller {
    pub client: reqwest::Client,
    pub targets: TargetArgs,
    pub fanout: FanoutArgs,
    pub thresholds: Thresholds,
    pub storms: StormRule,
    pub interval: Duration,
    /// Speak HTTPS to targets given as `host:port` (a TLS client option is set).
    pub https: bool,
    /// Series of `memtrace_cluster_finding_info` at most (the rest are counted).
    pub max_finding_series: usize,
}

impl Poller {
    /// Poll until the receiver side is gone; each round replaces the publication.
    pub async fn run(self, publish: watch::Sender<Option<Arc<Publication>>>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut targets: Vec<Target> = Vec::new();
        // Target → the node name it last answered with, so a failure names the node too.
        let mut known: HashMap<String, String> = HashMap::new();
        loop {
            ticks.tick().await;
            match discover(&self.targets, self.fanout.timeout).await {
                Ok(mut found) => {
                    if self.https {
                        found.iter_mut().for_each(Target::prefer_https);
                    }
                    targets = found;
                }
                // Asked again next round; meanwhile the last targets known are still asked.
                Err(err) => tracing::warn!("cluster serve: discovery failed: {err}"),
            }
            let mut round =
                fan_out(&self.client, &targets, &self.fanout, Some(&self.thresholds)).await;
            for answer in &round.answers {
                known.insert(answer.target.clone(), views::node_name(answer).to_owned());
            }
            let asked: std::collections::HashSet<&str> =
                targets.iter().map(|t| t.spec.as_str()).collect();
            known.retain(|target, _| asked.contains(target.as_str()));
            for failure in &mut round.coverage.failures {
                failure.node = known.get(&failure.target).cloned();
            }
            let publication = self.publish(&round);
            if publish.send(Some(Arc::new(publication))).is_err() {
                return;
            }
        }
    }

    fn publish(&self, round: &Round) -> Publication {
        let diagnose = views::diagnose_report(round, &self.thresholds);
        let metrics = render_metrics(round, &diagnose, self.max_finding_series)
            .unwrap_or_else(|err| format!("# rendering the metrics failed: {err}\n"));
        Publication {
            top: views::top(round),
            nodes: views::nodes(round),
            oom: views::oom(round, self.storms),
            diagnose,
            metrics,
        }
    }
}

const ALL_KINDS: [FindingKind; 5] = [
    FindingKind::HotShard,
    FindingKind::Leak,
    FindingKind::OomStorm,
    FindingKind::NoisyNeighbour,
    FindingKind::AppOrNode,
];

fn kind_label(kind: FindingKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The relay's metrics. Cardinality is bounded: a fixed set of kinds and states, and at most
/// `max_info` finding series (the ones left out are counted), whatever the fleet says.
pub fn render_metrics(
    round: &Round,
    report: &DiagnoseReport,
    max_info: usize,
) -> prometheus::Result<String> {
    let registry = Registry::new();
    let gauge_vec = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<GaugeVec> {
        let gauge = GaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(gauge.clone()))?;
        Ok(gauge)
    };
    let gauge = |name: &str, help: &str| -> prometheus::Result<Gauge> {
        let gauge = Gauge::with_opts(Opts::new(name, help))?;
        registry.register(Box::new(gauge.clone()))?;
        Ok(gauge)
    };
    let nodes = gauge_vec(
        "memtrace_cluster_nodes",
        "Targets of the last round, by whether they answered.",
        &["state"],
    )?;
    nodes
        .with_label_values(&["answered"])
        .set(f64::from(report.coverage.answered));
    nodes
        .with_label_values(&["failed"])
        .set(report.coverage.failures.len() as f64);
    let findings = gauge_vec(
        "memtrace_cluster_findings",
        "Findings of the last round's diagnostics, by kind.",
        &["kind"],
    )?;
    for kind in ALL_KINDS {
        let count = report.findings.iter().filter(|f| f.kind == kind).count();
        findings
            .with_label_values(&[kind_label(kind).as_str()])
            .set(count as f64);
    }
    let info = gauge_vec(
        "memtrace_cluster_finding_info",
        "One series per finding (kind, workload), at most --max-finding-series of them.",
        &["kind", "workload"],
    )?;
    let mut pairs: Vec<(String, &str)> = report
        .findings
        .iter()
        .map(|f| (kind_label(f.kind), f.workload.as_str()))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    for (kind, workload) in pairs.iter().take(max_info) {
        info.with_label_values(&[kind.as_str(), workload]).set(1.0);
    }
    gauge(
        "memtrace_cluster_finding_info_omitted",
        "Findings left out of memtrace_cluster_finding_info by its cap.",
    )?
    .set(pairs.len().saturating_sub(max_info) as f64);
    gauge(
        "memtrace_cluster_round_duration_seconds",
        "How long the last round of the fan-out took.",
    )?
    .set(round.elapsed.as_secs_f64());
    gauge(
        "memtrace_cluster_round_timestamp_seconds",
        "When the last round finished (Unix time).",
    )?
    .set(round.generated_unix_ms as f64 / 1000.0);
    TextEncoder::new().encode_to_string(&registry.gather())
}

type Latest = watch::Receiver<Option<Arc<Publication>>>;

/// The relay's routes over the latest publication.
pub fn router(latest: Latest) -> Router {
    Router::new()
        .route("/api/v1/cluster/top", get(top))
        .route("/api/v1/cluster/nodes", get(nodes))
        .route("/api/v1/cluster/oom", get(oom))
        .route("/api/v1/cluster/diagnose", get(diagnose))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found; routes: /api/v1/cluster/{top,nodes,oom,diagnose}, /metrics, /healthz\n",
            )
        })
        .with_state(latest)
}

fn not_yet() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "no round finished yet; retry after the first --interval\n",
    )
        .into_response()
}

async fn top(State(latest): State<Latest>) -> Response {
    latest
        .borrow()
        .clone()
        .map_or_else(not_yet, |p| json(&p.top))
}

async fn nodes(State(latest): State<Latest>) -> Response {
    latest
        .borrow()
        .clone()
        .map_or_else(not_yet, |p| json(&p.nodes))
}

async fn oom(State(latest): State<Latest>) -> Response {
    latest
        .borrow()
        .clone()
        .map_or_else(not_yet, |p| json(&p.oom))
}

async fn diagnose(State(latest): State<Latest>) -> Response {
    latest
        .borrow()
        .clone()
        .map_or_else(not_yet, |p| json(&p.diagnose))
}

fn json<T: Serialize>(view: &T) -> Response {
    match serde_json::to_vec(view) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("serializing the view failed: {err}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(latest): State<Latest>) -> Response {
    let Some(publication) = latest.borrow().clone() else {
        return not_yet();
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        publication.metrics.clone(),
    )
        .into_response()
}

/// Poll and serve on `listener` until `shutdown` completes.
/// Serves the relay on the daemon's hardened server (connection cap, header and request
/// timeouts) with `web`'s TLS and authentication.
pub async fn serve(
    listener: tokio::net::TcpListener,
    poller: Poller,
    web: Arc<crate::web::server::WebServer>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (publish, latest) = watch::channel(None);
    let polling = tokio::spawn(poller.run(publish));
    let served = crate::export::http::serve_router(
        listener,
        router(latest),
        Arc::new(crate::export::http::Connections::default()),
        crate::export::http::Limits::default(),
        web,
        shutdown,
    )
    .await;
    polling.abort();
    served
}
