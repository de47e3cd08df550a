//! The daemon: keeps the per-process / per-cgroup / node model up to date and serves it as
//! Prometheus metrics and a JSON API.
//!
//! [`Daemon`] owns the state (model, probes, event stream, sampler, cached views), in the manner
//! of tokio-console's `Aggregator`: one task folds events and samples into the model and answers
//! [`Request`]s from the HTTP handlers over a bounded channel, so the model needs no lock.
//! [`run`] is the whole daemon for given [`Settings`]; `memtrace daemon` only parses arguments.
use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::AtomicBool},
};

use memtrace_api::frame::Frame;
use memtrace_api::workloads::WorkloadsResponse;
use memtrace_api::{OomRecord, Snapshot};
use memtrace_common::{Config, kind};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};

use crate::{
    events::EventKindSet,
    export::{
        http::{self, AppState},
        prometheus::{BuildInfo, ExportConfig},
    },
    model::{Model, ModelConfig},
    pipeline::EventStream,
    preflight::{self, PreflightError},
    probes::{DAEMON_FAMILIES, Family, ProbeError, ProbeOptions, Probes, page_size},
    web::server::WebServer,
    workload::{ContainerNames, Identifier},
};

mod aggregator;
pub mod config;
pub mod degraded;
pub mod node_name;
pub mod privileges;
pub mod sampler;
pub mod state;
pub mod workloads;

pub use self::aggregator::{Daemon, Server};
pub use self::config::{ConfigError, DEFAULT_LISTEN, FileConfig, Flags, Settings, load_file};
pub use self::sampler::Sampler;
pub use self::workloads::WorkloadsSource;

/// Requests queued for the daemon at most; a handler beyond them waits.
pub const REQUEST_QUEUE: usize = 64;

/// A request to the model's owner, answered on the enclosed channel. The owner builds each view
/// at most once per sampling interval, however many handlers ask.
#[derive(Debug)]
pub enum Request {
    /// `/api/v1/snapshot`.
    Snapshot(oneshot::Sender<Arc<Snapshot>>),
    /// `/api/v1/oom`: the OOM history with flight recordings (any order).
    Ooms(oneshot::Sender<Arc<Vec<OomRecord>>>),
    /// `/metrics`: both.
    Metrics(oneshot::Sender<Published>),
    /// `/api/v1/workloads`, with all the history kept (the handler trims it to `?history=`).
    Workloads(oneshot::Sender<Arc<WorkloadsResponse>>),
}

/// What `/metrics` is rendered from.
#[derive(Clone, Debug, Default)]
pub struct Published {
    pub snapshot: Arc<Snapshot>,
    /// Any order.
    pub ooms: Arc<Vec<OomRecord>>,
}

/// Readiness as `/readyz` serves it, shared by the daemon and the HTTP handlers.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// Set once the probes are attached and a first sample is taken.
    pub ready: Arc<AtomicBool>,
    /// Why the daemon is not ready (served while `ready` is false).
    pub reason: Arc<Mutex<String>>,
}

impl Readiness {
    /// Not ready, for `reason`.
    pub fn not_yet(reason: &str) -> Self {
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            reason: Arc::new(Mutex::new(reason.to_owned())),
        }
    }
}

