//! The daemon's settings: command-line flags over a TOML file over defaults.
//!
//! Every flag `--some-name` is the config key `some_name`, with the same meaning and type (a
//! test holds every key to it).
use std::{
    io::Read as _,
    net::SocketAddr,
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    daemon::node_name::{self, NODE_NAME_ENV, NodeNameError},
    export::http::Limits,
    host::HostPaths,
    kubernetes::KubernetesMode,
    model::{
        CgroupRoot, CgroupRootError, CmdlineMode,
        growth::{self, GrowthConfig, GrowthRate},
        instance_history as history,
    },
    units::{duration_in, parse_duration, parse_size},
    workload::{PinError, Pins},
};

/// Default listen address: loopback, so nothing is exposed unless asked for.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9847";

/// Default state directory (systemd's `StateDirectory=memtrace`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/memtrace";

/// The daemon's flags; each one is also a config-file key (`--max-cgroups` is `max_cgroups`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Flags {
    /// Address to serve metrics and the API on [default: 127.0.0.1:9847].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

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

    /// Processes the kernel tracks at most (size of its per-process maps) [default: 32768].
    #[arg(long, value_name = "N", help = max_processes_help())]
    pub max_processes: Option<u32>,

    /// How long an OOM kill keeps its labelled series after the victim is gone [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub oom_retention: Option<Duration>,

    /// Also count every mmap, munmap, brk and mremap call per process (calls, bytes, failures:
    /// `memtrace_process_mapped_bytes_total`), and the bytes handed back with madvise
    /// DONTNEED/FREE (`memtrace_process_madvised_bytes_total`). Off by default: hooking those syscalls sends
    /// every syscall on the node through the kernel's slow path, +7–12% on an mmap-heavy loop
    /// (BENCHMARKS.md). Without it, a process's mapped memory is its virtual size, sampled
    /// each tick (`memtrace_process_virtual_memory_bytes`).
    #[arg(long)]
    pub mmap_calls: bool,

    /// Read the host's kernel files under PATH: PATH/proc, PATH/sys/fs/cgroup,
    /// PATH/sys/kernel/tracing and PATH/sys/kernel/btf/vmlinux [default: /]. For a container
    /// that mounts the host's / (or its /proc and /sys) under one prefix, e.g. a Kubernetes
    /// DaemonSet mounting / at /host: `--host-root /host`. Other processes' `/proc/<pid>` are
    /// only visible in the host's PID namespace (`hostPID: true`); without it the daemon
    /// attributes memory to its own container's processes only.
    #[arg(long, value_name = "PATH")]
    pub host_root: Option<PathBuf>,

    /// Serve even when a probe family the daemon needs did not attach (e.g. without
    /// CAP_DAC_READ_SEARCH tracefs is unreadable and OOM kills, reclaim stalls and exits go
    /// unseen): `/readyz` then answers 200 and the missing families are logged as warnings.
    /// Without it the daemon serves what it has but `/readyz` answers 503 naming each missing
    /// family, its cause and the fix.
    #[arg(long)]
    pub allow_degraded: bool,

    /// What the API shows of each process's command line: `off` (an empty string), `comm-only`
    /// (the command without its arguments) or `full` (arguments included, and with them any
    /// secret passed as one, to everyone who can reach the API) [default: off].
    #[arg(long, value_name = "MODE", value_enum)]
    pub cmdline: Option<CmdlineMode>,

    /// Open HTTP connections at most [default: 256]. Beyond them the connection idle longest
    /// (no request in progress) is closed for the new one, or the new one if all are busy; both
    /// are counted (`memtrace_http_connections_rejected_total`). At start the soft
    /// RLIMIT_NOFILE is raised to the hard limit, which must hold N + 512 descriptors (512 are
    /// kept for the probes and readers). Fixed limits per connection: a request head of at most
    /// 8 KiB (431 beyond), sent within 5 s of connecting or of the previous response (idle and
    /// slow clients are dropped then); 10 s to answer a request (503 after), and a client that
    /// reads none of its response for 10 s is dropped.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: Option<u32>,

    /// Directory where OOM records and their flight recordings are kept across restarts and
    /// crashes (at most 64 records, none older than --oom-retention; about 2 MiB at most)
    /// [default: /var/lib/memtrace]. Not writable: the daemon runs without it and says so.
    #[arg(long, value_name = "PATH")]
    pub state_dir: Option<PathBuf>,

    /// TLS, basic authentication and response headers, in the web config format of Prometheus
    /// exporters (exporter-toolkit YAML: `tls_server_config`, `basic_auth_users` with bcrypt
    /// hashes, `http_server_config.headers`), so a Prometheus scrape config written for any
    /// exporter works unchanged. Re-read when it or a certificate it names changes. Without it
    /// (or with an empty path): plain HTTP, no authentication.
    #[arg(long, value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Pod metadata from the Kubernetes API server, for the workload key (a pod's namespace and
    /// controller): `auto` (on when running in a pod: KUBERNETES_SERVICE_HOST set and a
    /// service-account token mounted), `on` (required: no start without a configuration, in
    /// cluster or a kubeconfig, and permission to list the node's pods) or `off` [default:
    /// auto]. Needs RBAC `get`, `list`, `watch` on pods (README "Kubernetes metadata"); without
    /// it pods are keyed by the uid in their cgroup path.
    #[arg(long, value_name = "MODE", value_enum)]
    pub kubernetes: Option<KubernetesMode>,
    /// One point of each instance's history (`GET /api/v1/workloads`) per DURATION, 1s to 1h
    /// [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = duration_in(history::MIN_STEP, history::MAX_STEP))]
    pub history_step: Option<Duration>,

    /// Points of history kept per instance, 1 to 10080 [default: 360, 6 h at 60s]. A point is
    /// 12 bytes; at most min(4096, 64 MiB / (12 B × N)) instances keep one, so the history
    /// takes at most 17 MiB with the default and 64 MiB whatever N (the instances with the
    /// least pressure go without one beyond that).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(history::MAX_POINTS)))]
    pub history_points: Option<u32>,
    /// The name the fleet knows this node by: the `node` label of `memtrace_node_info` and
    /// `node.name` in the API, used by `memtrace cluster` [default: $NODE_NAME (a DaemonSet sets
    /// it from `spec.nodeName`), else the hostname]. Printable, at most 253 bytes.
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,

    /// Model only the processes in this cgroup subtree (a path as in `/proc/<pid>/cgroup`, in the
    /// memory controller's hierarchy, e.g. /kubepods): others, their cgroups, exits and OOM
    /// kills are left out; a process that moves in or out is counted while inside. Must exist
    /// when the daemon starts.
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<String>,

    /// Always give workloads whose key matches REGEX (anchored at both ends; repeatable) their
    /// own series and summary rows, never folded into `~other`, so sums over nodes are complete.
    /// Each pinned workload adds its series to the --top bound.
    #[arg(long, value_name = "REGEX")]
    pub pin: Vec<String>,

    /// Window over which each process's, cgroup's and instance's RSS growth is computed
    /// (`rss_growth_bytes_per_sec`, `memtrace_*_rss_growth_bytes_per_second`): absent until one
    /// has been watched this long. 2 × --interval to 5m; the per-process sample history grows
    /// with it (one sample per --interval) [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub growth_window: Option<Duration>,

    /// A process is hinted as leaking (`leak_hint`, `memtrace_process_leak_hint`) once its RSS
    /// grew at least --leak-min-growth over this whole window without falling (more than 1 MiB
    /// or 1 % of its peak). 2 × --interval to 7 days; kept as 20 points per process, whatever
    /// its length [default: 10m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub leak_window: Option<Duration>,

    /// The least mean growth over --leak-window that counts as a leak, as SIZE/UNIT (`1MiB/min`,
    /// `512K/s`, `100MiB/h`; a bare size is per minute) [default: 1MiB/min].
    #[arg(long, value_name = "RATE", value_parser = growth::parse_growth_rate)]
    pub leak_min_growth: Option<GrowthRate>,
    /// Keep a rolling recording of this node in DIR, for `memtrace replay`, `memtrace top
    /// --replay` and `memtrace cluster --recordings`: a frame (the snapshot and workloads views)
    /// each --interval, compressed against each other, a new file each hour; the oldest files
    /// are removed beyond --record-max-bytes and --record-max-age. A write error is logged and
    /// counted, and the daemon runs on [default: none].
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,

    /// Bytes the recordings in --record-dir take at most, at least 1M [default: 512M].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub record_max_bytes: Option<u64>,

    /// Recordings in --record-dir last written longer ago than DURATION are removed [default:
    /// 3d].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub record_max_age: Option<Duration>,
}

