//! Benchmark 9: `memtrace cluster diagnose` over simulated fleets of 100, 1,000 and 5,000 nodes.
//!
//! One process (this one) plays every node: it listens on one port of every address and answers
//! `GET /api/v1/workloads` with the summary of the node whose loopback address was dialled (node
//! `i` is 127.0.x.y, all of 127/8 being loopback), gzipped when asked, as the daemon does. The
//! summaries are a real daemon's, recorded (`testdata/workloads-recorded.json.gz`), rescaled per
//! node and instance and widened to a busy node's workload count (see [`node_summary`]). The
//! aggregator is the real `memtrace cluster diagnose`, a child process: wall time and CPU from
//! `wait4`, peak RSS its `VmHWM` (see `run_aggregator`).
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use flate2::{Compression, write::GzEncoder};
use memtrace_api::diagnose::DiagnoseReport;
use memtrace_api::workloads::WorkloadsResponse;

use super::{
    Benchmark,
    harness::Env,
    report::{Section, Status, Verdict, md},
    stats::percentile,
};
use crate::say;

/// The history step every simulated node reports: the daemon's default, one point a minute.
const STEP_SECONDS: u64 = 60;
/// History points per instance: two hours at one a minute (`?history=2h`, the default).
const HISTORY_POINTS: usize = 120;
/// Workloads per simulated node: the recorded node's, repeated under new keys up to this many (a
/// busy Kubernetes node runs 30–110 pods).
const WORKLOADS: usize = 50;

/// The targets of the issue.
const TARGET_P99_S: f64 = 2.0;
const TARGET_RSS_MIB: f64 = 256.0;
const TARGET_GZ_KIB: f64 = 32.0;

pub(super) fn bench_cluster(env: &Env) -> Result<Section> {
    let mut section = Section::new(Benchmark::Cluster);
    md!(
        section.body,
        "`memtrace cluster diagnose -o json` against N simulated nodes served by one process on \
         127.0.x.y: a real daemon's summary recorded on this machine (xtask/src/bench/testdata/README.md), \
         its workloads repeated to {WORKLOADS} per node, {HISTORY_POINTS} history points at one a minute, \
         values rescaled per instance; {} runs per size; wall time from spawn to exit, \
         CPU (user + system) from `wait4`, peak RSS the aggregator's `VmHWM` (read every millisecond until it exits: `wait4`'s maxrss would include this benchmark's own memory, which exec records in the child's). Shares the machine's CPUs with the fleet \
         simulator.\n",
        env.args.runs
    );
    md!(
        section.body,
        "| Nodes | wall p50 | wall p99 | peak RSS (max) | CPU (median) | summary gz / plain per node |"
    );
    md!(section.body, "|---|---|---|---|---|---|");
    for &nodes in &env.args.cluster_nodes {
        let fleet = Fleet::start(nodes)?;
        let list = env.log_path(&format!("cluster-{nodes}-nodes"));
        std::fs::write(&list, fleet.nodes_file())
            .with_context(|| format!("writing {}", list.display()))?;
        let mut runs = Vec::new();
        for run in 0..env.args.runs {
            let mut cmd = Command::new(&env.bins.memtrace);
            cmd.args(["cluster", "diagnose", "-o", "json", "--timeout", "10s"])
                .args(["--deadline", "120s", "--nodes-file"])
                .arg(&list);
            env.note(&cmd);
            let measured = run_aggregator(cmd, nodes)?;
            say(format!(
                "cluster {nodes} nodes, run {}: {:.2} s, {:.0} MiB, {:.2} s CPU",
                run + 1,
                measured.wall_s,
                measured.max_rss_mib,
                measured.cpu_s
            ));
            runs.push(measured);
        }
        let wall: Vec<f64> = runs.iter().map(|r| r.wall_s).collect();
        let cpu: Vec<f64> = runs.iter().map(|r| r.cpu_s).collect();
        let rss = runs.iter().map(|r| r.max_rss_mib).fold(0.0, f64::max);
        let (p50, p99) = (percentile(&wall, 50.0), percentile(&wall, 99.0));
        let (gz_kib, plain_kib) = (
            fleet.mean_gz_bytes() / 1024.0,
            fleet.mean_plain_bytes() / 1024.0,
        );
        md!(
            section.body,
            "| {nodes} | {p50:.2} s | {p99:.2} s | {rss:.0} MiB | {:.2} s | {gz_kib:.1} KiB / {plain_kib:.0} KiB |",
            percentile(&cpu, 50.0)
        );
        if nodes == 1000 {
            section.verdicts.push(Verdict::new(
                "1,000 nodes: one diagnose, p99",
                format!("{p99:.2} s"),
                "≤ 2 s",
                Status::of(p99 <= TARGET_P99_S),
            ));
        }
        section.verdicts.push(Verdict::new(
            &format!("{nodes} nodes: aggregator peak RSS"),
            format!("{rss:.0} MiB"),
            "≤ 256 MiB",
            Status::of(rss <= TARGET_RSS_MIB),
        ));
        if nodes == env.args.cluster_nodes[0] {
            section.verdicts.push(Verdict::new(
                "summary per node, gzip",
                format!("{gz_kib:.1} KiB"),
                "≤ 32 KiB",
                Status::of(gz_kib <= TARGET_GZ_KIB),
            ));
        }
        fleet.stop();
    }
    md!(section.body);
    md!(
        section.body,
        "The baseline, the same hot-shard question through Prometheus over fleets of the same sizes, \
         is benchmark 10. The aggregator reduces each node's histories to the few numbers the \
         diagnostics need (leak fits, anon growth, mean reclaim stall) as the node answers and \
         drops them, so its peak RSS grows with the nodes' instance counts, not with their history \
         points."
    );
    Ok(section)
}