/// Why the daemon could not start (it runs until a signal once started).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr} (use --listen to pick another address)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Fds(#[from] http::FdBudgetError),
    #[error(transparent)]
    WebConfig(#[from] crate::web::config::WebConfigError),
    #[error("loading the eBPF programs")]
    Load(#[source] ProbeError),
    #[error(transparent)]
    Rings(ProbeError),
    #[error("reading the ring buffers")]
    Stream(#[source] std::io::Error),
    #[error("dropping the privileges no longer needed after attach")]
    Privileges(#[from] privileges::PrivilegeError),
    /// Boxed: its messages carry the API server's URL and words.
    #[error(transparent)]
    Kubernetes(Box<crate::kubernetes::KubernetesError>),
    #[error(
        "--cgroup-root {root}: no such cgroup under {} (give a path as in /proc/<pid>/cgroup, in the memory controller's hierarchy)",
        cgroup_fs.display()
    )]
    CgroupRoot {
        root: String,
        cgroup_fs: std::path::PathBuf,
    },
    #[error(transparent)]
    Record(#[from] crate::record::store::StoreError),
    #[error("installing the {signal} handler")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the daemon until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(settings: Settings) -> Result<(), DaemonError> {
    let fd_limit = http::reserve_fds(settings.http.max_connections)?;
    // Bad certificates, keys or hashes stop the start, naming the file.
    let web = Arc::new(WebServer::from_flag(settings.web_config_file.as_deref())?);
    // Bind first: a port in use is the most common start-up failure, and it needs no privileges.
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: settings.listen,
            source,
        })?;
    // With port 0 the kernel picks one: report the real address.
    let local = listener.local_addr().unwrap_or(settings.listen);
    let Owner {
        daemon,
        requests,
        readiness,
        warnings,
    } = Owner::build(&settings, Persist::Yes).await?;
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    degraded::log_report(daemon.report());
    let served = served_readiness(&readiness, daemon.report(), &settings);
    // Handlers ask the daemon for views of the model; see `export::http`.
    let state = Arc::new(AppState {
        requests,
        readiness: served,
        export: ExportConfig {
            top_processes: settings.top,
            max_cgroups: settings.max_cgroups,
            oom_label_retention: settings.oom_retention,
            pins: settings.pins.clone(),
        },
        build: BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            kernel: kernel_release(&settings.host.proc),
        },
        connections: http::Connections::default(),
    });
    tracing::info!("file descriptor limit {fd_limit}");
    let scheme = web.scheme();
    let auth = if web.basic_auth() {
        " (basic auth)"
    } else {
        ""
    };
    let server = Server::spawn(listener, state, settings.http, web);
    let (probes_attached, _) = daemon.report().counts();
    tracing::info!(
        "memtrace daemon: {probes_attached} probes attached, serving on {scheme}://{local}{auth}"
    );

    let shutdown = signals()?;
    let recorder = settings
        .record_dir
        .as_ref()
        .map(|dir| recorder(&settings, dir))
        .transpose()?;
    drop_privileges()?;
    let daemon = daemon.with_server(server);
    let daemon = match recorder {
        Some(recorder) => daemon.with_recorder(recorder),
        None => daemon,
    };
    daemon.run(settings.interval, shutdown).await;
    Ok(())
}

/// Whether OOM records are kept in `--state-dir` across restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persist {
    Yes,
    /// In-process model (`memtrace top`): the state directory is the daemon's, which may be
    /// running at the same time.
    No,
}

/// The model's owner, probes attached, not yet running: what [`run`] and [`start_local`] share.
struct Owner {
    daemon: Daemon,
    /// Where requests to it go.
    requests: mpsc::Sender<Request>,
    readiness: Readiness,
    /// Non-fatal findings of the pre-flight checks, to tell the user once.
    warnings: Vec<String>,
}

impl Owner {
    async fn build(settings: &Settings, persist: Persist) -> Result<Self, DaemonError> {
        // Before the probes load: `--kubernetes on` without an API server fails fast.
        // The workload identifier holds the pod watch for the daemon's lifetime (it stops when
        // dropped).
        let pods = crate::kubernetes::pod_lookup(settings.kubernetes, &settings.node_name)
            .await
            .map_err(|err| DaemonError::Kubernetes(Box::new(err)))?;
        if let Some(root) = &settings.cgroup_root
            && crate::cgroup::CgroupFs::new(&settings.host.cgroup)
                .find(root.as_str())
                .is_err()
        {
            return Err(DaemonError::CgroupRoot {
                root: root.to_string(),
                cgroup_fs: settings.host.cgroup.clone(),
            });
        }
        let checks = preflight::check_in(&settings.host)?;
        let options = probe_options(settings);
        let mut probes = Probes::load(&checks.tracefs, &options).map_err(DaemonError::Load)?;
        let (events, faults) = probes.take_rings().map_err(DaemonError::Rings)?;
        let stream = EventStream::spawn(
            vec![events, faults],
            1024,
            crate::pipeline::DRAIN_EVERY_DAEMON,
        )
        .map_err(DaemonError::Stream)?;

        let readiness = Readiness::not_yet("waiting for the first sample");
        let (requests, request_queue) = mpsc::channel::<Request>(REQUEST_QUEUE);
        let identifier =
            Identifier::new(pods).with_containers(ContainerNames::under(&settings.host.root));
        let mut model = Model::new(ModelConfig {
            rate_window: settings.rate_window,
            sample_interval: settings.interval,
            oom_label_retention: settings.oom_retention,
            cmdline: settings.cmdline,
            scope: settings.cgroup_root.clone(),
            node_name: Some(settings.node_name.clone()),
            growth: settings.growth,
            ..ModelConfig::default()
        })
        // The one place workloads are named: pods by their controller (with the Kubernetes
        // watcher), containers by name, services by unit, the rest by comm. The model and the
        // workloads summary share it, so both name a process alike.
        .with_identifier(identifier.clone());
        // OOM history from before a restart or crash: served and counted again.
        let state = (persist == Persist::Yes).then(|| {
            state::StateDir::open(
                &settings.state_dir,
                model.config().max_oom_records,
                settings.oom_retention,
            )
        });
        if let Some(state) = &state {
            model.restore_ooms(state.load(std::time::SystemTime::now()));
        }
        let sampler = Sampler::new(&settings.host, settings.max_processes as usize);
        let pins = settings.pins.clone();
        let mut workloads = WorkloadsSource::new(settings)
            .with_identifier(identifier)
            .with_node_name(settings.node_name.clone())
            .with_pins(Box::new(move |workload| pins.matches(workload)));
        if let Some(root) = &settings.cgroup_root {
            workloads = workloads.with_cgroup_root(root.as_str().to_owned());
        }
        let mut daemon = Daemon::new(
            model,
            probes,
            stream,
            sampler,
            request_queue,
            readiness.clone(),
        )
        .with_workloads(workloads);
        if let Some(state) = state {
            daemon = daemon.with_state(state);
        }
        Ok(Self {
            daemon,
            requests,
            readiness,
            warnings: checks.warnings,
        })
    }
}

