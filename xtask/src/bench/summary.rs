//! Benchmark 8: the cost of `GET /api/v1/workloads` and its per-instance history at 10,000
//! processes. One daemon with the default history (a point a minute, 360 points), two windows of
//! at least a minute each (so each holds a history point), side by side: quiet (nobody asks), then
//! polled (one gzip GET every 15 s, as a `cluster serve` relay does by default). Its figures: the
//! daemon's CPU and RSS in each window, the CPU of one request, the payload raw and gzipped, the
//! latency of a poll, and the RSS once every history is full (measured RSS plus what the store may
//! still grow by).
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::{
    Benchmark,
    footprint::{pid_room, spawn_population},
    harness::{Env, Running, STOP_GRACE, check_interrupt, pause},
    procfs::{cpu_ns, status_kib},
    report::{Section, Status, Verdict, md},
    stats::{fmt_summary, summarize},
};
use crate::say;

/// Processes alive during the benchmark.
const PROCESSES: usize = 10_000;
/// Time between two polls: `cluster serve`'s default `--interval`.
const POLL_EVERY: Duration = Duration::from_secs(15);
/// The shortest window: one history step at the default, so each window records a point.
const MIN_WINDOW: Duration = Duration::from_secs(60);
/// Bytes a history point takes in the daemon (`model::instance_history::POINT_BYTES`).
const POINT_BYTES: u64 = 12;

/// Figures and targets.
pub(super) const SUMMARY: &[(&str, &str)] = &[
    ("RSS @10k, endpoint polled, histories full", "≤ 64 MiB"),
    ("CPU @10k, endpoint polled − quiet", "≤ 1% of a core"),
    ("summary per node, gzip", "≤ 32 KiB"),
];

/// One window's figures.
pub(super) struct Window {
    pub(super) cpu_pct: f64,
    pub(super) rss_kib: u64,
}

pub(super) struct SummaryResults {
    pub(super) processes: usize,
    pub(super) quiet: Window,
    pub(super) polled: Window,
    pub(super) raw_bytes: usize,
    pub(super) gzip_bytes: usize,
    pub(super) instances: usize,
    pub(super) latencies_ms: Vec<f64>,
    pub(super) window_secs: u64,
    /// What the history store may hold at most, and holds now.
    pub(super) history_bound_bytes: u64,
    pub(super) history_held_bytes: u64,
}

/// `GET /api/v1/workloads` with `Accept-Encoding: gzip` (or not): status and body as sent.
fn get_workloads(env: &Env, gzip: bool) -> Result<(u16, Vec<u8>)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .max_idle_connections(0)
        .build()
        .into();
    let url = format!("http://{}/api/v1/workloads", env.args.listen);
    let mut request = agent.get(&url).header("Connection", "close");
    if gzip {
        request = request.header("Accept-Encoding", "gzip");
    }
    let mut response = request.call().with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .with_context(|| format!("reading GET {url}"))?;
    Ok((status, body))
}

pub(super) fn bench_summary(env: &Env) -> Result<Section> {
    if env.running != Running::Daemon {
        bail!("daemon missing (`memtrace daemon --help` does not work in this build)");
    }
    let _pid_max = pid_room(PROCESSES)?;
    let (mut daemon, _) = env.start_memtrace_with(&[])?;
    let population = spawn_population(env, PROCESSES)?;
    say(format!(
        "{PROCESSES} idle processes up; settling 5 s before measuring"
    ));
    pause(Duration::from_secs(5))?;
    let pid = daemon.pid();
    let window = Duration::from_secs(env.args.quiet_secs).max(MIN_WINDOW);

    let t0 = cpu_ns(pid)?;
    let started = Instant::now();
    pause(window)?;
    let quiet = Window {
        cpu_pct: cpu_ns(pid)?.saturating_sub(t0) as f64 / 1e9 / started.elapsed().as_secs_f64()
            * 100.0,
        rss_kib: status_kib(pid, "VmRSS")?,
    };

    say(format!(
        "polling /api/v1/workloads (gzip) every {} s for {} s",
        POLL_EVERY.as_secs(),
        window.as_secs()
    ));
    let mut latencies_ms = Vec::new();
    let mut gzip_bytes = 0;
    let t0 = cpu_ns(pid)?;
    let started = Instant::now();
    while started.elapsed() < window {
        check_interrupt()?;
        let t = Instant::now();
        let (status, body) = get_workloads(env, true)?;
        if status != 200 {
            bail!("GET /api/v1/workloads: {status}");
        }
        latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
        gzip_bytes = body.len();
        pause(
            POLL_EVERY
                .saturating_sub(t.elapsed())
                .min(window.saturating_sub(started.elapsed())),
        )?;
    }
    let polled = Window {
        cpu_pct: cpu_ns(pid)?.saturating_sub(t0) as f64 / 1e9 / started.elapsed().as_secs_f64()
            * 100.0,
        rss_kib: status_kib(pid, "VmRSS")?,
    };
    let (_, raw) = get_workloads(env, false)?;
    let response: memtrace_api::workloads::WorkloadsResponse =
        serde_json::from_slice(&raw).context("the workloads JSON")?;
    if !daemon.alive() {
        bail!("the daemon died: {}", daemon.log_tail());
    }
    drop(population);
    daemon.stop(STOP_GRACE)?;
    Ok(render_summary(&SummaryResults {
        processes: response.node.processes as usize,
        quiet,
        polled,
        raw_bytes: raw.len(),
        gzip_bytes,
        instances: response.workloads.iter().map(|w| w.instances.len()).sum(),
        latencies_ms,
        window_secs: window.as_secs(),
        history_bound_bytes: u64::from(response.history.max_instances.unwrap_or(0))
            * u64::from(response.history.max_points)
            * POINT_BYTES,
        history_held_bytes: response
            .workloads
            .iter()
            .flat_map(|w| &w.instances)
            .map(|i| i.history.rss_bytes.len() as u64 * POINT_BYTES)
            .sum(),
    }))
}