/// One aggregator run.
struct Measured {
    wall_s: f64,
    max_rss_mib: f64,
    cpu_s: f64,
}

/// Runs `cmd` to its end; fails unless every one of `nodes` answered.
fn run_aggregator(mut cmd: Command, nodes: usize) -> Result<Measured> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting memtrace cluster diagnose")?;
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let reader = thread::spawn(move || {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut out);
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut err);
        }
        (out, err)
    });
    let pid = libc::pid_t::try_from(child.id()).context("pid")?;
    // Peak RSS is the child's VmHWM, read until it exits. Not wait4's ru_maxrss: exec records the
    // high-water mark of the address space it replaces, here this process's (the simulated
    // fleet's summaries, hundreds of MiB), in the child's maxrss.
    let hwm_kib = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = {
        let hwm_kib = Arc::clone(&hwm_kib);
        thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            while let Some(kib) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| vm_hwm_kib(&s))
            {
                hwm_kib.fetch_max(kib, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not waited for yet (std's handle never waits unless asked).
    let waited = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    let wall_s = started.elapsed().as_secs_f64();
    if waited != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let (out, err) = reader.join().unwrap_or_default();
    let _ = watcher.join();
    let status = std::process::ExitStatus::from_raw(status);
    let report: DiagnoseReport = serde_json::from_slice(&out).with_context(|| {
        format!(
            "memtrace cluster diagnose ({status}) printed no report: {}",
            String::from_utf8_lossy(&err)
        )
    })?;
    if report.coverage.answered as usize != nodes {
        bail!(
            "only {}/{nodes} nodes answered; first failure: {:?}",
            report.coverage.answered,
            report.coverage.failures.first()
        );
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measured {
        wall_s,
        max_rss_mib: hwm_kib.load(Ordering::Relaxed) as f64 / 1024.0,
        cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
    })
}

/// `VmHWM` of a `/proc/<pid>/status`, in KiB; `None` once the process has exited (a zombie has no
/// address space).
fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// The simulated fleet: every node's summary, served on one port of 127.0.x.y.
struct Fleet {
    port: u16,
    nodes: usize,
    gz: Arc<Vec<Vec<u8>>>,
    plain: Arc<Vec<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    accepting: Option<thread::JoinHandle<()>>,
}

/// Node `i`'s address: 127.0.x.y with y in 1..=250, so none is a network or broadcast address.
fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, (1 + i / 250) as u8, (1 + i % 250) as u8)
}

