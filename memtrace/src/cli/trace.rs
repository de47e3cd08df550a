//! `memtrace trace`: stream memory events live, then summarise per process.
use std::{
    collections::{BTreeMap, HashSet},
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use memtrace_common::{Config, ProcStats, filter, kind, rss_member};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    events::{
        Event, EventKindSet, comm_str, counters_json,
        render::{self, Clock, TEXT_HEADER},
    },
    pipeline::{EventStream, PipelineSnapshot},
    preflight,
    probes::{FamilyStatus, KernelLosses, ProbeOptions, Probes, page_size},
    procfs::{ProcFs, ProcessCache},
    units::{human_bytes, parse_duration, parse_size},
};

const EXAMPLES: &str = "\
Examples:
  memtrace trace                        OOM kills, reclaim stalls, mmap-family calls >= 1 MiB
  memtrace trace -e oom,mmap            OOM kills and mmaps (>= 1 MiB)
  memtrace trace -p 1234                every mmap/munmap/brk/mremap of pid 1234 (no size floor)
  memtrace trace -p 1234 --faults --sample 100   ... plus every 100th page fault, with its cause
  memtrace trace -c redis-server -e vm,reclaim -o json
  memtrace trace --cgroup /oomtest -e oom -d 60s    (cgroup path as in /proc/<pid>/cgroup)

Event kinds: fault, mmap, munmap, brk, mremap, reclaim, oom, exec, exit; groups: vm (the four
mmap-family calls), all. Counters (faults, mapped bytes, stalls, RSS) are always kept in the
kernel and shown in the summary; --event only chooses what streams.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns: time, pid, comm, event, details.
    Text,
    /// One JSON object per line: kind, ts, ts_ns, pid, tid, comm, cpu, [cgroup], and the kind's fields.
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct TraceArgs {
    /// Only these processes (tgid). Repeat or comma-separate.
    #[arg(short, long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<u32>,

    /// Only tasks with this name (as in /proc/<pid>/comm; the kernel keeps 15 characters).
    #[arg(short, long = "comm", value_name = "NAME", value_delimiter = ',')]
    pub comms: Vec<String>,

    /// Only processes in this cgroup or below: the path shown in /proc/<pid>/cgroup
    /// (e.g. /system.slice/nginx.service), or a directory under /sys/fs/cgroup.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,

    /// Event kinds to stream, comma-separated [default: oom,reclaim,vm].
    #[arg(short, long = "event", value_name = "KINDS", value_parser = parse_kinds)]
    pub events: Option<EventKindSet>,

    /// Smallest mmap/munmap/brk/mremap to show (4096, 64K, 1M, 2GiB…)
    /// [default: 0 with --pid/--comm/--cgroup, else 1M].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub min_size: Option<u64>,

    /// Stream page faults too (address, ip, cause). Costs a ring-buffer record per streamed fault.
    #[arg(long)]
    pub faults: bool,

    /// With --faults: stream one fault in N (per CPU). All faults are still counted.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "faults", value_parser = clap::value_parser!(u32).range(1..))]
    pub sample: u32,

    /// Shortest reclaim stall to show (stalls are always counted), e.g. 1ms.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    pub min_stall: Duration,

    /// Stop after this long (10s, 5m…). Default: until Ctrl-C.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Also print the per-process summary every INTERVAL (e.g. 10s).
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Do not print the final per-process summary.
    #[arg(long)]
    pub no_summary: bool,

    /// Processes in the summary (most page faults first).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,

    /// Size of the ring buffer for discrete events (power of two).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "4M")]
    pub ring_size: u64,

    /// Size of the ring buffer for fault events, with --faults (power of two).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "16M")]
    pub fault_ring_size: u64,
}

fn parse_kinds(text: &str) -> Result<EventKindSet, String> {
    let set: EventKindSet = text.parse()?;
    if set.is_empty() {
        return Err("no event kinds given".to_owned());
    }
    Ok(set)
}

/// A ring size must be a power of two and a multiple of the page size.
fn ring_bytes(flag: &str, size: u64) -> anyhow::Result<u32> {
    let page = u64::from(page_size());
    if !size.is_power_of_two() || size < page || size > (1 << 30) {
        bail!(
            "{flag} must be a power of two between {} and 1 GiB (got {size} bytes)",
            human_bytes(page)
        );
    }
    Ok(size as u32)
}

/// The cgroup filter, resolved to a path relative to its hierarchy plus the directory to scan.
#[derive(Debug)]
struct CgroupFilter {
    /// As in /proc/<pid>/cgroup, e.g. `/oomtest`.
    path: String,
    /// Directory holding `cgroup.procs` (and children).
    dir: PathBuf,
}