pub(super) fn render_summary(r: &SummaryResults) -> Section {
    let mut s = Section::new(Benchmark::Workloads);
    md!(
        s.body,
        "`bench-mmap --idle {PROCESSES}` children alive, daemon with the default history (a point a minute, 360 points). Two {} s windows of the same daemon: quiet, then polled (`GET /api/v1/workloads` with `Accept-Encoding: gzip` every {} s, `cluster serve`'s default interval, new connection each). {} processes in scope, {} instances listed (bare processes are keyed by comm, each its own `pid/<pid>` instance; at most 100 workloads and 100 instances per workload are listed). The baseline is the quiet window, and benchmark 4 (the daemon's footprint at 10k).\n",
        r.window_secs,
        POLL_EVERY.as_secs(),
        r.processes,
        r.instances
    );
    md!(s.body, "| Window | daemon CPU | VmRSS |");
    md!(s.body, "|---|---|---|");
    for (name, w) in [("quiet", &r.quiet), ("polled", &r.polled)] {
        md!(
            s.body,
            "| {name} | {:.2}% | {:.1} MiB |",
            w.cpu_pct,
            w.rss_kib as f64 / 1024.0
        );
    }
    let extra = r.polled.cpu_pct - r.quiet.cpu_pct;
    let per_request_ms =
        extra / 100.0 * r.window_secs as f64 * 1e3 / r.latencies_ms.len().max(1) as f64;
    let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);
    let headroom = r.history_bound_bytes.saturating_sub(r.history_held_bytes);
    let full_rss = r.polled.rss_kib as f64 / 1024.0 + mib(headroom);
    md!(
        s.body,
        "\nPayload: {} bytes raw, {} bytes gzip. Poll latency: {}. CPU of one request (polled − quiet, over {} requests): {per_request_ms:.1} ms.\n",
        r.raw_bytes,
        r.gzip_bytes,
        fmt_summary(summarize(&r.latencies_ms), 1, " ms"),
        r.latencies_ms.len()
    );
    md!(
        s.body,
        "Histories fill over six hours, longer than a benchmark: the store held {:.1} MiB when measured and may hold {:.1} MiB at most (instances with a history × points × {POINT_BYTES} bytes), so the RSS judged is the polled window's plus the {:.1} MiB it may still grow by: {full_rss:.1} MiB.\n",
        mib(r.history_held_bytes),
        mib(r.history_bound_bytes),
        mib(headroom)
    );
    s.verdicts.push(Verdict::new(
        SUMMARY[0].0,
        format!("{full_rss:.1} MiB"),
        SUMMARY[0].1,
        Status::of(full_rss <= 64.0),
    ));
    s.verdicts.push(Verdict::new(
        SUMMARY[1].0,
        format!("{extra:+.2}%"),
        SUMMARY[1].1,
        Status::of(extra <= 1.0),
    ));
    s.verdicts.push(Verdict::new(
        SUMMARY[2].0,
        format!("{:.1} KiB", r.gzip_bytes as f64 / 1024.0),
        SUMMARY[2].1,
        Status::of(r.gzip_bytes <= 32 << 10),
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(polled_cpu: f64, gzip_bytes: usize) -> SummaryResults {
        SummaryResults {
            processes: 10_123,
            quiet: Window {
                cpu_pct: 2.0,
                rss_kib: 50 << 10,
            },
            polled: Window {
                cpu_pct: polled_cpu,
                rss_kib: 52 << 10,
            },
            raw_bytes: 200_000,
            gzip_bytes,
            instances: 180,
            latencies_ms: vec![10.0, 12.0, 30.0],
            window_secs: 10,
            history_bound_bytes: 4 << 20,
            history_held_bytes: 1 << 20,
        }
    }

    #[test]
    fn the_section_shows_both_windows_and_judges_the_targets() {
        let s = render_summary(&results(2.5, 20_000));
        assert_eq!((s.number, s.title), (8, "Workloads summary and history"));
        assert!(
            s.body.contains("| quiet | 2.00% | 50.0 MiB |"),
            "{}",
            s.body
        );
        assert!(
            s.body.contains("| polled | 2.50% | 52.0 MiB |"),
            "{}",
            s.body
        );
        assert!(s.body.contains("200000 bytes raw, 20000 bytes gzip"));
        // 0.5 % of 10 s over 3 requests.
        assert!(s.body.contains("16.7 ms"), "{}", s.body);
        assert!(
            s.body
                .contains("plus the 3.0 MiB it may still grow by: 55.0 MiB"),
            "{}",
            s.body
        );
        let verdicts: Vec<(&str, bool)> = s
            .verdicts
            .iter()
            .map(|v| (v.result.as_str(), v.status == Status::Met))
            .collect();
        assert_eq!(
            verdicts,
            [("55.0 MiB", true), ("+0.50%", true), ("19.5 KiB", true)]
        );
        let s = render_summary(&results(4.0, 40_000));
        assert!(s.verdicts[1].status == Status::NotMet);
        assert!(s.verdicts[2].status == Status::NotMet);
    }
}
