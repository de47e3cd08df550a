//! Benchmark 12: the cost of `memtrace top` itself at a 1 s refresh with 10,000 processes. A
//! simulated daemon (a thread of this process, not measured) serves a synthetic node of 10,000
//! processes, 500 cgroups and 500 workloads whose figures change every second; `memtrace top
//! --url` shows it in a 200×50 tmux pane, and its CPU time and RSS are read over a window. What
//! is measured is `top`'s own work at each refresh: the GETs, the JSON decode, the client-side
//! history, the rows sorted, the screen drawn (the model's cost is the daemon's, benchmark 4).
//! Twice: in the processes view `top` opens on (the snapshot alone each second), then in the
//! workloads view (key `2`: the workloads summary too).
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use memtrace_api::workloads::{
    HistorySpec, InstanceHistory, InstanceSummary, NodeSummary, WorkloadKind, WorkloadSummary,
    WorkloadsResponse,
};
use memtrace_api::{
    CgroupView, Counters, NodeIdentityView, NodeMemoryView, ProcessView, Rates, Snapshot,
};

use super::{
    Benchmark,
    harness::{Env, check_interrupt, pause},
    procfs::{cpu_ns, status_kib},
    report::{Section, Status, Verdict, md},
};
use crate::say;

const PROCESSES: u32 = 10_000;
const CGROUPS: u32 = 500;
/// The window CPU is measured over, after a warm-up that fills the history ring.
const WINDOW: Duration = Duration::from_secs(30);
const WARM_UP: Duration = Duration::from_secs(10);
/// After switching views, before the second window.
const SETTLE: Duration = Duration::from_secs(5);
/// Frames served in turn (each request gets the next).
const VARIANTS: usize = 8;
const TARGET_PCT: f64 = 5.0;

pub(super) struct TopResults {
    /// The processes view, then the workloads view.
    pub(super) views: Vec<ViewCost>,
    pub(super) snapshot_bytes: usize,
    pub(super) workloads_bytes: usize,
}

/// `top`'s cost over one window in one view.
pub(super) struct ViewCost {
    pub(super) view: &'static str,
    pub(super) cpu_pct: f64,
    pub(super) rss_kib: u64,
    /// Requests the simulated daemon answered in the window.
    pub(super) requests: u64,
}

pub(super) fn bench_top(env: &Env) -> Result<Section> {
    let Some(tmux) = env.ctx.which("tmux") else {
        bail!("tmux is not installed (apt-get install tmux): `memtrace top` needs a terminal");
    };
    say("building the synthetic node's frames");
    let frames: Vec<Bodies> = (0..VARIANTS)
        .map(|i| {
            let (snapshot, mut workloads) = frame(i as u64);
            let full = serde_json::to_vec(&workloads)?;
            for instance in workloads
                .workloads
                .iter_mut()
                .flat_map(|w| &mut w.instances)
            {
                instance.history = InstanceHistory::default();
            }
            Ok(Bodies {
                snapshot: serde_json::to_vec(&snapshot)?,
                workloads: full,
                workloads_without_history: serde_json::to_vec(&workloads)?,
            })
        })
        .collect::<Result<_>>()?;
    let (snapshot_bytes, workloads_bytes) = (frames[0].snapshot.len(), frames[0].workloads.len());
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the simulated daemon")?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(AtomicU64::new(0));
    let served = Arc::clone(&requests);
    let frames = Arc::new(frames);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (frames, served) = (Arc::clone(&frames), Arc::clone(&served));
            std::thread::spawn(move || serve(stream, &frames, &served));
        }
    });

    let pane = Pane::start(&tmux, &env.bins.memtrace, &addr.to_string())?;
    env.note(&pane.command);
    let pid = pane.pid()?;
    pause(WARM_UP)?;
    check_interrupt()?;
    if requests.load(Ordering::Relaxed) == 0 {
        bail!(
            "memtrace top asked nothing of the simulated daemon (screen: {})",
            pane.screen()
        );
    }
    let mut views = vec![measure(pid, &requests, "processes")?];
    pane.tmux(&["send-keys", "2"]);
    pause(SETTLE)?;
    if !pane.screen().contains("workloads shown") {
        bail!(
            "the workloads view shows no workload (screen: {})",
            pane.screen()
        );
    }
    views.push(measure(pid, &requests, "workloads")?);
    let results = TopResults {
        views,
        snapshot_bytes,
        workloads_bytes,
    };
    Ok(render_top(&results))
}

