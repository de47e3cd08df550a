//! The fan-out against fake daemons: real HTTP servers on 127.0.0.1 ephemeral ports serving
//! summaries built from the contract's types, and peers that misbehave in every way the issue
//! names (refusing, slow, garbage, other schema versions, huge bodies).
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use memtrace_api::cluster::{NodesView, OomView, TopView};
use memtrace_api::diagnose::{DiagnoseReport, Finding, FindingKind};
use memtrace_api::workloads::{
    InstanceSummary, NodeSummary, OomKill, OomKillCounts, OomScope, WORKLOADS_SCHEMA_VERSION,
    WorkloadKind, WorkloadSummary, WorkloadsResponse,
};

use super::fanout::{FanoutArgs, Round, fan_out};
use super::relay::{Poller, render_metrics};
use super::targets::{Target, TargetArgs, discover};
use super::views::{self, StormRule};
use super::{diagnose::Thresholds, render};
use crate::web::client::ClientOptions;

const MIB: u64 = 1 << 20;
/// 2026-11-30 00:00:00 UTC.
const T0: u64 = 1_795_996_800_000;

/// A node's summary with `workloads` as (workload, [(instance, anon MiB)]).
fn summary(
    node: &str,
    workloads: &[(&str, &[(&str, u64)])],
    ooms: Vec<OomKill>,
) -> WorkloadsResponse {
    WorkloadsResponse {
        schema_version: WORKLOADS_SCHEMA_VERSION,
        node: NodeSummary {
            name: node.to_owned(),
            hostname: node.to_owned(),
            memtrace_version: "0.1.0".to_owned(),
            ready: true,
            mem_total_bytes: 4096 * MIB,
            mem_available_bytes: 1024 * MIB,
            pressure_score: 12.0,
            ..NodeSummary::default()
        },
        timestamp_unix_ms: T0,
        rate_window_seconds: 10.0,
        workloads: workloads
            .iter()
            .map(|(workload, instances)| WorkloadSummary {
                workload: (*workload).to_owned(),
                kind: WorkloadKind::Systemd,
                pinned: false,
                instances: instances
                    .iter()
                    .map(|(instance, anon)| InstanceSummary {
                        instance: (*instance).to_owned(),
                        processes: 1,
                        rss_anon_bytes: anon * MIB,
                        rss_file_bytes: MIB,
                        pressure_score: *anon as f64 / 100.0,
                        oom_kills: OomKillCounts {
                            memcg: u64::from(instance.ends_with("oom")),
                            global: 0,
                        },
                        ..InstanceSummary::default()
                    })
                    .collect(),
                omitted_instances: None,
            })
            .collect(),
        ooms,
        ..WorkloadsResponse::default()
    }
}

fn kill(at_ms: u64, workload: &str, instance: &str, scope: OomScope) -> OomKill {
    OomKill {
        timestamp_unix_ms: at_ms,
        workload: workload.to_owned(),
        instance: instance.to_owned(),
        victim_pid: 4242,
        victim_comm: "worker".to_owned(),
        scope,
        rss_bytes: Some(256 * MIB),
        cgroup_limit_bytes: Some(256 * MIB),
        ..OomKill::default()
    }
}

/// How a fake daemon answers `/api/v1/workloads`.
#[derive(Clone)]
enum Peer {
    Answers(WorkloadsResponse),
    SlowThenAnswers(Duration, WorkloadsResponse),
    Raw(StatusCode, Vec<u8>),
    /// Answers while the flag is set, 503 after.
    WhileUp(Arc<AtomicBool>, WorkloadsResponse),
}

/// What a fake daemon saw.
#[derive(Default)]
struct Seen {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    gzip_accepted: AtomicUsize,
    history_zero: AtomicUsize,
}

