//! Cgroup identity (which container / pod / systemd unit a process belongs to) and the memory
//! accounting files of a cgroup, for both cgroup v1 (legacy and hybrid hosts) and v2.
//!
//! Identity is parsed from the path alone (no I/O), so it also works for cgroup paths taken from
//! events or logs of other hosts. The reader takes its root as a constructor argument so tests use
//! fixture trees.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

/// Container runtime that created a container's cgroup, as told by the cgroup name's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
}

/// Kubernetes pod QoS class; serialized exactly as Kubernetes spells it in `status.qosClass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// Who a cgroup belongs to. Every field is optional: a systemd service has no pod, a container
/// under the kubelet's cgroupfs driver does not name its runtime, `/` has nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CgroupIdentity {
    /// 64-hex-digit container id (the innermost one, for nested containers such as kind).
    pub container_id: Option<String>,
    pub runtime: Option<Runtime>,
    /// Pod UID in the API server's form (dashes, even where the systemd driver uses underscores).
    pub pod_uid: Option<String>,
    pub qos: Option<QosClass>,
    /// Innermost `.service` or `.scope` unit; for a container under the systemd cgroup driver this
    /// is the container's scope (e.g. `docker-<id>.scope`), which `systemctl` can act on.
    pub systemd_unit: Option<String>,
}

/// Parses who owns a cgroup from its path (as in `/proc/<pid>/cgroup`). Pure: no I/O.
///
/// Handles docker (cgroupfs `/docker/<id>` and systemd `docker-<id>.scope`), containerd
/// (`cri-containerd-<id>.scope`, nerdctl `nerdctl-<id>.scope`), CRI-O (`crio-<id>` and its
/// `crio-conmon-<id>` helper), podman (`libpod-<id>`, `libpod-conmon-<id>`), bare ids under the
/// kubelet's cgroupfs driver, and pod/QoS levels of both kubelet drivers, including the nested
/// `kubelet-kubepods-...` slices of kind.
pub fn identify(path: &str) -> CgroupIdentity {
    let mut id = CgroupIdentity::default();
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut in_kubepods = false;
    let mut qos = None;
    let mut parent = "";
    for &component in &components {
        if let Some(name) = component.strip_suffix(".slice") {
            // systemd driver: `kubepods-burstable-pod<uid>.slice`, each level repeating its
            // parents' names (`kubelet-kubepods-...` under kind).
            let segments: Vec<&str> = name.split('-').collect();
            if segments.contains(&"kubepods") {
                in_kubepods = true;
                qos = qos.or_else(|| segments.iter().find_map(|s| qos_level(s)));
                if let Some(uid) = segments.last().and_then(|s| pod_uid(s)) {
                    id.pod_uid = Some(uid);
                }
            }
        } else if component == "kubepods" {
            in_kubepods = true;
        } else if in_kubepods && qos_level(component).is_some() && id.pod_uid.is_none() {
            qos = qos_level(component);
        } else if let Some(uid) = pod_uid(component).filter(|_| in_kubepods) {
            id.pod_uid = Some(uid);
        }
        if let Some((container_id, runtime)) = container(component, parent) {
            id.container_id = Some(container_id.to_owned());
            id.runtime = runtime;
        }
        if component.ends_with(".service") || component.ends_with(".scope") {
            id.systemd_unit = Some(component.to_owned());
        }
        parent = component;
    }
    id.qos = match (qos, &id.pod_uid) {
        (Some(q), _) => Some(q),
        // A pod directly under kubepods, with no QoS level in between, is Guaranteed.
        (None, Some(_)) => Some(QosClass::Guaranteed),
        (None, None) => None,
    };
    id
}

fn qos_level(name: &str) -> Option<QosClass> {
    match name {
        "burstable" => Some(QosClass::Burstable),
        "besteffort" => Some(QosClass::BestEffort),
        _ => None,
    }
}

/// `pod<uid>` → the uid with dashes. The systemd driver escapes `-` as `_`. Static (mirror)
/// pods have a 32-hex-digit hash instead of a UUID, so both lengths are accepted.
fn pod_uid(name: &str) -> Option<String> {
    let uid = name.strip_prefix("pod")?.replace('_', "-");
    let well_formed =
        matches!(uid.len(), 32 | 36) && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    well_formed.then_some(uid)
}

