//! `memtrace daemon`: keep the per-process / per-cgroup / node model up to date and serve it as
//! Prometheus metrics and a JSON API.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use clap::Args;
use memtrace_api::{FamilySet, OomRecord, PipelineView, Snapshot};
use memtrace_common::{Config, kind};
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cgroup::CgroupFs,
    events::EventKindSet,
    export::{
        http::{self, AppState, Published, ViewRequest},
        prometheus::{BuildInfo, ExportConfig},
    },
    model::{Model, ModelConfig},
    node::NodeReader,
    pipeline::{EventStream, PipelineCounters},
    preflight,
    probes::{DAEMON_FAMILIES, Family, ProbeOptions, Probes, page_size, tasks::TaskSampler},
    procfs::{ProcFs, ProcessCache},
    units::parse_duration,
};

/// Default listen address: loopback, so nothing is exposed unless asked for.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9847";

const EXAMPLES: &str = "\
Examples:
  memtrace daemon                                   serve on 127.0.0.1:9847
  memtrace daemon --listen 0.0.0.0:9847 --top 100   expose to a Prometheus on the network
  memtrace daemon --config /etc/memtrace/daemon.toml
  memtrace daemon --mmap-calls                      also count every mmap/munmap/brk/mremap

Endpoints: /metrics (Prometheus), /api/v1/snapshot, /api/v1/oom (JSON), /healthz, /readyz.
Config file keys (TOML; flags win): listen, top_processes, max_cgroups, interval, rate_window,
max_processes, oom_retention, mmap_calls. Logs: RUST_LOG=info (default), debug, …";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct DaemonArgs {
    /// Address to serve metrics and the API on [default: 127.0.0.1:9847].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// TOML configuration file; command-line flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Workloads (comm + cgroup) exported with their own series; the rest are summed into
    /// `comm="~other"` [default: 50].
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,

    /// Cgroups exported with their own series [default: 200].
    #[arg(long, value_name = "N")]
    pub max_cgroups: Option<usize>,

    /// How often the model samples the kernel counters [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Window over which rates are computed [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub rate_window: Option<Duration>,

    /// Processes the kernel tracks at most (size of its per-process map) [default: 32768].
    #[arg(long, value_name = "N")]
    pub max_processes: Option<u32>,

    /// How long an OOM kill keeps its labelled series after the victim is gone [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub oom_retention: Option<Duration>,

    /// Also count every mmap, munmap, brk and mremap call per process (calls, bytes, failures:
    /// `memtrace_process_mapped_bytes_total`). Off by default: hooking those syscalls sends
    /// every syscall on the node through the kernel's slow path, +7–12% on an mmap-heavy loop
    /// (BENCHMARKS.md). Without it, a process's mapped memory is its virtual size, sampled
    /// each tick (`memtrace_process_virtual_memory_bytes`).
    #[arg(long)]
    pub mmap_calls: bool,
}

/// The config file. Every key is optional; unknown keys are errors (a typo must not be ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub top_processes: Option<usize>,
    pub max_cgroups: Option<usize>,
    pub interval: Option<String>,
    pub rate_window: Option<String>,
    pub max_processes: Option<u32>,
    pub oom_retention: Option<String>,
    pub mmap_calls: Option<bool>,
}

/// Effective settings after merging the file and the flags.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub listen: SocketAddr,
    pub top_processes: usize,
    pub max_cgroups: usize,
    pub interval: Duration,
    pub rate_window: Duration,
    pub max_processes: u32,
    pub oom_retention: Duration,
    /// Attach the mmap family (per-call counters).
    pub mmap_calls: bool,
}

