//! Cgroup ids as the kernel reports them at an event (exit, OOM kill) → cgroup paths.
//!
//! The programs read a task's cgroup id in the kernel at the event (see
//! `memtrace_common::CgroupOffsets`), so a process that lived too short for `/proc` to be read
//! still has its cgroup. The id is the cgroup's kernfs node id, which is the inode number of its
//! directory: a path is found by walking the memory controller's hierarchy once and remembering
//! every directory's inode. The walk is repeated when an id is not known (a cgroup created
//! since), at most once a second for the same unknown id, and stops at [`MAX_CGROUPS`].
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::{DirEntryExt, MetadataExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Directories remembered per walk: a bound on memory and on the walk's time.
pub const MAX_CGROUPS: usize = 65_536;

/// An id still unknown after a walk is looked for again only after this long.
const RETRY_UNKNOWN: Duration = Duration::from_secs(1);

/// The hierarchy whose cgroups the kernel reports under `cgroup_root`, and whether it is the
/// v1 memory controller's (`true`) or the unified hierarchy (`false`): unified at the root
/// first (a pure v2 host, where `memory` would be a cgroup of that name), then v1 memory
/// (hybrid hosts account memory there), then unified under `unified`.
pub fn memory_hierarchy(cgroup_root: &Path) -> Option<(PathBuf, bool)> {
    if crate::cgroup::is_unified_root(cgroup_root) {
        return Some((cgroup_root.to_path_buf(), false));
    }
    let v1 = cgroup_root.join("memory");
    if v1.is_dir() {
        return Some((v1, true));
    }
    let unified = cgroup_root.join("unified");
    crate::cgroup::is_unified_root(&unified).then_some((unified, false))
}

/// Resolver of kernel cgroup ids to paths as in `/proc/<pid>/cgroup` (`/`, `/a/b`).
#[derive(Debug)]
pub struct CgroupIds {
    cgroup_root: PathBuf,
    paths: HashMap<u64, String>,
    /// Ids not found by the last walk, and when that was.
    unknown: HashSet<u64>,
    walked_at: Option<Instant>,
}

impl CgroupIds {
    /// Resolver for the hierarchy under `cgroup_root` (`/sys/fs/cgroup`, or a host root's).
    pub fn new(cgroup_root: impl Into<PathBuf>) -> Self {
        Self {
            cgroup_root: cgroup_root.into(),
            paths: HashMap::new(),
            unknown: HashSet::new(),
            walked_at: None,
        }
    }

    /// The path of cgroup `id`; `None` for 0 (the kernel did not know it) or a cgroup not found
    /// (removed before it could be looked up).
    pub fn path(&mut self, id: u64) -> Option<&str> {
        if id == 0 {
            return None;
        }
        if !self.paths.contains_key(&id) {
            let recent = self
                .walked_at
                .is_some_and(|at| at.elapsed() < RETRY_UNKNOWN);
            if recent && self.unknown.contains(&id) {
                return None;
            }
            self.walk();
            if !self.paths.contains_key(&id) {
                self.unknown.insert(id);
            }
        }
        self.paths.get(&id).map(String::as_str)
    }

    /// Remembers every cgroup directory's inode (breadth first, up to [`MAX_CGROUPS`]).
    fn walk(&mut self) {
        self.paths.clear();
        self.unknown.clear();
        self.walked_at = Some(Instant::now());
        let Some((hierarchy, _)) = memory_hierarchy(&self.cgroup_root) else {
            return;
        };
        let Ok(root) = std::fs::metadata(&hierarchy) else {
            return;
        };
        self.paths.insert(root.ino(), "/".to_owned());
        let mut queue = std::collections::VecDeque::from([(hierarchy, String::new())]);
        while let Some((dir, path)) = queue.pop_front() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if self.paths.len() >= MAX_CGROUPS {
                    return;
                }
                let child = format!("{path}/{}", entry.file_name().to_string_lossy());
                // kernfs reports the node id as the entry's inode number.
                self.paths.insert(entry.ino(), child.clone());
                queue.push_back((entry.path(), child));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_hierarchy_like_the_cgroup_reader() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgroup");
        assert_eq!(
            memory_hierarchy(&fixtures.join("v1")),
            Some((fixtures.join("v1/memory"), true))
        );
        assert_eq!(
            memory_hierarchy(&fixtures.join("unified-only")),
            Some((fixtures.join("unified-only/unified"), false))
        );
        assert_eq!(memory_hierarchy(&fixtures.join("empty")), None);
        assert_eq!(
            memory_hierarchy(&fixtures.join("v2")),
            Some((fixtures.join("v2"), false))
        );
    }

    /// On a pure v2 host a cgroup named `memory` is a cgroup, not the v1 controller's
    /// hierarchy: taking it for one would read the memory css in the kernel (ids of a
    /// hierarchy that does not exist) and resolve ids under the wrong directory.
    #[test]
    fn a_v2_cgroup_named_memory_is_not_the_v1_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::create_dir_all(root.path().join("memory/worker")).unwrap();
        assert_eq!(
            memory_hierarchy(root.path()),
            Some((root.path().to_path_buf(), false))
        );
        let ino = std::fs::metadata(root.path().join("memory/worker"))
            .unwrap()
            .ino();
        assert_eq!(
            CgroupIds::new(root.path()).path(ino),
            Some("/memory/worker")
        );
    }

    /// Ids are directory inodes: on any filesystem the walk maps them back to the paths.
    #[test]
    fn resolves_directory_inodes_to_paths_and_walks_again_for_new_ones() {
        let root = tempfile::tempdir().unwrap();
        let memory = root.path().join("memory");
        std::fs::create_dir_all(memory.join("app/worker")).unwrap();
        std::fs::write(memory.join("app/memory.limit_in_bytes"), "1\n").unwrap();
        let ino = |rel: &str| std::fs::metadata(memory.join(rel)).unwrap().ino();
        let mut ids = CgroupIds::new(root.path());
        assert_eq!(ids.path(ino("")), Some("/"));
        assert_eq!(ids.path(ino("app/worker")), Some("/app/worker"));
        assert_eq!(ids.path(0), None);
        std::fs::create_dir(memory.join("late")).unwrap();
        assert_eq!(ids.path(ino("late")), Some("/late"), "a new cgroup");
        assert_eq!(ids.path(u64::MAX), None);
        assert_eq!(ids.path(ino("app")), Some("/app"));
    }
}