/// Container id and runtime from one path component, given the component above it.
fn container<'a>(component: &'a str, parent: &str) -> Option<(&'a str, Option<Runtime>)> {
    const PREFIXES: [(&str, Runtime); 7] = [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("nerdctl-", Runtime::Containerd),
        // The conmon monitor process of a container gets its own scope; it serves that container.
        ("crio-conmon-", Runtime::CriO),
        ("crio-", Runtime::CriO),
        ("libpod-conmon-", Runtime::Podman),
        ("libpod-", Runtime::Podman),
    ];
    let name = component.strip_suffix(".scope").unwrap_or(component);
    if is_container_id(name) {
        // cgroupfs drivers name the directory by the bare id; only docker's parent says who.
        let runtime = (parent == "docker").then_some(Runtime::Docker);
        return Some((name, runtime));
    }
    PREFIXES.iter().find_map(|&(prefix, runtime)| {
        name.strip_prefix(prefix)
            .filter(|id| is_container_id(id))
            .map(|id| (id, Some(runtime)))
    })
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Errors from parsing kernel text formats that have no path of their own (see [`CgroupError`]
/// for the file it came from).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("missing `{0}` line")]
    MissingLine(&'static str),
    #[error("missing key `{key}` in {line:?}")]
    MissingKey { key: &'static str, line: String },
    #[error("bad value {value:?} for `{key}`")]
    BadValue { key: String, value: String },
    #[error(transparent)]
    Psi(#[from] crate::psi::PsiError),
}

/// Errors from reading a cgroup's memory files.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The cgroup directory does not exist (never did, or was removed: containers come and go).
    #[error("cgroup {path} not found")]
    NotFound { path: PathBuf },
    /// Neither a v1 memory controller nor a v2 hierarchy is mounted under the root.
    #[error("no cgroup memory hierarchy under {root}")]
    NoHierarchy { root: PathBuf },
    /// The cgroup path tries to leave the hierarchy (`..`, as seen from inside another cgroup
    /// namespace); it does not name anything we can read.
    #[error("cgroup path {path:?} is outside the hierarchy")]
    InvalidPath { path: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
}

pub use crate::psi::{Psi, PsiLine};

mod memory_stat;

/// Counters from v2 `memory.events` (hierarchical: they include descendants).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemoryEvents {
    /// Reclaimed while under `memory.low` protection.
    pub low: u64,
    /// Throttled for exceeding `memory.high`.
    pub high: u64,
    /// Hit `memory.max` (about to OOM, reclaim tried).
    pub max: u64,
    /// Allocations that failed after reclaim at `memory.max`.
    pub oom: u64,
    /// Processes killed by the OOM killer in this subtree.
    pub oom_kill: u64,
    /// Group OOM kills (`memory.oom.group`); only printed since Linux 5.17.
    pub oom_group_kill: Option<u64>,
}

fn parse_memory_events(text: &str) -> Result<MemoryEvents, ParseError> {
    let mut fields = [None::<u64>; 6];
    const KEYS: [&str; 6] = ["low", "high", "max", "oom", "oom_kill", "oom_group_kill"];
    for (key, value) in key_values(text) {
        if let Some(i) = KEYS.iter().position(|k| *k == key) {
            fields[i] = Some(parse_u64(key, value)?);
        }
    }
    let required = |i: usize| fields[i].ok_or(ParseError::MissingLine(KEYS[i]));
    Ok(MemoryEvents {
        low: required(0)?,
        high: required(1)?,
        max: required(2)?,
        oom: required(3)?,
        oom_kill: required(4)?,
        oom_group_kill: fields[5],
    })
}

/// `key value` lines, as in `memory.events`, `memory.stat` and `memory.oom_control`.
fn key_values(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|l| l.split_once(' '))
}

fn parse_u64(key: &str, value: &str) -> Result<u64, ParseError> {
    value.trim().parse().map_err(|_| ParseError::BadValue {
        key: key.to_owned(),
        value: value.trim().to_owned(),
    })
}

/// v1 reports "no limit" as the page counter's maximum rounded down to a page
/// (9223372036854771712 with 4 KiB pages, a different number with 64 KiB pages); no real limit
/// is anywhere near 2^62 bytes.
const V1_UNLIMITED_THRESHOLD: u64 = 1 << 62;

/// Memory accounting of one cgroup. Fields are `None` when the file is absent (controller or
/// feature not enabled, older kernel, root cgroup), except `limit_bytes` where `None` means
/// unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CgroupMemory {
    /// 1 or 2.
    pub version: u8,
    /// Hierarchical usage (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub usage_bytes: Option<u64>,
    /// `None` = unlimited: v2 `max`, v1 values ≥ 2^62.
    pub limit_bytes: Option<u64>,
    /// v2 `memory.swap.current`; v1 `total_swap` from `memory.stat` (only with swap accounting).
    pub swap_usage_bytes: Option<u64>,
    /// v2 `memory.pressure`. v1 has no per-cgroup PSI.
    pub pressure: Option<Psi>,
    /// v2 `memory.events`.
    pub events: Option<MemoryEvents>,
    /// v1 `oom_kill` line of `memory.oom_control` (Linux 4.13+).
    pub v1_oom_kill: Option<u64>,
    /// v1 `under_oom` of `memory.oom_control`: the group is OOM and its tasks are frozen (only
    /// with `oom_kill_disable 1`).
    pub v1_under_oom: Option<bool>,
}

/// Where the memory controller lives under the root.
enum Layout {
    V1(PathBuf),
    V2(PathBuf),
}

/// Reader for a cgroup filesystem root (`/sys/fs/cgroup` in production, fixtures in tests).
#[derive(Debug, Clone)]
pub struct CgroupFs {
    root: PathBuf,
}

impl CgroupFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Detects layout: unified v2 at `<root>` (`cgroup.controllers` present: a pure v2 host,
    /// where a directory `memory` is just a cgroup of that name), else the v1 memory controller
    /// at `<root>/memory` (hybrid/legacy), else unified v2 at `<root>/unified`.
    ///
    /// v1 is checked before `unified` because on hybrid hosts the unified hierarchy also exists
    /// but memory is not accounted there. The layout is detected on every call (two stat calls)
    /// rather than cached so a reader built before cgroupfs is mounted still works later.
    pub fn memory(&self, cgroup_path: &str) -> Result<CgroupMemory, CgroupError> {
        let relative = relative_path(cgroup_path)?;
        let (dir, version) = match self.layout()? {
            Layout::V1(base) => (base.join(relative), 1),
            Layout::V2(base) => (base.join(relative), 2),
        };
        if !dir.is_dir() {
            return Err(CgroupError::NotFound { path: dir });
        }
        let memory = if version == 1 {
            read_v1(&dir)?
        } else {
            read_v2(&dir)?
        };
        // Files that vanished mid-read read as absent; a removed cgroup must not look like an
        // empty one.
        if memory.usage_bytes.is_none() && !dir.is_dir() {
            return Err(CgroupError::NotFound { path: dir });
        }
        Ok(memory)
    }

    fn layout(&self) -> Result<Layout, CgroupError> {
        match crate::cgroup_ids::memory_hierarchy(&self.root) {
            Some((base, true)) => Ok(Layout::V1(base)),
            Some((base, false)) => Ok(Layout::V2(base)),
            None => Err(CgroupError::NoHierarchy {
                root: self.root.clone(),
            }),
        }
    }

    /// The hierarchies a cgroup path may live in, in the order memtrace looks. On a pure v2
    /// host (cgroup2 at the root) only the root: `memory` and `unified` there are cgroups. Else
    /// the v1 memory controller (the one that OOMs, and the hierarchy whose paths the process
    /// cache reports on hybrid hosts), v2 under `unified` on hybrid hosts, the root.
    pub fn hierarchies(&self) -> Vec<PathBuf> {
        if is_unified_root(&self.root) {
            return vec![self.root.clone()];
        }
        vec![
            self.root.join("memory"),
            self.root.join("unified"),
            self.root.clone(),
        ]
    }

    /// The directory of `cgroup_path` (as in `/proc/<pid>/cgroup`) in the first hierarchy that
    /// has it (a `cgroup.procs` file), refusing paths that would leave the hierarchy.
    pub fn find(&self, cgroup_path: &str) -> Result<PathBuf, CgroupError> {
        let relative = relative_path(cgroup_path)?;
        self.hierarchies()
            .into_iter()
            .map(|hierarchy| hierarchy.join(&relative))
            .find(|dir| dir.join("cgroup.procs").is_file())
            .ok_or_else(|| CgroupError::NotFound {
                path: self.root.join(&relative),
            })
    }
}

/// `root` is a cgroup2 mount (the unified hierarchy itself), not the tmpfs of v1 hierarchies.
pub(crate) fn is_unified_root(root: &Path) -> bool {
    root.join("cgroup.controllers").is_file()
}

/// `/a/b` → `a/b`, refusing anything that would resolve outside the hierarchy. `cgroup_path` is
/// in the escaped form [`crate::procfs`] reports (`\xff` for a byte that is not UTF-8, `\\` for
/// a backslash): the directory opened is the one with exactly those bytes.
fn relative_path(cgroup_path: &str) -> Result<PathBuf, CgroupError> {
    let raw = crate::escape::unescape_bytes(cgroup_path);
    let mut out = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(&raw)).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(CgroupError::InvalidPath {
                    path: cgroup_path.to_owned(),
                });
            }
        }
    }
    Ok(out)
}

