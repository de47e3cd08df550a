//! The live trace (`memtrace trace`): load the probes for the chosen events and filter, stream
//! each selected event as text or JSON lines (the contract is `memtrace_api::trace`), then
//! summarise per process.
//!
//! [`run`] owns the loop; [`Tracer`] is its state: the [`Selection`], the identity cache, the
//! [`Summary`] and the output sink.
mod selection;
mod summary;

#[cfg(test)]
mod golden;

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use memtrace_common::{Config, ProcStats, filter, kind, rss_member};
use tokio::signal::unix::{SignalKind, signal};

pub use selection::{COMM_MAX, CgroupFilter, NoSuchCgroup, Selection};
pub use summary::{Summary, SummaryRow};

use crate::{
    cgroup_ids::CgroupIds,
    events::{
        Event, EventKindSet, comm_str,
        render::{self, Clock, TEXT_HEADER},
    },
    host::HostPaths,
    pipeline::{EventStream, PipelineSnapshot},
    preflight,
    probes::{FamilyStatus, KernelLosses, ProbeOptions, Probes, page_size},
    procfs::{ProcFs, ProcessCache},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns for humans: time, pid, comm, event, details.
    Text,
    /// One JSON object per line (`memtrace_api::trace::TraceLine`).
    Json,
}

/// What to trace and how to show it (the `memtrace trace` flags, validated).
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// Only these processes (tgid).
    pub pids: Vec<u32>,
    /// Only tasks with these names (the kernel compares [`COMM_MAX`] characters).
    pub comms: Vec<String>,
    /// Only processes in this cgroup or below: a path as in `/proc/<pid>/cgroup`, or a directory
    /// under the cgroup root.
    pub cgroup: Option<String>,
    /// Event kinds to stream; `None`: OOM kills, reclaim stalls and the mmap family.
    pub events: Option<EventKindSet>,
    /// Smallest mmap-family call shown; `None`: 0 when filtered, else 1 MiB.
    pub min_size: Option<u64>,
    /// Stream page faults, one in `sample` per CPU.
    pub faults: bool,
    pub sample: u32,
    /// Shortest reclaim stall shown.
    pub min_stall: Duration,
    /// Stop after this long; `None`: at SIGINT/SIGTERM.
    pub duration: Option<Duration>,
    pub output: OutputFormat,
    /// Print the summary every interval too.
    pub interval: Option<Duration>,
    /// No summary at the end.
    pub no_summary: bool,
    /// Processes in the summary.
    pub top: usize,
    /// Discrete-event ring buffer, bytes (a power of two, at least a page).
    pub ring_bytes: u32,
    /// Fault ring buffer, bytes; used with `faults` only.
    pub fault_ring_bytes: u32,
    /// Where `/proc` and the cgroup filesystem are.
    pub host: HostPaths,
}

/// `--pid` names no running process.
#[derive(Debug, thiserror::Error)]
#[error("no such process: {pid} (--pid takes the pid of a running process)")]
pub struct NoSuchProcess {
    pub pid: u32,
}

/// The event kinds streamed by default: OOM kills, reclaim stalls, the mmap family.
pub fn default_events() -> EventKindSet {
    EventKindSet::from_kinds(&[
        kind::OOM,
        kind::RECLAIM,
        kind::MMAP,
        kind::MUNMAP,
        kind::BRK,
        kind::MREMAP,
    ])
}

/// Renders events and summaries into a buffered writer (stdout in production).
pub struct Output<W: Write> {
    format: OutputFormat,
    clock: Clock,
    text: String,
    json: Vec<u8>,
    out: std::io::BufWriter<W>,
}

impl<W: Write> Output<W> {
    pub fn new(format: OutputFormat, clock: Clock, writer: W) -> Self {
        Self {
            format,
            clock,
            text: String::with_capacity(256),
            json: Vec::with_capacity(512),
            out: std::io::BufWriter::with_capacity(1 << 16, writer),
        }
    }

