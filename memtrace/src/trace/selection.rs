//! Which processes a trace shows: the userspace half of `--pid`/`--comm`/`--cgroup`, exact where
//! the kernel's filter is coarse (cgroup membership, OOM victims, exits, which the kernel does
//! not filter).
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use crate::cgroup::CgroupFs;
use crate::events::{Event, comm_str};

/// The kernel keeps this many characters of a task's name.
pub const COMM_MAX: usize = 15;

/// `--cgroup` names no cgroup under the cgroup root.
#[derive(Debug, thiserror::Error)]
#[error(
    "no such cgroup: {arg} (give the path shown in /proc/<pid>/cgroup, e.g. /system.slice/foo.service, or a directory under {root})"
)]
pub struct NoSuchCgroup {
    pub arg: String,
    pub root: PathBuf,
}

/// The cgroup filter, resolved to a path relative to its hierarchy plus the directory to scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupFilter {
    /// As in `/proc/<pid>/cgroup`, e.g. `/oomtest`.
    pub path: String,
    /// Directory holding `cgroup.procs` (and children).
    pub dir: PathBuf,
}

impl CgroupFilter {
    /// `arg` is a cgroup path (`/system.slice/nginx.service`) or a directory under `root`.
    pub fn resolve(arg: &str, root: &Path) -> Result<Self, NoSuchCgroup> {
        let not_found = || NoSuchCgroup {
            arg: arg.to_owned(),
            root: root.to_path_buf(),
        };
        let fs = CgroupFs::new(root);
        let (path, dir) = if Path::new(arg).starts_with(root) {
            // A directory, as `ls` shows it: its path is relative to the hierarchy it is in.
            let path = fs
                .hierarchies()
                .iter()
                .find_map(|hierarchy| Path::new(arg).strip_prefix(hierarchy).ok())
                // The escaped form the process cache reports (lossless for non-UTF-8 names).
                .map(|rest| {
                    use std::os::unix::ffi::OsStrExt as _;
                    format!(
                        "/{}",
                        crate::escape::escape_bytes(rest.as_os_str().as_bytes())
                    )
                })
                .ok_or_else(not_found)?;
            let dir = PathBuf::from(arg);
            if !dir.join("cgroup.procs").is_file() {
                return Err(not_found());
            }
            (path, dir)
        } else {
            let dir = fs.find(arg).map_err(|_| not_found())?;
            (arg.to_owned(), dir)
        };
        let path = if path.len() > 1 {
            path.trim_end_matches('/').to_owned()
        } else {
            path
        };
        Ok(Self { path, dir })
    }