fn read_v1(dir: &Path) -> Result<CgroupMemory, CgroupError> {
    let oom_control = read_optional(dir, "memory.oom_control")?;
    let (mut v1_oom_kill, mut v1_under_oom) = (None, None);
    if let Some((path, text)) = &oom_control {
        for (key, value) in key_values(text) {
            let parse = |key| parse_u64(key, value).map_err(|source| parse_err(path, source));
            match key {
                "oom_kill" => v1_oom_kill = Some(parse("oom_kill")?),
                "under_oom" => v1_under_oom = Some(parse("under_oom")? != 0),
                _ => {}
            }
        }
    }
    // Not `memsw.usage_in_bytes - usage_in_bytes`: both are approximate and read at different
    // moments, and their difference shows hundreds of KiB of swap on hosts with no swap at all.
    let mut swap_usage_bytes = None;
    if let Some((path, text)) = read_optional(dir, "memory.stat")?
        && let Some((key, value)) = key_values(&text).find(|(k, _)| *k == "total_swap")
    {
        swap_usage_bytes = Some(parse_u64(key, value).map_err(|e| parse_err(&path, e))?);
    }
    Ok(CgroupMemory {
        version: 1,
        usage_bytes: read_u64(dir, "memory.usage_in_bytes")?,
        limit_bytes: read_u64(dir, "memory.limit_in_bytes")?
            .filter(|&limit| limit < V1_UNLIMITED_THRESHOLD),
        swap_usage_bytes,
        pressure: None,
        events: None,
        v1_oom_kill,
        v1_under_oom,
    })
}