async fn fake_daemon(peer: Peer) -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let state = Arc::clone(&seen);
    let app = Router::new().route(
        "/api/v1/workloads",
        get(move |headers: HeaderMap, query: axum::extract::RawQuery| {
            let (peer, seen) = (peer.clone(), Arc::clone(&state));
            async move {
                let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
                if headers
                    .get("accept-encoding")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("gzip"))
                {
                    seen.gzip_accepted.fetch_add(1, Ordering::SeqCst);
                }
                if query.0.as_deref() == Some("history=0") {
                    seen.history_zero.fetch_add(1, Ordering::SeqCst);
                }
                let response = match peer {
                    Peer::Answers(body) => axum::Json(body).into_response(),
                    Peer::SlowThenAnswers(delay, body) => {
                        tokio::time::sleep(delay).await;
                        axum::Json(body).into_response()
                    }
                    Peer::Raw(status, body) => (status, body).into_response(),
                    Peer::WhileUp(up, body) if up.load(Ordering::SeqCst) => {
                        axum::Json(body).into_response()
                    }
                    Peer::WhileUp(..) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                };
                seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                response
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

/// A port nothing listens on.
async fn refused() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn targets(addrs: &[SocketAddr]) -> Vec<Target> {
    addrs
        .iter()
        .map(|a| Target::parse(&a.to_string()).unwrap())
        .collect()
}

fn client(timeout: Duration) -> reqwest::Client {
    ClientOptions::default().build(timeout).unwrap()
}

/// Three healthy nodes: `redis` on each (node-b's replica holds 3× the data), `api` twice with a
/// memcg OOM kill on node-a and node-c two minutes apart (a storm), and a lone kill an hour
/// earlier.
async fn healthy_fleet() -> Vec<SocketAddr> {
    let a = summary(
        "node-a",
        &[
            ("redis-server.service", &[("redis-1", 100)]),
            ("api", &[("api-1-oom", 50)]),
        ],
        vec![
            kill(T0, "api", "api-1-oom", OomScope::Memcg),
            kill(T0 - 3_600_000, "batch", "batch-1", OomScope::Global),
        ],
    );
    let b = summary(
        "node-b",
        &[("redis-server.service", &[("redis-2", 300)])],
        vec![],
    );
    let c = summary(
        "node-c",
        &[
            ("redis-server.service", &[("redis-3", 110)]),
            ("api", &[("api-2-oom", 60)]),
        ],
        vec![kill(T0 + 120_000, "api", "api-2-oom", OomScope::Memcg)],
    );
    let mut addrs = Vec::new();
    for node in [a, b, c] {
        addrs.push(fake_daemon(Peer::Answers(node)).await.0);
    }
    addrs
}

#[tokio::test]
async fn every_node_answers_and_the_views_merge_them() {
    let addrs = healthy_fleet().await;
    let round = fan_out(
        &client(Duration::from_secs(2)),
        &targets(&addrs),
        &FanoutArgs::default(),
        None,
    )
    .await;
    assert_eq!((round.coverage.asked, round.coverage.answered), (3, 3));
    assert!(round.coverage.failures.is_empty());
    assert_eq!(
        crate::cli::cluster::exit_code(&round.coverage),
        std::process::ExitCode::SUCCESS
    );

    let top = views::top(&round);
    let redis = top
        .workloads
        .iter()
        .find(|w| w.workload == "redis-server.service")
        .unwrap();
    assert_eq!((redis.nodes, redis.instances), (3, 3));
    assert_eq!(redis.rss_bytes_total, (100 + 300 + 110 + 3) * MIB);
    assert_eq!(redis.rss_bytes_max, 301 * MIB);
    let largest = redis.largest.as_ref().unwrap();
    assert_eq!(
        (largest.node.as_str(), largest.instance.as_str()),
        ("node-b", "redis-2")
    );
    // max 300 over median 110.
    assert!((redis.anon_skew.unwrap() - 300.0 / 110.0).abs() < 1e-9);
    assert_eq!(redis.pressure_score_max, 3.0);
    // Highest pressure first.
    assert_eq!(top.workloads[0].workload, "redis-server.service");
    let api = top.workloads.iter().find(|w| w.workload == "api").unwrap();
    assert_eq!((api.nodes, api.oom_kills.memcg), (2, 2));
    let text = render::top(&top);
    assert!(text.starts_with("answered 3/3 nodes\n"), "{text}");
    assert!(text.contains("node-b/redis-2"), "{text}");
    assert!(text.contains("2.73"), "{text}");

    let nodes = views::nodes(&round);
    let names: Vec<&str> = nodes
        .nodes
        .iter()
        .map(|n| n.node.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(names, ["node-a", "node-b", "node-c"]);
    assert_eq!(nodes.nodes[0].workloads, 2);
    let text = render::nodes(&nodes);
    assert!(
        text.contains("node-a") && text.contains("ready") && text.contains("1.0 GiB"),
        "{text}"
    );

    let oom = views::oom(&round, StormRule::default());
    assert_eq!(oom.kills.len(), 3);
    // Newest first.
    assert_eq!(oom.kills[0].node, "node-c");
    assert_eq!(oom.storms.len(), 1);
    let storm = &oom.storms[0];
    assert_eq!(
        (
            storm.workload.as_str(),
            storm.scope,
            storm.kills,
            storm.nodes.clone()
        ),
        (
            "api",
            OomScope::Memcg,
            2,
            vec!["node-a".to_owned(), "node-c".to_owned()]
        )
    );
    assert_eq!(
        (storm.first_unix_ms, storm.last_unix_ms),
        (T0, T0 + 120_000)
    );
    let in_storm: Vec<Option<u32>> = oom.kills.iter().map(|k| k.storm).collect();
    assert_eq!(in_storm, [Some(0), Some(0), None]);
    let text = render::oom(&oom);
    assert!(
        text.contains("STORM #0: api (memcg) 2 kills on 2 nodes (node-a, node-c)"),
        "{text}"
    );

    // A narrower window than the kills' gap: no storm.
    let narrow = views::oom(
        &round,
        StormRule {
            window: Duration::from_secs(60),
            min_nodes: 2,
        },
    );
    assert!(narrow.storms.is_empty());

    // JSON round-trips through the contract's types.
    let json = serde_json::to_string(&top).unwrap();
    assert_eq!(serde_json::from_str::<TopView>(&json).unwrap(), top);
    let json = serde_json::to_string(&oom).unwrap();
    assert_eq!(serde_json::from_str::<OomView>(&json).unwrap(), oom);
}

#[tokio::test]
async fn every_misbehaving_peer_is_its_own_clear_error() {
    let good = fake_daemon(Peer::Answers(summary("node-a", &[], vec![])))
        .await
        .0;
    let dead = refused().await;
    let slow = fake_daemon(Peer::SlowThenAnswers(
        Duration::from_secs(30),
        summary("node-slow", &[], vec![]),
    ))
    .await
    .0;
    let garbage = fake_daemon(Peer::Raw(
        StatusCode::OK,
        b"<html>\x1b[31mhello</html>".to_vec(),
    ))
    .await
    .0;
    let mut future = serde_json::to_value(summary("node-f", &[], vec![])).unwrap();
    future["schema_version"] = serde_json::json!(7);
    let future = fake_daemon(Peer::Raw(StatusCode::OK, future.to_string().into_bytes()))
        .await
        .0;
    let mut old = serde_json::to_value(summary("node-o", &[], vec![])).unwrap();
    old["schema_version"] = serde_json::json!(0);
    let old = fake_daemon(Peer::Raw(StatusCode::OK, old.to_string().into_bytes()))
        .await
        .0;
    let other_json = fake_daemon(Peer::Raw(StatusCode::OK, b"{\"status\":\"ok\"}".to_vec()))
        .await
        .0;
    let malformed = fake_daemon(Peer::Raw(
        StatusCode::OK,
        br#"{"schema_version":1,"node":{"name":3}}"#.to_vec(),
    ))
    .await
    .0;
    let huge = fake_daemon(Peer::Raw(StatusCode::OK, vec![b' '; 4 << 20]))
        .await
        .0;
    let missing = fake_daemon(Peer::Raw(StatusCode::NOT_FOUND, b"not found".to_vec()))
        .await
        .0;
    let addrs = [
        good, dead, slow, garbage, future, old, other_json, malformed, huge, missing,
    ];
    let args = FanoutArgs {
        timeout: Duration::from_millis(500),
        max_body: MIB,
        ..FanoutArgs::default()
    };
    let started = Instant::now();
    let round = fan_out(&client(args.timeout), &targets(&addrs), &args, None).await;
    // The slow peer costs its timeout, not its 30 s.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((round.coverage.asked, round.coverage.answered), (10, 1));
    assert_eq!(round.answers[0].summary.node.name, "node-a");
    let errors: Vec<&str> = round
        .coverage
        .failures
        .iter()
        .map(|f| f.error.as_str())
        .collect();
    let expect = [
        "connecting: connection refused",
        "timed out after 0.5 s",
        "not JSON (expected value at line 1 column 1); body starts \"<html>\\e[31mhello</html>\"",
        "unsupported schema_version 7 (this memtrace reads 1; the daemon is newer)",
        "unsupported schema_version 0 (this memtrace reads 1; the daemon is older)",
        "not a workloads summary (no schema_version); body starts \"{\"status\":\"ok\"}\"",
        "malformed summary: invalid type: integer `3`, expected a string at line 1 column 36",
        "summary larger than 1.0 MiB (--max-body), not read",
        "HTTP 404 Not Found from /api/v1/workloads (not a memtrace daemon, or one older than the workloads API)",
    ];
    for (error, expected) in errors.iter().zip(expect) {
        assert_eq!(*error, expected);
    }
    assert_eq!(errors.len(), expect.len());
    let failure = &round.coverage.failures[0];
    assert_eq!(failure.target, dead.to_string());
    assert!(failure.elapsed_seconds < 0.5, "{failure:?}");
    assert_eq!(
        crate::cli::cluster::exit_code(&round.coverage),
        std::process::ExitCode::from(crate::cli::cluster::EXIT_PARTIAL)
    );
    let line = render::coverage(&round.coverage);
    assert!(
        line.starts_with(&format!(
            "answered 1/10 nodes; {dead}: connecting: connection refused after 0.0 s; {slow}: timed out after 0.5 s; "
        )),
        "{line}"
    );
    assert!(!line.contains('\x1b'), "{line}");
    assert_eq!(line.lines().count(), 1);
    let text = render::nodes(&views::nodes(&round));
    assert!(
        text.contains(&format!(
            "\nNOT ANSWERED {dead}: connecting: connection refused\n"
        )),
        "{text}"
    );
    assert!(text.contains("\nnode-a "), "{text}");
}

#[tokio::test]
async fn the_deadline_bounds_the_round_and_says_so() {
    let slow = fake_daemon(Peer::SlowThenAnswers(
        Duration::from_secs(30),
        summary("node-slow", &[], vec![]),
    ))
    .await
    .0;
    let args = FanoutArgs {
        timeout: Duration::from_secs(20),
        deadline: Duration::from_millis(300),
        ..FanoutArgs::default()
    };
    let started = Instant::now();
    let round = fan_out(
        &client(args.timeout),
        &targets(&[slow, refused().await]),
        &args,
        None,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(round.coverage.answered, 0);
    assert_eq!(
        round.coverage.failures[0].error,
        "no answer within the 0.3 s deadline (--deadline)"
    );
    assert_eq!(
        crate::cli::cluster::exit_code(&round.coverage),
        std::process::ExitCode::from(crate::cli::cluster::EXIT_NONE_ANSWERED)
    );
}

#[tokio::test]
async fn concurrency_is_bounded_and_gzip_is_offered() {
    let (addr, seen) = fake_daemon(Peer::SlowThenAnswers(
        Duration::from_millis(100),
        summary("node-a", &[], vec![]),
    ))
    .await;
    // The same daemon under four names.
    let all: Vec<Target> = (0..4)
        .map(|i| Target {
            spec: format!("node-{i}"),
            ..Target::parse(&addr.to_string()).unwrap()
        })
        .collect();
    let args = FanoutArgs {
        concurrency: 2,
        history: Duration::ZERO,
        ..FanoutArgs::default()
    };
    let started = Instant::now();
    let round = fan_out(&client(args.timeout), &all, &args, None).await;
    assert_eq!(round.coverage.answered, 4, "{:?}", round.coverage);
    assert_eq!(seen.max_in_flight.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(seen.gzip_accepted.load(Ordering::SeqCst), 4);
    assert_eq!(seen.history_zero.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn prometheus_discovery_takes_the_jobs_active_targets() {
    let answer = serde_json::json!({
        "status": "success",
        "data": {"activeTargets": [
            {"labels": {"job": "memtrace", "instance": "10.0.0.1:9847"}, "scrapePool": "memtrace",
             "scrapeUrl": "http://10.0.0.1:9847/metrics", "health": "up"},
            {"labels": {"job": "memtrace"}, "scrapePool": "memtrace",
             "scrapeUrl": "https://10.0.0.2:9847/metrics", "health": "down"},
            {"labels": {"job": "node"}, "scrapePool": "node",
             "scrapeUrl": "http://10.0.0.1:9100/metrics", "health": "up"}
        ]}
    });
    let app = Router::new().route(
        "/api/v1/targets",
        get(move |query: axum::extract::RawQuery| {
            let answer = answer.clone();
            async move {
                assert_eq!(query.0.as_deref(), Some("state=active"));
                axum::Json(answer)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut args = TargetArgs {
        prometheus: Some(format!("http://{addr}")),
        job: "memtrace".to_owned(),
        ..TargetArgs::default()
    };
    let found = discover(&args, Duration::from_secs(2)).await.unwrap();
    let specs: Vec<&str> = found.iter().map(|t| t.spec.as_str()).collect();
    assert_eq!(specs, ["10.0.0.1:9847", "https://10.0.0.2:9847/"]);
    args.job = "absent".to_owned();
    let err = discover(&args, Duration::from_secs(2)).await.unwrap_err();
    assert!(
        err.to_string()
            .ends_with("no active targets of job \"absent\" (3 active in all)"),
        "{err}"
    );
}

#[test]
fn text_from_nodes_is_escaped() {
    let round = Round {
        answers: vec![super::diagnose::NodeAnswer {
            target: "t".to_owned(),
            summary: summary(
                "node\x1b]0;pwned\x07",
                &[("evil\nFAKE LINE", &[("i", 1)])],
                vec![],
            ),
            trends: None,
        }],
        ..Round::default()
    };
    for text in [
        render::top(&views::top(&round)),
        render::nodes(&views::nodes(&round)),
    ] {
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text}");
        assert!(!text.contains("\nFAKE LINE"), "{text}");
    }
}

fn finding(kind: FindingKind, workload: &str) -> Finding {
    Finding {
        kind,
        workload: workload.to_owned(),
        verdict: format!("{workload} is in trouble"),
        ..Finding::default()
    }
}

#[test]
fn finding_series_are_capped_and_counted() {
    let mut report = DiagnoseReport::default();
    report.coverage.answered = 2;
    report
        .coverage
        .failures
        .push(memtrace_api::cluster::NodeFailure::default());
    report.findings = (0..5)
        .map(|i| finding(FindingKind::Leak, &format!("w{i}")))
        .chain([finding(FindingKind::HotShard, "redis")])
        .collect();
    let text = render_metrics(&Round::default(), &report, 4).unwrap();
    let series = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .count()
    };
    assert_eq!(series("memtrace_cluster_finding_info"), 4);
    assert!(
        text.contains("memtrace_cluster_finding_info_omitted 2"),
        "{text}"
    );
    assert!(
        text.contains("memtrace_cluster_findings{kind=\"leak\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("memtrace_cluster_findings{kind=\"oom_storm\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("memtrace_cluster_nodes{state=\"answered\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("memtrace_cluster_nodes{state=\"failed\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn the_relay_serves_the_latest_round() {
    let mut nodes: Vec<String> = healthy_fleet()
        .await
        .iter()
        .map(ToString::to_string)
        .collect();
    let dead = refused().await;
    nodes.push(dead.to_string());
    let up = Arc::new(AtomicBool::new(true));
    let (flaky, _) = fake_daemon(Peer::WhileUp(
        Arc::clone(&up),
        summary("node-flaky", &[], vec![]),
    ))
    .await;
    nodes.push(flaky.to_string());
    let poller = Poller {
        client: client(Duration::from_secs(1)),
        targets: TargetArgs {
            nodes,
            ..TargetArgs::default()
        },
        fanout: FanoutArgs {
            timeout: Duration::from_secs(1),
            ..FanoutArgs::default()
        },
        thresholds: Thresholds::default(),
        storms: StormRule::default(),
        interval: Duration::from_millis(100),
        https: false,
        max_finding_series: 10,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let web = Arc::new(crate::web::server::WebServer::plain());
    let server = tokio::spawn(super::relay::serve(listener, poller, web, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("http://{relay}{path}")).send();
    let deadline = Instant::now() + Duration::from_secs(10);
    let top: TopView = loop {
        let response = get("/api/v1/cluster/top").await.unwrap();
        if response.status() == StatusCode::OK {
            break response.json().await.unwrap();
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "no round within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((top.coverage.asked, top.coverage.answered), (5, 4));
    assert_eq!(top.coverage.failures[0].target, dead.to_string());
    assert!(
        top.workloads
            .iter()
            .any(|w| w.workload == "redis-server.service" && w.nodes == 3)
    );
    let nodes: NodesView = get("/api/v1/cluster/nodes")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nodes.nodes.len(), 5);
    assert!(
        nodes.nodes[4]
            .error
            .as_deref()
            .unwrap()
            .contains("connection refused")
    );
    let oom: OomView = get("/api/v1/cluster/oom")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oom.storms.len(), 1);
    let report: DiagnoseReport = get("/api/v1/cluster/diagnose")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report.coverage.answered, 4);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("memtrace_cluster_nodes{state=\"answered\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("memtrace_cluster_nodes{state=\"failed\"} 1"),
        "{metrics}"
    );
    assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok\n");
    assert_eq!(get("/nope").await.unwrap().status(), StatusCode::NOT_FOUND);
    // A node that answered and then stops is named in the coverage by its last known name.
    up.store(false, Ordering::SeqCst);
    let failure = loop {
        let top: TopView = get("/api/v1/cluster/top")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(failure) = top
            .coverage
            .failures
            .iter()
            .find(|f| f.target == flaky.to_string())
        {
            break failure.clone();
        }
        assert!(Instant::now() < deadline, "the flaky node never failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failure.node.as_deref(), Some("node-flaky"));
    assert_eq!(
        failure.error,
        "HTTP 503 Service Unavailable from /api/v1/workloads"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// `cluster oom` marks exactly the storms `cluster diagnose` reports: one rule. Kills 4 min apart
/// chain into one episode over 8 min (a window anchored at the first kill would split it).
#[test]
fn the_oom_view_and_the_diagnostics_agree_on_storms() {
    let answer = |node: &str, ooms| super::diagnose::NodeAnswer {
        target: format!("{node}:9847"),
        summary: summary(node, &[("api", &[("api-1", 50)])], ooms),
        trends: None,
    };
    let minute = 60_000;
    let round = Round {
        generated_unix_ms: T0 + 10 * minute,
        answers: vec![
            answer("node-a", vec![kill(T0, "api", "api-1", OomScope::Memcg)]),
            answer(
                "node-b",
                vec![kill(T0 + 4 * minute, "api", "api-1", OomScope::Memcg)],
            ),
            answer(
                "node-c",
                vec![
                    kill(T0 + 8 * minute, "api", "api-1", OomScope::Memcg),
                    kill(T0 + 9 * minute, "api", "api-1", OomScope::Global),
                ],
            ),
        ],
        coverage: memtrace_api::cluster::Coverage::default(),
        elapsed: Duration::ZERO,
    };
    let thresholds = Thresholds::default();
    let view = views::oom(&round, StormRule::from(&thresholds));
    let findings: Vec<Finding> =
        super::diagnose::diagnose(&round.answers, &thresholds, round.generated_unix_ms)
            .into_iter()
            .filter(|f| f.kind == FindingKind::OomStorm)
            .collect();
    let from_view: Vec<(String, Vec<String>)> = view
        .storms
        .iter()
        .map(|s| (s.workload.clone(), s.nodes.clone()))
        .collect();
    let from_diagnose: Vec<(String, Vec<String>)> = findings
        .iter()
        .map(|f| (f.workload.clone(), f.nodes.clone()))
        .collect();
    assert_eq!(
        from_view,
        [(
            "api".to_owned(),
            vec![
                "node-a".to_owned(),
                "node-b".to_owned(),
                "node-c".to_owned()
            ]
        )]
    );
    assert_eq!(from_view, from_diagnose);
}

/// `diagnose` asks for history and reduces each answer as it arrives: the round keeps no
/// history point, and the leak the points showed is still found.
#[tokio::test]
async fn a_diagnose_round_keeps_trends_not_histories() {
    let now_s = super::fanout::now_unix_ms() / 1000;
    let points = 120u64;
    let start = now_s - (points - 1) * 60;
    let mut node = summary("node-a", &[("api", &[("api-1", 200)])], vec![]);
    node.history.step_seconds = 60;
    let instance = &mut node.workloads[0].instances[0];
    instance.started_unix_ms = (start - 600) * 1000;
    // +60 MiB/h, steadily: 30 %/h of 200 MiB.
    let rss: Vec<u64> = (0..points).map(|i| (200 + i) * MIB).collect();
    instance.history = memtrace_api::workloads::InstanceHistory {
        start_unix_s: start,
        rss_anon_bytes: rss.clone(),
        rss_bytes: rss,
        reclaim_stall_seconds_per_sec: vec![0.0; points as usize],
    };
    let addr = fake_daemon(Peer::Answers(node)).await.0;
    let thresholds = Thresholds::default();
    let round = fan_out(
        &client(Duration::from_secs(2)),
        &targets(&[addr]),
        &FanoutArgs::default(),
        Some(&thresholds),
    )
    .await;
    let answer = &round.answers[0];
    let history = &answer.summary.workloads[0].instances[0].history;
    assert!(
        history.rss_bytes.is_empty() && history.rss_anon_bytes.is_empty(),
        "{history:?}"
    );
    assert!(answer.trends.is_some());
    let report = views::diagnose_report(&round, &thresholds);
    let leaks: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == memtrace_api::diagnose::FindingKind::Leak)
        .collect();
    assert_eq!(leaks.len(), 1, "{:#?}", report.findings);
    assert_eq!(leaks[0].instances[0].instance, "api-1");
}
