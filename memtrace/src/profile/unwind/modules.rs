//! The modules of a process and their unwind information: `/proc/PID/maps` for where each file
//! is mapped, the `object` crate for each file's `.eh_frame`, `.eh_frame_hdr` and load segments.
//! A file's sections are read once per (device, inode) and shared by every process mapping it.
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use framehop::ExplicitModuleSectionInfo;
use object::{Object, ObjectSection, ObjectSegment, ReadCache};
use procfs_core::FromRead;
use procfs_core::process::{MMPermissions, MMapPath, MemoryMaps};

/// Section bytes as framehop takes them.
pub(super) type Bytes = Arc<[u8]>;

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("reading {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the ELF file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
    #[error("reading the mappings of pid {pid}")]
    Maps {
        pid: u32,
        #[source]
        source: procfs_core::ProcError,
    },
}

/// What an ELF file offers an unwinder, independent of where it is mapped.
#[derive(Debug)]
pub(super) struct ModuleFile {
    eh_frame: Option<(Range<u64>, Bytes)>,
    eh_frame_hdr: Option<(Range<u64>, Bytes)>,
    debug_frame: Option<Bytes>,
    text_svma: Option<Range<u64>>,
    got_svma: Option<Range<u64>>,
    /// Loadable segments: (file offset, file size, virtual address).
    segments: Vec<(u64, u64, u64)>,
}

impl ModuleFile {
    pub(super) fn read(path: &Path) -> Result<Self, ModuleError> {
        let file = File::open(path).map_err(|source| ModuleError::Open {
            path: path.to_owned(),
            source,
        })?;
        let cache = ReadCache::new(file);
        let elf = object::File::parse(&cache).map_err(|source| ModuleError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let section = |name: &str| -> Option<(Range<u64>, Bytes)> {
            let section = elf.section_by_name(name)?;
            let data = section.data().ok()?;
            let start = section.address();
            Some((start..start + section.size(), Arc::from(data)))
        };
        let svma = |name: &str| {
            elf.section_by_name(name).map(|section| {
                let start = section.address();
                start..start + section.size()
            })
        };
        Ok(Self {
            eh_frame: section(".eh_frame"),
            eh_frame_hdr: section(".eh_frame_hdr"),
            debug_frame: section(".debug_frame").map(|(_, data)| data),
            text_svma: svma(".text"),
            got_svma: svma(".got"),
            segments: elf
                .segments()
                .map(|segment| {
                    let (offset, size) = segment.file_range();
                    (offset, size, segment.address())
                })
                .collect(),
        })
    }

    pub(super) fn has_unwind_info(&self) -> bool {
        self.eh_frame.is_some() || self.debug_frame.is_some()
    }

    /// The load bias of a mapping of this file at `start` from file `offset`: the segment
    /// holding that offset says which virtual address it was linked at.
    pub(super) fn bias(&self, start: u64, offset: u64) -> Option<u64> {
        let &(segment_offset, _, vaddr) =
            self.segments.iter().find(|&&(segment_offset, size, _)| {
                (segment_offset..segment_offset + size).contains(&offset)
            })?;
        Some(start.wrapping_sub(vaddr + (offset - segment_offset)))
    }

    /// framehop's view, with addresses relative to a base of 0 (so `base_avma` is the bias).
    pub(super) fn section_info(&self) -> ExplicitModuleSectionInfo<Bytes> {
        ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text_svma.clone(),
            got_svma: self.got_svma.clone(),
            eh_frame_svma: self.eh_frame.as_ref().map(|(range, _)| range.clone()),
            eh_frame: self.eh_frame.as_ref().map(|(_, data)| Arc::clone(data)),
            eh_frame_hdr_svma: self.eh_frame_hdr.as_ref().map(|(range, _)| range.clone()),
            eh_frame_hdr: self.eh_frame_hdr.as_ref().map(|(_, data)| Arc::clone(data)),
            debug_frame: self.debug_frame.clone(),
            ..ExplicitModuleSectionInfo::default()
        }
    }
}

/// An executable mapping of a file in a process.
#[derive(Debug, Clone)]
pub(super) struct ExecutableMapping {
    pub range: Range<u64>,
    pub offset: u64,
    /// (device, inode): a file's identity across processes and mount namespaces.
    pub file_id: (i32, i32, u64),
    pub path: PathBuf,
    /// Where this process's mapping can be read, even if the file was deleted or lives in
    /// another mount namespace.
    pub readable_path: PathBuf,
}

/// The executable file mappings of `pid`.
pub(super) fn executable_mappings(pid: u32) -> Result<Vec<ExecutableMapping>, ModuleError> {
    let maps = MemoryMaps::from_file(format!("/proc/{pid}/maps"))
        .map_err(|source| ModuleError::Maps { pid, source })?;
    Ok(maps
        .0
        .into_iter()
        .filter(|map| map.perms.contains(MMPermissions::EXECUTE))
        .filter_map(|map| {
            let MMapPath::Path(path) = map.pathname else {
                return None;
            };
            let (start, end) = map.address;
            Some(ExecutableMapping {
                range: start..end,
                offset: map.offset,
                file_id: (map.dev.0, map.dev.1, map.inode),
                readable_path: PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}")),
                path,
            })
        })
        .collect())
}

/// Module files by identity, read once.
#[derive(Debug, Default)]
pub(super) struct ModuleFiles {
    files: HashMap<(i32, i32, u64), Option<Arc<ModuleFile>>>,
}

impl ModuleFiles {
    /// The file of `mapping`, or `None` if it cannot be read (logged once).
    pub(super) fn get(&mut self, mapping: &ExecutableMapping) -> Option<Arc<ModuleFile>> {
        self.files
            .entry(mapping.file_id)
            .or_insert_with(|| match ModuleFile::read(&mapping.readable_path) {
                Ok(file) => Some(Arc::new(file)),
                Err(error) => {
                    let source = std::error::Error::source(&error).map(ToString::to_string);
                    tracing::debug!(
                        path = %mapping.path.display(),
                        "no unwind information: {error}: {}",
                        source.unwrap_or_default()
                    );
                    None
                }
            })
            .clone()
    }
}