fn read_v2(dir: &Path) -> Result<CgroupMemory, CgroupError> {
    let limit_bytes = match read_optional(dir, "memory.max")? {
        Some((_, text)) if text.trim() == "max" => None,
        Some((path, text)) => {
            Some(parse_u64("memory.max", &text).map_err(|e| parse_err(&path, e))?)
        }
        None => None,
    };
    let pressure = read_optional(dir, "memory.pressure")?
        // Lenient: a line a future kernel adds must not cost every cgroup its pressure.
        .map(|(path, text)| {
            crate::psi::parse(&text, crate::psi::Lines::Lenient)
                .map_err(|e| parse_err(&path, e.into()))
        })
        .transpose()?;
    let events = read_optional(dir, "memory.events")?
        .map(|(path, text)| parse_memory_events(&text).map_err(|e| parse_err(&path, e)))
        .transpose()?;
    Ok(CgroupMemory {
        version: 2,
        usage_bytes: read_u64(dir, "memory.current")?,
        limit_bytes,
        swap_usage_bytes: read_u64(dir, "memory.swap.current")?,
        pressure,
        events,
        v1_oom_kill: None,
        v1_under_oom: None,
    })
}

fn parse_err(path: &Path, source: ParseError) -> CgroupError {
    CgroupError::Parse {
        path: path.to_owned(),
        source,
    }
}

/// Reads `dir/file`; `None` if it does not exist (the feature is off or the kernel predates it).
fn read_optional(dir: &Path, file: &str) -> Result<Option<(PathBuf, String)>, CgroupError> {
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some((path, text))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Io { path, source }),
    }
}