    /// The column header, for text output.
    pub fn header(&mut self) {
        if self.format == OutputFormat::Text {
            let _ = writeln!(self.out, "{TEXT_HEADER}");
            self.flush();
        }
    }

    pub fn event(&mut self, event: &Event, cgroup: Option<&str>) {
        let result = match self.format {
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

    pub fn summary(
        &mut self,
        title: &str,
        rows: &[SummaryRow],
        losses: &KernelLosses,
        pipeline: &PipelineSnapshot,
    ) {
        self.flush();
        let result = match self.format {
            OutputFormat::Text => {
                writeln!(self.out, "{}", summary::text(title, rows, losses, pipeline))
            }
            OutputFormat::Json => {
                self.json.clear();
                let now = Clock::monotonic_now_ns();
                summary::json(&mut self.json, &self.clock, now, rows, losses, pipeline)
                    .map_err(std::io::Error::other)
                    .and_then(|()| self.out.write_all(&self.json))
            }
        };
        if let Err(err) = result {
            tracing::debug!("writing the summary: {err}");
        }
        self.flush();
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

/// The state of a running trace.
pub struct Tracer<W: Write> {
    shown: EventKindSet,
    cache: ProcessCache,
    selection: Selection,
    summary: Summary,
    top: usize,
    /// memtrace's own ring-buffer maps and allocations are not what the user is looking for.
    own_pid: u32,
    /// The cgroups the kernel reports with exits and OOM kills, to paths.
    cgroup_ids: Option<CgroupIds>,
    /// Where the summary reads live processes' RSS by type (see [`Tracer::summary_rows`]).
    live_rss: Option<ProcFs>,
    pub output: Output<W>,
}

impl<W: Write> Tracer<W> {
    pub fn new(
        shown: EventKindSet,
        cache: ProcessCache,
        selection: Selection,
        top: usize,
        output: Output<W>,
    ) -> Self {
        Self {
            shown,
            cache,
            selection,
            summary: Summary::default(),
            top,
            own_pid: std::process::id(),
            cgroup_ids: None,
            live_rss: None,
            output,
        }
    }

    /// The summary's RSS of live processes from `procfs` (see [`Tracer::summary_rows`]).
    #[must_use]
    pub fn with_live_rss(mut self, procfs: ProcFs) -> Self {
        self.live_rss = Some(procfs);
        self
    }

    /// Shows the cgroup the kernel reported at exits and OOM kills (resolved by `ids`) rather
    /// than the one `/proc` said, if it said any before the process was gone.
    #[must_use]
    pub fn with_cgroup_ids(mut self, ids: CgroupIds) -> Self {
        self.cgroup_ids = Some(ids);
        self
    }

    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    pub fn selection_mut(&mut self) -> &mut Selection {
        &mut self.selection
    }

    /// One event; `now` is when its batch arrived.
    pub fn handle(&mut self, event: &Event, now: Instant) {
        let pid = event.subject_pid();
        // The process may be gone (exit, OOM victim): the cache answers from what it saw.
        // Trusted lookups: exits and execs (always in the kernel mask) invalidate entries, so a
        // cached identity is current, and it still answers for a process that just exited.
        let info = self.cache.get_trusted(pid, now);
        let kernel_cgroup_id = match event {
            Event::Exit(e) => e.cgroup_id,
            Event::Oom(e) => e.victim_cgroup_id,
            _ => 0,
        };
        let kernel_cgroup = match &mut self.cgroup_ids {
            Some(ids) if kernel_cgroup_id != 0 => ids.path(kernel_cgroup_id).map(str::to_owned),
            _ => None,
        };
        let cgroup = kernel_cgroup
            .as_deref()
            .or_else(|| info.as_ref().and_then(|i| i.cgroup.as_deref()));
        if let Event::Exit(e) = event {
            // The exiting task may be any thread (named e.g. "tokio-runtime-w"): prefer the
            // process's own name when it was seen alive.
            let comm = info
                .as_ref()
                .map_or_else(|| comm_str(&e.header.comm), |i| i.comm.clone());
            if self.selection.matches(pid, &comm, cgroup) && e.tracked != 0 {
                self.summary
                    .record_exit(pid, comm, cgroup.map(str::to_owned), e.stats);
            }
            self.cache.invalidate(pid);
        }
        if let Event::Exec(_) = event {
            self.cache.invalidate(pid);
        }
        if event.header().pid == self.own_pid
            || !self.shown.contains(event.kind())
            || !self.selection.matches_event(event, cgroup)
        {
            return;
        }
        self.output.event(event, cgroup);
    }

    /// Rows for the summary: `live` processes (from the kernel map) that are selected, plus
    /// those that exited.
    pub fn summary_rows(&mut self, live: Vec<(u32, ProcStats)>) -> Vec<SummaryRow> {
        let mut rows = Vec::new();
        // Like the event stream, the summary leaves memtrace itself out.
        for (pid, stats) in live.into_iter().filter(|(pid, _)| *pid != self.own_pid) {
            let info = self.cache.get(pid);
            let comm = info
                .as_ref()
                .map_or_else(|| "?".to_owned(), |i| i.comm.clone());
            let cgroup = info.as_ref().and_then(|i| i.cgroup.clone());
            if self.selection.matches(pid, &comm, cgroup.as_deref()) {
                rows.push(SummaryRow {
                    pid,
                    comm,
                    cgroup,
                    exited: false,
                    stats,
                });
            }
        }
        let mut rows = self.summary.rows(rows, self.top);
        // The hooks know an RSS type only once it changes after attach: a process running
        // before (a server at rest) would show 0 B of file RSS. A live process's RSS by type is
        // read as the kernel counts it now instead (`/proc/<pid>/status`).
        if let Some(procfs) = &self.live_rss {
            for row in rows.iter_mut().filter(|row| !row.exited) {
                let Ok(rss) = procfs.status_rss(row.pid) else {
                    continue;
                };
                for (member, bytes) in [
                    (rss_member::ANON, rss.rss_anon_bytes),
                    (rss_member::FILE, rss.rss_file_bytes),
                    (rss_member::SHMEM, rss.rss_shmem_bytes),
                    (rss_member::SWAP, rss.vm_swap_bytes),
                ] {
                    if let Some(bytes) = bytes {
                        row.stats.rss[member] = bytes;
                    }
                }
            }
        }
        rows
    }

    fn print_summary(&mut self, probes: &Probes, pipeline: &PipelineSnapshot, title: &str) {
        let rows = self.summary_rows(probes.all_process_stats().unwrap_or_default());
        let losses = probes.kernel_losses().unwrap_or_default();
        self.output.summary(title, &rows, &losses, pipeline);
    }
}

/// The probes' configuration for `options`: what the kernel streams and filters.
fn probe_options(options: &TraceOptions, shown: EventKindSet, filtered: bool) -> ProbeOptions {
    let mut kernel_mask = shown;
    // Exit events carry final counters for the summary, whether or not they are shown.
    kernel_mask.insert(kind::EXIT);
    // Exec events keep the identity cache honest (comm changes), shown or not.
    kernel_mask.insert(kind::EXEC);
    if !options.faults {
        kernel_mask.0 &= !(1 << kind::FAULT);
    }
    let mut filter_flags = 0;
    if !options.pids.is_empty() || options.cgroup.is_some() {
        filter_flags |= filter::PIDS;
    }
    if options.cgroup.is_some() {
        filter_flags |= filter::FOLLOW_FORKS;
    }
    if !options.comms.is_empty() {
        filter_flags |= filter::COMMS;
    }
    ProbeOptions {
        config: Config {
            event_mask: kernel_mask.0,
            filter_flags,
            fault_sample_every: if options.faults { options.sample } else { 0 },
            page_size: page_size(),
            mmap_min_bytes: options
                .min_size
                .unwrap_or(if filtered { 0 } else { 1 << 20 }),
            reclaim_min_ns: options.min_stall.as_nanos().min(u128::from(u64::MAX)) as u64,
            // Live: each event wakes the reader, so it is shown (and enriched from /proc)
            // while its process still exists. The fault stream is batched regardless.
            flags: 0,
            reserved: 0,
        },
        events_ring_bytes: options.ring_bytes,
        fault_ring_bytes: if options.faults {
            options.fault_ring_bytes
        } else {
            page_size()
        },
        cgroup_root: options.host.cgroup.clone(),
        ..ProbeOptions::default()
    }
}

/// Trace until `options.duration` passes or SIGINT/SIGTERM arrives, writing to stdout.
pub async fn run(options: TraceOptions) -> anyhow::Result<()> {
    // Check what the user named before touching the kernel.
    let procfs = ProcFs::new(&options.host.proc);
    if let Some(&pid) = options.pids.iter().find(|pid| !procfs.exists(**pid)) {
        return Err(NoSuchProcess { pid }.into());
    }
    let cgroup = options
        .cgroup
        .as_deref()
        .map(|arg| CgroupFilter::resolve(arg, &options.host.cgroup))
        .transpose()?;

    let checks = preflight::check_in(&options.host)?;
    for warning in &checks.warnings {
        eprintln!("memtrace: warning: {warning}");
    }

    let mut shown = options.events.unwrap_or_else(default_events);
    if options.faults {
        shown.insert(kind::FAULT);
    }
    let mut selection = Selection::new(&options.pids, &options.comms, cgroup);
    let mut probe_options = probe_options(&options, shown, selection.is_filtered());
    probe_options.filter_cgroup_root = selection
        .cgroup()
        .and_then(|c| c.hierarchy_id(&options.host.cgroup, &options.host.proc));
    let mut probes =
        Probes::load(&checks.tracefs, &probe_options).context("loading the eBPF programs")?;
    if let Some(cgroup) = selection.cgroup() {
        probes.add_filter_cgroups(&cgroup.ids())?;
    }
    if !options.pids.is_empty() {
        probes.add_filter_pids(&options.pids)?;
    }
    if !selection.comms().is_empty() {
        probes.add_filter_comms(selection.comms())?;
    }
    let initial = selection.rescan_cgroup();
    if !initial.is_empty() {
        probes.add_filter_pids(&initial)?;
    }
    // Only now is the trace complete: a process moved into the cgroup from here on is followed.
    report_attach(&probes);

    let (events, faults) = probes.take_rings()?;
    let mut stream = EventStream::spawn(
        vec![events, faults],
        1024,
        crate::pipeline::DRAIN_EVERY_LIVE,
    )
    .context("reading the ring buffers")?;

    let output = Output::new(options.output, Clock::new(), std::io::stdout());
    let mut tracer = Tracer::new(
        shown,
        ProcessCache::new(procfs.clone(), 16_384),
        selection,
        options.top,
        output,
    )
    .with_cgroup_ids(CgroupIds::new(&options.host.cgroup))
    .with_live_rss(procfs);
    tracer.output.header();

    // Persistent streams, created once: a signal that arrives while a batch is being printed is
    // kept for the next `select!` (a fresh `ctrl_c()` future per iteration would miss it).
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let sleep_until_deadline = async move {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep_until_deadline);
    let mut interval = options.interval.map(tokio::time::interval);
    if let Some(interval) = interval.as_mut() {
        interval.tick().await; // the first tick is immediate
    }
    let mut cgroup_rescan = tokio::time::interval(Duration::from_secs(1));

    loop {
        tokio::select! {
            batch = stream.batches.recv() => match batch {
                Some(mut batch) => {
                    let now = Instant::now();
                    for event in &mut batch {
                        probes.complete_oom(event);
                        tracer.handle(event, now);
                    }
                    tracer.output.flush();
                }
                None => break,
            },
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = &mut sleep_until_deadline => break,
            _ = async { interval.as_mut().expect("guarded").tick().await }, if interval.is_some() => {
                let snapshot = stream.counters.snapshot();
                tracer.print_summary(&probes, &snapshot, "summary so far:");
            }
            _ = cgroup_rescan.tick(), if tracer.selection().cgroup().is_some() => {
                // Processes moved into the cgroup after start (forks are followed in-kernel).
                let new = tracer.selection_mut().rescan_cgroup();
                if !new.is_empty() {
                    probes.add_filter_pids(&new)?;
                }
                // Cgroups created below it since: moves into them are followed too.
                let ids = tracer.selection().cgroup().map(CgroupFilter::ids).unwrap_or_default();
                if let Err(err) = probes.add_filter_cgroups(&ids) {
                    tracing::debug!("cgroup filter: {err}");
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
    if !options.no_summary {
        tracer.print_summary(&probes, &snapshot, "per-process summary:");
    }
    tracer.output.flush();
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

#[cfg(test)]
mod tests {
    use memtrace_common::{COMM_LEN, EventHeader, ExitEvent, MemSyscallEvent};

    use super::*;

    fn mmap(pid: u32) -> Event {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"hog\0");
        Event::MemSyscall(MemSyscallEvent {
            header: EventHeader {
                kind: kind::MMAP,
                pid,
                tid: pid,
                comm,
                ..Default::default()
            },
            len: 1 << 20,
            ..Default::default()
        })
    }

    fn tracer<'a>(
        out: &'a mut Vec<u8>,
        procfs: &std::path::Path,
        shown: EventKindSet,
        selection: Selection,
    ) -> Tracer<&'a mut Vec<u8>> {
        let output = Output::new(OutputFormat::Json, Clock::new(), out);
        let cache = ProcessCache::new(ProcFs::new(procfs), 16);
        Tracer::new(shown, cache, selection, 20, output)
    }

    #[test]
    fn streams_only_selected_processes_and_shown_kinds() {
        let procfs = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let mut tracer = tracer(
            &mut out,
            procfs.path(),
            default_events(),
            Selection::new(&[7], &[], None),
        );
        let now = Instant::now();
        tracer.handle(&mmap(7), now);
        tracer.handle(&mmap(8), now);
        let mut fault = mmap(7);
        if let Event::MemSyscall(e) = &mut fault {
            e.header.kind = kind::FAULT;
        }
        tracer.handle(&fault, now);
        tracer.output.flush();
        drop(tracer);
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(
            (lines[0]["kind"].as_str(), lines[0]["pid"].as_u64()),
            (Some("mmap"), Some(7))
        );
    }

    #[test]
    fn exits_of_selected_processes_stay_in_the_summary() {
        let procfs = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let mut tracer = tracer(
            &mut out,
            procfs.path(),
            EventKindSet::default(),
            Selection::new(&[7], &[], None),
        );
        let exit = |pid: u32, tracked: u32| {
            let mut comm = [0u8; COMM_LEN];
            comm[..3].copy_from_slice(b"hog");
            Event::Exit(ExitEvent {
                header: EventHeader {
                    kind: kind::EXIT,
                    pid,
                    comm,
                    ..Default::default()
                },
                stats: ProcStats {
                    faults_user: 10,
                    ..Default::default()
                },
                tracked,
                ..Default::default()
            })
        };
        let now = Instant::now();
        tracer.handle(&exit(7, 1), now);
        tracer.handle(&exit(8, 1), now);
        tracer.handle(&exit(9, 0), now);
        let live = vec![
            (8, ProcStats::default()),
            (std::process::id(), ProcStats::default()),
        ];
        let rows = tracer.summary_rows(live);
        let rows: Vec<(u32, &str, bool)> = rows
            .iter()
            .map(|r| (r.pid, r.comm.as_str(), r.exited))
            .collect();
        assert_eq!(rows, [(7, "hog", true)]);
        tracer.output.flush();
        drop(tracer);
        assert!(out.is_empty(), "exits are not shown unless asked for");
    }
}
