//! Kernel struct layouts from vmlinux BTF, for programs that read kernel memory directly.
//!
//! Rust eBPF has no CO-RE relocations, so instead of hard-coding `struct mm_struct` offsets the
//! loader resolves them here, at load time, from the running kernel's own BTF, and hands them to
//! the programs as read-only globals (the same way tracefs gives tracepoint record offsets).
//! Anonymous struct/union members are searched through, as the kernel nests most `mm_struct`
//! fields in them.
use std::{
    fs::File,
    os::fd::{AsRawFd, FromRawFd},
    path::{Path, PathBuf},
    sync::Arc,
};

use btf_rs::{Btf, Type};
use memtrace_common::{CgroupOffsets, FIELD_ABSENT, TaskOffsets, helper_flag, rss_flag};

/// Why a layout could not be had from the kernel's BTF. `Clone`, because one unreadable file is
/// the reason for every family that needed it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading kernel BTF {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: Arc<btf_rs::Error>,
    },
    #[error("kernel BTF has no struct {name}")]
    NoStruct { name: String },
    #[error("kernel BTF: struct {parent} has no member {member}")]
    NoMember { parent: String, member: String },
    #[error("kernel BTF: {what} is a bitfield or not byte-aligned")]
    Unaligned { what: String },
    #[error("kernel BTF has no enum {name} with a member {member}")]
    NoEnumMember { name: String, member: String },
}

/// The two ways to a task's cgroup id ([`CgroupOffsets`]); the loader picks the one of the
/// host's cgroup layout ([`CgroupLayouts::for_hierarchy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupLayouts {
    /// Through the memory controller's css: cgroup v1 (and hybrid) hosts.
    pub memory: CgroupOffsets,
    /// Through `dfl_cgrp`: unified (v2-only) hosts.
    pub default_hierarchy: CgroupOffsets,
}

impl CgroupLayouts {
    /// The layout for a host whose memory controller is on a v1 hierarchy (`v1`) or not.
    pub fn for_hierarchy(&self, v1: bool) -> CgroupOffsets {
        if v1 {
            self.memory
        } else {
            self.default_hierarchy
        }
    }
}

/// The offsets the raw `kmem:rss_stat` program needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RssLayout {
    /// `offsetof(struct task_struct, mm)`.
    pub task_mm: u32,
    /// `offsetof(struct mm_struct, rss_stat)` (an array of `struct percpu_counter`).
    pub mm_rss_stat: u32,
    /// `sizeof(struct percpu_counter)`.
    pub counter_size: u32,
    /// `offsetof(struct percpu_counter, count)`.
    pub counter_count: u32,
    /// `memtrace_common::rss_flag` bits (the pre-6.2 `atomic_long_t` layout).
    pub flags: u32,
}

/// A parsed BTF file.
pub struct KernelBtf {
    btf: Btf,
}

impl std::fmt::Debug for KernelBtf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelBtf").finish_non_exhaustive()
    }
}

impl KernelBtf {
    pub fn open(path: &Path) -> Result<Self, BtfError> {
        Self::open_with(path, |path| {
            Btf::from_file_with_backend(path, btf_rs::Backend::Mmap)
        })
    }

    /// Opens `path` with `map` (the mmap backend; a parameter so tests can refuse the mapping).
    ///
    /// The mmap backend parses only the few types looked up (the cache backend parses all
    /// ~100k types of vmlinux up front: ~150 ms and tens of MiB the daemon would keep as heap).
    /// sysfs BTF can be mapped only since Linux 6.18 (before: ENODEV), so where the mapping is
    /// refused the file is copied into a memfd, which can be, and mapped from there: the same
    /// lazy parse, for a few MiB of shared memory freed when this value is dropped.
    fn open_with(
        path: &Path,
        map: impl Fn(&Path) -> btf_rs::Result<Btf>,
    ) -> Result<Self, BtfError> {
        let read_error = |path: &Path, err| BtfError::Read {
            path: path.to_path_buf(),
            source: Arc::new(err),
        };
        match map(path) {
            Ok(btf) => Ok(Self { btf }),
            Err(btf_rs::Error::IO(refused)) => {
                tracing::debug!(
                    "mapping {}: {refused}; mapping a copy in memory instead",
                    path.display()
                );
                let copy = copy_to_memfd(path).map_err(|err| read_error(path, err.into()))?;
                // The memfd reopened through procfs: btf-rs maps only files it opens itself.
                let btf = map(&PathBuf::from(format!(
                    "/proc/self/fd/{}",
                    copy.as_raw_fd()
                )))
                .map_err(|err| read_error(path, err))?;
                Ok(Self { btf })
            }
            Err(err) => Err(read_error(path, err)),
        }
    }