/// `top`'s CPU over [`WINDOW`] and its RSS at the end.
fn measure(pid: u32, requests: &AtomicU64, view: &'static str) -> Result<ViewCost> {
    let (cpu0, t0, r0) = (
        cpu_ns(pid)?,
        Instant::now(),
        requests.load(Ordering::Relaxed),
    );
    pause(WINDOW)?;
    let (cpu1, t1, r1) = (
        cpu_ns(pid)?,
        Instant::now(),
        requests.load(Ordering::Relaxed),
    );
    let cost = ViewCost {
        view,
        cpu_pct: (cpu1 - cpu0) as f64 / (t1 - t0).as_nanos() as f64 * 100.0,
        rss_kib: status_kib(pid, "VmRSS")?,
        requests: r1 - r0,
    };
    say(format!(
        "memtrace top, {view} view: {:.2}% of a core, RSS {} MiB, {} requests in {} s",
        cost.cpu_pct,
        cost.rss_kib / 1024,
        cost.requests,
        WINDOW.as_secs()
    ));
    Ok(cost)
}

pub(super) fn render_top(r: &TopResults) -> Section {
    let mut section = Section::new(Benchmark::Top);
    md!(
        section.body,
        "`memtrace top --url` (1 s refresh, a 200×50 tmux pane) on a simulated node of {PROCESSES} \
         processes, {CGROUPS} cgroups and as many workloads (one instance per process, 60 \
         history points each at the daemon's default step of a minute), whose figures change \
         every second; snapshot {:.1} MiB of JSON, workloads summary {:.1} MiB with its \
         histories (it answers `?history=0` without them, as the daemon does). CPU of the `top` \
         process over {} s after a {} s warm-up in the processes view it opens on (the snapshot \
         each second), then over {} s more after switching to the workloads view (key `2`: the \
         workloads summary too); RSS at the end of each window.\n",
        r.snapshot_bytes as f64 / f64::from(1 << 20),
        r.workloads_bytes as f64 / f64::from(1 << 20),
        WINDOW.as_secs(),
        WARM_UP.as_secs(),
        WINDOW.as_secs(),
    );
    md!(
        section.body,
        "| `memtrace top` @10k processes, 1 s refresh | CPU (% of one core) | RSS | requests |"
    );
    md!(section.body, "|---|---|---|---|");
    for view in &r.views {
        md!(
            section.body,
            "| {} view | {:.2}% | {} MiB | {} |",
            view.view,
            view.cpu_pct,
            view.rss_kib / 1024,
            view.requests
        );
    }
    md!(section.body, "");
    for view in &r.views {
        section.verdicts.push(Verdict::new(
            &format!("`top` CPU @10k processes, 1 s refresh, {} view", view.view),
            format!("{:.2}%", view.cpu_pct),
            "≤ 5% of a core",
            Status::of(view.cpu_pct <= TARGET_PCT),
        ));
    }
    section
}

/// The tmux server running `memtrace top`, killed on drop.
struct Pane {
    tmux: std::path::PathBuf,
    socket: String,
    command: Command,
}

