//! Benchmark 5: scrape latency of `/metrics` and `/api/v1/snapshot` with 10,000 processes.
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{
    Benchmark,
    footprint::FootprintResults,
    harness::{Env, Http, check_interrupt},
    report::{Section, Status, Verdict, commands_block, md},
    stats::percentile,
};

pub(super) struct ScrapeResult {
    pub(super) path: &'static str,
    pub(super) latencies_ms: Vec<f64>,
    pub(super) bytes: usize,
    pub(super) non_ok: usize,
}

pub(super) fn scrape(env: &Env, path: &'static str) -> Result<ScrapeResult> {
    let mut latencies_ms = Vec::with_capacity(env.args.requests as usize);
    let mut bytes = 0;
    let mut non_ok = 0;
    let http = Http::new(env.args.listen, Duration::from_secs(30));
    for _ in 0..env.args.requests {
        check_interrupt()?;
        let t = Instant::now();
        let r = http.get(path)?;
        latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = r.body.len();
        if r.status != 200 {
            non_ok += 1;
        }
    }
    Ok(ScrapeResult {
        path,
        latencies_ms,
        bytes,
        non_ok,
    })
}

/// The daemon's `memtrace_tracked_processes` gauge.
pub(super) fn tracked_processes(env: &Env) -> Option<f64> {
    let r = Http::new(env.args.listen, Duration::from_secs(10))
        .get("/metrics")
        .ok()?;
    gauge(
        &String::from_utf8_lossy(&r.body),
        "memtrace_tracked_processes",
    )
}

/// The value of an unlabelled sample in Prometheus' text exposition format (`name value`).
pub(super) fn gauge(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Figures and targets of benchmark 5.
pub(super) const SCRAPE: &[(&str, &str)] = &[
    ("/metrics p99 @10k", "≤ 50 ms"),
    ("/api/v1/snapshot p99 @10k", "≤ 200 ms"),
];

/// Benchmark 5's section, from the 10,000-process run of benchmark 4 (whose section shows the
/// commands when both ran).
pub(super) fn render_scrape(
    results: &FootprintResults,
    footprint_shown: bool,
    requests: u32,
) -> Section {
    let FootprintResults {
        scrapes,
        error,
        commands,
        ..
    } = results;
    let mut s = Section::new(Benchmark::Scrape);
    md!(
        s.body,
        "{} sequential GETs per endpoint (new connection each, `Connection: close`, ureq client) with 10,000 idle processes alive.\n",
        requests
    );
    if !footprint_shown {
        commands_block(&mut s.body, commands);
    }
    md!(
        s.body,
        "| Endpoint | p50 | p99 | max | response size | non-200 |"
    );
    md!(s.body, "|---|---|---|---|---|---|");
    for r in scrapes {
        md!(
            s.body,
            "| `{}` | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} KiB | {} |",
            r.path,
            percentile(&r.latencies_ms, 50.0),
            percentile(&r.latencies_ms, 99.0),
            percentile(&r.latencies_ms, 100.0),
            r.bytes as f64 / 1024.0,
            r.non_ok
        );
    }
    if let Some(e) = &error {
        md!(s.body, "\nError: {e}\n");
    }
    for (i, (figure, target)) in SCRAPE.iter().enumerate() {
        let limit = if i == 0 { 50.0 } else { 200.0 };
        s.verdicts.push(match scrapes.get(i) {
            Some(r) => {
                let p99 = percentile(&r.latencies_ms, 99.0);
                Verdict::new(
                    figure,
                    format!("{p99:.2} ms"),
                    target,
                    Status::of(p99 <= limit && r.non_ok == 0),
                )
            }
            None => Verdict::new(
                figure,
                format!("not run: {}", error.clone().unwrap_or_default()),
                target,
                Status::NotRun,
            ),
        });
    }
    md!(s.body);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Part of a real scrape: the gauge among labelled series, HELP/TYPE lines and a metric
    /// whose name it prefixes.
    const METRICS: &str = "\
# HELP memtrace_probes Kernel probes by state (attached, failed).
# TYPE memtrace_probes gauge
memtrace_probes{state=\"attached\"} 9
memtrace_probes{state=\"failed\"} 0
# HELP memtrace_tracked_processes_total Not a real metric: a name the gauge's is a prefix of.
# TYPE memtrace_tracked_processes_total counter
memtrace_tracked_processes_total 99
# HELP memtrace_tracked_processes Processes memtrace currently tracks in the kernel.
# TYPE memtrace_tracked_processes gauge
memtrace_tracked_processes 10071
";

    #[test]
    fn tracked_processes_from_a_scrape() {
        assert_eq!(gauge(METRICS, "memtrace_tracked_processes"), Some(10_071.0));
        assert_eq!(
            gauge(METRICS, "memtrace_probes"),
            None,
            "labelled series are not the gauge"
        );
        assert_eq!(gauge(METRICS, "memtrace_missing"), None);
    }
}
