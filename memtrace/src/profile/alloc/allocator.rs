//! Which allocator a process actually uses, from `/proc/P/maps`, and where its functions are.
//!
//! The dynamic linker binds `malloc` to the first object in its search order that defines it:
//! the executable (a static build, or one linking jemalloc statically), then the libraries. So
//! the executable is asked first, for `malloc` and then for a prefixed build's `je_malloc`, then
//! the mapped jemalloc, tcmalloc and mimalloc libraries, then glibc. Only the symbols the chosen
//! object defines are probed, each address once (glibc's `aligned_alloc` may be `memalign`,
//! tcmalloc's `malloc` is `tc_malloc`: one uprobe per address, not two that both fire).
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// The program each allocator function is probed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Entry {
    Malloc,
    Calloc,
    Realloc,
    Memalign,
    PosixMemalign,
    Free,
}

impl Entry {
    /// The program's name in the `memtrace-alloc` object.
    pub fn program(self) -> &'static str {
        match self {
            Self::Malloc => "alloc_malloc",
            Self::Calloc => "alloc_calloc",
            Self::Realloc => "alloc_realloc",
            Self::Memalign => "alloc_memalign",
            Self::PosixMemalign => "alloc_posix_memalign",
            Self::Free => "alloc_free",
        }
    }

    /// Whether the call returns a pointer (and so needs the return probe too).
    pub fn allocates(self) -> bool {
        self != Self::Free
    }
}

/// The functions of the malloc API and their argument layouts, in the order an alias is
/// attributed (the first name at an address wins).
const FUNCTIONS: &[(&str, Entry)] = &[
    ("malloc", Entry::Malloc),
    ("calloc", Entry::Calloc),
    ("realloc", Entry::Realloc),
    ("free", Entry::Free),
    ("posix_memalign", Entry::PosixMemalign),
    ("aligned_alloc", Entry::Memalign),
    ("memalign", Entry::Memalign),
    ("valloc", Entry::Malloc),
    ("pvalloc", Entry::Malloc),
    // jemalloc's non-standard API.
    ("mallocx", Entry::Malloc),
    ("rallocx", Entry::Realloc),
    ("sdallocx", Entry::Free),
    ("dallocx", Entry::Free),
    // tcmalloc's own names (its malloc family are aliases of these).
    ("tc_malloc", Entry::Malloc),
    ("tc_calloc", Entry::Calloc),
    ("tc_realloc", Entry::Realloc),
    ("tc_free", Entry::Free),
    ("tc_cfree", Entry::Free),
    ("tc_posix_memalign", Entry::PosixMemalign),
    ("tc_memalign", Entry::Memalign),
    ("tc_valloc", Entry::Malloc),
    ("tc_pvalloc", Entry::Malloc),
];

/// Allocator families, told apart by the object's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Glibc,
    Jemalloc,
    Tcmalloc,
    Mimalloc,
    /// The executable defines the allocator (static build or a bundled allocator).
    Executable,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Glibc => "glibc",
            Self::Jemalloc => "jemalloc",
            Self::Tcmalloc => "tcmalloc",
            Self::Mimalloc => "mimalloc",
            Self::Executable => "the executable's own",
        }
    }
}

/// One probe to attach: a function at a file offset of `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub entry: Entry,
    pub offset: u64,
}

/// The allocator a process uses and the functions to probe in it.
#[derive(Clone, Debug)]
pub struct Allocator {
    pub kind: Kind,
    /// The object as the process maps it (for messages).
    pub mapped_path: PathBuf,
    /// The object as memtrace opens it: through `/proc/P/root`, so it is the process's file even
    /// in another mount namespace.
    pub path: PathBuf,
    /// `je_` for a prefixed jemalloc build, else empty.
    pub prefix: &'static str,
    pub functions: Vec<Function>,
}

#[derive(Debug, thiserror::Error)]
pub enum AllocatorError {
    #[error("process {pid} not found (it exited, or never existed)")]
    ProcessGone { pid: u32 },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no allocator found in process {pid}: none of {searched} defines malloc (or je_malloc)"
    )]
    NotFound { pid: u32, searched: String },
}