/// The config file. Every key is optional; unknown keys are errors (a typo must not be ignored).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub top: Option<usize>,
    pub max_cgroups: Option<usize>,
    pub interval: Option<String>,
    pub rate_window: Option<String>,
    pub max_processes: Option<u32>,
    pub oom_retention: Option<String>,
    pub mmap_calls: Option<bool>,
    pub host_root: Option<PathBuf>,
    pub allow_degraded: Option<bool>,
    pub cmdline: Option<CmdlineMode>,
    pub max_connections: Option<u32>,
    pub state_dir: Option<PathBuf>,
    pub web_config_file: Option<PathBuf>,
    pub kubernetes: Option<KubernetesMode>,
    pub history_step: Option<String>,
    pub history_points: Option<u32>,
    pub node_name: Option<String>,
    pub cgroup_root: Option<String>,
    pub pin: Option<Vec<String>>,
    pub growth_window: Option<String>,
    pub leak_window: Option<String>,
    pub leak_min_growth: Option<String>,
    pub record_dir: Option<PathBuf>,
    pub record_max_bytes: Option<String>,
    pub record_max_age: Option<String>,
}

/// Effective settings after merging the file and the flags.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Workloads exported with their own series.
    pub top: usize,
    pub max_cgroups: usize,
    pub interval: Duration,
    pub rate_window: Duration,
    pub max_processes: u32,
    pub oom_retention: Duration,
    /// Attach the mmap family (per-call counters).
    pub mmap_calls: bool,
    /// Where the host's `/proc`, `/sys/fs/cgroup`, tracefs and BTF are.
    pub host: HostPaths,
    /// Ready even when a requested probe family is missing.
    pub allow_degraded: bool,
    /// What the API shows of command lines.
    pub cmdline: CmdlineMode,
    /// The HTTP server's bounds.
    pub http: Limits,
    /// Where OOM history is persisted (see `daemon::state`).
    pub state_dir: PathBuf,
    /// The web config (TLS, authentication), read at start; `None`: plain HTTP.
    pub web_config_file: Option<PathBuf>,
    /// Whether pod metadata is read from the API server.
    pub kubernetes: KubernetesMode,
    /// Resolution of the per-instance history (see `model::instance_history`).
    pub history_step: Duration,
    pub history_points: u32,
    /// `--node-name`, resolved (flag, key, `$NODE_NAME`, hostname) and validated.
    pub node_name: String,
    /// `--cgroup-root`: the model's scope (`None`: every process). Checked to exist at start.
    pub cgroup_root: Option<CgroupRoot>,
    /// `--pin`: workloads never folded into `~other`.
    pub pins: Pins,
    /// `--growth-window`, `--leak-window`, `--leak-min-growth`.
    pub growth: GrowthConfig,
    /// `--record-dir`: where the rolling recording is kept (`None`: not kept).
    pub record_dir: Option<PathBuf>,
    pub record_max_bytes: u64,
    pub record_max_age: Duration,
}

