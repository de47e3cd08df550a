//! Baseline of the cross-node benchmark: the hot-shard question answered by Prometheus instead of
//! `memtrace cluster diagnose`, over the same simulated fleet.
//!
//! For each fleet size it writes the series the daemons would export (OpenMetrics text: every
//! node's `memtrace_node_info` and the anon RSS of its workloads, one point a minute for an
//! hour), backfills them with `promtool tsdb create-blocks-from openmetrics`, starts Prometheus
//! on that data directory and times `GET /api/v1/query` of the `MemtraceHotShard` expression
//! (the recording rules of `deploy/prometheus/memtrace-rules.yml` inlined: what a ruler computes
//! on each evaluation). The fleet has exactly one hot shard; every answer must name it.
use std::{
    fmt::Write as _,
    fs,
    io::{BufWriter, Write as _},
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::{
    Benchmark,
    harness::Env,
    report::{Section, Status, Verdict, md},
    stats::percentile,
};
use crate::say;

/// Fleet sizes of the full benchmark.
/// Workloads per node, each with one instance on every node.
const WORKLOADS: usize = 10;
/// One point a minute for an hour, ending now.
const POINTS: u64 = 60;
const STEP_S: u64 = 60;
/// Queries timed per fleet size.
const QUERIES: usize = 50;

/// `MemtraceHotShard` with `memtrace:instance_rss_anon_bytes`, `…:workload_rss_anon_bytes:median`,
/// `memtrace:workload_instances` and `memtrace:workload_nodes` inlined.
const HOT_SHARD: &str = r#"
(
  (sum by (instance, workload, cgroup) (memtrace_process_rss_bytes{type="anon", comm!="~other", workload!~"|~other"}) * on (instance) group_left (node) memtrace_node_info)
  >= on (workload) group_left ()
  (1.5 * clamp_min(quantile by (workload) (0.5, sum by (instance, workload, cgroup) (memtrace_process_rss_bytes{type="anon", comm!="~other", workload!~"|~other"}) * on (instance) group_left (node) memtrace_node_info), 1))
)
and (sum by (instance, workload, cgroup) (memtrace_process_rss_bytes{type="anon", comm!="~other", workload!~"|~other"}) * on (instance) group_left (node) memtrace_node_info) >= 64 * 1024 * 1024
and on (workload) (count by (workload) (sum by (instance, workload, cgroup) (memtrace_process_rss_bytes{type="anon", comm!="~other", workload!~"|~other"}) * on (instance) group_left (node) memtrace_node_info) >= 3)
and on (workload) (count by (workload) (count by (workload, node) (sum by (instance, workload, cgroup) (memtrace_process_rss_bytes{type="anon", comm!="~other", workload!~"|~other"}) * on (instance) group_left (node) memtrace_node_info)) >= 2)
"#;

/// One fleet size's figures.
pub(super) struct Baseline {
    pub(super) nodes: usize,
    pub(super) series: usize,
    pub(super) backfill: Duration,
    pub(super) query_p50_ms: f64,
    pub(super) query_p99_ms: f64,
}

pub(super) fn bench_cluster_prometheus(env: &Env) -> Result<Section> {
    let work = env.ctx.root.join("target/bench/cluster-prometheus");
    // The same fleet sizes as benchmark 9 (`--cluster-nodes`).
    let results = env
        .args
        .cluster_nodes
        .iter()
        .map(|&nodes| measure(&work, nodes))
        .collect::<Result<Vec<_>>>()?;
    Ok(render(&results))
}

/// Backfills a fleet of `nodes` under `work` and times the hot-shard query on it.
pub(super) fn measure(work: &Path, nodes: usize) -> Result<Baseline> {
    let dir = work.join(format!("{nodes}-nodes"));
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let data = dir.join("data");
    fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() / STEP_S * STEP_S;
    let input = dir.join("fleet.om");
    let series = write_fleet(&input, nodes, now_s)?;

    let started = Instant::now();
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&data)
        .output()
        .context("running promtool tsdb create-blocks-from openmetrics")?;
    ensure!(
        out.status.success(),
        "promtool tsdb create-blocks-from openmetrics failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backfill = started.elapsed();
    fs::remove_file(&input).ok();

    let addr = free_loopback_port()?;
    let config = dir.join("prometheus.yml");
    fs::write(&config, "global:\n  scrape_interval: 1m\n")?;
    let log = fs::File::create(dir.join("prometheus.log"))?;
    let mut prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--storage.tsdb.retention.time=10y")
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus")?,
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    wait_ready(&agent, addr, &mut prometheus)?;

    let url = format!("http://{addr}/api/v1/query");
    let time = (now_s - STEP_S).to_string();
    let mut times = Vec::with_capacity(QUERIES);
    for i in 0..=QUERIES {
        let started = Instant::now();
        let mut response = agent
            .get(&url)
            .query("query", HOT_SHARD)
            .query("time", &time)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let body = response.body_mut().read_to_string()?;
        let elapsed = started.elapsed();
        ensure!(
            response.status() == 200,
            "query failed ({}): {body}",
            response.status()
        );
        let answer: serde_json::Value = serde_json::from_str(&body)?;
        let result = answer["data"]["result"]
            .as_array()
            .context("no data.result in the answer")?;
        ensure!(
            result.len() == 1
                && result[0]["metric"]["node"] == "node-0"
                && result[0]["metric"]["workload"] == "w0",
            "expected the one hot shard (w0 on node-0), got {body}"
        );
        // The first query warms Prometheus' caches: not timed.
        if i > 0 {
            times.push(elapsed.as_secs_f64() * 1e3);
        }
    }
    let baseline = Baseline {
        nodes,
        series,
        backfill,
        query_p50_ms: percentile(&times, 50.0),
        query_p99_ms: percentile(&times, 99.0),
    };
    say(format!(
        "prometheus baseline, {nodes} nodes ({series} series): backfill {:.1} s, hot-shard query p50 {:.1} ms, p99 {:.1} ms",
        backfill.as_secs_f64(),
        baseline.query_p50_ms,
        baseline.query_p99_ms
    ));
    drop(prometheus);
    fs::remove_dir_all(&data).ok();
    Ok(baseline)
}

/// Writes the fleet as OpenMetrics text; returns the number of series. Workload `w0` on `node-0`
/// holds 4× its replicas' anon RSS; every other instance holds 100–119 MiB.
fn write_fleet(path: &Path, nodes: usize, now_s: u64) -> Result<usize> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let first = now_s - (POINTS - 1) * STEP_S;
    writeln!(
        out,
        "# HELP memtrace_node_info The node this daemon runs on."
    )?;
    writeln!(out, "# TYPE memtrace_node_info gauge")?;
    for n in 0..nodes {
        for p in 0..POINTS {
            writeln!(
                out,
                "memtrace_node_info{{instance=\"node-{n}:9847\",job=\"memtrace\",node=\"node-{n}\",hostname=\"node-{n}\",kernel=\"6.18\",version=\"0.1.0\"}} 1 {}",
                first + p * STEP_S
            )?;
        }
    }
    writeln!(out, "# HELP memtrace_process_rss_bytes Resident memory.")?;
    writeln!(out, "# TYPE memtrace_process_rss_bytes gauge")?;
    let mut line = String::new();
    for n in 0..nodes {
        for w in 0..WORKLOADS {
            let base: u64 = (100 + ((n * 7 + w * 3) % 20) as u64) << 20;
            let bytes = if n == 0 && w == 0 { 4 * base } else { base };
            for p in 0..POINTS {
                line.clear();
                let _ = write!(
                    line,
                    "memtrace_process_rss_bytes{{instance=\"node-{n}:9847\",job=\"memtrace\",comm=\"w{w}\",cgroup=\"/w{w}\",pod_uid=\"\",container_id=\"\",workload=\"w{w}\",type=\"anon\"}} {bytes} {}",
                    first + p * STEP_S
                );
                writeln!(out, "{line}")?;
            }
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    Ok(nodes * (WORKLOADS + 1))
}

fn free_loopback_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn wait_ready(agent: &ureq::Agent, addr: SocketAddr, prometheus: &mut Killed) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = prometheus.0.try_wait()? {
            bail!("prometheus exited ({status}) before it was ready");
        }
        if agent
            .get(format!("http://{addr}/-/ready"))
            .call()
            .is_ok_and(|r| r.status() == 200)
        {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("prometheus not ready on {addr} after 60 s")
}

/// A child killed (and reaped) when it goes out of scope, error paths included.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn render(results: &[Baseline]) -> Section {
    let mut section = Section::new(Benchmark::ClusterPrometheus);
    md!(
        section.body,
        "The hot-shard question through Prometheus (the baseline of `memtrace cluster diagnose`): the fleet's series backfilled with `promtool tsdb create-blocks-from openmetrics` ({WORKLOADS} workloads with one instance on every node, one point a minute for an hour), then `MemtraceHotShard`'s expression with its recording rules inlined, queried {QUERIES} times after one warm-up; each answer must name the one hot shard.\n"
    );
    md!(
        section.body,
        "| nodes | series | backfill | query p50 | query p99 |"
    );
    md!(section.body, "|---|---|---|---|---|");
    for r in results {
        md!(
            section.body,
            "| {} | {} | {:.1} s | {:.1} ms | {:.1} ms |",
            r.nodes,
            r.series,
            r.backfill.as_secs_f64(),
            r.query_p50_ms,
            r.query_p99_ms
        );
    }
    for r in results {
        section.verdicts.push(Verdict::new(
            &format!("Prometheus skew query p99, {} nodes", r.nodes),
            format!("{:.1} ms", r.query_p99_ms),
            "baseline (no target)",
            Status::Met,
        ));
    }
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benchmark at a small scale, once, by hand: `cargo test -p xtask -- --ignored
    /// cluster_prometheus` (needs promtool and prometheus).
    #[test]
    #[ignore = "starts Prometheus; run by hand"]
    fn cluster_prometheus_small() -> Result<()> {
        let work = std::env::temp_dir().join(format!("memtrace-bench-prom-{}", std::process::id()));
        let result = measure(&work, 20);
        fs::remove_dir_all(&work).ok();
        let baseline = result?;
        assert_eq!(baseline.series, 20 * (WORKLOADS + 1));
        assert!(baseline.query_p99_ms >= baseline.query_p50_ms);
        let section = render(&[baseline]);
        println!("{}", section.body);
        Ok(())
    }
}
