//! A cgroup's `memory.stat`: what its usage is made of (anonymous memory, page cache, kernel
//! memory), read when an OOM kill needs explaining. cgroup v1 and v2 name the same things
//! differently; [`CgroupMemoryStat`] has one name for each, saying where it comes from.
use std::path::Path;

use memtrace_api::CgroupMemoryStat;

use super::{
    CgroupError, CgroupFs, Layout, key_values, parse_err, parse_u64, read_optional, read_u64,
};

/// v2 keys: (key in `memory.stat`, field).
const V2_KEYS: [(&str, Field); 13] = [
    ("anon", Field::Anon),
    ("file", Field::File),
    ("shmem", Field::Shmem),
    ("file_mapped", Field::FileMapped),
    ("kernel", Field::Kernel),
    ("kernel_stack", Field::KernelStack),
    ("pagetables", Field::Pagetables),
    ("slab", Field::Slab),
    ("active_anon", Field::LruAnon),
    ("inactive_anon", Field::LruAnon),
    ("active_file", Field::LruFile),
    ("inactive_file", Field::LruFile),
    ("unevictable", Field::Unevictable),
];

/// v1 keys, the hierarchical (`total_`) ones: v1's usage counts descendants too.
const V1_KEYS: [(&str, Field); 10] = [
    ("total_rss", Field::Anon),
    ("total_cache", Field::File),
    ("total_shmem", Field::Shmem),
    ("total_mapped_file", Field::FileMapped),
    ("total_swap", Field::Swap),
    ("total_active_anon", Field::LruAnon),
    ("total_inactive_anon", Field::LruAnon),
    ("total_active_file", Field::LruFile),
    ("total_inactive_file", Field::LruFile),
    ("total_unevictable", Field::Unevictable),
];

#[derive(Clone, Copy)]
enum Field {
    Anon,
    File,
    Shmem,
    FileMapped,
    Kernel,
    KernelStack,
    Pagetables,
    Slab,
    Sock,
    Swap,
    LruAnon,
    LruFile,
    Unevictable,
}

fn slot(stat: &mut CgroupMemoryStat, field: Field) -> &mut Option<u64> {
    match field {
        Field::Anon => &mut stat.anon_bytes,
        Field::File => &mut stat.file_bytes,
        Field::Shmem => &mut stat.shmem_bytes,
        Field::FileMapped => &mut stat.file_mapped_bytes,
        Field::Kernel => &mut stat.kernel_bytes,
        Field::KernelStack => &mut stat.kernel_stack_bytes,
        Field::Pagetables => &mut stat.pagetables_bytes,
        Field::Slab => &mut stat.slab_bytes,
        Field::Sock => &mut stat.sock_bytes,
        Field::Swap => &mut stat.swap_bytes,
        Field::LruAnon => &mut stat.lru_anon_bytes,
        Field::LruFile => &mut stat.lru_file_bytes,
        Field::Unevictable => &mut stat.unevictable_bytes,
    }
}

/// Fills `stat` from the `key value` lines of `text` that `keys` names, adding up the keys of one
/// field (the LRU lists); other lines are ignored (every kernel adds some).
fn parse(
    text: &str,
    keys: &[(&str, Field)],
    stat: &mut CgroupMemoryStat,
) -> Result<(), super::ParseError> {
    for (key, value) in key_values(text) {
        if let Some((_, field)) = keys.iter().find(|(k, _)| *k == key) {
            let value = parse_u64(key, value)?;
            let slot = slot(stat, *field);
            *slot = Some(slot.unwrap_or(0).saturating_add(value));
        }
    }
    Ok(())
}

/// Parses a v2 `memory.stat`. Before Linux 5.18 there is no `kernel` line: the kernel memory is
/// then the sum of its parts the file has (stacks, page tables, per-CPU, slab).
fn parse_v2(text: &str) -> Result<CgroupMemoryStat, super::ParseError> {
    let mut stat = CgroupMemoryStat {
        version: 2,
        ..CgroupMemoryStat::default()
    };
    parse(text, &V2_KEYS, &mut stat)?;
    let mut sock = None;
    let mut percpu = None;
    for (key, value) in key_values(text) {
        match key {
            "sock" => sock = Some(parse_u64(key, value)?),
            "percpu" => percpu = Some(parse_u64(key, value)?),
            _ => {}
        }
    }
    *slot(&mut stat, Field::Sock) = sock;
    if stat.kernel_bytes.is_none() {
        let parts = [
            stat.kernel_stack_bytes,
            stat.pagetables_bytes,
            percpu,
            stat.slab_bytes,
        ];
        if parts.iter().any(Option::is_some) {
            stat.kernel_bytes = Some(parts.iter().flatten().sum());
        }
    }
    Ok(stat)
}

/// Parses a v1 `memory.stat` (kernel memory and socket buffers are in files of their own).
fn parse_v1(text: &str) -> Result<CgroupMemoryStat, super::ParseError> {
    let mut stat = CgroupMemoryStat {
        version: 1,
        ..CgroupMemoryStat::default()
    };
    parse(text, &V1_KEYS, &mut stat)?;
    Ok(stat)
}