/// A configuration that cannot be used; each variant names the key (or flag) and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// toml's message spans lines (with a source excerpt); this is its first line.
    #[error("config file {}: {message}", path.display())]
    Toml { path: PathBuf, message: String },
    #[error("{}: {key}: {reason}", path.display())]
    Duration {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
    #[error("--top must be at least 1")]
    TopZero,
    #[error("--interval must be between 100ms and 60s (got {interval:?})")]
    Interval { interval: Duration },
    #[error("--rate-window ({rate_window:?}) must be at least --interval ({interval:?})")]
    RateWindow {
        rate_window: Duration,
        interval: Duration,
    },
    #[error(
        "--max-processes must be between {MIN_PROCESSES} and {MAX_PROCESSES} (got {max_processes}; the kernel never runs more processes than its PID_MAX_LIMIT, {MAX_PROCESSES}, and each slot costs ~{} bytes of kernel memory)",
        kernel_bytes_per_process()
    )]
    MaxProcesses { max_processes: u32 },
    #[error("--rate-window must be at most 1h (got {rate_window:?})")]
    RateWindowTooLong { rate_window: Duration },
    #[error(
        "--host-root must not be empty (give / for this host, or where the host's / is mounted)"
    )]
    EmptyHostRoot,
    #[error("--oom-retention must be at most 30 days (got {oom_retention:?})")]
    OomRetention { oom_retention: Duration },
    #[error(
        "config file {} is {what}, not a regular file: give the path of a TOML file",
        path.display()
    )]
    NotRegular { path: PathBuf, what: &'static str },
    #[error(
        "config file {} is larger than {MAX_CONFIG_BYTES} bytes: is it the right file?",
        path.display()
    )]
    TooLarge { path: PathBuf },
    #[error("config file {} is not UTF-8 text: give the path of a TOML file", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("--max-connections must be between 1 and 65536 (got {max_connections})")]
    MaxConnections { max_connections: u32 },
    #[error("--history-step must be between 1s and 1h (got {history_step:?})")]
    HistoryStep { history_step: Duration },
    #[error(
        "--history-points must be between 1 and {} (got {history_points})",
        history::MAX_POINTS
    )]
    HistoryPoints { history_points: u32 },
    #[error(transparent)]
    NodeName(#[from] NodeNameError),
    #[error(transparent)]
    CgroupRoot(#[from] CgroupRootError),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("{}: leak_min_growth: {reason}", path.display())]
    GrowthRate { path: PathBuf, reason: String },
    #[error(
        "--growth-window must be between 2 × --interval ({}) and {} (got {})",
        humantime::format_duration(*interval * 2),
        humantime::format_duration(growth::MAX_GROWTH_WINDOW),
        humantime::format_duration(*window)
    )]
    GrowthWindow {
        window: Duration,
        interval: Duration,
    },
    #[error(
        "--leak-window must be between 2 × --interval ({}) and {} (got {})",
        humantime::format_duration(*interval * 2),
        humantime::format_duration(growth::MAX_LEAK_WINDOW),
        humantime::format_duration(*window)
    )]
    LeakWindow {
        window: Duration,
        interval: Duration,
    },
    #[error("{}: {key}: {reason}", path.display())]
    Size {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
    #[error("--record-max-bytes must be at least 1M (got {record_max_bytes})")]
    RecordMaxBytes { record_max_bytes: u64 },
}

/// The fewest processes the kernel map may hold: below this a busy node fills it at once.
pub const MIN_PROCESSES: u32 = 1024;
/// The most: the kernel's `PID_MAX_LIMIT` on 64-bit (4 × 1024 × 1024), the ceiling of
/// `kernel.pid_max`, so no node ever has more processes to track. A larger map would only
/// cost kernel memory (2^31 entries fail to allocate at all, with E2BIG).
pub const MAX_PROCESSES: u32 = 4 << 20;

/// Largest config file read: a real one is a few hundred bytes; this keeps `--config /dev/zero`
/// or a wrong path from growing the daemon.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The kernel's `struct htab_elem` header before each key of a preallocated BPF hash map
/// (kernel/bpf/hashtab.c, 64-bit).
const HTAB_ELEM_HEADER: u64 = 48;
/// One bucket (`struct bucket`: list head and lock) per slot of the bucket array, whose length is
/// `max_entries` rounded up to a power of two.
const HTAB_BUCKET: u64 = 16;