/// The allocator of process `pid`, from `proc_root/pid/maps` (`proc_root` is `/proc`, or a
/// fixture tree in tests).
pub fn find(proc_root: &Path, pid: u32) -> Result<Allocator, AllocatorError> {
    let process = proc_root.join(pid.to_string());
    let maps_path = process.join("maps");
    let maps = fs::read_to_string(&maps_path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            AllocatorError::ProcessGone { pid }
        } else {
            AllocatorError::Read {
                path: maps_path.clone(),
                source,
            }
        }
    })?;
    let exe = fs::read_link(process.join("exe")).ok();
    let candidates = candidates(&maps, exe.as_deref());
    let mut searched = Vec::new();
    for (mapped, kind) in candidates {
        let path = process
            .join("root")
            .join(mapped.strip_prefix("/").unwrap_or(&mapped));
        searched.push(mapped.display().to_string());
        let Ok(data) = fs::read(&path) else { continue };
        let Ok(file) = object::File::parse(&*data) else {
            continue;
        };
        for prefix in ["", "je_"] {
            if prefix == "je_" && kind != Kind::Executable {
                continue;
            }
            let functions = functions(&file, prefix);
            if functions.iter().any(|f| f.entry == Entry::Malloc)
                && functions.iter().any(|f| f.entry == Entry::Free)
            {
                return Ok(Allocator {
                    kind,
                    mapped_path: mapped,
                    path,
                    prefix,
                    functions,
                });
            }
        }
    }
    Err(AllocatorError::NotFound {
        pid,
        searched: if searched.is_empty() {
            "its mapped objects (none)".to_owned()
        } else {
            searched.join(", ")
        },
    })
}

/// The objects that may define the allocator, in the order the dynamic linker would bind it.
fn candidates(maps: &str, exe: Option<&Path>) -> Vec<(PathBuf, Kind)> {
    let mapped: BTreeSet<PathBuf> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    let mut out = Vec::new();
    if let Some(exe) = exe {
        out.push((exe.to_path_buf(), Kind::Executable));
    }
    let named = |needle: &str| -> Vec<&PathBuf> {
        mapped
            .iter()
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with(needle) && name.contains(".so"))
            })
            .collect()
    };
    for (needle, kind) in [
        ("libjemalloc", Kind::Jemalloc),
        ("libtcmalloc", Kind::Tcmalloc),
        ("libmimalloc", Kind::Mimalloc),
        ("libc.so", Kind::Glibc),
        ("libc-", Kind::Glibc),
    ] {
        for path in named(needle) {
            if Some(path.as_path()) != exe {
                out.push((path.clone(), kind));
            }
        }
    }
    out
}

/// The malloc-API functions `file` defines under `prefix`, one per address, with their file
/// offsets (what a uprobe attaches at).
fn functions(file: &object::File<'_>, prefix: &str) -> Vec<Function> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (name, entry) in FUNCTIONS {
        let wanted = format!("{prefix}{name}");
        let symbol = file.dynamic_symbols().chain(file.symbols()).find(|symbol| {
            symbol.is_definition()
                && symbol.kind() == object::SymbolKind::Text
                && symbol.name() == Ok(wanted.as_str())
        });
        let Some(symbol) = symbol else { continue };
        let Some(mut offset) = file_offset(file, &symbol) else {
            continue;
        };
        if *entry == Entry::Free {
            offset += code(file, &symbol).map_or(0, past_null_check);
        }
        if seen.insert(offset) {
            out.push(Function {
                name: wanted,
                entry: *entry,
                offset,
            });
        }
    }
    out
}

/// The first bytes of a function's code.
fn code<'data>(
    file: &object::File<'data>,
    symbol: &object::Symbol<'data, '_>,
) -> Option<&'data [u8]> {
    let section = file.section_by_index(symbol.section_index()?).ok()?;
    let data = section.data().ok()?;
    let start = usize::try_from(symbol.address().checked_sub(section.address())?).ok()?;
    data.get(start..).map(|code| &code[..code.len().min(16)])
}