    fn strukt(&self, name: &str) -> Result<btf_rs::Struct, BtfError> {
        let types = self.btf.resolve_types_by_name(name).unwrap_or_default();
        types
            .into_iter()
            .find_map(|t| match t {
                // Skip forward declarations and empty definitions of the same name.
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoStruct {
                name: name.to_owned(),
            })
    }

    /// Bit offset of `member` in `strukt`, looking inside anonymous members.
    fn member_bits(&self, strukt: &btf_rs::Struct, member: &str) -> Option<u32> {
        for m in &strukt.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == member {
                return Some(m.bit_offset());
            }
            if name.is_empty() {
                // Anonymous struct or union: its members live at this member's offset.
                let inner = match self.btf.resolve_chained_type(m) {
                    Ok(Type::Struct(s) | Type::Union(s)) => s,
                    _ => continue,
                };
                if let Some(bits) = self.member_bits(&inner, member) {
                    return Some(m.bit_offset() + bits);
                }
            }
        }
        None
    }

    /// Byte offset of `member` in `struct parent`.
    pub fn offset_of(&self, parent: &str, member: &str) -> Result<u32, BtfError> {
        let strukt = self.strukt(parent)?;
        let bits = self
            .member_bits(&strukt, member)
            .ok_or_else(|| BtfError::NoMember {
                parent: parent.to_owned(),
                member: member.to_owned(),
            })?;
        if bits % 8 != 0 {
            return Err(BtfError::Unaligned {
                what: format!("{parent}.{member}"),
            });
        }
        Ok(bits / 8)
    }

    pub fn size_of(&self, name: &str) -> Result<u32, BtfError> {
        Ok(self.strukt(name)?.size() as u32)
    }

    /// The task and signal layout the task sampler and the exit hook read (see
    /// [`memtrace_common::TaskOffsets`]).
    pub fn task_layout(&self) -> Result<TaskOffsets, BtfError> {
        let task = |member| self.offset_of("task_struct", member);
        let signal = |member| self.offset_of("signal_struct", member);
        Ok(TaskOffsets {
            task_pid: task("pid")?,
            task_tgid: task("tgid")?,
            task_flags: task("flags")?,
            task_min_flt: task("min_flt")?,
            task_maj_flt: task("maj_flt")?,
            task_mm: task("mm")?,
            task_signal: task("signal")?,
            task_group_leader: task("group_leader")?,
            task_start_time: task("start_time")?,
            signal_min_flt: signal("min_flt")?,
            signal_maj_flt: signal("maj_flt")?,
            // Optional (Linux 6.7+): without them the exit count may miss a thread.
            signal_thread_head: signal("thread_head").unwrap_or(FIELD_ABSENT),
            task_thread_node: task("thread_node").unwrap_or(FIELD_ABSENT),
            task_comm: task("comm")?,
            mm_total_vm: self.offset_of("mm_struct", "total_vm")?,
            signal_live: signal("live")?,
        })
    }

