//! Memory cgroups for the privileged tests, on either layout the kernel mounts: the cgroup v1
//! memory controller (`/sys/fs/cgroup/memory`, hybrid hosts) or the unified hierarchy
//! (`/sys/fs/cgroup` is cgroup2, what systemd boots most distributions with).

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    time::Duration,
};

/// The cgroup filesystem mount point.
const CGROUP_FS: &str = "/sys/fs/cgroup";

/// Where the memory controller's hierarchy is, read from the filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1: the memory controller's own hierarchy at `/sys/fs/cgroup/memory`.
    V1,
    /// cgroup v2: `/sys/fs/cgroup` itself is the unified hierarchy.
    V2,
}

impl Layout {
    /// The running host's: `/sys/fs/cgroup` is cgroup2 (statfs magic) or it is not, and then
    /// the memory controller must be a v1 hierarchy of its own.
    pub fn host() -> Self {
        let path = CString::new(CGROUP_FS).expect("no NUL");
        // SAFETY: a zeroed statfs is a valid out-parameter; the path is NUL-terminated.
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let rc = unsafe { libc::statfs(path.as_ptr(), &raw mut stat) };
        assert_eq!(
            rc,
            0,
            "statfs {CGROUP_FS}: {}",
            std::io::Error::last_os_error()
        );
        if stat.f_type == libc::CGROUP2_SUPER_MAGIC {
            Self::V2
        } else {
            Self::V1
        }
    }

    /// The cgroup version number, as memtrace reports it (`CgroupMemoryStat::version`).
    pub fn version(self) -> u8 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// The root of the memory controller's hierarchy.
    pub fn memory_root(self) -> PathBuf {
        match self {
            Self::V1 => Path::new(CGROUP_FS).join("memory"),
            Self::V2 => PathBuf::from(CGROUP_FS),
        }
    }

    /// Create the cgroup `relative` (to the hierarchy's root, e.g. `a/b`) and its missing
    /// ancestors, each a memory cgroup: on v2 every ancestor (the root included) gets `+memory`
    /// in its `cgroup.subtree_control`.
    pub fn create(self, relative: &Path) -> PathBuf {
        let root = self.memory_root();
        let dir = root.join(relative);
        std::fs::create_dir_all(&dir).unwrap_or_else(|err| {
            panic!(
                "mkdir {}: {err} (needs the memory controller, v1 or v2)",
                dir.display()
            )
        });
        if self == Self::V2 {
            let mut parent = root.clone();
            for component in relative.components() {
                enable_memory_below(&parent);
                parent.push(component);
            }
        }
        dir
    }

    /// Limit the memory of the cgroup `dir`.
    pub fn set_limit(self, dir: &Path, limit_bytes: u64) {
        let file = match self {
            Self::V1 => "memory.limit_in_bytes",
            Self::V2 => "memory.max",
        };
        std::fs::write(dir.join(file), limit_bytes.to_string())
            .unwrap_or_else(|err| panic!("set {}: {err}", dir.join(file).display()));
    }
}

/// Give the children of the v2 cgroup `dir` the memory controller (a no-op when they have it).
fn enable_memory_below(dir: &Path) {
    let control = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control)
        .unwrap_or_else(|err| panic!("read {}: {err}", control.display()));
    if enabled.split_whitespace().any(|c| c == "memory") {
        return;
    }
    std::fs::write(&control, "+memory").unwrap_or_else(|err| {
        panic!(
            "enable the memory controller in {}: {err} (a non-root v2 cgroup with processes \
             cannot give its children controllers)",
            control.display()
        )
    });
}

/// `name` as `/proc/<pid>/cgroup` shows it: bytes that are not UTF-8 escaped as `\xNN`.
pub fn proc_path(name: &[u8]) -> String {
    let mut path = String::new();
    for chunk in name.utf8_chunks() {
        path.push_str(chunk.valid());
        for byte in chunk.invalid() {
            path.push_str(&format!("\\x{byte:02x}"));
        }
    }
    path
}

/// A memory cgroup with a limit, removed on drop.
pub struct MemoryCgroup {
    pub dir: PathBuf,
    /// As in /proc/<pid>/cgroup.
    pub path: String,
}

impl MemoryCgroup {
    pub fn new(name: &str, limit_bytes: u64) -> Self {
        Self::with_raw_name(
            format!("{name}-{}", std::process::id()).as_bytes(),
            limit_bytes,
        )
    }

    /// A cgroup under the root named by `name` as is (it may be any bytes but `/` and NUL).
    pub fn with_raw_name(name: &[u8], limit_bytes: u64) -> Self {
        let layout = Layout::host();
        let dir = layout.create(Path::new(std::ffi::OsStr::from_bytes(name)));
        let path = format!("/{}", proc_path(name));
        layout.set_limit(&dir, limit_bytes);
        Self { dir, path }
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("move into cgroup");
    }

    /// A child cgroup without a limit of its own (the parent's applies): drop it before the
    /// parent. Call it before adding processes to `self` (on v2 a cgroup with processes cannot
    /// give its children the memory controller).
    pub fn child(&self, name: &str) -> Self {
        let dir = self.dir.join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|err| panic!("mkdir {}: {err}", dir.display()));
        if Layout::host() == Layout::V2 {
            enable_memory_below(&self.dir);
        }
        Self {
            dir,
            path: format!("{}/{name}", self.path),
        }
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // The cgroup can be removed only once its processes are gone.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