    /// `path` (as in `/proc/<pid>/cgroup`) is this cgroup or below it.
    pub fn contains(&self, path: &str) -> bool {
        self.path == "/"
            || path == self.path
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The kernel's ids of this cgroup and its descendants: their directories' inode numbers
    /// (see `crate::cgroup_ids`).
    pub fn ids(&self) -> Vec<u64> {
        use std::os::unix::fs::MetadataExt;
        self.dirs()
            .iter()
            .filter_map(|dir| std::fs::metadata(dir).ok())
            .map(|meta| meta.ino())
            .collect()
    }

    /// The cgroup's directory and those of its descendants.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(dir) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            dirs.push(dir);
        }
        dirs
    }

    /// The hierarchy the cgroup is in, numbered as the kernel's `cgroup:cgroup_attach_task`
    /// numbers it: the memory controller's hierarchy in `<proc>/cgroups` for the v1 memory
    /// hierarchy under `cgroup_root`, 0 for the unified one.
    pub fn hierarchy_id(&self, cgroup_root: &Path, proc_root: &Path) -> Option<u32> {
        if !self.dir.starts_with(cgroup_root.join("memory")) {
            return Some(0);
        }
        let table = std::fs::read_to_string(proc_root.join("cgroups")).ok()?;
        table.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some("memory"))
                .then(|| fields.next()?.parse().ok())
                .flatten()
        })
    }

    /// Every pid in the cgroup's `cgroup.procs` and its descendants'.
    pub fn pids(&self) -> Vec<u32> {
        self.dirs()
            .iter()
            .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
            .flat_map(|procs| {
                procs
                    .lines()
                    .filter_map(|line| line.trim().parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The processes a trace shows; everything when nothing is selected.
#[derive(Debug, Default)]
pub struct Selection {
    pids: HashSet<u32>,
    /// At most [`COMM_MAX`] characters each, as the kernel compares them.
    comms: Vec<String>,
    cgroup: Option<CgroupFilter>,
    /// Pids seen in the cgroup (scanned or reported by the kernel's fork-following filter).
    cgroup_pids: HashSet<u32>,
}

impl Selection {
    pub fn new(pids: &[u32], comms: &[String], cgroup: Option<CgroupFilter>) -> Self {
        Self {
            pids: pids.iter().copied().collect(),
            comms: comms
                .iter()
                .map(|c| c.chars().take(COMM_MAX).collect())
                .collect(),
            cgroup,
            cgroup_pids: HashSet::new(),
        }
    }

    /// The names as the kernel's filter takes them.
    pub fn comms(&self) -> &[String] {
        &self.comms
    }

    pub fn cgroup(&self) -> Option<&CgroupFilter> {
        self.cgroup.as_ref()
    }

    pub fn is_filtered(&self) -> bool {
        !self.pids.is_empty() || !self.comms.is_empty() || self.cgroup.is_some()
    }

    /// Rescans the cgroup; returns the pids not seen in it before (for the kernel's filter).
    pub fn rescan_cgroup(&mut self) -> Vec<u32> {
        let Some(cgroup) = &self.cgroup else {
            return Vec::new();
        };
        cgroup
            .pids()
            .into_iter()
            .filter(|pid| self.cgroup_pids.insert(*pid))
            .collect()
    }

    pub fn matches(&self, pid: u32, comm: &str, cgroup: Option<&str>) -> bool {
        (self.pids.is_empty() || self.pids.contains(&pid))
            && (self.comms.is_empty()
                || self
                    .comms
                    .iter()
                    .any(|c| comm.starts_with(c.as_str()) && c.len() >= comm.len().min(COMM_MAX)))
            && match &self.cgroup {
                None => true,
                Some(filter) => {
                    self.cgroup_pids.contains(&pid) || cgroup.is_some_and(|p| filter.contains(p))
                }
            }
    }

    /// `cgroup` is that of the event's subject (the victim, for an OOM kill).
    pub fn matches_event(&self, event: &Event, cgroup: Option<&str>) -> bool {
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

#[cfg(test)]
mod tests {
    use memtrace_common::{COMM_LEN, EventHeader, OomEvent, kind};

    use super::*;

    /// A cgroup root with `dirs` (relative, each given a `cgroup.procs` holding `pids`).
    fn tree(dirs: &[(&str, &[u32])]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (dir, pids) in dirs {
            let dir = root.path().join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            let procs: String = pids.iter().map(|p| format!("{p}\n")).collect();
            std::fs::write(dir.join("cgroup.procs"), procs).unwrap();
        }
        root
    }

    #[test]
    fn resolves_paths_and_directories_in_the_memory_hierarchy_first() {
        let root = tree(&[
            ("memory/oomtest", &[]),
            ("unified/oomtest", &[]),
            ("unified/only-v2", &[]),
        ]);
        let r = root.path();
        let filter = CgroupFilter::resolve("/oomtest", r).unwrap();
        assert_eq!(filter.path, "/oomtest");
        assert_eq!(filter.dir, r.join("memory/oomtest"));
        let filter = CgroupFilter::resolve("/only-v2/", r).unwrap();
        assert_eq!(filter.dir, r.join("unified/only-v2"));
        // A directory under the root, as `ls` shows it.
        let dir = r.join("unified/oomtest/");
        let filter = CgroupFilter::resolve(dir.to_str().unwrap(), r).unwrap();
        assert_eq!(filter.path, "/oomtest");
        assert_eq!(filter.dir, dir);
    }

    #[test]
    fn resolves_on_a_pure_v2_host_and_names_the_root_when_missing() {
        let root = tree(&[("", &[]), ("system.slice/nginx.service", &[])]);
        let r = root.path();
        let filter = CgroupFilter::resolve("/system.slice/nginx.service", r).unwrap();
        assert_eq!(filter.dir, r.join("system.slice/nginx.service"));
        assert_eq!(CgroupFilter::resolve("/", r).unwrap().path, "/");
        let err = CgroupFilter::resolve("/no/such/group", r).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no such cgroup: /no/such/group (give the path shown in /proc/<pid>/cgroup, e.g. /system.slice/foo.service, or a directory under {})",
                r.display()
            )
        );
    }

    #[test]
    fn ids_are_directory_inodes_and_the_hierarchy_is_numbered_as_the_kernel_does() {
        use std::os::unix::fs::MetadataExt;
        let root = tree(&[("memory/app", &[1]), ("memory/app/worker", &[])]);
        let filter = CgroupFilter::resolve("/app", root.path()).unwrap();
        let ino = |rel: &str| std::fs::metadata(root.path().join(rel)).unwrap().ino();
        let mut ids = filter.ids();
        ids.sort_unstable();
        let mut expected = vec![ino("memory/app"), ino("memory/app/worker")];
        expected.sort_unstable();
        assert_eq!(ids, expected);
        let proc = tempfile::tempdir().unwrap();
        std::fs::write(
            proc.path().join("cgroups"),
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t3\t1\t1\nmemory\t7\t12\t1\n",
        )
        .unwrap();
        assert_eq!(filter.hierarchy_id(root.path(), proc.path()), Some(7));
    }

    #[test]
    fn cgroup_pids_include_descendants_and_rescans_report_only_new_ones() {
        let root = tree(&[("memory/app", &[10, 11]), ("memory/app/worker", &[12])]);
        let filter = CgroupFilter::resolve("/app", root.path()).unwrap();
        let mut pids = filter.pids();
        pids.sort_unstable();
        assert_eq!(pids, [10, 11, 12]);
        let mut selection = Selection::new(&[], &[], Some(filter));
        let mut first = selection.rescan_cgroup();
        first.sort_unstable();
        assert_eq!(first, [10, 11, 12]);
        std::fs::write(
            root.path().join("memory/app/worker/cgroup.procs"),
            "12\n13\n",
        )
        .unwrap();
        assert_eq!(selection.rescan_cgroup(), [13]);
        assert!(selection.matches(13, "anything", None), "a scanned pid");
        assert!(
            selection.matches(99, "x", Some("/app/worker")),
            "a path below"
        );
        assert!(
            !selection.matches(99, "x", Some("/apple")),
            "a sibling prefix"
        );
        assert!(!selection.matches(99, "x", None));
    }

    #[test]
    fn comm_matches_the_kernels_fifteen_characters() {
        let selection = Selection::new(&[], &["memtrace-workload".to_owned()], None);
        assert_eq!(selection.comms(), ["memtrace-worklo"]);
        assert!(selection.matches(1, "memtrace-worklo", None));
        assert!(
            !selection.matches(1, "memtrace-work", None),
            "a shorter name"
        );
        let short = Selection::new(&[], &["bash".to_owned()], None);
        assert!(short.matches(1, "bash", None));
        assert!(!short.matches(1, "bashful", None), "a longer name");
        let pids = Selection::new(&[7], &[], None);
        assert!(pids.matches(7, "x", None) && !pids.matches(8, "x", None));
        assert!(!Selection::default().is_filtered());
    }

    #[test]
    fn an_oom_kill_shows_when_its_victim_or_its_trigger_is_selected() {
        let comm = |name: &[u8]| {
            let mut comm = [0u8; COMM_LEN];
            comm[..name.len()].copy_from_slice(name);
            comm
        };
        let oom = Event::Oom(OomEvent {
            header: EventHeader {
                kind: kind::OOM,
                pid: 1,
                comm: comm(b"trigger"),
                ..Default::default()
            },
            victim_pid: 2,
            victim_comm: comm(b"victim"),
            ..Default::default()
        });
        for (pids, shown) in [([1], true), ([2], true), ([3], false)] {
            assert_eq!(
                Selection::new(&pids, &[], None).matches_event(&oom, None),
                shown,
                "--pid {pids:?}"
            );
        }
    }
}