    /// The value of `member` in `enum name`.
    fn enum_value(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let types = self.btf.resolve_types_by_name(name).unwrap_or_default();
        types
            .iter()
            .find_map(|t| match t {
                Type::Enum(e) => e
                    .members
                    .iter()
                    .find(|m| self.btf.resolve_name(*m).is_ok_and(|n| n == member))
                    .map(btf_rs::EnumMember::val),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoEnumMember {
                name: name.to_owned(),
                member: member.to_owned(),
            })
    }

    /// The [`helper_flag`] helpers this kernel has: its `enum bpf_func_id` names every helper
    /// it knows.
    pub fn helpers(&self) -> u32 {
        [
            (
                "BPF_FUNC_get_current_task_btf",
                helper_flag::CURRENT_TASK_BTF,
            ),
            ("BPF_FUNC_task_pt_regs", helper_flag::TASK_PT_REGS),
        ]
        .into_iter()
        .filter(|(name, _)| self.enum_value("bpf_func_id", name).is_ok())
        .fold(0, |flags, (_, flag)| flags | flag)
    }

    /// The ways from a task to its cgroup id (see [`CgroupOffsets`]).
    pub fn cgroup_layouts(&self) -> Result<CgroupLayouts, BtfError> {
        let memory_id = self.enum_value("cgroup_subsys_id", "memory_cgrp_id")?;
        let subsys = self.offset_of("css_set", "subsys")?;
        let common = CgroupOffsets {
            task_cgroups: self.offset_of("task_struct", "cgroups")?,
            cset_link: self.offset_of("css_set", "dfl_cgrp")?,
            css_cgroup: FIELD_ABSENT,
            cgroup_kn: self.offset_of("cgroup", "kn")?,
            kn_id: self.offset_of("kernfs_node", "id")?,
            reserved: 0,
        };
        Ok(CgroupLayouts {
            memory: CgroupOffsets {
                // `subsys` is an array of pointers.
                cset_link: subsys + 8 * memory_id,
                css_cgroup: self.offset_of("cgroup_subsys_state", "cgroup")?,
                ..common
            },
            default_hierarchy: common,
        })
    }

    /// Whether the kernel offers the BPF task iterator (`bpf_iter_task`, Linux 5.8+).
    pub fn has_task_iterator(&self) -> bool {
        self.btf
            .resolve_types_by_name("bpf_iter_task")
            .unwrap_or_default()
            .iter()
            .any(|t| matches!(t, Type::Func(_)))
    }

    /// Whether the raw tracepoint `name` passes a `struct task_struct *` as its first argument
    /// (its `btf_trace_<name>` typedef: `void (*)(void *, struct task_struct *, …)`).
    pub fn raw_tracepoint_takes_task(&self, name: &str) -> bool {
        let typedefs = self
            .btf
            .resolve_types_by_name(&format!("btf_trace_{name}"))
            .unwrap_or_default();
        let Some(Type::Typedef(typedef)) = typedefs.first() else {
            return false;
        };
        let Ok(Type::Ptr(pointer)) = self.btf.resolve_chained_type(typedef) else {
            return false;
        };
        let Ok(Type::FuncProto(proto)) = self.btf.resolve_chained_type(&pointer) else {
            return false;
        };
        let Some(first) = proto.parameters.get(1) else {
            return false;
        };
        let Ok(Type::Ptr(argument)) = self.btf.resolve_chained_type(first) else {
            return false;
        };
        matches!(
            self.btf.resolve_chained_type(&argument),
            Ok(Type::Struct(task)) if self.btf.resolve_name(&task).is_ok_and(|n| n == "task_struct")
        )
    }

    pub fn rss_layout(&self) -> Result<RssLayout, BtfError> {
        // Before Linux 6.2, `mm->rss_stat` is a `struct mm_rss_stat { atomic_long_t
        // count[NR_MM_COUNTERS]; }`, not an array of `percpu_counter` (which those kernels
        // have too, for other uses): 8-byte counters at the start of the struct.
        if let Ok(count) = self.offset_of("mm_rss_stat", "count") {
            return Ok(RssLayout {
                task_mm: self.offset_of("task_struct", "mm")?,
                mm_rss_stat: self.offset_of("mm_struct", "rss_stat")? + count,
                counter_size: 8,
                counter_count: 0,
                flags: rss_flag::ATOMIC_COUNTERS,
            });
        }
        Ok(RssLayout {
            task_mm: self.offset_of("task_struct", "mm")?,
            mm_rss_stat: self.offset_of("mm_struct", "rss_stat")?,
            counter_size: self.size_of("percpu_counter")?,
            counter_count: self.offset_of("percpu_counter", "count")?,
            flags: 0,
        })
    }
}

/// A copy of the file at `path` in an anonymous memory file (closed on exec).
fn copy_to_memfd(path: &Path) -> std::io::Result<File> {
    // SAFETY: a plain syscall with a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"memtrace-btf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mut copy = unsafe { File::from_raw_fd(fd) };
    std::io::copy(&mut File::open(path)?, &mut copy)?;
    Ok(copy)
}

/// What the kernel's BTF says (or why it could not), for the families that read kernel structs:
/// planning's input, so tests can give any kernel's layouts as values.
#[derive(Clone, Debug)]
pub struct BtfLayouts {
    /// For the raw `kmem:rss_stat` hook and the task sampler.
    pub rss: Result<RssLayout, BtfError>,
    /// For the task sampler, the exit hook's final counts and every program's comm.
    pub task: Result<TaskOffsets, BtfError>,
    /// Whether the kernel has the BPF task iterator.
    pub task_iterator: bool,
    /// For the cgroup id of exit and OOM events.
    pub cgroup: Result<CgroupLayouts, BtfError>,
    /// Whether `oom:mark_victim` passes the victim's task to raw hooks (Linux 6.8+), so its
    /// cgroup can be read at the kill even when it is not the trigger.
    pub oom_victim_task: bool,
    /// `memtrace_common::helper_flag` bits: the newer BPF helpers this kernel has.
    pub helpers: u32,
}

impl BtfLayouts {
    /// Everything planning needs from the BTF at `path`; without BTF, every layout is the error
    /// that says why, and the families fall back to hooks that need none.
    pub fn read(path: &Path) -> Self {
        match KernelBtf::open(path) {
            Ok(btf) => Self {
                rss: btf.rss_layout(),
                task: btf.task_layout(),
                task_iterator: btf.has_task_iterator(),
                cgroup: btf.cgroup_layouts(),
                oom_victim_task: btf.raw_tracepoint_takes_task("mark_victim"),
                helpers: btf.helpers(),
            },
            Err(err) => Self::unavailable(err),
        }
    }

