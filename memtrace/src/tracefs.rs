//! tracefs: where it is mounted, and what the tracepoint `format` files say.
//!
//! Rust eBPF programs get no CO-RE relocations, so the kernel cannot fix up tracepoint field
//! offsets when a program is loaded. Those offsets do change between kernels (fields are added,
//! widened, or turned into `__data_loc` strings), so the loader reads them from
//! `events/<category>/<name>/format` and hands them to the programs in
//! [`memtrace_common::Offsets`]. Fields a kernel lacks become [`FIELD_ABSENT`].

use std::{
    fs, io,
    os::unix::ffi::OsStringExt,
    path::{Path, PathBuf},
};

use memtrace_common::FIELD_ABSENT;

/// Where [`Tracefs::discover`] looks, in order. `/sys/kernel/tracing` is the mount point since
/// Linux 4.1; older setups only have tracefs auto-mounted under debugfs.
pub const DEFAULT_CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The mount table [`Tracefs::discover`] falls back to, for tracefs mounted somewhere unusual.
pub const PROC_MOUNTS: &str = "/proc/mounts";

/// Errors from finding tracefs and reading tracepoint formats. Each variant names the path or
/// tracepoint involved, because "file not found" alone does not tell a user which kernel feature
/// is missing.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// One line that says what to do: this is the first thing a user sees on a fresh machine.
    #[error(
        "tracefs is not mounted (looked in {}): run `mount -t tracefs tracefs /sys/kernel/tracing` as root",
        looked_in(.candidates, .proc_mounts)
    )]
    NotMounted {
        candidates: Vec<PathBuf>,
        proc_mounts: PathBuf,
    },
    #[error("tracepoint {category}:{name} not found under {root}")]
    TracepointMissing {
        category: String,
        name: String,
        root: PathBuf,
    },
    /// The file exists but this process may not read it (EACCES/EPERM): tracefs is root-only
    /// (mode 0700) by default. Not the kernel's age: says which privilege is missing.
    #[error(
        "cannot read {path}: permission denied (tracefs format files are not readable: grant CAP_DAC_READ_SEARCH or run as root)"
    )]
    NotReadable { path: PathBuf },
    /// The cause is in `source`, not repeated in the message; print the chain.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("malformed tracepoint format {path}:{line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("tracepoint {tracepoint} has no field `{field}` on this kernel")]
    FieldMissing { tracepoint: String, field: String },
    #[error(
        "tracepoint {tracepoint} field `{field}` is {found} bytes on this kernel, expected {expected}: refusing to misread it"
    )]
    FieldSize {
        tracepoint: String,
        field: String,
        expected: u32,
        found: u32,
    },
}

fn looked_in(candidates: &[PathBuf], proc_mounts: &Path) -> String {
    candidates
        .iter()
        .map(|c| c.as_path())
        .chain([proc_mounts])
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `format` file that does not parse. [`TracepointFormat::parse`] has no path to report, so
/// [`Tracefs::format`] turns this into [`TracefsError::Parse`] with one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based. For something missing altogether (no `format:` line, say) the last line read.
    pub line: usize,
    pub reason: String,
}

impl ParseError {
    fn new(line: usize, reason: impl Into<String>) -> Self {
        Self {
            line,
            reason: reason.into(),
        }
    }

    /// Attach the file the text came from.
    pub fn at(self, path: impl Into<PathBuf>) -> TracefsError {
        TracefsError::Parse {
            path: path.into(),
            line: self.line,
            reason: self.reason,
        }
    }
}