impl CgroupFs {
    /// The `memory.stat` breakdown of `cgroup_path` (as in `/proc/<pid>/cgroup`); v1 adds
    /// `memory.kmem.usage_in_bytes` and `memory.kmem.tcp.usage_in_bytes`, v2 the swap from
    /// `memory.swap.current`.
    pub fn memory_stat(&self, cgroup_path: &str) -> Result<CgroupMemoryStat, CgroupError> {
        let relative = super::relative_path(cgroup_path)?;
        let (dir, version) = match self.layout()? {
            Layout::V1(base) => (base.join(relative), 1),
            Layout::V2(base) => (base.join(relative), 2),
        };
        let Some((path, text)) = read_optional(&dir, "memory.stat")? else {
            return Err(CgroupError::NotFound { path: dir });
        };
        read_stat(&dir, &path, &text, version)
    }
}

fn read_stat(
    dir: &Path,
    path: &Path,
    text: &str,
    version: u8,
) -> Result<CgroupMemoryStat, CgroupError> {
    if version == 1 {
        let mut stat = parse_v1(text).map_err(|e| parse_err(path, e))?;
        stat.kernel_bytes = read_u64(dir, "memory.kmem.usage_in_bytes")?;
        stat.sock_bytes = read_u64(dir, "memory.kmem.tcp.usage_in_bytes")?;
        Ok(stat)
    } else {
        let mut stat = parse_v2(text).map_err(|e| parse_err(path, e))?;
        stat.swap_bytes = read_u64(dir, "memory.swap.current")?;
        Ok(stat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cgroup");

    fn near(parts: u64, usage: u64) -> bool {
        parts.abs_diff(usage) * 100 <= usage
    }

    #[test]
    fn v1_reads_the_hierarchical_totals_and_kmem() {
        let fs = CgroupFs::new(format!("{FIXTURES}/v1"));
        let stat = fs.memory_stat("/oomdemo").unwrap();
        assert_eq!(
            stat,
            CgroupMemoryStat {
                version: 1,
                anon_bytes: Some(104_333_312),
                file_bytes: Some(105_644_032),
                shmem_bytes: Some(4096),
                file_mapped_bytes: Some(1_351_680),
                kernel_bytes: Some(1_114_112),
                kernel_stack_bytes: None,
                pagetables_bytes: None,
                slab_bytes: None,
                sock_bytes: Some(0),
                swap_bytes: Some(0),
                lru_anon_bytes: Some(104_333_312),
                lru_file_bytes: Some(105_644_032),
                unevictable_bytes: Some(0),
            }
        );
        let usage = fs.memory("/oomdemo").unwrap().usage_bytes.unwrap();
        let parts =
            stat.anon_bytes.unwrap() + stat.file_bytes.unwrap() + stat.kernel_bytes.unwrap();
        assert!(near(parts, usage), "{parts} vs usage {usage}");
    }

    #[test]
    fn v2_reads_its_names_and_swap() {
        let fs = CgroupFs::new(format!("{FIXTURES}/v2"));
        let stat = fs.memory_stat("/system.slice/nginx.service").unwrap();
        assert_eq!(
            stat,
            CgroupMemoryStat {
                version: 2,
                anon_bytes: Some(34_603_008),
                file_bytes: Some(14_680_064),
                shmem_bytes: Some(1_069_056),
                file_mapped_bytes: Some(14_901_248),
                kernel_bytes: Some(3_145_728),
                kernel_stack_bytes: Some(311_296),
                pagetables_bytes: Some(634_880),
                slab_bytes: Some(2_162_832),
                sock_bytes: Some(8192),
                swap_bytes: Some(8192),
                lru_anon_bytes: Some(34_603_008),
                lru_file_bytes: Some(14_680_064),
                unevictable_bytes: Some(0),
            }
        );
        let usage = fs
            .memory("/system.slice/nginx.service")
            .unwrap()
            .usage_bytes
            .unwrap();
        let parts =
            stat.anon_bytes.unwrap() + stat.file_bytes.unwrap() + stat.kernel_bytes.unwrap();
        assert!(near(parts, usage), "{parts} vs usage {usage}");
    }

    #[test]
    fn v2_before_5_18_sums_the_kernel_parts() {
        let stat =
            parse_v2("anon 4096\nkernel_stack 100\npagetables 20\npercpu 3\nslab 7\n").unwrap();
        assert_eq!(stat.kernel_bytes, Some(130));
        assert_eq!(stat.file_bytes, None, "absent, not zero");
    }

    #[test]
    fn bad_values_and_missing_files_are_errors() {
        assert!(parse_v1("total_rss lots\n").is_err());
        let fs = CgroupFs::new(format!("{FIXTURES}/v1"));
        assert!(matches!(
            fs.memory_stat("/no-such-cgroup"),
            Err(CgroupError::NotFound { .. })
        ));
        assert!(matches!(
            fs.memory_stat("/../etc"),
            Err(CgroupError::InvalidPath { .. })
        ));
    }
}