    /// No layouts, all for `reason`.
    pub fn unavailable(reason: BtfError) -> Self {
        Self {
            rss: Err(reason.clone()),
            task: Err(reason.clone()),
            task_iterator: false,
            cgroup: Err(reason),
            oom_victim_task: false,
            helpers: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine runs 6.18: both helpers are there.
    #[test]
    fn finds_the_newer_helpers_of_the_running_kernel() {
        let btf = KernelBtf::open(Path::new(crate::preflight::KERNEL_BTF)).unwrap();
        assert_eq!(
            btf.helpers(),
            helper_flag::CURRENT_TASK_BTF | helper_flag::TASK_PT_REGS
        );
    }

    /// Linux 6.8 changed `mark_victim`'s arguments from the pid to the task; this machine runs
    /// 6.18. `rss_stat` passes an `mm_struct`, not a task, and a name without a tracepoint has
    /// no typedef.
    #[test]
    fn tells_which_raw_tracepoints_pass_a_task() {
        let path = Path::new(crate::preflight::KERNEL_BTF);
        assert!(
            path.exists(),
            "this test needs kernel BTF at {}",
            path.display()
        );
        let btf = KernelBtf::open(path).unwrap();
        assert!(btf.raw_tracepoint_takes_task("mark_victim"));
        assert!(btf.raw_tracepoint_takes_task("sched_process_exit"));
        assert!(!btf.raw_tracepoint_takes_task("rss_stat"));
        assert!(!btf.raw_tracepoint_takes_task("no_such_tracepoint"));
    }

    /// Against the running kernel's BTF: the layout must be found and plausible. (The exact
    /// offsets vary by kernel config; `percpu_counter` is `{ raw_spinlock_t lock; s64 count; … }`.)
    #[test]
    fn resolves_the_rss_layout_of_the_running_kernel() {
        let path = Path::new(crate::preflight::KERNEL_BTF);
        assert!(
            path.exists(),
            "this test needs kernel BTF at {}",
            path.display()
        );
        let layout = KernelBtf::open(path).unwrap().rss_layout().unwrap();
        assert_eq!(layout.counter_count % 8, 0);
        assert!(layout.counter_count < layout.counter_size);
        assert!(
            layout.counter_size >= 16 && layout.counter_size <= 128,
            "{layout:?}"
        );
        assert!(
            layout.mm_rss_stat > 0 && layout.mm_rss_stat < 8192,
            "{layout:?}"
        );
        assert!(layout.task_mm > 0 && layout.task_mm < 16384, "{layout:?}");
        // 6.2+ (this machine): per-CPU counters, not the atomic layout.
        assert_eq!(layout.flags & rss_flag::ATOMIC_COUNTERS, 0, "{layout:?}");
    }

    #[test]
    fn resolves_the_task_layout_of_the_running_kernel() {
        let btf = KernelBtf::open(Path::new(crate::preflight::KERNEL_BTF)).unwrap();
        let t = btf.task_layout().unwrap();
        // `pid` and `tgid` are adjacent `pid_t`s; the fault counters adjacent `unsigned long`s.
        assert_eq!(t.task_tgid, t.task_pid + 4, "{t:?}");
        assert_eq!(t.task_maj_flt, t.task_min_flt + 8, "{t:?}");
        assert_eq!(t.signal_maj_flt, t.signal_min_flt + 8, "{t:?}");
        // `signal_struct` begins `{ refcount_t sigcnt; atomic_t live; … }`.
        assert_eq!(t.signal_live, 4, "{t:?}");
        assert_eq!(t.task_mm, btf.rss_layout().unwrap().task_mm);
        assert_ne!(
            t.signal_thread_head, FIELD_ABSENT,
            "Linux 6.7+ has thread_head"
        );
        assert_ne!(t.task_thread_node, FIELD_ABSENT);
        assert!(t.task_comm > 0 && t.mm_total_vm > 0, "{t:?}");
        assert!(btf.has_task_iterator());
    }

    #[test]
    fn resolves_the_cgroup_layouts_of_the_running_kernel() {
        let btf = KernelBtf::open(Path::new(crate::preflight::KERNEL_BTF)).unwrap();
        let layouts = btf.cgroup_layouts().unwrap();
        let (v1, v2) = (layouts.for_hierarchy(true), layouts.for_hierarchy(false));
        assert_eq!(v1.task_cgroups, v2.task_cgroups);
        assert_ne!(v1.css_cgroup, FIELD_ABSENT, "{v1:?}");
        assert_eq!(v2.css_cgroup, FIELD_ABSENT, "{v2:?}");
        assert_ne!(v1.cset_link, v2.cset_link);
        assert!(v1.kn_id < 256 && v1.cgroup_kn < 4096, "{v1:?}");
    }

    /// Where the kernel refuses to map its BTF (sysfs before Linux 6.18: ENODEV), the layouts
    /// come from a copy in memory, the same as from the mapped file.
    #[test]
    fn reads_a_copy_when_the_file_cannot_be_mapped() {
        let path = Path::new(crate::preflight::KERNEL_BTF);
        let refused = std::sync::atomic::AtomicUsize::new(0);
        let btf = KernelBtf::open_with(path, |candidate| {
            if candidate == path {
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(std::io::Error::from_raw_os_error(libc::ENODEV).into());
            }
            Btf::from_file_with_backend(candidate, btf_rs::Backend::Mmap)
        })
        .unwrap();
        assert_eq!(refused.into_inner(), 1);
        let mapped = KernelBtf::open(path).unwrap();
        assert_eq!(btf.task_layout().unwrap(), mapped.task_layout().unwrap());
        assert_eq!(btf.rss_layout().unwrap(), mapped.rss_layout().unwrap());
        assert_eq!(
            btf.cgroup_layouts().unwrap(),
            mapped.cgroup_layouts().unwrap()
        );
        // A file that is not there is still an error naming it, not a mapping attempt of nothing.
        let err = KernelBtf::open_with(Path::new("/nonexistent/vmlinux"), |_| {
            Err(std::io::Error::from_raw_os_error(libc::ENODEV).into())
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("reading kernel BTF /nonexistent/vmlinux: i/o error: No such file"),
            "{err}"
        );
    }

    #[test]
    fn missing_things_are_named() {
        let btf = KernelBtf::open(Path::new(crate::preflight::KERNEL_BTF)).unwrap();
        assert_eq!(
            btf.offset_of("mm_struct", "no_such_member")
                .unwrap_err()
                .to_string(),
            "kernel BTF: struct mm_struct has no member no_such_member"
        );
        assert_eq!(
            btf.size_of("no_such_struct_xyz").unwrap_err().to_string(),
            "kernel BTF has no struct no_such_struct_xyz"
        );
        assert!(
            KernelBtf::open(Path::new("/nonexistent/vmlinux"))
                .unwrap_err()
                .to_string()
                .starts_with("reading kernel BTF /nonexistent/vmlinux")
        );
    }
}