/// Candidate hierarchies: v1 memory controller first (it is the one that OOMs), then v2.
const CGROUP_ROOTS: [&str; 3] = [
    "/sys/fs/cgroup/memory",
    "/sys/fs/cgroup/unified",
    "/sys/fs/cgroup",
];

fn resolve_cgroup(arg: &str) -> anyhow::Result<CgroupFilter> {
    for root in CGROUP_ROOTS {
        let (path, dir) = match arg.strip_prefix(root) {
            Some(rest) => (
                format!("/{}", rest.trim_start_matches('/')),
                PathBuf::from(arg),
            ),
            None if !arg.starts_with("/sys/") => (
                arg.to_owned(),
                Path::new(root).join(arg.trim_start_matches('/')),
            ),
            None => continue,
        };
        if dir.join("cgroup.procs").exists() {
            let path = if path.len() > 1 {
                path.trim_end_matches('/').to_owned()
            } else {
                path
            };
            return Ok(CgroupFilter { path, dir });
        }
    }
    bail!(
        "no such cgroup: {arg} (give the path shown in /proc/<pid>/cgroup, e.g. /system.slice/foo.service, or a directory under /sys/fs/cgroup)"
    )
}

/// Every pid in `dir`'s `cgroup.procs` and its descendants'.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(
                procs
                    .lines()
                    .filter_map(|line| line.trim().parse::<u32>().ok()),
            );
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    pids
}

/// Userspace half of the filter: exact where the kernel's is coarse (cgroup membership, OOM
/// victims, exits, which the kernel does not filter).
struct Selection {
    pids: HashSet<u32>,
    comms: Vec<String>,
    cgroup: Option<CgroupFilter>,
    /// Pids seen in the cgroup (scanned or reported by the kernel's fork-following filter).
    cgroup_pids: HashSet<u32>,
}

impl Selection {
    fn is_filtered(&self) -> bool {
        !self.pids.is_empty() || !self.comms.is_empty() || self.cgroup.is_some()
    }

    fn in_cgroup(&self, path: Option<&str>) -> bool {
        match (&self.cgroup, path) {
            (Some(filter), Some(path)) => {
                filter.path == "/"
                    || path == filter.path
                    || path.starts_with(&format!("{}/", filter.path))
            }
            _ => false,
        }
    }

    fn matches(&self, pid: u32, comm: &str, cgroup: Option<&str>) -> bool {
        (self.pids.is_empty() || self.pids.contains(&pid))
            && (self.comms.is_empty()
                || self
                    .comms
                    .iter()
                    .any(|c| comm.starts_with(c.as_str()) && c.len() >= comm.len().min(15)))
            && (self.cgroup.is_none() || self.cgroup_pids.contains(&pid) || self.in_cgroup(cgroup))
    }

    fn matches_event(&self, event: &Event, cgroup: Option<&str>) -> bool {
        if !self.is_filtered() {
            return true;
        }
        let h = event.header();
        match event {
            // An OOM kill is shown when either its victim or its trigger is selected.
            Event::Oom(e) => {
                self.matches(e.victim_pid, &comm_str(&e.victim_comm), cgroup)
                    || self.matches(h.pid, &comm_str(&h.comm), cgroup)
            }
            _ => self.matches(h.pid, &comm_str(&h.comm), cgroup),
        }
    }
}

/// What the summary shows for one process.
#[derive(Clone, Debug)]
struct SummaryRow {
    pid: u32,
    comm: String,
    exited: bool,
    stats: ProcStats,
}

struct Tracer {
    args: TraceArgs,
    shown: EventKindSet,
    clock: Clock,
    cache: ProcessCache,
    selection: Selection,
    /// Final counters of processes that exited during the trace.
    exited: BTreeMap<u32, SummaryRow>,
    text: String,
    json: Vec<u8>,
    out: std::io::BufWriter<std::io::Stdout>,
    own_pid: u32,
}