fn read_u64(dir: &Path, file: &str) -> Result<Option<u64>, CgroupError> {
    read_optional(dir, file)?
        .map(|(path, text)| parse_u64(file, &text).map_err(|e| parse_err(&path, e)))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cgroup");
    const ID: &str = "3b1d5a9c0e2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8e0f2a4b";
    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const UID_: &str = "0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0";

    fn ident(
        container: bool,
        runtime: Option<Runtime>,
        pod: bool,
        qos: Option<QosClass>,
        unit: Option<&str>,
    ) -> CgroupIdentity {
        CgroupIdentity {
            container_id: container.then(|| ID.to_owned()),
            runtime,
            pod_uid: pod.then(|| UID.to_owned()),
            qos,
            systemd_unit: unit.map(str::to_owned),
        }
    }

    #[test]
    fn identify_real_world_paths() {
        use QosClass::*;
        use Runtime::*;
        let scope = |prefix: &str| format!("{prefix}-{ID}.scope");
        let cases: Vec<(String, CgroupIdentity)> = vec![
            // docker, cgroupfs and systemd drivers
            (
                format!("/docker/{ID}"),
                ident(true, Some(Docker), false, None, None),
            ),
            (
                format!("/system.slice/docker-{ID}.scope"),
                ident(true, Some(Docker), false, None, Some(&scope("docker"))),
            ),
            // kubelet cgroupfs driver: the runtime is not named
            (
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                ident(true, None, true, Some(Burstable), None),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                ident(true, None, true, Some(BestEffort), None),
            ),
            (
                format!("/kubepods/pod{UID}/{ID}"),
                ident(true, None, true, Some(Guaranteed), None),
            ),
            // pod level and QoS level without a container
            (
                format!("/kubepods/burstable/pod{UID}"),
                ident(false, None, true, Some(Burstable), None),
            ),
            (
                "/kubepods/besteffort".into(),
                ident(false, None, false, Some(BestEffort), None),
            ),
            ("/kubepods".into(), ident(false, None, false, None, None)),
            // kubelet systemd driver + containerd
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                ident(
                    true,
                    Some(Containerd),
                    true,
                    Some(Burstable),
                    Some(&scope("cri-containerd")),
                ),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                ident(
                    true,
                    Some(Containerd),
                    true,
                    Some(BestEffort),
                    Some(&scope("cri-containerd")),
                ),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                ident(
                    true,
                    Some(Containerd),
                    true,
                    Some(Guaranteed),
                    Some(&scope("cri-containerd")),
                ),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
                ),
                ident(false, None, true, Some(Burstable), None),
            ),
            // CRI-O and its conmon helper
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope"
                ),
                ident(
                    true,
                    Some(CriO),
                    true,
                    Some(Burstable),
                    Some(&scope("crio")),
                ),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{ID}.scope"
                ),
                ident(
                    true,
                    Some(CriO),
                    true,
                    Some(BestEffort),
                    Some(&scope("crio-conmon")),
                ),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
                ident(true, Some(CriO), true, Some(Burstable), None),
            ),
            // podman, system and rootless
            (
                format!("/machine.slice/libpod-{ID}.scope"),
                ident(true, Some(Podman), false, None, Some(&scope("libpod"))),
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                ident(true, Some(Podman), false, None, Some(&scope("libpod"))),
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
                ),
                ident(true, Some(Podman), false, None, Some(&scope("libpod"))),
            ),
            (
                format!("/machine.slice/libpod-conmon-{ID}.scope"),
                ident(
                    true,
                    Some(Podman),
                    false,
                    None,
                    Some(&scope("libpod-conmon")),
                ),
            ),
            // kind: kubelet inside a node container, systemd driver with a kubelet.slice parent
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                ident(
                    true,
                    Some(Containerd),
                    true,
                    Some(Burstable),
                    Some(&scope("cri-containerd")),
                ),
            ),
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                ident(
                    true,
                    Some(Containerd),
                    true,
                    Some(Guaranteed),
                    Some(&scope("cri-containerd")),
                ),
            ),
            // kind without cgroupns: the node container's id is outer, the pod's container inner
            (
                format!(
                    "/docker/{}/kubepods/besteffort/pod{UID}/{ID}",
                    "f".repeat(64)
                ),
                ident(true, None, true, Some(BestEffort), None),
            ),
            // systemd units
            (
                "/system.slice/nginx.service".into(),
                ident(false, None, false, None, Some("nginx.service")),
            ),
            (
                "/user.slice/user-1000.slice/session-2.scope".into(),
                ident(false, None, false, None, Some("session-2.scope")),
            ),
            (
                "/system.slice/containerd.service".into(),
                ident(false, None, false, None, Some("containerd.service")),
            ),
            ("/".into(), CgroupIdentity::default()),
            ("".into(), CgroupIdentity::default()),
            // Not container ids: too short (this host's own cgroup), uppercase, not hex.
            (
                "/process_api/705143ec50b41d7137253d3eeaa5b6f6".into(),
                CgroupIdentity::default(),
            ),
            (
                format!("/docker/{}", ID.to_uppercase()),
                CgroupIdentity::default(),
            ),
            (
                format!("/docker/{}", "g".repeat(64)),
                CgroupIdentity::default(),
            ),
            // `pod...` outside kubepods is not a pod.
            (format!("/system.slice/pod{UID}"), CgroupIdentity::default()),
        ];
        for (path, expected) in cases {
            assert_eq!(identify(&path), expected, "path {path}");
        }
    }

    #[test]
    fn identify_static_pod_hash_uid() {
        let hash = "5cb8c8a3a8e4f8b7d9e0c1a2b3c4d5e6";
        let id = identify(&format!("/kubepods/burstable/pod{hash}/{ID}"));
        assert_eq!(id.pod_uid.as_deref(), Some(hash));
        assert_eq!(id.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn identity_serializes_like_kubernetes() {
        let id = identify(&format!("/kubepods/besteffort/pod{UID}/crio-{ID}"));
        let json = serde_json::to_value(&id).unwrap();
        assert_eq!(json["runtime"], "crio");
        assert_eq!(json["qos"], "BestEffort");
        assert_eq!(json["pod_uid"], UID);
        assert_eq!(
            serde_json::to_string(&Runtime::Containerd).unwrap(),
            "\"containerd\""
        );
        assert_eq!(
            serde_json::to_string(&QosClass::Guaranteed).unwrap(),
            "\"Guaranteed\""
        );
    }

    fn fs(tree: &str) -> CgroupFs {
        CgroupFs::new(format!("{FIXTURES}/{tree}"))
    }

    #[test]
    fn v1_limited_container() {
        let mem = fs("v1")
            .memory(&format!("/kubepods/burstable/pod{UID}/{ID}"))
            .unwrap();
        assert_eq!(
            mem,
            CgroupMemory {
                version: 1,
                usage_bytes: Some(104_857_600),
                limit_bytes: Some(268_435_456),
                swap_usage_bytes: Some(4096),
                pressure: None,
                events: None,
                v1_oom_kill: Some(3),
                v1_under_oom: Some(true),
            }
        );
    }

    #[test]
    fn v1_root_unlimited_on_old_kernel_without_swap_accounting() {
        // The v1 fixture also has unified/cgroup.controllers (hybrid host): v1 must win.
        let mem = fs("v1").memory("/").unwrap();
        assert_eq!(mem.version, 1);
        assert_eq!(mem.usage_bytes, Some(1_073_741_824));
        assert_eq!(mem.limit_bytes, None, "9223372036854771712 is unlimited");
        assert_eq!(mem.swap_usage_bytes, None);
        assert_eq!(mem.v1_oom_kill, None, "no oom_kill line before 4.13");
        assert_eq!(mem.v1_under_oom, Some(false));
    }

    #[test]
    fn v1_unlimited_with_64k_pages() {
        let mem = fs("v1").memory("/arm64-host").unwrap();
        assert_eq!(mem.limit_bytes, None, "9223372036854710272 is unlimited");
        assert_eq!(mem.usage_bytes, Some(65536));
        assert_eq!(mem.v1_oom_kill, Some(0));
    }

    #[test]
    fn v1_real_host_capture() {
        let mem = fs("v1")
            .memory("/process_api/705143ec50b41d7137253d3eeaa5b6f6")
            .unwrap();
        assert_eq!(mem.version, 1);
        assert_eq!(mem.usage_bytes, Some(4_222_976));
        assert_eq!(mem.limit_bytes, None);
        // memsw.usage - usage would claim 204800 bytes of swap on a host with no swap.
        assert_eq!(mem.swap_usage_bytes, Some(0));
        assert_eq!(mem.v1_oom_kill, Some(0));
        assert_eq!(mem.v1_under_oom, Some(false));
    }

    #[test]
    fn v2_service_unlimited_with_psi_and_events() {
        let mem = fs("v2").memory("/system.slice/nginx.service").unwrap();
        assert_eq!(mem.version, 2);
        assert_eq!(mem.usage_bytes, Some(52_428_800));
        assert_eq!(mem.limit_bytes, None, "\"max\" is unlimited");
        assert_eq!(mem.swap_usage_bytes, Some(8192));
        let psi = mem.pressure.unwrap();
        assert_eq!(
            psi.some,
            PsiLine {
                avg10: 1.5,
                avg60: 0.75,
                avg300: 0.1,
                total_us: 123_456
            }
        );
        assert_eq!(psi.full.unwrap().total_us, 65_432);
        assert_eq!(
            mem.events,
            Some(MemoryEvents {
                low: 0,
                high: 12,
                max: 4,
                oom: 2,
                oom_kill: 1,
                oom_group_kill: Some(0),
            })
        );
        assert_eq!((mem.v1_oom_kill, mem.v1_under_oom), (None, None));
    }

    #[test]
    fn v2_limited_container_on_older_kernel() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        let mem = fs("v2").memory(&path).unwrap();
        assert_eq!(mem.usage_bytes, Some(209_715_200));
        assert_eq!(mem.limit_bytes, Some(536_870_912));
        assert_eq!(mem.swap_usage_bytes, None, "no swap controller");
        assert_eq!(mem.pressure.unwrap().some.total_us, 0);
        let events = mem.events.unwrap();
        assert_eq!((events.oom_kill, events.oom_group_kill), (0, None));
    }

    #[test]
    fn v2_under_unified_mount() {
        let mem = fs("unified-only").memory("/app.slice").unwrap();
        assert_eq!(mem.version, 2);
        assert_eq!(mem.usage_bytes, Some(4096));
        assert_eq!(mem.limit_bytes, Some(1_048_576));
        assert_eq!((mem.pressure, mem.events), (None, None));
    }

    /// A pure v2 host (cgroup2 at the root) whose cgroups include one named `memory`: it is
    /// read, found and listed as the v2 cgroup it is, and nothing is looked up in a v1
    /// hierarchy under it.
    #[test]
    fn v2_cgroup_named_memory_is_a_cgroup_not_the_v1_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = root.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write("cgroup.controllers", "cpu memory pids\n");
        write("memory/memory.current", "8192\n");
        write("memory/memory.max", "65536\n");
        write("memory/cgroup.procs", "");
        write("memory/worker/cgroup.procs", "");
        let cgroups = CgroupFs::new(root.path());
        let mem = cgroups.memory("/memory").unwrap();
        assert_eq!(
            (mem.version, mem.usage_bytes, mem.limit_bytes),
            (2, Some(8192), Some(65536))
        );
        assert_eq!(cgroups.hierarchies(), vec![root.path().to_path_buf()]);
        assert_eq!(
            cgroups.find("/worker").ok(),
            None,
            "/worker is not /memory/worker"
        );
        assert_eq!(
            cgroups.find("/memory/worker").unwrap(),
            root.path().join("memory/worker")
        );
    }

    #[test]
    fn missing_cgroup_is_not_found() {
        match fs("v1").memory("/kubepods/gone") {
            Err(CgroupError::NotFound { path }) => {
                assert_eq!(
                    path,
                    PathBuf::from(format!("{FIXTURES}/v1/memory/kubepods/gone"))
                );
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert!(matches!(
            fs("v2").memory("/system.slice/gone.service"),
            Err(CgroupError::NotFound { .. })
        ));
        assert!(matches!(
            fs("empty").memory("/"),
            Err(CgroupError::NoHierarchy { .. })
        ));
        match fs("v2").memory("/../../etc") {
            Err(CgroupError::InvalidPath { path }) => assert_eq!(path, "/../../etc"),
            other => panic!("expected InvalidPath, got {other:?}"),
        }
    }

    /// Writes a v1 memory cgroup with `usage` and `limit` under `root/memory/<name>`.
    fn v1_cgroup(root: &Path, name: &[u8], usage: u64, limit: u64) {
        let dir = root.join("memory").join(OsStr::from_bytes(name));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("memory.usage_in_bytes"), format!("{usage}\n")).unwrap();
        fs::write(dir.join("memory.limit_in_bytes"), format!("{limit}\n")).unwrap();
        fs::write(dir.join("cgroup.procs"), "").unwrap();
    }

    #[test]
    fn non_utf8_names_open_their_own_directory() {
        let tmp = tempfile::tempdir().unwrap();
        v1_cgroup(tmp.path(), b"rel_\xff\xfe", 1 << 20, 32 << 20);
        v1_cgroup(tmp.path(), b"rel_\xfe\xff", 2 << 20, 64 << 20);
        v1_cgroup(tmp.path(), b"back\\slash", 3 << 20, 96 << 20);
        v1_cgroup(tmp.path(), b"back\\xff", 4 << 20, 128 << 20);
        let fs = CgroupFs::new(tmp.path());
        // The escaped forms procfs reports.
        for (path, usage, limit) in [
            ("/rel_\\xff\\xfe", 1 << 20, 32 << 20),
            ("/rel_\\xfe\\xff", 2 << 20, 64 << 20),
            ("/back\\\\slash", 3 << 20, 96 << 20),
            ("/back\\\\xff", 4 << 20, 128 << 20),
        ] {
            let mem = fs
                .memory(path)
                .unwrap_or_else(|err| panic!("{path}: {err}"));
            assert_eq!(
                (mem.usage_bytes, mem.limit_bytes),
                (Some(usage), Some(limit)),
                "{path}"
            );
            assert!(fs.find(path).unwrap().ends_with(OsStr::from_bytes(
                &crate::escape::unescape_bytes(&path[1..])
            )));
        }
        // An escaped `..` is still a parent directory.
        assert!(matches!(
            fs.memory("/\\x2e\\x2e/etc"),
            Err(CgroupError::InvalidPath { .. })
        ));
    }

    #[test]
    fn psi_parses_proc_pressure_format() {
        let psi = parse_psi(
            "some avg10=0.31 avg60=0.12 avg300=0.03 total=8820593\n\
             full avg10=0.00 avg60=0.05 avg300=0.01 total=4093150\n",
        )
        .unwrap();
        assert_eq!(psi.some.avg10, 0.31);
        assert_eq!(psi.some.avg60, 0.12);
        assert_eq!(psi.some.avg300, 0.03);
        assert_eq!(psi.some.total_us, 8_820_593);
        let full = psi.full.unwrap();
        assert_eq!((full.avg10, full.avg60, full.avg300), (0.0, 0.05, 0.01));
        assert_eq!(full.total_us, 4_093_150);
        // Pre-5.13 /proc/pressure/cpu: only `some`. Unknown keys (and lines) are ignored.
        let cpu = parse_psi("some avg10=2.00 avg60=1.00 avg300=0.50 total=7 extra=1\nhalf x=1\n")
            .unwrap();
        assert_eq!(
            (cpu.some.avg10, cpu.some.total_us, cpu.full),
            (2.0, 7, None)
        );
    }

    #[test]
    fn psi_rejects_malformed_input() {
        use crate::psi::PsiError;
        assert_eq!(parse_psi(""), Err(PsiError::MissingSome.into()));
        assert_eq!(
            parse_psi("some avg10=x avg60=0 avg300=0 total=0"),
            Err(PsiError::BadValue {
                line: 1,
                key: "avg10",
                value: "x".into()
            }
            .into())
        );
        assert!(matches!(
            parse_psi("some avg10=0 avg60=0 avg300=0"),
            Err(ParseError::Psi(PsiError::MissingKey { key: "total", .. }))
        ));
    }

    /// The cgroup reader's way of parsing `memory.pressure`.
    fn parse_psi(text: &str) -> Result<Psi, ParseError> {
        Ok(crate::psi::parse(text, crate::psi::Lines::Lenient)?)
    }

    #[test]
    fn memory_events_require_the_core_counters() {
        assert_eq!(
            parse_memory_events("low 0\nhigh 0\nmax 0\noom 0\n"),
            Err(ParseError::MissingLine("oom_kill"))
        );
        assert!(matches!(
            parse_memory_events("low 0\nhigh x\nmax 0\noom 0\noom_kill 0\n"),
            Err(ParseError::BadValue { .. })
        ));
    }
}