/// A tracefs mount. The root is explicit so tests can point it at a fixture tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Use `root` as the tracefs mount point (e.g. "/sys/kernel/tracing" or a fixture dir).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Find the live tracefs: [`DEFAULT_CANDIDATES`], then any `tracefs` entry in [`PROC_MOUNTS`].
    pub fn discover() -> Result<Self, TracefsError> {
        let candidates = DEFAULT_CANDIDATES.map(PathBuf::from);
        Self::discover_in(&candidates, Path::new(PROC_MOUNTS))
    }

    /// [`Tracefs::discover`] with explicit candidate roots and mount table.
    ///
    /// A candidate counts only if it has an `events/` directory: `/sys/kernel/tracing` exists as
    /// an empty directory even when nothing is mounted on it. If `events/` cannot be examined
    /// for lack of permission the candidate is taken anyway, so that an unprivileged run fails
    /// later with EACCES on a named file rather than with a misleading "not mounted".
    /// A `tracefs` line in the mount table is taken as is: the kernel wrote it.
    /// A missing mount table counts as "no entries" (containers without /proc).
    pub fn discover_in(candidates: &[PathBuf], proc_mounts: &Path) -> Result<Self, TracefsError> {
        if let Some(found) = candidates.iter().find(|c| has_events_dir(c)) {
            return Ok(Self::new(found.clone()));
        }
        match fs::read_to_string(proc_mounts) {
            Ok(text) => {
                if let Some(mount_point) = tracefs_mount_points(&text).into_iter().next() {
                    return Ok(Self::new(mount_point));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(TracefsError::Io {
                    path: proc_mounts.to_path_buf(),
                    source,
                });
            }
        }
        Err(TracefsError::NotMounted {
            candidates: candidates.to_vec(),
            proc_mounts: proc_mounts.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True if `events/<category>/<name>` exists and can be examined.
    pub fn has_tracepoint(&self, category: &str, name: &str) -> bool {
        self.tracepoint(category, name).is_ok()
    }

    /// Whether `events/<category>/<name>` exists: `Ok` with its directory,
    /// [`TracefsError::TracepointMissing`] if the kernel lacks it, [`TracefsError::NotReadable`]
    /// if tracefs may not be examined by this process (so an unprivileged run is not mistaken
    /// for an old kernel).
    pub fn tracepoint(&self, category: &str, name: &str) -> Result<PathBuf, TracefsError> {
        let missing = || TracefsError::TracepointMissing {
            category: category.to_owned(),
            name: name.to_owned(),
            root: self.root.clone(),
        };
        let dir = self.tracepoint_dir(category, name).ok_or_else(missing)?;
        match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => Ok(dir),
            Ok(_) => Err(missing()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing()),
            Err(source) => Err(read_error(dir, source)),
        }
    }

    /// Read and parse `events/<category>/<name>/format`.
    ///
    /// A missing tracepoint is [`TracefsError::TracepointMissing`] (the kernel lacks it, which
    /// callers may tolerate); anything else that stops the read, such as EACCES, is
    /// [`TracefsError::Io`] so it is not mistaken for an old kernel.
    pub fn format(&self, category: &str, name: &str) -> Result<TracepointFormat, TracefsError> {
        let missing = || TracefsError::TracepointMissing {
            category: category.to_owned(),
            name: name.to_owned(),
            root: self.root.clone(),
        };
        let dir = self.tracepoint_dir(category, name).ok_or_else(missing)?;
        let path = dir.join("format");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.is_dir() => {
                return Err(missing());
            }
            Err(source) => return Err(read_error(path, source)),
        };
        TracepointFormat::parse(&text).map_err(|e| e.at(path))
    }

    /// `None` for names that are not a single path component, so a caller-supplied name such
    /// as `../x` cannot reach outside `events/`.
    fn tracepoint_dir(&self, category: &str, name: &str) -> Option<PathBuf> {
        let plain = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0']);
        (plain(category) && plain(name)).then(|| self.root.join("events").join(category).join(name))
    }
}

/// EACCES and EPERM are [`TracefsError::NotReadable`]; anything else [`TracefsError::Io`].
fn read_error(path: PathBuf, source: io::Error) -> TracefsError {
    if source.kind() == io::ErrorKind::PermissionDenied {
        TracefsError::NotReadable { path }
    } else {
        TracefsError::Io { path, source }
    }
}

impl TracefsError {
    /// Whether the cause is a missing privilege rather than the kernel or the files.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Self::NotReadable { .. })
    }
}

fn has_events_dir(root: &Path) -> bool {
    match fs::metadata(root.join("events")) {
        Ok(meta) => meta.is_dir(),
        Err(e) => e.kind() == io::ErrorKind::PermissionDenied,
    }
}

/// Mount points of `tracefs` entries in a `/proc/mounts`-style table, in table order. Only the
/// filesystem-type column counts: the device column is free text.
fn tracefs_mount_points(mounts: &str) -> Vec<PathBuf> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let (_device, mount_point, fs_type) = (cols.next()?, cols.next()?, cols.next()?);
            (fs_type == "tracefs").then(|| unescape_mount_field(mount_point))
        })
        .collect()
}

/// The kernel writes space, tab, newline and backslash in mount paths as `\ooo` octal escapes.
fn unescape_mount_field(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(&[b'\\', a @ b'0'..=b'7', b @ b'0'..=b'7', c @ b'0'..=b'7']) =
            bytes.get(i..i + 4)
        {
            let value = u16::from(a - b'0') * 64 + u16::from(b - b'0') * 8 + u16::from(c - b'0');
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// A parsed tracepoint `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracepointFormat {
    pub name: String,
    /// The `ID:` line; `None` if the file has none.
    pub id: Option<u32>,
    /// All fields, `common_*` included, in file order.
    pub fields: Vec<Field>,
}

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The declared type, whitespace-normalised, without the field name, any trailing `[N]`, or
    /// a `__data_loc` prefix: `char comm[16]` → "char", `__data_loc char[] comm` → "char[]",
    /// `const char * name` → "const char *". `__rel_loc` (5.18+, offset relative to the end of
    /// the field) stays in the type so it is not mistaken for `__data_loc`.
    pub c_type: String,
    pub offset: u32,
    /// In bytes: the whole array for arrays, 4 for `__data_loc`.
    pub size: u32,
    /// `false` when the kernel predates the `signed:` attribute.
    pub signed: bool,
    /// `__data_loc` dynamic array (u32: offset | len<<16)
    pub data_loc: bool,
    /// fixed array length, e.g. `char comm[16]` → Some(16). `None` for non-arrays and for
    /// lengths that are not a literal (some events print `[sizeof(struct sockaddr_in6)]`);
    /// `size` is the authoritative width either way.
    pub array_len: Option<u32>,
}