/// The daemon's model running in this process, without its HTTP server: `memtrace top`'s local
/// source (and `memtrace record`'s). Ask it for views as the HTTP handlers do; [`Self::stop`]
/// detaches the probes (dropping it stops the model's task too, without waiting for it).
pub struct LocalDaemon {
    requests: mpsc::Sender<Request>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// What the user should know once: pre-flight findings, and each requested probe family that
    /// did not attach with its reason (which names the missing privilege and the fix).
    pub warnings: Vec<String>,
}

/// Why the local model did not answer.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("the in-process model has stopped")]
    Stopped,
}

/// Loads the probes and runs the daemon's model in this process (no HTTP server, no OOM state
/// kept in `--state-dir`, privileges not dropped: the process is the caller's), sampling every
/// `settings.interval`; returns once the first sample is taken. Needs a tokio runtime.
pub async fn start_local(settings: &Settings) -> Result<LocalDaemon, DaemonError> {
    let Owner {
        daemon,
        requests,
        readiness,
        mut warnings,
    } = Owner::build(settings, Persist::No).await?;
    let requested = probe_options(settings).families;
    warnings.extend(
        degraded::missing_families(daemon.report(), &requested)
            .into_iter()
            .map(|missing| {
                format!(
                    "probe family {} not attached: {}",
                    missing.family, missing.reason
                )
            }),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let interval = settings.interval;
    let task = tokio::spawn(daemon.run(interval, async {
        let _ = stopped.await;
    }));
    // The first tick samples at once; a frame asked before it would be empty.
    let ready_by = tokio::time::Instant::now() + interval.max(std::time::Duration::from_secs(1));
    while !readiness.ready.load(std::sync::atomic::Ordering::Relaxed)
        && tokio::time::Instant::now() < ready_by
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(LocalDaemon {
        requests,
        stop: Some(stop),
        task: Some(task),
        warnings,
    })
}

impl LocalDaemon {
    /// As `GET /api/v1/snapshot`.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, LocalError> {
        self.ask(Request::Snapshot).await
    }

    /// As `GET /api/v1/workloads` with all the history kept.
    pub async fn workloads(&self) -> Result<Arc<WorkloadsResponse>, LocalError> {
        self.ask(Request::Workloads).await
    }

    /// The snapshot and the workloads of one instant (one sampling tick).
    pub async fn frame(&self) -> Result<Frame, LocalError> {
        // Both views are built from the tick's one snapshot; a tick between the two requests
        // is seen as differing times, and asked again.
        for _ in 0..3 {
            let snapshot = self.snapshot().await?;
            let workloads = self.workloads().await?;
            if workloads.timestamp_unix_ms == snapshot.timestamp_unix_ms {
                return Ok(Frame {
                    snapshot: Arc::unwrap_or_clone(snapshot),
                    workloads: Some(Arc::unwrap_or_clone(workloads)),
                });
            }
        }
        let snapshot = self.snapshot().await?;
        Ok(Frame {
            snapshot: Arc::unwrap_or_clone(snapshot),
            workloads: None,
        })
    }

    /// Stop the model and detach the probes.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, LocalError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(request(reply))
            .await
            .map_err(|_| LocalError::Stopped)?;
        answer.await.map_err(|_| LocalError::Stopped)
    }
}