/// Kernel memory one `--max-processes` slot costs: an element of `PROC_STATS` (pid → the
/// process's counters) and one of `MM_OWNER` (mm → pid), each with the kernel's element header
/// and key and value rounded to 8 bytes, plus their two buckets. Both maps are preallocated at
/// their full size when the daemon starts. 488 bytes today, as measured on Linux 6.18 (the maps'
/// `memlock` in `/proc/<pid>/fdinfo`: 13,371,040 + 2,622,480 bytes at 32768 entries; 128 of the
/// 488 are the reclaim-stall histogram's 16 buckets).
pub fn kernel_bytes_per_process() -> u64 {
    let element = |key: usize, value: usize| {
        HTAB_ELEM_HEADER + (key as u64).next_multiple_of(8) + (value as u64).next_multiple_of(8)
    };
    element(4, size_of::<memtrace_common::ProcStats>()) + element(8, 4) + 2 * HTAB_BUCKET
}

fn max_processes_help() -> String {
    let cost = |n: u64| crate::units::human_bytes(n.saturating_mul(kernel_bytes_per_process()));
    format!(
        "Processes the kernel tracks at most (size of its per-process maps), {MIN_PROCESSES} to \
         {MAX_PROCESSES} [default: 32768]. Each costs ~{} bytes of kernel memory, allocated at \
         start: {} for the default, {} for 1048576, {} for {MAX_PROCESSES}.",
        kernel_bytes_per_process(),
        cost(32768),
        cost(1 << 20),
        cost(u64::from(MAX_PROCESSES)),
    )
}