/// Where to probe a free function: past a leading NULL check (`test %rdi,%rdi; je …`, as glibc's
/// `free` begins), at the push that follows it; else at its entry (0). x86 uprobes emulate a push
/// in the kernel but execute a `test` out of line, single-stepped: a second trap, which made a
/// free cost ~12 µs against malloc's ~0.9 µs (its entry is a push) on this machine's 6.18
/// (benchmark 15). Skipping the check loses only `free(NULL)`, which frees nothing. The pointer
/// is still in `%rdi` there, and the stack as at the entry.
fn past_null_check(code: &[u8]) -> u64 {
    if !cfg!(target_arch = "x86_64") {
        return 0;
    }
    // test %rdi,%rdi
    let Some(rest) = code.strip_prefix(&[0x48, 0x85, 0xff]) else {
        return 0;
    };
    // je rel8 | je rel32
    let (jump, rest) = match rest {
        [0x74, _, rest @ ..] => (2, rest),
        [0x0f, 0x84, _, _, _, _, rest @ ..] => (6, rest),
        _ => return 0,
    };
    // push %r64 (50+r), or push %r8–%r15 (41 50+r)
    if matches!(rest, [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..]) {
        3 + jump
    } else {
        0
    }
}

/// A symbol's address as an offset in the file (what perf's uprobe takes).
fn file_offset(file: &object::File<'_>, symbol: &object::Symbol<'_, '_>) -> Option<u64> {
    let section = file.section_by_index(symbol.section_index()?).ok()?;
    let (file_start, _) = section.file_range()?;
    Some(symbol.address() - section.address() + file_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 123 /usr/bin/redis-server
7f0000000000-7f0000001000 r-xp 00000000 08:01 456 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2
7f0000002000-7f0000003000 r-xp 00000000 08:01 789 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000004000-7f0000005000 rw-p 00000000 00:00 0 [heap]
";

    #[test]
    fn the_executable_then_alternative_allocators_then_glibc() {
        let got = candidates(MAPS, Some(Path::new("/usr/bin/redis-server")));
        assert_eq!(
            got,
            vec![
                (PathBuf::from("/usr/bin/redis-server"), Kind::Executable),
                (
                    PathBuf::from("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
                    Kind::Jemalloc
                ),
                (
                    PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6"),
                    Kind::Glibc
                ),
            ]
        );
    }

    #[test]
    fn this_test_process_uses_glibc_malloc_with_each_address_probed_once() {
        let allocator = find(Path::new("/proc"), std::process::id()).unwrap();
        assert_eq!(allocator.kind, Kind::Glibc, "{allocator:?}");
        let names: Vec<&str> = allocator
            .functions
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        for name in ["malloc", "calloc", "realloc", "free", "posix_memalign"] {
            assert!(names.contains(&name), "{names:?}");
        }
        let offsets: BTreeSet<u64> = allocator.functions.iter().map(|f| f.offset).collect();
        assert_eq!(offsets.len(), allocator.functions.len());
    }

    #[test]
    fn free_is_probed_past_its_null_check_at_a_push() {
        // glibc 2.36's free: test %rdi,%rdi; je +0xbf; push %rbp.
        let glibc = [
            0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0, 0, 0, 0x55, 0x48, 0x8d,
        ];
        assert_eq!(past_null_check(&glibc), 9);
        // The short jump, then push %r12.
        assert_eq!(
            past_null_check(&[0x48, 0x85, 0xff, 0x74, 0x10, 0x41, 0x54]),
            5
        );
        // No push after the check (nothing gained), no check (jemalloc's free: mov %rdi,%rax),
        // or too short: the entry.
        assert_eq!(
            past_null_check(&[0x48, 0x85, 0xff, 0x74, 0x10, 0x48, 0x89]),
            0
        );
        assert_eq!(past_null_check(&[0x48, 0x89, 0xf8, 0x48, 0x8b, 0x15]), 0);
        assert_eq!(past_null_check(&[0x48, 0x85, 0xff, 0x0f, 0x84]), 0);
    }

    #[test]
    fn a_missing_process_is_named() {
        let err = find(Path::new("/nonexistent-proc"), 1).unwrap_err();
        assert!(
            matches!(err, AllocatorError::ProcessGone { pid: 1 }),
            "{err}"
        );
    }
}