impl Pane {
    fn start(tmux: &Path, memtrace: &Path, addr: &str) -> Result<Self> {
        let socket = format!("memtrace-bench-top-{}", std::process::id());
        let mut command = Command::new(tmux);
        command
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "50",
                "--",
            ])
            .arg(memtrace)
            .args(["top", "--url", addr, "--interval", "1s"]);
        let pane = Self {
            tmux: tmux.to_owned(),
            socket,
            command,
        };
        let status = Command::new(&pane.tmux)
            .args(pane.command.get_args())
            .env("TERM", "xterm-256color")
            .status()
            .context("starting tmux")?;
        if !status.success() {
            bail!("tmux new-session failed: {status}");
        }
        Ok(pane)
    }

    fn tmux(&self, args: &[&str]) -> String {
        Command::new(&self.tmux)
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    fn pid(&self) -> Result<u32> {
        let pid = self.tmux(&["display-message", "-p", "#{pane_pid}"]);
        pid.parse()
            .with_context(|| format!("no pane pid from tmux ({pid:?})"))
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"]).replace('\n', " | ")
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// One frame of the simulated daemon, serialized.
struct Bodies {
    snapshot: Vec<u8>,
    workloads: Vec<u8>,
    /// `?history=0`, as the daemon answers it.
    workloads_without_history: Vec<u8>,
}

/// Answers each request on `stream` with the next frame's snapshot or workloads.
fn serve(stream: TcpStream, frames: &[Bodies], served: &AtomicU64) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
        }
        served.fetch_add(1, Ordering::Relaxed);
        // A new frame each second, whatever was asked of it.
        let second = std::time::UNIX_EPOCH
            .elapsed()
            .unwrap_or_default()
            .as_secs() as usize;
        let bodies = &frames[second % frames.len()];
        let path = request.split_whitespace().nth(1).unwrap_or("");
        let (status, body): (&str, &[u8]) = if path.starts_with("/api/v1/snapshot") {
            ("200 OK", &bodies.snapshot)
        } else if path.starts_with("/api/v1/workloads?history=0") {
            ("200 OK", &bodies.workloads_without_history)
        } else if path.starts_with("/api/v1/workloads") {
            ("200 OK", &bodies.workloads)
        } else {
            ("404 Not Found", b"{}")
        };
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body).is_err() {
            return;
        }
    }
}