impl Settings {
    /// Flags win over the file; the file wins over defaults. Values are validated here.
    pub fn resolve(flags: &Flags, file: Option<(&Path, FileConfig)>) -> Result<Self, ConfigError> {
        let (path, file) = match file {
            Some((path, file)) => (path.to_path_buf(), file),
            None => (PathBuf::new(), FileConfig::default()),
        };
        let from_file = |key: &'static str, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| {
                    parse_duration(v).map_err(|reason| ConfigError::Duration {
                        path: path.clone(),
                        key,
                        reason,
                    })
                })
                .transpose()
        };
        // An empty path would silently read the current directory's `proc` and `sys`.
        if flags
            .host_root
            .as_ref()
            .or(file.host_root.as_ref())
            .is_some_and(|root| root.as_os_str().is_empty())
        {
            return Err(ConfigError::EmptyHostRoot);
        }
        let settings = Self {
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            top: flags.top.or(file.top).unwrap_or(50),
            max_cgroups: flags.max_cgroups.or(file.max_cgroups).unwrap_or(200),
            interval: flags
                .interval
                .or(from_file("interval", &file.interval)?)
                .unwrap_or(Duration::from_secs(1)),
            rate_window: flags
                .rate_window
                .or(from_file("rate_window", &file.rate_window)?)
                .unwrap_or(Duration::from_secs(10)),
            max_processes: flags.max_processes.or(file.max_processes).unwrap_or(32768),
            oom_retention: flags
                .oom_retention
                .or(from_file("oom_retention", &file.oom_retention)?)
                .unwrap_or(Duration::from_secs(3600)),
            mmap_calls: flags.mmap_calls || file.mmap_calls.unwrap_or(false),
            host: HostPaths::under(
                flags
                    .host_root
                    .as_deref()
                    .or(file.host_root.as_deref())
                    .unwrap_or(Path::new("/")),
            ),
            allow_degraded: flags.allow_degraded || file.allow_degraded.unwrap_or(false),
            cmdline: flags.cmdline.or(file.cmdline).unwrap_or_default(),
            http: Limits {
                max_connections: flags
                    .max_connections
                    .or(file.max_connections)
                    .map_or(Limits::default().max_connections, |n| n as usize),
                ..Limits::default()
            },
            state_dir: flags
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            // An empty path says "none" (the example config file's value).
            web_config_file: flags
                .web_config_file
                .clone()
                .or(file.web_config_file)
                .filter(|path| !path.as_os_str().is_empty()),
            kubernetes: flags.kubernetes.or(file.kubernetes).unwrap_or_default(),
            history_step: flags
                .history_step
                .or(from_file("history_step", &file.history_step)?)
                .unwrap_or(history::DEFAULT_STEP),
            history_points: flags
                .history_points
                .or(file.history_points)
                .unwrap_or(history::DEFAULT_POINTS),
            node_name: node_name::resolve(
                // An empty key is the example file's "unset"; an empty flag is an error.
                flags
                    .node_name
                    .as_deref()
                    .or(file.node_name.as_deref().filter(|n| !n.is_empty())),
                std::env::var_os(NODE_NAME_ENV),
            )?,
            cgroup_root: flags
                .cgroup_root
                .as_deref()
                .or(file.cgroup_root.as_deref())
                .map(CgroupRoot::new)
                .transpose()?
                // `/` is everything: no scope to check.
                .filter(|root| root.as_str() != "/"),
            pins: if flags.pin.is_empty() {
                Pins::new(file.pin.as_deref().unwrap_or_default())?
            } else {
                Pins::new(&flags.pin)?
            },
            growth: GrowthConfig {
                window: flags
                    .growth_window
                    .or(from_file("growth_window", &file.growth_window)?)
                    .unwrap_or(growth::DEFAULT_GROWTH_WINDOW),
                leak_window: flags
                    .leak_window
                    .or(from_file("leak_window", &file.leak_window)?)
                    .unwrap_or(growth::DEFAULT_LEAK_WINDOW),
                leak_min_growth: match flags.leak_min_growth {
                    Some(rate) => rate,
                    None => file
                        .leak_min_growth
                        .as_deref()
                        .map(growth::parse_growth_rate)
                        .transpose()
                        .map_err(|reason| ConfigError::GrowthRate {
                            path: path.clone(),
                            reason,
                        })?
                        .unwrap_or(GrowthRate::DEFAULT),
                },
            },
            // An empty path says "none" (the example config file's value).
            record_dir: flags
                .record_dir
                .clone()
                .or(file.record_dir)
                .filter(|dir| !dir.as_os_str().is_empty()),
            record_max_bytes: match flags.record_max_bytes {
                Some(bytes) => bytes,
                None => file
                    .record_max_bytes
                    .as_deref()
                    .map(parse_size)
                    .transpose()
                    .map_err(|reason| ConfigError::Size {
                        path: path.clone(),
                        key: "record_max_bytes",
                        reason,
                    })?
                    .unwrap_or(crate::record::store::DEFAULT_MAX_BYTES),
            },
            record_max_age: flags
                .record_max_age
                .or(from_file("record_max_age", &file.record_max_age)?)
                .unwrap_or(crate::record::store::DEFAULT_MAX_AGE),
        };
        let growth = &settings.growth;
        if growth.window < settings.interval * 2 || growth.window > growth::MAX_GROWTH_WINDOW {
            return Err(ConfigError::GrowthWindow {
                window: growth.window,
                interval: settings.interval,
            });
        }
        if growth.leak_window < settings.interval * 2
            || growth.leak_window > growth::MAX_LEAK_WINDOW
        {
            return Err(ConfigError::LeakWindow {
                window: growth.leak_window,
                interval: settings.interval,
            });
        }
        if settings.record_max_bytes < 1 << 20 {
            return Err(ConfigError::RecordMaxBytes {
                record_max_bytes: settings.record_max_bytes,
            });
        }
        if !(history::MIN_STEP..=history::MAX_STEP).contains(&settings.history_step) {
            return Err(ConfigError::HistoryStep {
                history_step: settings.history_step,
            });
        }
        if !(1..=history::MAX_POINTS).contains(&settings.history_points) {
            return Err(ConfigError::HistoryPoints {
                history_points: settings.history_points,
            });
        }
        if !(1..=65536).contains(&settings.http.max_connections) {
            return Err(ConfigError::MaxConnections {
                max_connections: u32::try_from(settings.http.max_connections).unwrap_or(u32::MAX),
            });
        }
        if settings.top == 0 {
            return Err(ConfigError::TopZero);
        }
        if settings.interval < Duration::from_millis(100)
            || settings.interval > Duration::from_secs(60)
        {
            return Err(ConfigError::Interval {
                interval: settings.interval,
            });
        }
        if settings.rate_window < settings.interval {
            return Err(ConfigError::RateWindow {
                rate_window: settings.rate_window,
                interval: settings.interval,
            });
        }
        if !(MIN_PROCESSES..=MAX_PROCESSES).contains(&settings.max_processes) {
            return Err(ConfigError::MaxProcesses {
                max_processes: settings.max_processes,
            });
        }
        // Longer windows than this outgrow the model's bounded histories.
        if settings.rate_window > Duration::from_secs(3600) {
            return Err(ConfigError::RateWindowTooLong {
                rate_window: settings.rate_window,
            });
        }
        if settings.oom_retention > Duration::from_secs(30 * 24 * 3600) {
            return Err(ConfigError::OomRetention {
                oom_retention: settings.oom_retention,
            });
        }
        Ok(settings)
    }
}

/// Reads and parses a config file: a regular file of at most [`MAX_CONFIG_BYTES`]. Never blocks
/// (a FIFO with no writer is refused, not waited on), so the daemon's start-up stays
/// interruptible.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = read_bounded(path)?;
    toml::from_str(&text).map_err(|err| {
        let message = err.message().lines().next().unwrap_or("invalid TOML");
        let message = match err.span() {
            Some(span) => {
                let (line, column) = line_column(&text, span.start);
                format!("line {line}, column {column}: {message}")
            }
            None => message.to_owned(),
        };
        ConfigError::Toml {
            path: path.to_path_buf(),
            message,
        }
    })
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(read_err)?;
    let kind = file.metadata().map_err(read_err)?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else {
            "not a file"
        };
        return Err(ConfigError::NotRegular {
            path: path.to_path_buf(),
            what,
        });
    }
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file at the limit from one past it (or one that grew).
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// A file setting every key to a value other than its default. A struct literal, so a new key
/// does not compile until it is given one here, and then every test below covers it.
#[cfg(test)]
pub(crate) fn every_key_set() -> FileConfig {
    FileConfig {
        listen: Some("0.0.0.0:9000".parse().expect("address")),
        top: Some(7),
        max_cgroups: Some(9),
        interval: Some("2s".to_owned()),
        rate_window: Some("20s".to_owned()),
        max_processes: Some(4096),
        oom_retention: Some("2h".to_owned()),
        mmap_calls: Some(true),
        host_root: Some("/host".into()),
        allow_degraded: Some(true),
        cmdline: Some(CmdlineMode::Full),
        max_connections: Some(64),
        state_dir: Some("/srv/memtrace-state".into()),
        web_config_file: Some("/etc/memtrace/web.yml".into()),
        kubernetes: Some(KubernetesMode::Off),
        history_step: Some("10s".to_owned()),
        history_points: Some(720),
        node_name: Some("node-a".to_owned()),
        cgroup_root: Some("/kubepods".to_owned()),
        pin: Some(vec![
            "redis-server\\.service".to_owned(),
            "shop/Deployment/.*".to_owned(),
        ]),
        growth_window: Some("2m".to_owned()),
        leak_window: Some("30m".to_owned()),
        leak_min_growth: Some("2MiB/min".to_owned()),
        record_dir: Some("/var/lib/memtrace/recordings".into()),
        record_max_bytes: Some("2G".to_owned()),
        record_max_age: Some("1d".to_owned()),
    }
}