impl TracepointFormat {
    /// Parse the text of a `format` file.
    ///
    /// Strict about `field:` lines (a misread offset would make the eBPF programs read garbage),
    /// lenient about unknown header lines and unknown field attributes, which a newer kernel
    /// may add without changing anything memtrace reads. Parsing stops at `print fmt:`.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut name = None;
        let mut id = None;
        let mut in_format = false;
        let mut fields = Vec::new();
        let mut last_line = 1;
        for (idx, raw) in text.lines().enumerate() {
            let line_no = idx + 1;
            last_line = line_no;
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with("print fmt:") {
                break;
            }
            if let Some(rest) = line.strip_prefix("field:") {
                if !in_format {
                    return Err(ParseError::new(line_no, "`field:` line before `format:`"));
                }
                let field = parse_field(rest).map_err(|reason| ParseError::new(line_no, reason))?;
                fields.push(field);
            } else if in_format {
                return Err(ParseError::new(
                    line_no,
                    format!("expected a `field:` line, found `{line}`"),
                ));
            } else if let Some(rest) = line.strip_prefix("name:") {
                let value = rest.trim();
                if value.is_empty() {
                    return Err(ParseError::new(line_no, "empty `name:`"));
                }
                name = Some(value.to_owned());
            } else if let Some(rest) = line.strip_prefix("ID:") {
                let value = rest.trim();
                let parsed = value.parse().map_err(|_| {
                    ParseError::new(line_no, format!("`ID:` is not a number: `{value}`"))
                })?;
                id = Some(parsed);
            } else if line == "format:" {
                in_format = true;
            }
        }
        let name = name.ok_or_else(|| ParseError::new(last_line, "no `name:` line"))?;
        if !in_format {
            return Err(ParseError::new(last_line, "no `format:` line"));
        }
        if fields.is_empty() {
            return Err(ParseError::new(last_line, "no `field:` lines"));
        }
        Ok(Self { name, id, fields })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Offset of a required field, checking its size (so a kernel that changed a field's width is
    /// refused instead of misread).
    pub fn offset_of(&self, name: &str, expected_size: u32) -> Result<u32, TracefsError> {
        let field = self.field(name).ok_or_else(|| TracefsError::FieldMissing {
            tracepoint: self.name.clone(),
            field: name.to_owned(),
        })?;
        if field.size != expected_size {
            return Err(TracefsError::FieldSize {
                tracepoint: self.name.clone(),
                field: name.to_owned(),
                expected: expected_size,
                found: field.size,
            });
        }
        Ok(field.offset)
    }

    /// Offset of an optional field, or [`FIELD_ABSENT`] if the kernel lacks it or its size
    /// differs from `expected_size`. A size mismatch is logged: unlike an absent field it is
    /// not explained by the kernel's age and is worth a look.
    pub fn offset_or_absent(&self, name: &str, expected_size: u32) -> u32 {
        match self.offset_of(name, expected_size) {
            Ok(offset) => offset,
            Err(e @ TracefsError::FieldSize { .. }) => {
                log::warn!("{e}; treating it as absent");
                FIELD_ABSENT
            }
            Err(_) => FIELD_ABSENT,
        }
    }
}

/// Parse what follows `field:`, e.g. `char comm[16];\toffset:8;\tsize:16;\tsigned:0;`.
fn parse_field(rest: &str) -> Result<Field, String> {
    let (decl, attrs) = rest
        .split_once(';')
        .ok_or("field declaration is not terminated by `;`")?;
    let (name, c_type, data_loc, array_len) = parse_declaration(decl.trim())?;

    let mut offset = None;
    let mut size = None;
    let mut signed = None;
    for attr in attrs.split(';').map(str::trim).filter(|a| !a.is_empty()) {
        let (key, value) = attr
            .split_once(':')
            .ok_or_else(|| format!("expected `key:value`, found `{attr}`"))?;
        let (key, value) = (key.trim(), value.trim());
        let slot_taken = match key {
            "offset" => offset.replace(parse_u32(key, value)?).is_some(),
            "size" => size.replace(parse_u32(key, value)?).is_some(),
            "signed" => {
                let flag = match value {
                    "0" => false,
                    "1" => true,
                    _ => return Err(format!("`signed:` is not 0 or 1: `{value}`")),
                };
                signed.replace(flag).is_some()
            }
            _ => false,
        };
        if slot_taken {
            return Err(format!("`{key}:` given twice"));
        }
    }
    Ok(Field {
        name,
        c_type,
        offset: offset.ok_or_else(|| format!("field `{decl}` has no `offset:`"))?,
        size: size.ok_or_else(|| format!("field `{decl}` has no `size:`"))?,
        signed: signed.unwrap_or(false),
        data_loc,
        array_len,
    })
}

fn parse_u32(key: &str, value: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("`{key}:` is not a number: `{value}`"))
}