impl Tracer {
    /// One event; `now` is when its batch arrived.
    fn handle(&mut self, event: &Event, now: Instant) {
        let pid = event.subject_pid();
        // The process may be gone (exit, OOM victim): the cache answers from what it saw.
        // Trusted lookups: exits and execs (always in the kernel mask) invalidate entries, so a
        // cached identity is current, and it still answers for a process that just exited.
        let info = self.cache.get_trusted(pid, now);
        let cgroup = info.as_ref().and_then(|i| i.cgroup.as_deref());
        if let Event::Exit(e) = event {
            // The exiting task may be any thread (named e.g. "tokio-runtime-w"): prefer the
            // process's own name when it was seen alive.
            let comm = info
                .as_ref()
                .map_or_else(|| comm_str(&e.header.comm), |i| i.comm.clone());
            if self.selection.matches(pid, &comm, cgroup) && e.tracked != 0 {
                self.exited.insert(
                    pid,
                    SummaryRow {
                        pid,
                        comm,
                        exited: true,
                        stats: e.stats,
                    },
                );
            }
            self.cache.invalidate(pid);
        }
        if let Event::Exec(_) = event {
            self.cache.invalidate(pid);
        }
        // memtrace's own ring-buffer maps and allocations are not what the user is looking for.
        if event.header().pid == self.own_pid
            || !self.shown.contains(event.kind())
            || !self.selection.matches_event(event, cgroup)
        {
            return;
        }
        let result = match self.args.output {
            OutputFormat::Text => {
                self.text.clear();
                render::text(&mut self.text, &self.clock, event, cgroup);
                writeln!(self.out, "{}", self.text)
            }
            OutputFormat::Json => {
                self.json.clear();
                render::json(&mut self.json, &self.clock, event, cgroup)
                    .map_err(std::io::Error::other)
                    .and_then(|()| {
                        self.json.push(b'\n');
                        self.out.write_all(&self.json)
                    })
            }
        };
        if let Err(err) = result {
            // stdout closed (e.g. `| head`): nothing more to do for this event.
            tracing::debug!("writing event: {err}");
        }
    }

    /// Rows for the summary: live processes from the kernel map, plus those that exited.
    fn summary_rows(&mut self, probes: &Probes) -> Vec<SummaryRow> {
        let mut rows: BTreeMap<u32, SummaryRow> = self.exited.clone();
        if let Ok(live) = probes.all_process_stats() {
            // Like the event stream, the summary leaves memtrace itself out.
            for (pid, stats) in live.into_iter().filter(|(pid, _)| *pid != self.own_pid) {
                let info = self.cache.get(pid);
                let comm = info
                    .as_ref()
                    .map_or_else(|| "?".to_owned(), |i| i.comm.clone());
                let cgroup = info.as_ref().and_then(|i| i.cgroup.clone());
                if self.selection.matches(pid, &comm, cgroup.as_deref()) {
                    rows.insert(
                        pid,
                        SummaryRow {
                            pid,
                            comm,
                            exited: false,
                            stats,
                        },
                    );
                }
            }
        }
        let mut rows: Vec<SummaryRow> = rows.into_values().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.stats.faults_user + r.stats.faults_kernel));
        rows.truncate(self.args.top);
        rows
    }

    fn print_summary(&mut self, probes: &Probes, pipeline: PipelineSnapshot, title: &str) {
        let rows = self.summary_rows(probes);
        let losses = probes.kernel_losses().unwrap_or_default();
        let _ = self.out.flush();
        match self.args.output {
            OutputFormat::Text => {
                let mut text = format!("\n{title}\n");
                text.push_str(&format!(
                    "{:<8} {:<16} {:>10} {:>8} {:>10} {:>10} {:>10} {:>14} {:>10} {:>10}\n",
                    "PID",
                    "COMM",
                    "MINFLT",
                    "MAJFLT",
                    "MMAP",
                    "MUNMAP",
                    "BRK+",
                    "RECLAIM",
                    "RSS_ANON",
                    "RSS_FILE"
                ));
                for r in &rows {
                    let s = &r.stats;
                    text.push_str(&format!(
                        "{:<8} {:<16} {:>10} {:>8} {:>10} {:>10} {:>10} {:>14} {:>10} {:>10}{}\n",
                        r.pid,
                        r.comm,
                        s.faults_minor(),
                        s.faults_major,
                        human_bytes(s.mmap_bytes),
                        human_bytes(s.munmap_bytes),
                        human_bytes(s.brk_grow_bytes),
                        format!("{}/{:.1}ms", s.reclaim_stalls, s.reclaim_ns as f64 / 1e6),
                        human_bytes(s.rss[rss_member::ANON]),
                        human_bytes(s.rss[rss_member::FILE]),
                        if r.exited { "  (exited)" } else { "" },
                    ));
                }
                text.push_str(&losses_line(&losses, &pipeline));
                let _ = writeln!(self.out, "{text}");
            }
            OutputFormat::Json => {
                for r in &rows {
                    let line = serde_json::json!({
                        "kind": "summary", "pid": r.pid, "comm": r.comm, "exited": r.exited,
                        "stats": counters_json(&r.stats),
                    });
                    let _ = writeln!(self.out, "{line}");
                }
                let line = serde_json::json!({
                    "kind": "losses",
                    "kernel_ring_full": losses.ring_total(),
                    "kernel_ring_full_by_kind": crate::events::KIND_NAMES.iter()
                        .map(|(name, k)| (name.to_string(), losses.ring_full[*k as usize]))
                        .collect::<BTreeMap<_, _>>(),
                    "kernel_map_full": losses.map_total(),
                    "userspace_queue": pipeline.queue_drops,
                    "decode_errors": pipeline.decode_errors,
                    "delivered": pipeline.delivered,
                });
                let _ = writeln!(self.out, "{line}");
            }
        }
        let _ = self.out.flush();
    }
}