impl Drop for LocalDaemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `--record-dir`: the rolling store on its writer thread. A directory that cannot be made or
/// read stops the start; a write error later is logged and counted.
fn recorder(
    settings: &Settings,
    dir: &std::path::Path,
) -> Result<crate::record::store::StoreThread, DaemonError> {
    use crate::record::store::{Store, StoreError, StoreOptions, StoreThread};
    let store = Store::open(
        StoreOptions {
            dir: dir.to_owned(),
            max_bytes: settings.record_max_bytes,
            max_age: settings.record_max_age,
            history: crate::export::workloads::DEFAULT_HISTORY,
            writer: crate::record::WriterOptions::default(),
        },
        std::time::SystemTime::now(),
    )?;
    let thread = StoreThread::spawn(store).map_err(|source| StoreError {
        dir: dir.to_owned(),
        what: "starting its writer thread",
        source,
    })?;
    tracing::info!(
        "recording to {} (at most {}, {})",
        dir.display(),
        crate::units::human_bytes(settings.record_max_bytes),
        humantime::format_duration(settings.record_max_age)
    );
    Ok(thread)
}

/// The readiness `/readyz` serves: the daemon's own, or, when a requested family is missing and
/// `--allow-degraded` was not given, one that stays not ready and says why (the daemon still
/// serves what it counts).
fn served_readiness(
    readiness: &Readiness,
    report: &crate::probes::AttachReport,
    settings: &Settings,
) -> Readiness {
    let requested = probe_options(settings).families;
    let missing = degraded::missing_families(report, &requested);
    if missing.is_empty() {
        return readiness.clone();
    }
    let reason = degraded::not_ready_reason(&missing);
    if settings.allow_degraded {
        tracing::warn!("running degraded (--allow-degraded): {reason}");
        readiness.clone()
    } else {
        tracing::error!("/readyz answers 503: {reason}");
        Readiness::not_yet(&reason)
    }
}

/// Probes attached and maps open: keep what the tick needs, see [`privileges`].
fn drop_privileges() -> Result<(), DaemonError> {
    let remaining = privileges::drop_after_attach()?;
    tracing::info!(
        "dropped privileges after attach: keeping {:?}, no_new_privs set{}",
        privileges::names(remaining.capabilities),
        if remaining.bounding_reduced {
            ", bounding set reduced"
        } else {
            " (bounding set left: no CAP_SETPCAP)"
        }
    );
    Ok(())
}

/// The probes the daemon needs: OOM kills, exits and execs as events; everything else counted
/// in the kernel and sampled.
fn probe_options(settings: &Settings) -> ProbeOptions {
    let mask = EventKindSet::from_kinds(&[kind::OOM, kind::EXIT, kind::EXEC]);
    ProbeOptions {
        config: Config {
            event_mask: mask.0,
            filter_flags: 0,
            fault_sample_every: 0,
            page_size: page_size(),
            mmap_min_bytes: u64::MAX,
            reclaim_min_ns: u64::MAX,
            // Exits and execs arrive at the rate processes churn: a wake-up each would cost more
            // than the events; 100 ms of latency (`DRAIN_EVERY_DAEMON`) does not matter to the
            // model. The reclaim-stall histogram is the daemon's (`memtrace_*_reclaim_stall_seconds`).
            flags: memtrace_common::config_flag::BATCH_WAKEUPS
                | memtrace_common::config_flag::RECLAIM_HISTOGRAM,
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
        btf_path: settings.host.btf.clone(),
        cgroup_root: settings.host.cgroup.clone(),
        ..ProbeOptions::default()
    }
}

/// SIGINT or SIGTERM. The streams are installed now and persist: a signal arriving while the
/// daemon is busy is kept, not missed.
fn signals() -> Result<impl Future<Output = ()>, DaemonError> {
    let install = |kind, signal_name| {
        signal(kind).map_err(|source| DaemonError::Signal {
            signal: signal_name,
            source,
        })
    };
    let mut sigint = install(SignalKind::interrupt(), "SIGINT")?;
    let mut sigterm = install(SignalKind::terminate(), "SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    })
}

/// The node's name as the API server knows it (`spec.nodeName` of its pods).
/// `uname -r` of the host, from its procfs; empty if unreadable.
fn kernel_release(proc: &std::path::Path) -> String {
    std::fs::read_to_string(proc.join("sys/kernel/osrelease"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