/// Frame `i` of the synthetic node: every process's RSS and rates move with `i`.
fn frame(i: u64) -> (Snapshot, WorkloadsResponse) {
    const MIB: u64 = 1 << 20;
    let now_ms = 1_796_008_200_000 + i * 1000;
    let processes: Vec<ProcessView> = (0..PROCESSES)
        .map(|n| {
            let anon = (u64::from(n % 97) + 1) * MIB + i * 4096 * u64::from(n % 5);
            ProcessView {
                pid: 1000 + n,
                comm: format!("worker-{:03}", n % CGROUPS),
                cmdline: format!("/usr/bin/worker --shard {n}"),
                cgroup: Some(format!("/system.slice/worker-{:03}.service", n % CGROUPS)),
                workload: Some(format!("worker-{:03}.service", n % CGROUPS)),
                instance: Some(format!("pid/{}", 1000 + n)),
                counters: Counters {
                    rss_anon_bytes: anon,
                    rss_file_bytes: 2 * MIB,
                    ..Counters::default()
                },
                rates: Rates {
                    faults_minor_per_sec: f64::from(n % 300) + i as f64,
                    faults_major_per_sec: f64::from(n % 7),
                    ..Rates::default()
                },
                rss_bytes: anon + 2 * MIB,
                pressure_score: f64::from(n % 100),
                rss_growth_bytes_per_sec: Some(f64::from(n % 11) * 1024.0),
                ..ProcessView::default()
            }
        })
        .collect();
    let cgroups: Vec<CgroupView> = (0..CGROUPS)
        .map(|c| CgroupView {
            path: format!("/system.slice/worker-{c:03}.service"),
            processes: PROCESSES / CGROUPS,
            rss_bytes: u64::from(c + 1) * 20 * MIB + i * 8192,
            pressure_score: f64::from(c % 100),
            ..CgroupView::default()
        })
        .collect();
    let memory = NodeMemoryView {
        mem_total_bytes: 64 << 30,
        mem_available_bytes: (20 << 30) - i * MIB,
        swap_total_bytes: 8 << 30,
        swap_free_bytes: 8 << 30,
        ..NodeMemoryView::default()
    };
    let workloads = (0..CGROUPS)
        .map(|c| WorkloadSummary {
            workload: format!("worker-{c:03}.service"),
            kind: WorkloadKind::Systemd,
            instances: processes
                .iter()
                .filter(|p| (p.pid - 1000) % CGROUPS == c)
                .map(|p| InstanceSummary {
                    instance: p.instance.clone().unwrap_or_default(),
                    cgroup: p.cgroup.clone(),
                    processes: 1,
                    rss_anon_bytes: p.counters.rss_anon_bytes,
                    rss_file_bytes: p.counters.rss_file_bytes,
                    rates: p.rates,
                    pressure_score: p.pressure_score,
                    history: InstanceHistory {
                        start_unix_s: now_ms / 1000 - 3600,
                        rss_anon_bytes: vec![p.counters.rss_anon_bytes; 60],
                        rss_bytes: vec![p.rss_bytes; 60],
                        reclaim_stall_seconds_per_sec: vec![0.0; 60],
                    },
                    ..InstanceSummary::default()
                })
                .collect(),
            ..WorkloadSummary::default()
        })
        .collect();
    let node = NodeIdentityView {
        name: Some("bench".to_owned()),
        hostname: "bench".to_owned(),
        ..NodeIdentityView::default()
    };
    let snapshot = Snapshot {
        schema_version: memtrace_api::SCHEMA_VERSION,
        node,
        timestamp_unix_ms: now_ms,
        rate_window_seconds: 3.0,
        processes,
        cgroups,
        node_memory: memory.clone(),
        ..Snapshot::default()
    };
    let summary = WorkloadsResponse {
        schema_version: memtrace_api::workloads::WORKLOADS_SCHEMA_VERSION,
        node: NodeSummary {
            name: "bench".to_owned(),
            hostname: "bench".to_owned(),
            mem_total_bytes: memory.mem_total_bytes,
            mem_available_bytes: memory.mem_available_bytes,
            processes: PROCESSES,
            ..NodeSummary::default()
        },
        timestamp_unix_ms: now_ms,
        rate_window_seconds: 3.0,
        // The daemon's defaults: a point a minute, six hours.
        history: HistorySpec {
            step_seconds: 60,
            max_points: 360,
            ..HistorySpec::default()
        },
        workloads,
        ..WorkloadsResponse::default()
    };
    (snapshot, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_node_is_whole_and_the_report_says_it() {
        let (snapshot, workloads) = frame(3);
        assert_eq!(snapshot.processes.len(), PROCESSES as usize);
        assert_eq!(snapshot.cgroups.len(), CGROUPS as usize);
        let instances: usize = workloads.workloads.iter().map(|w| w.instances.len()).sum();
        assert_eq!(instances, PROCESSES as usize);
        assert_eq!(snapshot.timestamp_unix_ms, workloads.timestamp_unix_ms);
        let section = render_top(&TopResults {
            views: vec![
                ViewCost {
                    view: "processes",
                    cpu_pct: 1.234,
                    rss_kib: 80 * 1024,
                    requests: 30,
                },
                ViewCost {
                    view: "workloads",
                    cpu_pct: 6.5,
                    rss_kib: 200 * 1024,
                    requests: 60,
                },
            ],
            snapshot_bytes: 7 << 20,
            workloads_bytes: 20 << 20,
        });
        assert!(
            section
                .body
                .contains("| processes view | 1.23% | 80 MiB | 30 |"),
            "{}",
            section.body
        );
        assert!(
            section
                .body
                .contains("| workloads view | 6.50% | 200 MiB | 60 |"),
            "{}",
            section.body
        );
        assert_eq!(section.verdicts[0].result, "1.23%");
        assert!(section.verdicts[1].status == Status::NotMet);
        assert!(section.verdicts[0].status == Status::Met);
    }
}
