//! The live trace (`memtrace trace`): load the probes for the chosen events and filter (only
//! the families they need, [`families`]), stream each selected event as text or JSON lines (the
//! contract is `memtrace_api::trace`; identical events collapsed into one line, [`collapse`]),
//! then summarise per process or per comm, cgroup or workload ([`group`]).
//!
//! [`run`] owns the loop; [`Tracer`] is its state: the [`Selection`], the identity cache, the
//! [`Summary`], the pending runs, the growth samples and the [`Output`].
pub mod collapse;
pub mod families;
pub mod group;
mod output;
mod selection;
mod summary;
pub mod width;

#[cfg(test)]
mod golden;

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use memtrace_common::{Config, ProcStats, filter, kind, rss_member};
use tokio::signal::unix::{SignalKind, signal};

pub use group::{GroupBy, GroupRow, Growth, Keys};
pub use output::Output;
pub use selection::{COMM_MAX, CgroupFilter, NoSuchCgroup, Selection};
pub use summary::{Counted, Summary, SummaryRow, Table};

use crate::{
    cgroup_ids::CgroupIds,
    events::{Event, EventKindSet, comm_str, render::Clock},
    host::HostPaths,
    pipeline::{EventStream, PipelineSnapshot},
    preflight,
    probes::{Family, FamilyStatus, ProbeOptions, Probes, page_size},
    procfs::{ProcFs, ProcessCache},
    workload::{ContainerNames, Identifier},
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
    /// Processes (or groups) in the summary.
    pub top: usize,
    /// What a summary row stands for.
    pub by: GroupBy,
    /// Runs of identical events as one line.
    pub collapse: bool,
    /// Text lines cut to this many columns; `None`: whole.
    pub width: Option<usize>,
    /// Show memtrace's own events and counters too.
    pub include_self: bool,
    /// Show read-only file mappings (the loader mapping libraries) without a filter too.
    pub file_maps: bool,
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

/// How long a row's growth is measured over (its samples: each summary, and one a second).
pub const GROWTH_WINDOW: Duration = Duration::from_secs(10);

/// The state of a running trace.
pub struct Tracer<W: Write> {
    shown: EventKindSet,
    cache: ProcessCache,
    selection: Selection,
    summary: Summary,
    top: usize,
    /// memtrace's own ring-buffer maps and allocations are not what the user is looking for
    /// (`None`: shown too, `--include-self`).
    own_pid: Option<u32>,
    /// The cgroups the kernel reports with exits and OOM kills, to paths.
    cgroup_ids: Option<CgroupIds>,
    /// Where the summary reads live processes' RSS by type (see [`Tracer::summary_rows`]).
    live_rss: Option<ProcFs>,
    /// Every exec and exit is seen (the lifecycle family is attached): cached identities are
    /// invalidated by them and can be trusted without re-reading `/proc/<pid>/stat`.
    exits_seen: bool,
    /// Pending runs of identical events; `None`: every event its own line.
    collapser: Option<collapse::Collapser>,
    /// Runs ended by the last event or tick, to write.
    ended: Vec<collapse::Run>,
    /// Hide read-only file mappings (`--file-maps` shows them).
    hide_file_maps: bool,
    keys: Keys,
    growth: Growth,
    counted: Counted,
    pub output: Output<W>,
}

/// A read-only (or executable) mapping of a file: the dynamic loader mapping an executable's
/// libraries (520 of 646 lines of a 40-file parallel `gcc` build, two per process started).
/// Writable and anonymous mappings, which are what grows memory, are never hidden.
pub fn is_file_image_map(event: &Event) -> bool {
    match event {
        Event::MemSyscall(e) if e.header.kind == kind::MMAP => {
            e.fd >= 0 && e.prot & libc::PROT_WRITE as u32 == 0 && !(-4095..0).contains(&e.ret)
        }
        _ => false,
    }
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
            own_pid: Some(std::process::id()),
            cgroup_ids: None,
            live_rss: None,
            exits_seen: true,
            collapser: None,
            ended: Vec::new(),
            hide_file_maps: false,
            keys: Keys::new(GroupBy::Pid, Identifier::new(None)),
            growth: Growth::new(GROWTH_WINDOW),
            counted: Counted::ALL,
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

    /// Summary rows per `keys`.
    #[must_use]
    pub fn with_keys(mut self, keys: Keys) -> Self {
        self.keys = keys;
        self
    }

    /// Runs of identical events as one line each.
    #[must_use]
    pub fn with_collapse(mut self, collapse: bool) -> Self {
        self.collapser = collapse.then(collapse::Collapser::default);
        self
    }

    /// What the attached families count (the summary's columns), and whether exits and execs
    /// are seen.
    #[must_use]
    pub fn with_counted(mut self, counted: Counted, exits_seen: bool) -> Self {
        self.counted = counted;
        self.exits_seen = exits_seen;
        self
    }

    /// Also memtrace's own events and counters.
    #[must_use]
    pub fn including_self(mut self, include: bool) -> Self {
        self.own_pid = (!include).then(std::process::id);
        self
    }

    /// Leaves out read-only file mappings ([`is_file_image_map`]).
    #[must_use]
    pub fn hiding_file_maps(mut self, hide: bool) -> Self {
        self.hide_file_maps = hide;
        self
    }

    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    pub fn selection_mut(&mut self) -> &mut Selection {
        &mut self.selection
    }

    fn is_own(&self, pid: u32) -> bool {
        self.own_pid == Some(pid)
    }

    /// One event; `now` is when its batch arrived.
    pub fn handle(&mut self, event: &Event, now: Instant) {
        let pid = event.subject_pid();
        // The process may be gone (exit, OOM victim): the cache answers from what it saw.
        // Trusted lookups where exits and execs invalidate entries, so a cached identity is
        // current, and it still answers for a process that just exited.
        let info = if self.exits_seen {
            self.cache.get_trusted(pid, now)
        } else {
            self.cache.get(pid)
        };
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
        if self.is_own(event.header().pid)
            || !self.shown.contains(event.kind())
            || !self.selection.matches_event(event, cgroup)
            || (self.hide_file_maps && is_file_image_map(event))
        {
            return;
        }
        match &mut self.collapser {
            Some(collapser) => {
                collapser.offer(event, cgroup, now, &mut self.ended);
                self.write_ended();
            }
            None => self.output.event(event, cgroup),
        }
    }

    fn write_ended(&mut self) {
        for run in self.ended.drain(..) {
            self.output.run(&run);
        }
    }

    /// Writes the runs that are due at `now` (idle, or old enough).
    pub fn tick(&mut self, now: Instant) {
        if let Some(collapser) = &mut self.collapser {
            collapser.due(now, &mut self.ended);
            self.write_ended();
        }
    }

    /// Writes every pending run (before a summary, and at the end).
    pub fn flush_runs(&mut self) {
        if let Some(collapser) = &mut self.collapser {
            collapser.flush(&mut self.ended);
            self.write_ended();
        }
    }

    /// Rows for the summary: `live` processes (from the kernel map) that are selected, plus
    /// those that exited, grouped and cut to the top; each row's RSS read as the kernel counts
    /// it now and its growth from the samples before; and how many rows there were in all.
    pub fn summary_rows(
        &mut self,
        live: Vec<(u32, ProcStats)>,
        now: Instant,
    ) -> (Vec<GroupRow>, usize) {
        let mut rows = Vec::new();
        // Like the event stream, the summary leaves memtrace itself out.
        for (pid, stats) in live {
            if self.is_own(pid) {
                continue;
            }
            // Trusted where exits and execs are seen: the once-a-second growth sample then
            // reads /proc only for processes it has not seen.
            let info = if self.exits_seen {
                self.cache.get_trusted(pid, now)
            } else {
                self.cache.get(pid)
            };
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
        let (mut rows, total) = self.keys.group(self.summary.rows(rows), self.top);
        // The hooks know an RSS type only once it changes after attach: a process running
        // before (a server at rest) would show 0 B of file RSS. A live process's RSS by type is
        // read as the kernel counts it now instead (`/proc/<pid>/status`); a group's is the sum
        // of its running processes'.
        for row in &mut rows {
            for &pid in &row.live_pids {
                let rss = match &self.live_rss {
                    Some(procfs) => procfs.status_rss(pid).ok(),
                    None => None,
                };
                let Some(rss) = rss else {
                    continue;
                };
                for (member, bytes) in [
                    (rss_member::ANON, rss.rss_anon_bytes),
                    (rss_member::FILE, rss.rss_file_bytes),
                    (rss_member::SHMEM, rss.rss_shmem_bytes),
                    (rss_member::SWAP, rss.vm_swap_bytes),
                ] {
                    row.stats.rss[member] =
                        row.stats.rss[member].saturating_add(bytes.unwrap_or(0));
                }
            }
            if !row.all_exited() {
                row.rss_growth_bytes_per_sec = self.growth.observe(&row.key, now, row.rss_bytes());
            }
        }
        self.growth.sweep(now);
        (rows, total)
    }

    /// A sample for the growth column, between summaries.
    pub fn sample(&mut self, probes: &Probes, now: Instant) {
        if self.counted.any() {
            let _ = self.summary_rows(probes.all_process_stats().unwrap_or_default(), now);
        }
    }

    /// Writes the summary (`periodic`: one of `--interval`'s, left out when unchanged).
    fn print_summary(&mut self, probes: &Probes, pipeline: &PipelineSnapshot, periodic: bool) {
        self.flush_runs();
        let live = if self.counted.any() {
            probes.all_process_stats().unwrap_or_default()
        } else {
            Vec::new()
        };
        let (rows, total) = self.summary_rows(live, Instant::now());
        let losses = probes.kernel_losses().unwrap_or_default();
        let at = self.output.now_text();
        let table = Table {
            title: if periodic {
                "summary so far"
            } else {
                "final summary"
            },
            at: &at,
            by: self.keys.by(),
            rows: &rows,
            total,
            counted: self.counted,
        };
        self.output.summary(&table, &losses, pipeline, periodic);
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
    let families = families::families(families::Needs {
        shown,
        events_chosen: options.events.is_some(),
        summary: !options.no_summary || options.interval.is_some(),
        filter_flags,
    });
    ProbeOptions {
        families,
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
    // Persistent streams, created once: a signal that arrives while a batch is being printed is
    // kept for the next `select!` (a fresh `ctrl_c()` future per iteration would miss it). And
    // created before anything is attached: a Ctrl-C right after the "tracing with" line must
    // stop the trace, also where SIGINT was inherited ignored (a background job of a script),
    // in which case a signal before the handler would be lost.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
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
    let tracer_filtered = selection.is_filtered();
    let mut probe_options = probe_options(&options, shown, tracer_filtered);
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

    let report = probes.report();
    let counted = Counted {
        faults: report.attached(Family::Faults),
        mmap: report.attached(Family::Mmap),
        reclaim: report.attached(Family::Reclaim),
        rss_at_exit: report.attached(Family::Rss),
    };
    let exits_seen = report.attached(Family::Lifecycle);
    let output = Output::new(options.output, Clock::new(), std::io::stdout()).with_width(
        match options.output {
            OutputFormat::Text => options.width,
            OutputFormat::Json => None,
        },
    );
    let keys = Keys::new(
        options.by,
        Identifier::new(None).with_containers(ContainerNames::under(&options.host.root)),
    );
    let hide_file_maps = !options.file_maps && !tracer_filtered;
    let mut tracer = Tracer::new(
        shown,
        ProcessCache::new(procfs.clone(), 16_384),
        selection,
        options.top,
        output,
    )
    .with_cgroup_ids(CgroupIds::new(&options.host.cgroup))
    .with_live_rss(procfs)
    .with_keys(keys)
    .with_collapse(options.collapse)
    .with_counted(counted, exits_seen)
    .including_self(options.include_self)
    .hiding_file_maps(hide_file_maps);
    tracer.output.header();

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
    // Runs of identical events are written when idle or old (see `collapse`).
    let mut run_tick = tokio::time::interval(collapse::IDLE / 2);
    run_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Growth needs samples: one a second while a summary is to come.
    let sampling = (!options.no_summary || options.interval.is_some()) && counted.any();
    let mut growth_sample = tokio::time::interval(Duration::from_secs(1));
    growth_sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            batch = stream.batches.recv() => match batch {
                Some(mut batch) => {
                    let now = Instant::now();
                    for event in &mut batch {
                        probes.complete_oom(event);
                        tracer.handle(event, now);
                    }
                    tracer.tick(now);
                    tracer.output.flush();
                }
                None => break,
            },
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = &mut sleep_until_deadline => break,
            _ = async { interval.as_mut().expect("guarded").tick().await }, if interval.is_some() => {
                let snapshot = stream.counters.snapshot();
                tracer.print_summary(&probes, &snapshot, true);
            }
            _ = run_tick.tick(), if options.collapse => {
                tracer.tick(Instant::now());
                tracer.output.flush();
            }
            _ = growth_sample.tick(), if sampling => tracer.sample(&probes, Instant::now()),
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
    tracer.flush_runs();
    let snapshot = stream.counters.snapshot();
    if !options.no_summary {
        tracer.print_summary(&probes, &snapshot, false);
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
            prot: (libc::PROT_READ | libc::PROT_WRITE) as u32,
            flags: (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32,
            fd: -1,
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
        let (rows, _) = tracer.summary_rows(live, now);
        let rows: Vec<(u32, &str, bool)> = rows
            .iter()
            .map(|r| (r.pid, r.comm.as_str(), r.all_exited()))
            .collect();
        assert_eq!(rows, [(7, "hog", true)]);
        tracer.output.flush();
        drop(tracer);
        assert!(out.is_empty(), "exits are not shown unless asked for");
    }

    fn lines(out: Vec<u8>) -> Vec<serde_json::Value> {
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn identical_events_collapse_into_one_line_with_their_count() {
        let procfs = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let mut tracer = tracer(
            &mut out,
            procfs.path(),
            default_events(),
            Selection::default(),
        )
        .with_collapse(true);
        let now = Instant::now();
        for _ in 0..2048 {
            tracer.handle(&mmap(7), now);
        }
        tracer.handle(&mmap(8), now);
        tracer.tick(now + collapse::IDLE);
        tracer.flush_runs();
        assert_eq!(tracer.output.shown(), 2);
        tracer.output.flush();
        drop(tracer);
        let lines = lines(out);
        let runs: Vec<(u64, Option<u64>)> = lines
            .iter()
            .map(|l| (l["pid"].as_u64().unwrap(), l["events"].as_u64()))
            .collect();
        assert_eq!(runs, [(7, Some(2048)), (8, None)]);
    }

    #[test]
    fn library_maps_and_memtraces_own_events_are_left_out_unless_asked() {
        let procfs = tempfile::tempdir().unwrap();
        let library = |pid: u32| {
            let Event::MemSyscall(mut e) = mmap(pid) else {
                unreachable!()
            };
            e.fd = 3;
            e.prot = libc::PROT_READ as u32;
            Event::MemSyscall(e)
        };
        let own = std::process::id();
        for (hide, include_self, expected) in [
            (true, false, vec![7]),
            (false, false, vec![7, 7]),
            (true, true, vec![7, own]),
        ] {
            let mut out = Vec::new();
            let mut tracer = tracer(
                &mut out,
                procfs.path(),
                default_events(),
                Selection::default(),
            )
            .hiding_file_maps(hide)
            .including_self(include_self);
            let now = Instant::now();
            tracer.handle(&mmap(7), now);
            tracer.handle(&library(7), now);
            tracer.handle(&mmap(own), now);
            tracer.output.flush();
            drop(tracer);
            let pids: Vec<u32> = lines(out)
                .iter()
                .map(|l| l["pid"].as_u64().unwrap() as u32)
                .collect();
            assert_eq!(pids, expected, "hide {hide}, include self {include_self}");
        }
        assert!(is_file_image_map(&library(1)));
        assert!(!is_file_image_map(&mmap(1)), "anonymous");
    }
}