/// The config-file keys, each with the value [`every_key_set`] gives it.
#[cfg(test)]
pub(crate) fn key_table() -> toml::Table {
    match toml::Value::try_from(every_key_set()).expect("FileConfig serializes") {
        toml::Value::Table(table) => table,
        other => panic!("FileConfig serializes to a table, not {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args as _, FromArgMatches as _};

    use super::*;

    /// The flag for config key `key` with `value`, as a user would type it.
    fn flag_args(key: &str, value: &toml::Value) -> Vec<String> {
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            toml::Value::Boolean(true) => vec![flag],
            toml::Value::String(text) => vec![flag, text.clone()],
            // A repeatable flag, once per element.
            toml::Value::Array(items) => {
                items.iter().flat_map(|item| flag_args(key, item)).collect()
            }
            other => vec![flag, other.to_string()],
        }
    }

    fn parse_flags(args: &[String]) -> Flags {
        let command = Flags::augment_args(clap::Command::new("daemon"));
        let matches = command
            .try_get_matches_from(std::iter::once("daemon".to_owned()).chain(args.iter().cloned()))
            .unwrap_or_else(|err| panic!("{args:?}: {err}"));
        Flags::from_arg_matches(&matches).expect("flags")
    }

    fn file_with(key: &str, value: &toml::Value) -> FileConfig {
        let mut table = toml::Table::new();
        table.insert(key.to_owned(), value.clone());
        toml::Value::Table(table)
            .try_into()
            .expect("one key parses")
    }

    #[test]
    fn every_key_is_its_flag_and_changes_the_settings() {
        let defaults = Settings::resolve(&Flags::default(), None).unwrap();
        let table = key_table();
        assert_eq!(table.len(), 26, "every key has a value in every_key_set");
        for (key, value) in &table {
            let from_file = Settings::resolve(
                &Flags::default(),
                Some((Path::new("d.toml"), file_with(key, value))),
            )
            .unwrap_or_else(|err| panic!("{key}: {err}"));
            assert_ne!(from_file, defaults, "{key} is read");
            let from_flag = Settings::resolve(&parse_flags(&flag_args(key, value)), None)
                .unwrap_or_else(|err| panic!("--{key}: {err}"));
            assert_eq!(from_flag, from_file, "--{key} means what `{key}` means");
        }
        // And all at once, as a whole file.
        let all = Settings::resolve(
            &Flags::default(),
            Some((Path::new("d.toml"), every_key_set())),
        )
        .unwrap();
        assert_eq!(all.top, 7);
        assert_eq!(all.host.proc, Path::new("/host/proc"));
        assert_eq!(all.node_name, "node-a");
        assert_eq!(
            all.cgroup_root.as_ref().map(CgroupRoot::as_str),
            Some("/kubepods")
        );
        assert!(all.pins.matches("redis-server.service"));
        assert!(all.pins.matches("shop/Deployment/orders"));
        assert!(!all.pins.matches("redis-server"));
    }

    #[test]
    fn node_name_cgroup_root_and_pins_are_validated() {
        let with = |flags: Flags| Settings::resolve(&flags, None).map_err(|e| e.to_string());
        let err = with(Flags {
            node_name: Some(String::new()),
            ..Flags::default()
        })
        .unwrap_err();
        assert!(
            err.starts_with("--node-name \"\" (from --node-name) is empty"),
            "{err}"
        );
        let err = with(Flags {
            cgroup_root: Some("kubepods".to_owned()),
            ..Flags::default()
        })
        .unwrap_err();
        assert!(
            err.starts_with("--cgroup-root \"kubepods\" is not absolute"),
            "{err}"
        );
        let err = with(Flags {
            pin: vec!["redis[".to_owned()],
            ..Flags::default()
        })
        .unwrap_err();
        assert!(err.starts_with("invalid --pin \"redis[\": "), "{err}");
        // Flags replace the file's pins, they do not add to them.
        let file: FileConfig = toml::from_str("pin = [\"a\"]").unwrap();
        let flags = Flags {
            pin: vec!["b".to_owned()],
            ..Flags::default()
        };
        let settings = Settings::resolve(&flags, Some((Path::new("d.toml"), file))).unwrap();
        assert!(settings.pins.matches("b") && !settings.pins.matches("a"));
    }

    #[test]
    fn growth_windows_and_the_leak_threshold_are_validated() {
        let with = |flags: Flags| Settings::resolve(&flags, None).map_err(|e| e.to_string());
        let defaults = with(Flags::default()).unwrap().growth;
        assert_eq!(defaults, GrowthConfig::default());
        assert_eq!(defaults.window, Duration::from_secs(60));
        assert_eq!(defaults.leak_window, Duration::from_secs(600));
        assert_eq!(defaults.leak_min_growth.bytes_per_sec(), 1048576.0 / 60.0);
        for (window, ok) in [(1, false), (2, true), (300, true), (301, false)] {
            let result = with(Flags {
                growth_window: Some(Duration::from_secs(window)),
                ..Flags::default()
            });
            assert_eq!(result.is_ok(), ok, "{window}: {result:?}");
            if let Err(err) = result {
                assert_eq!(
                    err,
                    format!(
                        "--growth-window must be between 2 × --interval (2s) and 5m (got {})",
                        humantime::format_duration(Duration::from_secs(window))
                    )
                );
            }
        }
        let err = with(Flags {
            interval: Some(Duration::from_secs(5)),
            leak_window: Some(Duration::from_secs(8)),
            ..Flags::default()
        })
        .unwrap_err();
        assert_eq!(
            err,
            "--leak-window must be between 2 × --interval (10s) and 7days (got 8s)"
        );
        let file: FileConfig = toml::from_str("leak_min_growth = \"1MiB/week\"").unwrap();
        let err = Settings::resolve(&Flags::default(), Some((Path::new("d.toml"), file)))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("d.toml: leak_min_growth: invalid growth rate '1MiB/week'"),
            "{err}"
        );
        let err = parse_flags(&[]).leak_min_growth;
        assert_eq!(err, None);
        let command = Flags::augment_args(clap::Command::new("daemon"));
        let err = command
            .try_get_matches_from(["daemon", "--leak-min-growth", "0/min"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid growth rate '0/min'"), "{err}");
    }

    #[test]
    fn every_flag_is_a_key() {
        let table = key_table();
        let command = Flags::augment_args(clap::Command::new("daemon"));
        for arg in command.get_arguments() {
            let long = arg.get_long().expect("long flag");
            assert!(
                table.contains_key(&long.replace('-', "_")),
                "--{long} has no config key"
            );
        }
    }

    #[test]
    fn the_example_config_has_every_key() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/daemon.toml"
        ));
        load_file(path).expect("deploy/daemon.toml is a valid config");
        let text = std::fs::read_to_string(path).unwrap();
        let example: toml::Table = toml::from_str(&text).unwrap();
        let keys = |table: &toml::Table| table.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&example), keys(&key_table()));
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let file: FileConfig = toml::from_str(
            "listen = \"0.0.0.0:9000\"\ntop = 10\ninterval = \"2s\"\nmmap_calls = true",
        )
        .unwrap();
        let flags = Flags {
            top: Some(20),
            ..Flags::default()
        };
        let settings = Settings::resolve(&flags, Some((Path::new("x.toml"), file))).unwrap();
        assert_eq!(settings.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(settings.top, 20, "flag wins");
        assert_eq!(
            settings.interval,
            Duration::from_secs(2),
            "file wins over default"
        );
        assert_eq!(settings.rate_window, Duration::from_secs(10), "default");
        assert!(settings.mmap_calls, "from the file");
        let defaults = Settings::resolve(&Flags::default(), None).unwrap();
        assert!(!defaults.mmap_calls, "off by default");
        assert_eq!(defaults.host, HostPaths::default(), "the host's own paths");
        let file: FileConfig = toml::from_str("host_root = \"/host\"").unwrap();
        let flags = Flags {
            host_root: Some("/elsewhere".into()),
            ..Flags::default()
        };
        let settings = Settings::resolve(&flags, Some((Path::new("x.toml"), file))).unwrap();
        assert_eq!(settings.host, HostPaths::under("/elsewhere"), "flag wins");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let err = toml::from_str::<FileConfig>("lisen = \"x\"").unwrap_err();
        assert!(
            err.message().contains("unknown field `lisen`"),
            "{}",
            err.message()
        );
        // The old name of `top` is a typo now, not silently ignored.
        let err = toml::from_str::<FileConfig>("top_processes = 5").unwrap_err();
        assert!(err.message().contains("unknown field `top_processes`"));
        let file: FileConfig = toml::from_str("interval = \"soon\"").unwrap();
        let err =
            Settings::resolve(&Flags::default(), Some((Path::new("d.toml"), file))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("d.toml: interval: invalid duration 'soon'"),
            "{err}"
        );
        let flags = Flags {
            interval: Some(Duration::from_secs(5)),
            rate_window: Some(Duration::from_secs(1)),
            ..Flags::default()
        };
        let err = Settings::resolve(&flags, None).unwrap_err();
        assert!(err.to_string().contains("--rate-window"), "{err}");
        let flags = Flags {
            top: Some(0),
            ..Flags::default()
        };
        assert!(matches!(
            Settings::resolve(&flags, None),
            Err(ConfigError::TopZero)
        ));
    }

    #[test]
    fn unreadable_and_invalid_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.toml");
        let err = load_file(&missing).unwrap_err();
        assert!(err.to_string().contains("absent.toml"), "{err}");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "top = \"many\"\n").unwrap();
        let err = load_file(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with("config file ") && err.contains("bad.toml: "),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn max_processes_is_bounded_by_pid_max_limit_and_help_states_the_cost() {
        let with = |n| {
            Settings::resolve(
                &Flags {
                    max_processes: Some(n),
                    ..Flags::default()
                },
                None,
            )
        };
        assert_eq!(with(MAX_PROCESSES).unwrap().max_processes, 4_194_304);
        for bad in [MAX_PROCESSES + 1, 4_000_000_000, 1 << 31, 1023] {
            let err = with(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "--max-processes must be between 1024 and 4194304 (got {bad}"
                )),
                "{err}"
            );
        }
        // PROC_STATS: 48 + 8 + 336 (the counters, 128 of them the stall histogram); MM_OWNER: 48 + 8 + 8; two 16-byte buckets.
        assert_eq!(
            kernel_bytes_per_process(),
            48 + 8 + size_of::<memtrace_common::ProcStats>() as u64 + 64 + 32
        );
        let help = max_processes_help();
        assert!(help.contains("[default: 32768]"), "{help}");
        assert!(
            help.contains(&format!("~{} bytes", kernel_bytes_per_process())),
            "{help}"
        );
    }

    #[test]
    fn windows_are_bounded() {
        let flags = Flags {
            rate_window: Some(Duration::from_secs(7200)),
            ..Flags::default()
        };
        let err = Settings::resolve(&flags, None).unwrap_err().to_string();
        assert!(err.starts_with("--rate-window must be at most 1h"), "{err}");
        let flags = Flags {
            oom_retention: Some(Duration::from_secs(365 * 24 * 3600)),
            ..Flags::default()
        };
        let err = Settings::resolve(&flags, None).unwrap_err().to_string();
        assert!(
            err.starts_with("--oom-retention must be at most 30 days"),
            "{err}"
        );
        let flags = Flags {
            host_root: Some(PathBuf::new()),
            ..Flags::default()
        };
        assert!(matches!(
            Settings::resolve(&flags, None),
            Err(ConfigError::EmptyHostRoot)
        ));
    }

    #[test]
    fn history_flags_are_bounded_and_default_to_six_hours_of_minutes() {
        let defaults = Settings::resolve(&Flags::default(), None).unwrap();
        assert_eq!(defaults.history_step, Duration::from_secs(60));
        assert_eq!(defaults.history_points, 360);
        let command = Flags::augment_args(clap::Command::new("daemon"));
        for bad in [
            ["--history-step", "500ms"],
            ["--history-step", "2h"],
            ["--history-points", "0"],
            ["--history-points", "10081"],
        ] {
            let err = command
                .clone()
                .try_get_matches_from(std::iter::once("daemon").chain(bad))
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad[0]), "{bad:?}: {err}");
        }
        assert_eq!(
            parse_flags(&["--history-step".into(), "5".into()]).history_step,
            Some(Duration::from_secs(5)),
            "bare seconds"
        );
        let file: FileConfig = toml::from_str("history_step = \"2h\"").unwrap();
        let err = Settings::resolve(&Flags::default(), Some((Path::new("d.toml"), file)))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--history-step must be between 1s and 1h"),
            "{err}"
        );
        let file: FileConfig = toml::from_str("history_points = 20000").unwrap();
        let err = Settings::resolve(&Flags::default(), Some((Path::new("d.toml"), file)))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--history-points must be between 1 and 10080"),
            "{err}"
        );
    }

    #[test]
    fn devices_and_fifos_are_refused_without_reading_or_waiting() {
        let err = load_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert_eq!(
            err,
            "config file /dev/zero is a character device, not a regular file: give the path of a TOML file"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = load_file(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a directory, not a regular file"), "{err}");
        let fifo = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // No writer: a blocking open would wait forever, so the load runs on its own thread.
        let (done, result) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = done.send(load_file(&path).map_err(|err| err.to_string()));
        });
        let err = result
            .recv_timeout(Duration::from_secs(5))
            .expect("loading a FIFO with no writer returns at once")
            .unwrap_err();
        assert!(
            err.ends_with("is a FIFO, not a regular file: give the path of a TOML file"),
            "{err}"
        );
    }

    #[test]
    fn files_are_bounded_in_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        let at_limit = format!("#{}\n", "x".repeat(MAX_CONFIG_BYTES as usize - 2));
        std::fs::write(&path, &at_limit).unwrap();
        load_file(&path).expect("a comment of exactly the limit is read");
        std::fs::write(&path, format!("{at_limit} ")).unwrap();
        let err = load_file(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("is larger than 1048576 bytes: is it the right file?"),
            "{err}"
        );
        std::fs::write(&path, b"top = 1\n\xff\n").unwrap();
        let err = load_file(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("is not UTF-8 text: give the path of a TOML file"),
            "{err}"
        );
    }

    #[test]
    fn toml_errors_carry_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.toml");
        std::fs::write(
            &path,
            "# memtrace\ntop = 5\n\ninterval = \"1s\"\n  bogus = 1\n",
        )
        .unwrap();
        let err = load_file(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "config file {}: line 5, column 3: unknown field `bogus`, expected one of `listen`",
                path.display()
            )),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 0), (1, 1));
    }
}