/// `drops: none` or where events were lost, by stage.
fn losses_line(losses: &KernelLosses, pipeline: &PipelineSnapshot) -> String {
    let mut parts = Vec::new();
    for (name, k) in crate::events::KIND_NAMES {
        let n = losses.ring_full[k as usize];
        if n > 0 {
            parts.push(format!("{n} {name} (kernel ring full)"));
        }
    }
    if losses.map_total() > 0 {
        parts.push(format!("{} (kernel map full)", losses.map_total()));
    }
    if pipeline.queue_drops > 0 {
        parts.push(format!("{} (userspace queue full)", pipeline.queue_drops));
    }
    if pipeline.decode_errors > 0 {
        parts.push(format!("{} (undecodable)", pipeline.decode_errors));
    }
    if parts.is_empty() {
        format!("events: {} delivered, none lost", pipeline.delivered)
    } else {
        format!(
            "events: {} delivered; LOST: {}",
            pipeline.delivered,
            parts.join(", ")
        )
    }
}

pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    // Validate everything the user typed before touching the kernel.
    let procfs = ProcFs::new("/proc");
    for pid in &args.pids {
        if !procfs.exists(*pid) {
            bail!("no such process: {pid} (--pid takes the pid of a running process)");
        }
    }
    let cgroup = args.cgroup.as_deref().map(resolve_cgroup).transpose()?;
    let events_ring = ring_bytes("--ring-size", args.ring_size)?;
    let fault_ring = if args.faults {
        ring_bytes("--fault-ring-size", args.fault_ring_size)?
    } else {
        page_size()
    };
    for comm in &args.comms {
        if comm.len() > 15 {
            tracing::warn!(
                "--comm {comm}: the kernel keeps 15 characters; matching '{}'",
                &comm[..15]
            );
        }
    }

    let checks = preflight::check()?;
    for warning in &checks.warnings {
        eprintln!("memtrace: warning: {warning}");
    }

    let mut shown = args.events.unwrap_or_else(|| {
        EventKindSet::from_kinds(&[
            kind::OOM,
            kind::RECLAIM,
            kind::MMAP,
            kind::MUNMAP,
            kind::BRK,
            kind::MREMAP,
        ])
    });
    if args.faults {
        shown.insert(kind::FAULT);
    }
    let filtered = !args.pids.is_empty() || !args.comms.is_empty() || cgroup.is_some();
    let mut kernel_mask = shown;
    // Exit events carry final counters for the summary, whether or not they are shown.
    kernel_mask.insert(kind::EXIT);
    // Exec events keep the identity cache honest (comm changes), shown or not.
    kernel_mask.insert(kind::EXEC);
    if !args.faults {
        kernel_mask.0 &= !(1 << kind::FAULT);
    }
    let mut filter_flags = 0;
    if !args.pids.is_empty() || cgroup.is_some() {
        filter_flags |= filter::PIDS;
    }
    if cgroup.is_some() {
        filter_flags |= filter::FOLLOW_FORKS;
    }
    if !args.comms.is_empty() {
        filter_flags |= filter::COMMS;
    }
    let options = ProbeOptions {
        config: Config {
            event_mask: kernel_mask.0,
            filter_flags,
            fault_sample_every: if args.faults { args.sample } else { 0 },
            page_size: page_size(),
            mmap_min_bytes: args.min_size.unwrap_or(if filtered { 0 } else { 1 << 20 }),
            reclaim_min_ns: args.min_stall.as_nanos().min(u128::from(u64::MAX)) as u64,
            // Live: each event wakes the reader, so it is shown (and enriched from /proc)
            // while its process still exists. The fault stream is batched regardless.
            flags: 0,
            reserved: 0,
        },
        events_ring_bytes: events_ring,
        fault_ring_bytes: fault_ring,
        ..ProbeOptions::default()
    };

    let mut probes =
        Probes::load(&checks.tracefs, &options).context("loading the eBPF programs")?;
    report_attach(&probes);
    let mut selection = Selection {
        pids: args.pids.iter().copied().collect(),
        comms: args
            .comms
            .iter()
            .map(|c| c.chars().take(15).collect())
            .collect(),
        cgroup_pids: HashSet::new(),
        cgroup: None,
    };
    if !args.pids.is_empty() {
        probes.add_filter_pids(&args.pids)?;
    }
    if !args.comms.is_empty() {
        probes.add_filter_comms(&selection.comms)?;
    }
    if let Some(cgroup) = &cgroup {
        let pids = cgroup_pids(&cgroup.dir);
        probes.add_filter_pids(&pids)?;
        selection.cgroup_pids.extend(pids);
    }
    selection.cgroup = cgroup;

    let (events, faults) = probes.take_rings()?;
    let mut stream = EventStream::spawn(
        vec![events, faults],
        1024,
        crate::pipeline::DRAIN_EVERY_LIVE,
    )
    .context("reading the ring buffers")?;

    let mut tracer = Tracer {
        shown,
        clock: Clock::new(),
        cache: ProcessCache::new(procfs, 16_384),
        selection,
        exited: BTreeMap::new(),
        text: String::with_capacity(256),
        json: Vec::with_capacity(512),
        out: std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()),
        own_pid: std::process::id(),
        args,
    };
    if tracer.args.output == OutputFormat::Text {
        let _ = writeln!(tracer.out, "{TEXT_HEADER}");
        let _ = tracer.out.flush();
    }

    // Persistent streams, created once: a signal that arrives while a batch is being printed is
    // kept for the next `select!` (a fresh `ctrl_c()` future per iteration would miss it).
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let deadline = tracer
        .args
        .duration
        .map(|d| tokio::time::Instant::now() + d);
    let sleep_until_deadline = async move {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep_until_deadline);
    let mut interval = tracer.args.interval.map(tokio::time::interval);
    if let Some(interval) = interval.as_mut() {
        interval.tick().await; // the first tick is immediate
    }
    let mut cgroup_rescan = tokio::time::interval(Duration::from_secs(1));

    loop {
        tokio::select! {
            batch = stream.batches.recv() => match batch {
                Some(batch) => {
                    let now = Instant::now();
                    for event in &batch {
                        tracer.handle(event, now);
                    }
                    let _ = tracer.out.flush();
                }
                None => break,
            },
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = &mut sleep_until_deadline => break,
            _ = async { interval.as_mut().expect("guarded").tick().await }, if interval.is_some() => {
                let snapshot = stream.counters.snapshot();
                tracer.print_summary(&probes, snapshot, "summary so far:");
            }
            _ = cgroup_rescan.tick(), if tracer.selection.cgroup.is_some() => {
                // Processes moved into the cgroup after start (forks are followed in-kernel).
                if let Some(dir) = tracer.selection.cgroup.as_ref().map(|c| c.dir.clone()) {
                    let new: Vec<u32> = cgroup_pids(&dir).into_iter().filter(|p| tracer.selection.cgroup_pids.insert(*p)).collect();
                    if !new.is_empty() {
                        probes.add_filter_pids(&new)?;
                    }
                }
            }
        }
    }

    // Events already in the rings belong to the trace: give the readers a moment to drain.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let now = Instant::now();
    for event in stream.try_drain() {
        tracer.handle(&event, now);
    }
    let snapshot = stream.counters.snapshot();
    if !tracer.args.no_summary {
        tracer.print_summary(&probes, snapshot, "per-process summary:");
    }
    let _ = tracer.out.flush();
    drop(stream);
    probes.detach();
    Ok(())
}

/// One line for the user: what attached, and each family that did not (or only partly).
fn report_attach(probes: &Probes) {
    let report = probes.report();
    let attached: Vec<String> = report
        .families
        .iter()
        .filter(|(f, _)| report.attached(**f))
        .map(|(f, _)| f.to_string())
        .collect();
    for (family, status) in &report.families {
        match status {
            FamilyStatus::Skipped { reason } => {
                eprintln!("memtrace: warning: {family} probes not attached: {reason}")
            }
            FamilyStatus::Partial { missing, .. } => {
                eprintln!(
                    "memtrace: warning: {family} probes attached without {}",
                    missing.join("; ")
                )
            }
            _ => {}
        }
    }
    eprintln!(
        "memtrace: tracing with {} probes attached; Ctrl-C to stop",
        attached.join(", ")
    );
}
