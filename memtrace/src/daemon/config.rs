//! The daemon's settings: command-line flags over a TOML file over defaults.
//!
//! Every flag `--some-name` is the config key `some_name`, with the same meaning and type (a
//! test holds every key to it).
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{host::HostPaths, units::parse_duration};

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

    /// Processes the kernel tracks at most (size of its per-process map) [default: 32768].
    #[arg(long, value_name = "N")]
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

    /// Directory where OOM records and their flight recordings are kept across restarts and
    /// crashes (at most 64 records, none older than --oom-retention; about 2 MiB at most)
    /// [default: /var/lib/memtrace]. Not writable: the daemon runs without it and says so.
    #[arg(long, value_name = "PATH")]
    pub state_dir: Option<PathBuf>,
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
    pub state_dir: Option<PathBuf>,
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
    /// Where OOM history is persisted (see `daemon::state`).
    pub state_dir: PathBuf,
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
    #[error("--max-processes must be at least 1024 (got {max_processes})")]
    MaxProcesses { max_processes: u32 },
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
            state_dir: flags
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        };
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
        if settings.max_processes < 1024 {
            return Err(ConfigError::MaxProcesses {
                max_processes: settings.max_processes,
            });
        }
        Ok(settings)
    }
}

/// Reads and parses a config file.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|err| ConfigError::Toml {
        path: path.to_path_buf(),
        message: err
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_owned(),
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
        state_dir: Some("/srv/memtrace-state".into()),
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
        assert_eq!(table.len(), 10, "every key has a value in every_key_set");
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
}