fn node_index(ip: Ipv4Addr) -> Option<usize> {
    let [a, b, x, y] = ip.octets();
    (a == 127 && b == 0 && x >= 1 && (1..=250).contains(&y))
        .then(|| usize::from(x - 1) * 250 + usize::from(y - 1))
}

impl Fleet {
    fn start(nodes: usize) -> Result<Self> {
        if nodes > 250 * 255 {
            bail!("at most {} simulated nodes", 250 * 255);
        }
        say(format!("cluster: building {nodes} node summaries"));
        let recorded = recorded()?;
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let mut gz = Vec::with_capacity(nodes);
        let mut plain = Vec::with_capacity(nodes);
        for i in 0..nodes {
            let body = serde_json::to_vec(&node_summary(&recorded, i, now_s))?;
            let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
            encoder.write_all(&body)?;
            gz.push(encoder.finish()?);
            plain.push(body);
        }
        // Every local address: the only way one socket answers all of 127/8. Connections to any
        // other address are closed unanswered.
        let listener =
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).context("binding the fleet")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let (gz, plain) = (Arc::new(gz), Arc::new(plain));
        let stop = Arc::new(AtomicBool::new(false));
        let accepting = {
            let (gz, plain, stop) = (Arc::clone(&gz), Arc::clone(&plain), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (gz, plain) = (Arc::clone(&gz), Arc::clone(&plain));
                            thread::spawn(move || {
                                let _ = answer(stream, &gz, &plain);
                            });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
        };
        Ok(Self {
            port,
            nodes,
            gz,
            plain,
            stop,
            accepting: Some(accepting),
        })
    }

    fn nodes_file(&self) -> String {
        (0..self.nodes)
            .map(|i| format!("{}:{}\n", node_ip(i), self.port))
            .collect()
    }

    fn mean_gz_bytes(&self) -> f64 {
        self.gz.iter().map(Vec::len).sum::<usize>() as f64 / self.nodes as f64
    }

    fn mean_plain_bytes(&self) -> f64 {
        self.plain.iter().map(Vec::len).sum::<usize>() as f64 / self.nodes as f64
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.accepting.take() {
            let _ = handle.join();
        }
    }
}

/// One request, one response, then close (each node is its own host to the client, so a
/// connection never carries a second request).
fn answer(mut stream: TcpStream, gz: &[Vec<u8>], plain: &[Vec<u8>]) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let node = match stream.local_addr()? {
        SocketAddr::V4(addr) => node_index(*addr.ip()).filter(|&i| i < gz.len()),
        SocketAddr::V6(_) => None,
    };
    let Some(node) = node else {
        return Ok(());
    };
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let gzip = head
        .lines()
        .any(|l| l.starts_with("accept-encoding:") && l.contains("gzip"));
    let (body, encoding) = if gzip {
        (&gz[node], "Content-Encoding: gzip\r\n")
    } else {
        (&plain[node], "")
    };
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{encoding}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    Ok(())
}

/// A deterministic pseudo-random sequence (xorshift), so every run serves the same fleet.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// In `0.0..1.0`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A real daemon's `GET /api/v1/workloads?history=2h`, recorded on the benchmark machine (see
/// `testdata/README.md`): what every simulated node serves, rescaled.
const RECORDED: &[u8] = include_bytes!("testdata/workloads-recorded.json.gz");

/// The recorded summary, decoded.
fn recorded() -> Result<WorkloadsResponse> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(RECORDED)
        .read_to_end(&mut json)
        .context("decompressing the recorded summary")?;
    serde_json::from_slice(&json).context("decoding the recorded summary")
}