/// Split a C declaration into (name, type, data_loc, array_len). The name is the last
/// identifier before any trailing `[...]` groups.
fn parse_declaration(decl: &str) -> Result<(String, String, bool, Option<u32>), String> {
    let mut rest = decl;
    let mut dims = Vec::new();
    while let Some(before_close) = rest.strip_suffix(']') {
        let open = before_close
            .rfind('[')
            .ok_or_else(|| format!("unbalanced `]` in `{decl}`"))?;
        dims.push(before_close[open + 1..].trim());
        rest = before_close[..open].trim_end();
    }
    let array_len = if dims.is_empty() {
        None
    } else {
        dims.iter().try_fold(1u32, |len, dim| {
            dim.parse::<u32>().ok().and_then(|d| len.checked_mul(d))
        })
    };

    let type_part = rest.trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
    let name = &rest[type_part.len()..];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("no field name in `{decl}`"));
    }
    let mut tokens: Vec<&str> = type_part.split_whitespace().collect();
    let data_loc = tokens.first() == Some(&"__data_loc");
    if data_loc {
        tokens.remove(0);
    }
    if tokens.is_empty() {
        return Err(format!("no type in `{decl}`"));
    }
    Ok((name.to_owned(), tokens.join(" "), data_loc, array_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tracefs");
    const V6_18: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tracefs/6.18");
    const V5_4: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tracefs/5.4");

    const TRACEPOINTS_6_18: [(&str, &str); 19] = [
        ("exceptions", "page_fault_user"),
        ("exceptions", "page_fault_kernel"),
        ("syscalls", "sys_enter_mmap"),
        ("syscalls", "sys_exit_mmap"),
        ("syscalls", "sys_enter_munmap"),
        ("syscalls", "sys_exit_munmap"),
        ("syscalls", "sys_enter_brk"),
        ("syscalls", "sys_exit_brk"),
        ("syscalls", "sys_enter_mremap"),
        ("syscalls", "sys_exit_mremap"),
        ("oom", "mark_victim"),
        ("kmem", "rss_stat"),
        ("vmscan", "mm_vmscan_direct_reclaim_begin"),
        ("vmscan", "mm_vmscan_direct_reclaim_end"),
        ("vmscan", "mm_vmscan_memcg_reclaim_begin"),
        ("vmscan", "mm_vmscan_memcg_reclaim_end"),
        ("sched", "sched_process_exec"),
        ("sched", "sched_process_exit"),
        ("sched", "sched_process_fork"),
    ];

    fn v6_18(category: &str, name: &str) -> TracepointFormat {
        Tracefs::new(V6_18).format(category, name).unwrap()
    }

    fn v5_4(category: &str, name: &str) -> TracepointFormat {
        Tracefs::new(V5_4).format(category, name).unwrap()
    }

    /// (offset, size, signed) of a field, for compact assertions.
    fn layout(format: &TracepointFormat, name: &str) -> (u32, u32, bool) {
        let f = format
            .field(name)
            .unwrap_or_else(|| panic!("{} has no field {name}", format.name));
        (f.offset, f.size, f.signed)
    }

    #[test]
    fn every_6_18_fixture_parses_with_common_header_and_sane_layout() {
        let tracefs = Tracefs::new(V6_18);
        for (category, name) in TRACEPOINTS_6_18 {
            assert!(tracefs.has_tracepoint(category, name), "{category}:{name}");
            let format = tracefs.format(category, name).unwrap();
            assert_eq!(format.name, name);
            assert!(format.id.is_some(), "{name} has an ID line");
            let common: Vec<_> = format.fields[..4]
                .iter()
                .map(|f| (f.name.as_str(), f.offset, f.size))
                .collect();
            assert_eq!(
                common,
                [
                    ("common_type", 0, 2),
                    ("common_flags", 2, 1),
                    ("common_preempt_count", 3, 1),
                    ("common_pid", 4, 4),
                ],
                "{name}"
            );
            assert!(format.fields.len() > 4, "{name} has event fields");
            for pair in format.fields.windows(2) {
                assert!(
                    pair[0].offset + pair[0].size <= pair[1].offset,
                    "{name}: {} overlaps {}",
                    pair[0].name,
                    pair[1].name
                );
            }
        }
    }

    #[test]
    fn mark_victim_6_18() {
        let f = v6_18("oom", "mark_victim");
        assert_eq!(f.id, Some(609));
        assert_eq!(f.fields.len(), 13);
        assert_eq!(layout(&f, "pid"), (8, 4, true));
        let comm = f.field("comm").unwrap();
        assert!(comm.data_loc);
        assert_eq!(
            (comm.c_type.as_str(), comm.offset, comm.size),
            ("char[]", 12, 4)
        );
        assert_eq!(comm.array_len, None);
        assert_eq!(layout(&f, "total_vm"), (16, 8, false));
        assert_eq!(f.field("total_vm").unwrap().c_type, "unsigned long");
        assert_eq!(layout(&f, "anon_rss"), (24, 8, false));
        assert_eq!(layout(&f, "file_rss"), (32, 8, false));
        assert_eq!(layout(&f, "shmem_rss"), (40, 8, false));
        assert_eq!(layout(&f, "uid"), (48, 4, false));
        assert_eq!(f.field("uid").unwrap().c_type, "uid_t");
        assert_eq!(layout(&f, "pgtables"), (56, 8, false));
        assert_eq!(layout(&f, "oom_score_adj"), (64, 2, true));
        assert_eq!(f.field("oom_score_adj").unwrap().c_type, "short");
        assert_eq!(f.offset_of("oom_score_adj", 2).unwrap(), 64);
        assert_eq!(f.offset_or_absent("comm", 4), 12);
    }

    #[test]
    fn rss_stat_6_18() {
        let f = v6_18("kmem", "rss_stat");
        assert_eq!(layout(&f, "mm_id"), (8, 4, false));
        assert_eq!(f.field("mm_id").unwrap().c_type, "unsigned int");
        assert_eq!(layout(&f, "curr"), (12, 4, false));
        assert_eq!(layout(&f, "member"), (16, 4, true));
        assert_eq!(layout(&f, "size"), (24, 8, true));
        assert_eq!(f.field("size").unwrap().c_type, "long");
        assert_eq!(f.offset_of("size", 8).unwrap(), 24);
    }

    #[test]
    fn sched_6_18() {
        let exit = v6_18("sched", "sched_process_exit");
        let comm = exit.field("comm").unwrap();
        assert_eq!(
            (
                comm.c_type.as_str(),
                comm.offset,
                comm.size,
                comm.array_len,
                comm.data_loc
            ),
            ("char", 8, 16, Some(16), false)
        );
        assert_eq!(layout(&exit, "pid"), (24, 4, true));
        assert_eq!(exit.field("pid").unwrap().c_type, "pid_t");
        assert_eq!(layout(&exit, "prio"), (28, 4, true));
        assert_eq!(layout(&exit, "group_dead"), (32, 1, false));
        assert_eq!(exit.field("group_dead").unwrap().c_type, "bool");
        assert_eq!(exit.offset_or_absent("group_dead", 1), 32);

        let exec = v6_18("sched", "sched_process_exec");
        assert!(exec.field("filename").unwrap().data_loc);
        assert_eq!(layout(&exec, "filename"), (8, 4, false));
        assert_eq!(layout(&exec, "pid"), (12, 4, true));
        assert_eq!(layout(&exec, "old_pid"), (16, 4, true));

        let fork = v6_18("sched", "sched_process_fork");
        assert!(fork.field("parent_comm").unwrap().data_loc);
        assert_eq!(layout(&fork, "parent_pid"), (12, 4, true));
        assert!(fork.field("child_comm").unwrap().data_loc);
        assert_eq!(layout(&fork, "child_comm"), (16, 4, false));
        assert_eq!(layout(&fork, "child_pid"), (20, 4, true));
    }

    #[test]
    fn syscalls_6_18() {
        let mmap = v6_18("syscalls", "sys_enter_mmap");
        assert_eq!(layout(&mmap, "__syscall_nr"), (8, 4, true));
        let args: Vec<_> = ["addr", "len", "prot", "flags", "fd", "off"]
            .iter()
            .map(|a| mmap.offset_of(a, 8).unwrap())
            .collect();
        assert_eq!(args, [16, 24, 32, 40, 48, 56]);

        let munmap = v6_18("syscalls", "sys_enter_munmap");
        assert_eq!(layout(&munmap, "addr"), (16, 8, false));
        assert_eq!(layout(&munmap, "len"), (24, 8, false));
        assert_eq!(munmap.field("len").unwrap().c_type, "size_t");

        let brk = v6_18("syscalls", "sys_enter_brk");
        assert_eq!(layout(&brk, "brk"), (16, 8, false));

        let mremap = v6_18("syscalls", "sys_enter_mremap");
        let args: Vec<_> = ["addr", "old_len", "new_len", "flags", "new_addr"]
            .iter()
            .map(|a| mremap.offset_of(a, 8).unwrap())
            .collect();
        assert_eq!(args, [16, 24, 32, 40, 48]);

        for exit in [
            "sys_exit_mmap",
            "sys_exit_munmap",
            "sys_exit_brk",
            "sys_exit_mremap",
        ] {
            let f = v6_18("syscalls", exit);
            assert_eq!(layout(&f, "ret"), (16, 8, true), "{exit}");
            assert_eq!(f.field("ret").unwrap().c_type, "long", "{exit}");
        }
    }

    #[test]
    fn faults_and_reclaim_6_18() {
        for name in ["page_fault_user", "page_fault_kernel"] {
            let f = v6_18("exceptions", name);
            assert_eq!(layout(&f, "address"), (8, 8, false), "{name}");
            assert_eq!(layout(&f, "ip"), (16, 8, false), "{name}");
            assert_eq!(layout(&f, "error_code"), (24, 8, false), "{name}");
        }
        for name in [
            "mm_vmscan_direct_reclaim_begin",
            "mm_vmscan_memcg_reclaim_begin",
        ] {
            let f = v6_18("vmscan", name);
            assert_eq!(layout(&f, "order"), (8, 4, true), "{name}");
            assert_eq!(layout(&f, "gfp_flags"), (16, 8, false), "{name}");
        }
        for name in [
            "mm_vmscan_direct_reclaim_end",
            "mm_vmscan_memcg_reclaim_end",
        ] {
            let f = v6_18("vmscan", name);
            assert_eq!(layout(&f, "nr_reclaimed"), (8, 8, false), "{name}");
        }
    }

    #[test]
    fn old_kernel_fields_are_absent() {
        let oom = v5_4("oom", "mark_victim");
        assert_eq!(oom.offset_or_absent("pid", 4), 8);
        for missing in ["comm", "uid", "pgtables"] {
            assert_eq!(oom.offset_or_absent(missing, 4), FIELD_ABSENT, "{missing}");
        }
        for missing in ["total_vm", "anon_rss", "file_rss", "shmem_rss"] {
            assert_eq!(oom.offset_or_absent(missing, 8), FIELD_ABSENT, "{missing}");
        }
        assert_eq!(oom.offset_or_absent("oom_score_adj", 2), FIELD_ABSENT);

        let exit = v5_4("sched", "sched_process_exit");
        assert_eq!(exit.offset_or_absent("group_dead", 1), FIELD_ABSENT);
        assert_eq!(exit.offset_or_absent("pid", 4), 24);
        assert_eq!(exit.field("comm").unwrap().array_len, Some(16));
        assert!(exit.field("comm").unwrap().signed);

        let rss = v5_4("kmem", "rss_stat");
        let offsets: Vec<_> = [("mm_id", 4), ("curr", 4), ("member", 4), ("size", 8)]
            .iter()
            .map(|&(name, size)| rss.offset_or_absent(name, size))
            .collect();
        assert_eq!(offsets, [8, 12, 16, 24]);
    }

    #[test]
    fn offset_of_missing_field_names_tracepoint_and_field() {
        let err = v5_4("oom", "mark_victim").offset_of("comm", 4).unwrap_err();
        match &err {
            TracefsError::FieldMissing { tracepoint, field } => {
                assert_eq!(
                    (tracepoint.as_str(), field.as_str()),
                    ("mark_victim", "comm")
                );
            }
            other => panic!("expected FieldMissing, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "tracepoint mark_victim has no field `comm` on this kernel"
        );
    }

    #[test]
    fn offset_of_refuses_a_size_change() {
        let f = v6_18("oom", "mark_victim");
        let err = f.offset_of("pid", 8).unwrap_err();
        match &err {
            TracefsError::FieldSize {
                tracepoint,
                field,
                expected,
                found,
            } => {
                assert_eq!(
                    (tracepoint.as_str(), field.as_str()),
                    ("mark_victim", "pid")
                );
                assert_eq!((*expected, *found), (8, 4));
            }
            other => panic!("expected FieldSize, got {other:?}"),
        }
        assert!(
            err.to_string()
                .contains("is 4 bytes on this kernel, expected 8")
        );
        assert_eq!(f.offset_or_absent("pid", 8), FIELD_ABSENT);
        assert_eq!(f.offset_or_absent("pid", 4), 8);
    }

    #[test]
    fn discover_in_takes_first_candidate_with_events_dir() {
        let candidates = [
            PathBuf::from(FIXTURES), // exists, but has no events/
            PathBuf::from("/nonexistent/memtrace-test/tracing"),
            PathBuf::from(V5_4),
            PathBuf::from(V6_18),
        ];
        let mounts = Path::new(FIXTURES).join("mounts/tracefs_elsewhere");
        let tracefs = Tracefs::discover_in(&candidates, &mounts).unwrap();
        assert_eq!(tracefs.root(), Path::new(V5_4));
    }

    #[test]
    fn discover_in_falls_back_to_proc_mounts() {
        let candidates = [PathBuf::from(FIXTURES)];
        let mounts = Path::new(FIXTURES).join("mounts/tracefs_elsewhere");
        let tracefs = Tracefs::discover_in(&candidates, &mounts).unwrap();
        // Not the tmpfs whose device is called "tracefs"; the `\040` decoded.
        assert_eq!(tracefs.root(), Path::new("/mnt/trace fs"));
    }

    #[test]
    fn discover_in_reports_not_mounted_with_where_it_looked() {
        let candidates = [
            PathBuf::from(FIXTURES),
            PathBuf::from("/nonexistent/memtrace-test/tracing"),
        ];
        let mounts = Path::new(FIXTURES).join("mounts/no_tracefs");
        let err = Tracefs::discover_in(&candidates, &mounts).unwrap_err();
        assert!(matches!(err, TracefsError::NotMounted { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "tracefs is not mounted (looked in {FIXTURES}, /nonexistent/memtrace-test/tracing, \
                 {FIXTURES}/mounts/no_tracefs): run `mount -t tracefs tracefs /sys/kernel/tracing` as root"
            )
        );

        // A missing mount table is "nothing found", not an I/O error.
        let err = Tracefs::discover_in(&candidates, Path::new("/nonexistent/memtrace-test/mounts"))
            .unwrap_err();
        assert!(matches!(err, TracefsError::NotMounted { .. }), "{err:?}");
    }

    #[test]
    fn not_mounted_message_for_the_default_places() {
        let err = TracefsError::NotMounted {
            candidates: DEFAULT_CANDIDATES.map(PathBuf::from).to_vec(),
            proc_mounts: PathBuf::from(PROC_MOUNTS),
        };
        assert_eq!(
            err.to_string(),
            "tracefs is not mounted (looked in /sys/kernel/tracing, /sys/kernel/debug/tracing, \
             /proc/mounts): run `mount -t tracefs tracefs /sys/kernel/tracing` as root"
        );
    }

    #[test]
    fn mount_table_parsing() {
        let table = "tracefs /a\\040b\\134c tracefs rw 0 0\n\
                     tracefs /not tmpfs rw 0 0\n\
                     short line\n\
                     nodev /sys/kernel/tracing tracefs rw,relatime 0 0\n";
        assert_eq!(
            tracefs_mount_points(table),
            [
                PathBuf::from("/a b\\c"),
                PathBuf::from("/sys/kernel/tracing")
            ]
        );
        // Not an escape: left alone.
        assert_eq!(
            unescape_mount_field("/x\\9y\\04"),
            PathBuf::from("/x\\9y\\04")
        );
    }

    #[test]
    fn missing_tracepoint() {
        let tracefs = Tracefs::new(V6_18);
        assert!(tracefs.has_tracepoint("oom", "mark_victim"));
        assert!(!tracefs.has_tracepoint("oom", "no_such_event"));
        assert!(!tracefs.has_tracepoint("no_such_category", "mark_victim"));
        assert!(!tracefs.has_tracepoint("oom", "../oom/mark_victim"));

        let err = tracefs.format("oom", "no_such_event").unwrap_err();
        match &err {
            TracefsError::TracepointMissing {
                category,
                name,
                root,
            } => {
                assert_eq!((category.as_str(), name.as_str()), ("oom", "no_such_event"));
                assert_eq!(root, Path::new(V6_18));
            }
            other => panic!("expected TracepointMissing, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!("tracepoint oom:no_such_event not found under {V6_18}")
        );
        for (category, name) in [("nope", "mark_victim"), ("..", "6.18"), ("oom", "")] {
            let err = tracefs.format(category, name).unwrap_err();
            assert!(
                matches!(err, TracefsError::TracepointMissing { .. }),
                "{category}:{name}: {err:?}"
            );
        }
    }

    /// A tree with one broken and one unreadable tracepoint, built in a temp dir.
    #[test]
    fn format_reports_parse_and_io_errors_with_path() {
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("events/test/broken");
        fs::create_dir_all(&broken).unwrap();
        fs::write(
            broken.join("format"),
            "name: broken\nID: 1\nformat:\n\
             \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
             \tfield:int pid;\toffset:eight;\tsize:4;\tsigned:1;\n",
        )
        .unwrap();
        // `format` is a directory: the read fails with something other than NotFound.
        fs::create_dir_all(dir.path().join("events/test/unreadable/format")).unwrap();

        let tracefs = Tracefs::new(dir.path());
        match tracefs.format("test", "broken").unwrap_err() {
            TracefsError::Parse { path, line, reason } => {
                assert_eq!(path, broken.join("format"));
                assert_eq!(line, 6);
                assert_eq!(reason, "`offset:` is not a number: `eight`");
            }
            other => panic!("expected Parse, got {other:?}"),
        }
        match tracefs.format("test", "unreadable").unwrap_err() {
            TracefsError::Io { path, source } => {
                assert_eq!(path, dir.path().join("events/test/unreadable/format"));
                assert_eq!(source.kind(), io::ErrorKind::IsADirectory);
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }

    /// EACCES is a missing privilege, named with the capability that fixes it; other errors
    /// stay I/O errors with their cause. (Root reads every file here, so the errors are built.)
    #[test]
    fn permission_denied_is_not_readable_and_names_the_capability() {
        let path = PathBuf::from("/sys/kernel/tracing/events/oom/mark_victim/format");
        for errno in [libc::EACCES, libc::EPERM] {
            let err = read_error(path.clone(), io::Error::from_raw_os_error(errno));
            assert!(err.is_permission_denied(), "{err:?}");
            assert_eq!(
                err.to_string(),
                "cannot read /sys/kernel/tracing/events/oom/mark_victim/format: permission denied \
                 (tracefs format files are not readable: grant CAP_DAC_READ_SEARCH or run as root)"
            );
        }
        let err = read_error(path, io::Error::from(io::ErrorKind::IsADirectory));
        assert!(matches!(err, TracefsError::Io { .. }), "{err:?}");
        assert!(!err.is_permission_denied());
        let missing = Tracefs::new(V6_18).tracepoint("oom", "no_such_event");
        assert!(
            matches!(missing, Err(TracefsError::TracepointMissing { .. })),
            "{missing:?}"
        );
        assert_eq!(
            Tracefs::new(V6_18)
                .tracepoint("oom", "mark_victim")
                .unwrap(),
            Path::new(V6_18).join("events/oom/mark_victim")
        );
    }

    const HEADER: &str = "name: t\nID: 7\nformat:\n";

    fn parse_err(text: &str) -> ParseError {
        TracepointFormat::parse(text).unwrap_err()
    }

    #[test]
    fn parse_errors_carry_line_numbers() {
        let field = "\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n";
        let cases = [
            (
                format!("{HEADER}\tfield:int pid;\toffset:8;\tsigned:1;\n"),
                4,
                "no `size:`",
            ),
            (
                format!("{HEADER}{field}\tfield:int x;\toffset:12;\tsize:4;\tsigned:2;\n"),
                5,
                "`signed:` is not 0 or 1",
            ),
            (
                format!("{HEADER}{field}\tfield:int x;\toffset:1;\toffset:2;\tsize:4;\n"),
                5,
                "`offset:` given twice",
            ),
            (
                format!("{HEADER}{field}\tfield:int x\toffset:12;\n"),
                5,
                "no field name in `int x\toffset:12`",
            ),
            (
                format!("{HEADER}{field}\tfield:int x offset:12\n"),
                5,
                "not terminated by `;`",
            ),
            (
                format!("{HEADER}{field}\tfield:[4];\toffset:12;\tsize:4;\n"),
                5,
                "no field name",
            ),
            (
                format!("{HEADER}{field}\tfield:pid;\toffset:12;\tsize:4;\n"),
                5,
                "no type",
            ),
            (
                format!("{HEADER}{field}\tfield:int x];\toffset:12;\tsize:4;\n"),
                5,
                "unbalanced",
            ),
            (
                format!("{HEADER}{field}\tgarbage\n"),
                5,
                "expected a `field:` line",
            ),
            (
                format!("name: t\n{field}"),
                2,
                "`field:` line before `format:`",
            ),
            (
                format!("name: t\nID: x1\nformat:\n{field}"),
                2,
                "`ID:` is not a number",
            ),
            (format!("name:\nformat:\n{field}"), 1, "empty `name:`"),
            (
                format!("ID: 3\nformat:\n{field}\nprint fmt: \"\"\n"),
                5,
                "no `name:` line",
            ),
            ("name: t\nID: 3\n".to_owned(), 2, "no `format:` line"),
            (
                format!("{HEADER}\nprint fmt: \"x\"\n"),
                5,
                "no `field:` lines",
            ),
            (String::new(), 1, "no `name:` line"),
        ];
        for (text, line, reason) in cases {
            let err = parse_err(&text);
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.reason.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn parse_declaration_variants() {
        let text = format!(
            "{HEADER}\
             \tfield:const char * name;\toffset:8;\tsize:8;\tsigned:0;\n\
             \tfield:char *ptr;\toffset:16;\tsize:8;\tsigned:0;\n\
             \tfield:__data_loc char[] comm;\toffset:24;\tsize:4;\tsigned:0;\n\
             \tfield:u8 saddr[sizeof(struct sockaddr_in6)];\toffset:28;\tsize:28;\tsigned:0;\n\
             \tfield:u32 grid[2][3];\toffset:56;\tsize:24;\tsigned:0;\n\
             \tfield:unsigned   long  long old_field;\toffset:80;\tsize:8;\n\
             \tfield:__rel_loc char[] rel;\toffset:88;\tsize:4;\tsigned:0;\tfuture:1;\n\
             \n\
             print fmt: \"field:int bogus; offset:1;\"\n"
        );
        let f = TracepointFormat::parse(&text).unwrap();
        let summary: Vec<_> = f
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.c_type.as_str(), f.data_loc, f.array_len))
            .collect();
        assert_eq!(
            summary,
            [
                ("name", "const char *", false, None),
                ("ptr", "char *", false, None),
                ("comm", "char[]", true, None),
                ("saddr", "u8", false, None),
                ("grid", "u32", false, Some(6)),
                ("old_field", "unsigned long long", false, None),
                ("rel", "__rel_loc char[]", false, None),
            ]
        );
        assert_eq!((f.name.as_str(), f.id), ("t", Some(7)));
        assert_eq!(layout(&f, "old_field"), (80, 8, false));
        assert_eq!(layout(&f, "rel"), (88, 4, false));
    }

    #[test]
    fn parse_without_id_or_signed() {
        let f = TracepointFormat::parse(
            "name: old\nformat:\n\
             \tfield:int pid;\toffset:8;\tsize:4;\n\n\
             \tfield:char comm[16];\toffset:12;\tsize:16;\n",
        )
        .unwrap();
        assert_eq!(f.id, None);
        assert_eq!(layout(&f, "pid"), (8, 4, false));
        assert_eq!(f.field("comm").unwrap().array_len, Some(16));
        assert_eq!(f.offset_of("comm", 16).unwrap(), 12);
    }
}