impl Settings {
    /// Flags win over the file; the file wins over defaults. Values are validated here.
    pub fn resolve(args: &DaemonArgs, file: Option<(&Path, FileConfig)>) -> anyhow::Result<Self> {
        let (path, file) = match file {
            Some((path, file)) => (Some(path), file),
            None => (None, FileConfig::default()),
        };
        let from_file = |key: &str, value: &Option<String>| -> anyhow::Result<Option<Duration>> {
            value
                .as_deref()
                .map(|v| {
                    parse_duration(v).map_err(|err| {
                        anyhow::anyhow!(
                            "{}: {key}: {err}",
                            path.map_or_else(String::new, |p| p.display().to_string())
                        )
                    })
                })
                .transpose()
        };
        let settings = Self {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            top_processes: args.top.or(file.top_processes).unwrap_or(50),
            max_cgroups: args.max_cgroups.or(file.max_cgroups).unwrap_or(200),
            interval: args
                .interval
                .or(from_file("interval", &file.interval)?)
                .unwrap_or(Duration::from_secs(1)),
            rate_window: args
                .rate_window
                .or(from_file("rate_window", &file.rate_window)?)
                .unwrap_or(Duration::from_secs(10)),
            max_processes: args.max_processes.or(file.max_processes).unwrap_or(32768),
            oom_retention: args
                .oom_retention
                .or(from_file("oom_retention", &file.oom_retention)?)
                .unwrap_or(Duration::from_secs(3600)),
            mmap_calls: args.mmap_calls || file.mmap_calls.unwrap_or(false),
        };
        if settings.top_processes == 0 {
            bail!("--top must be at least 1");
        }
        if settings.interval < Duration::from_millis(100)
            || settings.interval > Duration::from_secs(60)
        {
            bail!(
                "--interval must be between 100ms and 60s (got {:?})",
                settings.interval
            );
        }
        if settings.rate_window < settings.interval {
            bail!(
                "--rate-window ({:?}) must be at least --interval ({:?})",
                settings.rate_window,
                settings.interval
            );
        }
        if settings.max_processes < 1024 {
            bail!("--max-processes must be at least 1024");
        }
        Ok(settings)
    }
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).map_err(|err| {
        // toml's message spans lines (with a source excerpt); the first line says what is wrong.
        let message = err
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_owned();
        anyhow::anyhow!("config file {}: {message}", path.display())
    })
}

pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => Some((path.as_path(), load_file(path)?)),
        None => None,
    };
    let settings = Settings::resolve(&args, file)?;
    // Bind first: a port in use is the most common start-up failure, and it needs no privileges.
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (use --listen to pick another address)",
                settings.listen
            )
        })?;

    // With port 0 the kernel picks one: report the real address.
    let local = listener.local_addr().unwrap_or(settings.listen);
    let checks = preflight::check()?;
    for warning in &checks.warnings {
        tracing::warn!("{warning}");
    }
    let mask = EventKindSet::from_kinds(&[kind::OOM, kind::EXIT, kind::EXEC]);
    let options = ProbeOptions {
        config: Config {
            event_mask: mask.0,
            filter_flags: 0,
            fault_sample_every: 0,
            page_size: page_size(),
            mmap_min_bytes: u64::MAX,
            reclaim_min_ns: u64::MAX,
            // Exits and execs arrive at the rate processes churn: a wake-up each would cost more
            // than the events; 100 ms of latency (`DRAIN_EVERY_DAEMON`) does not matter to the
            // model.
            flags: memtrace_common::config_flag::BATCH_WAKEUPS,
            reserved: 0,
        },
        max_processes: settings.max_processes,
        // Faults, RSS and virtual size from the kernel's per-task counters, read each tick: no
        // program runs on the fault path (the per-fault hooks are the fallback, see
        // `Probes::load`), nor, unless asked for, on the mmap family's syscalls.
        families: DAEMON_FAMILIES
            .into_iter()
            .chain(settings.mmap_calls.then_some(Family::Mmap))
            .collect(),
        ..ProbeOptions::default()
    };
    let mut probes =
        Probes::load(&checks.tracefs, &options).context("loading the eBPF programs")?;
    let report = probes.report().clone();
    for (family, status) in &report.families {
        tracing::info!("probe family {family}: {status:?}");
    }
    let (probes_attached, probes_failed) = report.counts();
    let (events, faults) = probes.take_rings()?;
    let mut stream = EventStream::spawn(
        vec![events, faults],
        1024,
        crate::pipeline::DRAIN_EVERY_DAEMON,
    )
    .context("reading the ring buffers")?;

    let mut model = Model::new(ModelConfig {
        rate_window: settings.rate_window,
        sample_interval: settings.interval,
        oom_label_retention: settings.oom_retention,
        ..ModelConfig::default()
    });
    let node_reader = NodeReader::new("/proc");
    let cgroups = CgroupFs::new("/sys/fs/cgroup");
    let mut cache = ProcessCache::new(ProcFs::new("/proc"), settings.max_processes as usize);

    let ready = Arc::new(AtomicBool::new(false));
    // Handlers ask this loop for views of the model; see `export::http`.
    let (views, mut view_requests) = tokio::sync::mpsc::channel::<ViewRequest>(64);
    let not_ready_reason = Arc::new(std::sync::Mutex::new(
        "waiting for the first sample".to_owned(),
    ));
    let state = Arc::new(AppState {
        views,
        ready: Arc::clone(&ready),
        not_ready_reason: Arc::clone(&not_ready_reason),
        export: ExportConfig {
            top_processes: settings.top_processes,
            max_cgroups: settings.max_cgroups,
            oom_label_retention: settings.oom_retention,
        },
        build: BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            kernel: kernel_release(),
        },
    });
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, Arc::clone(&state), async {
        let _ = server_stopped.await;
    }));
    tracing::info!("memtrace daemon: {probes_attached} probes attached, serving on http://{local}");

    // Persistent streams: a signal arriving while the loop is busy is kept, not missed.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let pipeline_source = PipelineSource {
        families: report
            .families
            .keys()
            .copied()
            .filter(|family| report.attached(*family))
            .collect(),
        probes_attached: probes_attached as u32,
        probes_failed: probes_failed as u32,
        counters: Arc::clone(&stream.counters),
    };
    let mut cached = CachedViews::default();
    let mut kernel_reader = KernelReader::default();
    let sampling_tasks = report.attached(Family::Tasks);
    loop {
        tokio::select! {
            batch = stream.batches.recv() => {
                let Some(mut batch) = batch else { break };
                let now = Instant::now();
                let wall = SystemTime::now();
                for event in &mut batch {
                    if sampling_tasks && let crate::events::Event::Exit(exit) = event {
                        kernel_reader.tasks.complete_exit(exit);
                    }
                    // Identity must be read while the process still exists: an OOM victim's
                    // cgroup is looked up now, before its exit empties /proc/<pid>.
                    let pid = event.subject_pid();
                    let _ = cache.get_trusted(pid, now);
                    model.observe_event(now, wall, event);
                    match event {
                        crate::events::Event::Exit(_) | crate::events::Event::Exec(_) => cache.invalidate(pid),
                        // A kill is news: do not serve views from before it.
                        crate::events::Event::Oom(_) => cached = CachedViews::default(),
                        _ => {}
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                // Views built during the last tick are out of date: drop them (and their memory)
                // before sampling.
                cached = CachedViews::default();
                sample(&mut model, &mut probes, &mut cache, &node_reader, &cgroups, now, &mut kernel_reader);
                if !ready.swap(true, Ordering::Relaxed) {
                    tracing::info!("ready");
                }
            }
            Some(request) = view_requests.recv() => {
                let view = cached.get(request.want, &model, &probes, &pipeline_source);
                let _ = request.reply.send(view);
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    tracing::info!("shutting down");
    // Requests still queued, and any later ones, get a 503 at once rather than waiting for the
    // server to give up on them.
    drop(view_requests);
    drop(cached);
    ready.store(false, Ordering::Relaxed);
    if let Ok(mut reason) = not_ready_reason.lock() {
        *reason = "shutting down".to_owned();
    }
    let _ = stop_server.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(err))) => tracing::warn!("http server: {err}"),
        Err(_) => tracing::warn!("http server did not stop within 5 s"),
        _ => {}
    }
    drop(stream);
    // Processes that exited between load and attach, or whose exit was lost, leave entries
    // behind; detaching unloads the maps with them.
    probes.detach();
    Ok(())
}

/// What a [`PipelineView`] is made of besides the model.
struct PipelineSource {
    families: FamilySet,
    probes_attached: u32,
    probes_failed: u32,
    counters: Arc<PipelineCounters>,
}

impl PipelineSource {
    fn view(&self, model: &Model, probes: &Probes) -> PipelineView {
        let losses = probes.kernel_losses().unwrap_or_default();
        let counters = self.counters.snapshot();
        PipelineView {
            families: self.families,
            probes_attached: self.probes_attached,
            probes_failed: self.probes_failed,
            tracked_processes: model.process_count() as u64,
            events_received: counters.decoded,
            lost_kernel_ring_full: losses.ring_total(),
            lost_kernel_map_full: losses.map_total(),
            lost_userspace_queue: counters.queue_drops,
            lost_decode: counters.decode_errors,
        }
    }
}

/// Views built since the last sampling tick: however many scrapes come in one interval, each
/// view is built at most once (an idle daemon nobody scrapes builds none).
#[derive(Default)]
struct CachedViews {
    snapshot: Option<Arc<Snapshot>>,
    ooms: Option<Arc<Vec<OomRecord>>>,
}

impl CachedViews {
    fn get(
        &mut self,
        want: http::Want,
        model: &Model,
        probes: &Probes,
        pipeline: &PipelineSource,
    ) -> Published {
        let mut view = Published::default();
        if want.snapshot {
            view.snapshot = Arc::clone(self.snapshot.get_or_insert_with(|| {
                let pipeline = pipeline.view(model, probes);
                Arc::new(model.snapshot(Instant::now(), SystemTime::now(), pipeline))
            }));
        }
        if want.ooms {
            view.ooms = Arc::clone(
                self.ooms
                    .get_or_insert_with(|| Arc::new(model.oom_records())),
            );
        }
        view
    }
}

/// Reads `PROC_STATS` in batches and runs the task sampler; buffers are kept between ticks
/// (10,000 processes need 2 MB of them).
#[derive(Default)]
struct KernelReader {
    reader: crate::probes::batch::ProcStatsReader,
    stats: Vec<(u32, memtrace_common::ProcStats)>,
    tasks: TaskSampler,
    samples: Vec<(
        u32,
        memtrace_common::ProcStats,
        Option<Arc<crate::procfs::ProcessInfo>>,
    )>,
}

/// One sampling tick: kernel counters with identities, the node, and the cgroups in use.
///
/// With the task sampler, the processes are those it finds (every user process), and one pass
/// carries all their counters: faults and RSS from the kernel's task counters, the hook counters
/// (mmap family, reclaim) from `PROC_STATS`. Without it they are `PROC_STATS`'s entries, read
/// in batches.
fn sample(
    model: &mut Model,
    probes: &mut Probes,
    cache: &mut ProcessCache,
    node: &NodeReader,
    cgroups: &CgroupFs,
    now: Instant,
    kernel: &mut KernelReader,
) {
    let samples = &mut kernel.samples;
    let pass_started = Instant::now();
    let tasks = match probes.task_iterator() {
        Ok(None) => Ok(None),
        Ok(Some(file)) => kernel
            .tasks
            .read(file)
            .map(Some)
            .map_err(|err| format!("task sampler: {err}")),
        Err(err) => Err(err.to_string()),
    };
    tracing::debug!(
        processes = tasks.as_ref().ok().and_then(|t| t.map(|t| t.len())),
        elapsed_us = pass_started.elapsed().as_micros() as u64,
        "task sampler pass"
    );
    samples.clear();
    let read = match tasks {
        Ok(Some(totals)) => {
            let page = u64::from(page_size());
            samples.extend(
                totals
                    .iter()
                    .map(|(&pid, totals)| (pid, totals.stats(page), cache.get_trusted(pid, now))),
            );
            Ok(())
        }
        // Batched map reads: at 10,000 processes, key-by-key reading is 20,000 syscalls a tick.
        Ok(None) => probes
            .process_stats_fd()
            .map_err(|err| err.to_string())
            .and_then(|fd| {
                kernel
                    .reader
                    .read(fd, &mut kernel.stats)
                    .map_err(|err| err.to_string())
            })
            .map(|()| {
                samples.extend(
                    kernel
                        .stats
                        .iter()
                        .map(|&(pid, s)| (pid, s, cache.get_trusted(pid, now))),
                );
            }),
        Err(err) => Err(err),
    };
    // A tick without complete counters is skipped: half of them would read as processes whose
    // counters went backwards.
    let complete = match read {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!("reading per-process counters: {err}");
            false
        }
    };
    if complete {
        model.observe_processes(now, samples);
        // Identities are shared with the cache; do not keep them alive past the tick.
        samples.clear();
    }
    match node.sample() {
        Ok(sample) => model.observe_node(sample),
        Err(err) => tracing::debug!("node sample: {err}"),
    }
    for path in model.cgroup_paths() {
        match cgroups.memory(&path) {
            Ok(memory) => model.observe_cgroup(now, &path, memory),
            Err(err) => tracing::debug!("cgroup {path}: {err}"),
        }
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> DaemonArgs {
        DaemonArgs {
            listen: None,
            config: None,
            top: None,
            max_cgroups: None,
            interval: None,
            rate_window: None,
            max_processes: None,
            oom_retention: None,
            mmap_calls: false,
        }
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let file: FileConfig = toml::from_str(
            "listen = \"0.0.0.0:9000\"\ntop_processes = 10\ninterval = \"2s\"\nmmap_calls = true",
        )
        .unwrap();
        let mut flags = args();
        flags.top = Some(20);
        let settings = Settings::resolve(&flags, Some((Path::new("x.toml"), file))).unwrap();
        assert_eq!(settings.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(settings.top_processes, 20, "flag wins");
        assert_eq!(
            settings.interval,
            Duration::from_secs(2),
            "file wins over default"
        );
        assert_eq!(settings.rate_window, Duration::from_secs(10), "default");
        assert!(settings.mmap_calls, "from the file");
        assert!(
            !Settings::resolve(&args(), None).unwrap().mmap_calls,
            "off by default"
        );
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let err = toml::from_str::<FileConfig>("lisen = \"x\"").unwrap_err();
        assert!(
            err.message().contains("unknown field `lisen`"),
            "{}",
            err.message()
        );
        let file: FileConfig = toml::from_str("interval = \"soon\"").unwrap();
        let err = Settings::resolve(&args(), Some((Path::new("d.toml"), file))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("d.toml: interval: invalid duration 'soon'"),
            "{err}"
        );
        let mut flags = args();
        flags.interval = Some(Duration::from_secs(5));
        flags.rate_window = Some(Duration::from_secs(1));
        let err = Settings::resolve(&flags, None).unwrap_err();
        assert!(err.to_string().contains("--rate-window"), "{err}");
    }
}