/// Node `i`'s summary: the recorded one with the node's own name, its workloads repeated under
/// new keys (`<key>-2`, …) up to [`WORKLOADS`], each instance's byte counts scaled by a factor of
/// its own (0.8–1.2, page-aligned, so replicas differ as real ones do), and its times mapped so
/// that the recording's `step_seconds` apart becomes a minute apart, ending at `now_s`, histories
/// cut to their last [`HISTORY_POINTS`]: the two hours at one point a minute that
/// `cluster diagnose` asks for, with a real daemon's values.
fn node_summary(recorded: &WorkloadsResponse, i: usize, now_s: u64) -> WorkloadsResponse {
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
    let mut node = recorded.clone();
    let kinds = recorded.workloads.len().max(1);
    node.workloads = (0..WORKLOADS.max(kinds))
        .map(|w| {
            let mut workload = recorded.workloads[w % kinds].clone();
            if w >= kinds {
                workload.workload = format!("{}-{}", workload.workload, w / kinds + 1);
            }
            workload
        })
        .collect();
    let stretch = STEP_SECONDS / u64::from(recorded.history.step_seconds.max(1));
    let recorded_s = recorded.timestamp_unix_ms / 1000;
    let map_ms = |t_ms: u64| {
        let ago_ms = recorded.timestamp_unix_ms.saturating_sub(t_ms);
        (now_s * 1000).saturating_sub(ago_ms * stretch)
    };
    let page = |v: u64, f: f64| (v as f64 * f) as u64 & !0xFFF;
    node.node.name = format!("node-{i:05}");
    node.node.hostname = format!("node-{i:05}.example");
    node.timestamp_unix_ms = now_s * 1000;
    node.history.step_seconds = STEP_SECONDS as u32;
    for instance in node
        .workloads
        .iter_mut()
        .flat_map(|w| w.instances.iter_mut())
    {
        let f = 0.8 + 0.4 * noise.unit();
        instance.started_unix_ms = map_ms(instance.started_unix_ms);
        instance.rss_anon_bytes = page(instance.rss_anon_bytes, f);
        instance.rss_file_bytes = page(instance.rss_file_bytes, f);
        let history = &mut instance.history;
        let cut = history.rss_bytes.len().saturating_sub(HISTORY_POINTS);
        history.rss_bytes.drain(..cut);
        history.rss_anon_bytes.drain(..cut);
        history.reclaim_stall_seconds_per_sec.drain(..cut);
        let first_s = history.start_unix_s + cut as u64 * u64::from(recorded.history.step_seconds);
        history.start_unix_s = now_s.saturating_sub(recorded_s.saturating_sub(first_s) * stretch);
        for v in history
            .rss_anon_bytes
            .iter_mut()
            .chain(history.rss_bytes.iter_mut())
        {
            *v = page(*v, f);
        }
    }
    for kill in &mut node.ooms {
        kill.timestamp_unix_ms = map_ms(kill.timestamp_unix_ms);
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_from_status() {
        let status = "Name:\tmemtrace\nVmPeak:\t  300 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(12345));
        assert_eq!(vm_hwm_kib("Name:\tzombie\nState:\tZ (zombie)\n"), None);
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(vm_hwm_kib(&own).unwrap() > 0);
    }

    #[test]
    fn node_addresses_round_trip() {
        for i in [0, 1, 249, 250, 4999, 62_000] {
            assert_eq!(node_index(node_ip(i)), Some(i));
        }
        assert_eq!(node_index(Ipv4Addr::LOCALHOST), None);
        assert_eq!(node_index(Ipv4Addr::new(10, 0, 1, 1)), None);
    }

    #[test]
    fn the_fleet_answers_each_node_its_own_summary() {
        let fleet = Fleet::start(3).unwrap();
        for i in 0..3 {
            let url = format!("http://{}:{}/api/v1/workloads", node_ip(i), fleet.port);
            let summary: WorkloadsResponse = ureq::get(&url)
                .call()
                .unwrap()
                .body_mut()
                .read_json()
                .unwrap();
            assert_eq!(summary.node.name, format!("node-{i:05}"));
            assert_eq!(summary.history.step_seconds, STEP_SECONDS as u32);
            assert_eq!(summary.workloads.len(), WORKLOADS);
            let longest = summary
                .workloads
                .iter()
                .flat_map(|w| &w.instances)
                .map(|i| i.history.rss_bytes.len())
                .max();
            assert_eq!(longest, Some(HISTORY_POINTS));
        }
        assert!(fleet.mean_gz_bytes() < fleet.mean_plain_bytes() / 2.0);
        fleet.stop();
    }
}
