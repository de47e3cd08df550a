//! Addresses to functions, files and lines, with blazesym (libbpf's symbolizer): ELF symbols,
//! DWARF line tables and inlined functions, debug files found by build id or debug link under
//! `/usr/lib/debug`, and `/proc/kallsyms` for the kernel.
//!
//! User addresses are first *normalized* while the process lives: `/proc/PID/maps` gives each
//! address's module and file offset, and the module's GNU build id. Both are kept per
//! (pid, address), and symbols per (module, file offset), so a process that exited after a first
//! symbolization still resolves at the next interval, and a module shared by many processes is
//! read once per call. Every address but a stack's leaf is a return address: the symbolizer looks
//! up `address - 1`, the call instruction, so a call that ends a function is not attributed to the
//! next one.
//!
//! blazesym's caches hold `Rc`s; a blazesym symbolizer is built per [`Symbolizer::symbolize`]
//! call so that [`Symbolizer`] itself stays `Send` (collectors hold it across `.await`s), and the
//! results are cached here instead.
mod hint;
mod profile;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blazesym::normalize::{NormalizeOpts, Normalizer, Reason, UserMeta};
use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{self, Input, Sym, Symbolized};
use blazesym::{MaybeDefault, Pid};

pub use profile::{Frame, FrameKind, Profile, Stack, short_module};

use crate::profile::capture::{Capture, CapturedStack};

#[derive(Debug, thiserror::Error)]
pub enum SymbolizeError {
    #[error(
        "a stack of pid {pid} has {values} values but the capture has {sample_types} sample types"
    )]
    ValuesMismatch {
        pid: u32,
        values: usize,
        sample_types: usize,
    },
    #[error("the default sample type {index} is not one of the capture's {sample_types}")]
    DefaultSampleType { index: usize, sample_types: usize },
}

/// A module an address normalized into.
#[derive(Debug)]
struct Module {
    /// The path as the process mapped it.
    path: String,
    /// Where this process can read it (through `/proc/PID/root` for processes in another mount
    /// namespace), captured while the process lived.
    open_path: PathBuf,
    build_id: Option<String>,
    /// Symbols are cached per build id: the same binary under two paths (or in two containers)
    /// is read once; a module without one is keyed by path.
    key: String,
}

impl Module {
    fn new(path: String, open_path: PathBuf, build_id: Option<String>) -> Self {
        let key = match &build_id {
            Some(build_id) => format!("build-id:{build_id}"),
            None => format!("path:{path}"),
        };
        Self {
            path,
            open_path,
            build_id,
            key,
        }
    }
}

/// Where a user address of a process went.
#[derive(Clone, Debug)]
enum Location {
    InModule {
        module: Arc<Module>,
        file_offset: u64,
    },
    /// Resolved during normalization (the vDSO).
    Resolved(Arc<[FrameSymbol]>),
    Unknown(String),
}

/// One function of a symbolized address (several when inlined).
#[derive(Clone, Debug)]
struct FrameSymbol {
    function: String,
    module: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    inlined: bool,
}

type Resolution = Result<Arc<[FrameSymbol]>, String>;

/// Turns captures into profiles; keeps what it learned across calls (see the module doc).
#[derive(Debug, Default)]
pub struct Symbolizer {
    /// (pid, looked-up address) → module and offset.
    locations: HashMap<(u32, u64), Location>,
    /// (module key, file offset) → functions.
    symbols: HashMap<String, HashMap<u64, Resolution>>,
    /// kernel address (looked up) → functions.
    kernel: HashMap<u64, Resolution>,
    /// module path → why it has no symbols (asks dpkg once per module).
    missing_symbols: HashMap<String, String>,
    /// Where debug files are looked for (by build id, then by debug link); blazesym's
    /// defaults (`/usr/lib/debug`, `/lib/debug`) when `None`.
    debug_dirs: Option<Vec<PathBuf>>,
}

impl Symbolizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A symbolizer that looks for separate debug files (`.build-id/xx/yyyy.debug`, or the name
    /// a module's `.gnu_debuglink` gives) under `dirs` instead of `/usr/lib/debug`.
    pub fn with_debug_dirs(dirs: Vec<PathBuf>) -> Self {
        Self {
            debug_dirs: Some(dirs),
            ..Self::default()
        }
    }

    /// Symbolizes every stack of `capture`. Call it while the processes still run (at the end of
    /// the run and at each `--interval`): a process's addresses are normalized through its
    /// `/proc/PID/maps` the first time they are seen. Frames that cannot be resolved are kept,
    /// with `function: None` and the reason.
    pub fn symbolize(&mut self, capture: &Capture) -> Result<Profile, SymbolizeError> {
        let sample_types = capture.sample_types.len();
        if capture.default_sample_type >= sample_types {
            return Err(SymbolizeError::DefaultSampleType {
                index: capture.default_sample_type,
                sample_types,
            });
        }
        if let Some(stack) = capture
            .stacks
            .iter()
            .find(|stack| stack.values.len() != sample_types)
        {
            return Err(SymbolizeError::ValuesMismatch {
                pid: stack.pid,
                values: stack.values.len(),
                sample_types,
            });
        }

        let new_locations = self.normalize_new_user_addresses(&capture.stacks);
        self.resolve_new_module_offsets(&new_locations);
        self.resolve_new_kernel_addresses(&capture.stacks);

        let stacks = capture
            .stacks
            .iter()
            .map(|stack| self.stack(stack))
            .collect();
        Ok(Profile {
            target: capture.target.clone(),
            sampling: capture.sampling.clone(),
            started_unix_ms: capture.started_unix_ms,
            duration_ms: capture.duration_ms,
            sample_types: capture.sample_types.clone(),
            default_sample_type: capture.default_sample_type,
            stats: capture.stats.clone(),
            stacks,
        })
    }

    /// Normalizes the addresses not seen before; returns where they went.
    fn normalize_new_user_addresses(&mut self, stacks: &[CapturedStack]) -> Vec<Location> {
        let mut new: BTreeMap<u32, HashSet<u64>> = BTreeMap::new();
        for stack in stacks {
            for address in lookup_addresses(&stack.user) {
                if !self.locations.contains_key(&(stack.pid, address)) {
                    new.entry(stack.pid).or_default().insert(address);
                }
            }
        }
        if new.is_empty() {
            return Vec::new();
        }
        // Build ids are read once per module within this call.
        let normalizer = Normalizer::builder()
            .enable_build_ids(true)
            .enable_build_id_caching(true)
            .build();
        let mut new_locations = Vec::new();
        for (pid, addresses) in new {
            let mut addresses: Vec<u64> = addresses.into_iter().collect();
            addresses.sort_unstable();
            let located = normalize(&normalizer, pid, &addresses);
            for (address, location) in addresses.into_iter().zip(located) {
                self.locations.insert((pid, address), location.clone());
                new_locations.push(location);
            }
        }
        new_locations
    }

    fn resolve_new_module_offsets(&mut self, locations: &[Location]) {
        let mut new: HashMap<String, (Arc<Module>, HashSet<u64>)> = HashMap::new();
        for location in locations {
            if let Location::InModule {
                module,
                file_offset,
            } = location
            {
                let known = self
                    .symbols
                    .get(&module.key)
                    .is_some_and(|offsets| offsets.contains_key(file_offset));
                if !known {
                    new.entry(module.key.clone())
                        .or_insert_with(|| (Arc::clone(module), HashSet::new()))
                        .1
                        .insert(*file_offset);
                }
            }
        }
        if new.is_empty() {
            return;
        }
        let symbolizer = blazesym_symbolizer(self.debug_dirs.as_deref());
        for (key, (module, offsets)) in new {
            let offsets: Vec<u64> = offsets.into_iter().collect();
            let source = Source::Elf(Elf::new(&module.open_path));
            let resolved: Vec<Resolution> =
                match symbolizer.symbolize(&source, Input::FileOffset(&offsets)) {
                    Ok(symbolized) => symbolized
                        .into_iter()
                        .map(|symbolized| self.user_resolution(&module, symbolized))
                        .collect(),
                    Err(error) => {
                        let why = format!("cannot read {}: {error}", module.path);
                        vec![Err(why); offsets.len()]
                    }
                };
            self.symbols
                .entry(key)
                .or_default()
                .extend(offsets.into_iter().zip(resolved));
        }
    }

    fn user_resolution(&mut self, module: &Module, symbolized: Symbolized<'_>) -> Resolution {
        match symbolized {
            Symbolized::Sym(sym) => Ok(frame_symbols(&sym, Some(&module.path))),
            Symbolized::Unknown(Reason::MissingSyms) => Err(self
                .missing_symbols
                .entry(module.path.clone())
                .or_insert_with(|| hint::missing_symbols(&module.path))
                .clone()),
            Symbolized::Unknown(Reason::UnknownAddr) => {
                Err(format!("no symbol covers this address in {}", module.path))
            }
            Symbolized::Unknown(reason) => Err(format!("{} ({reason:?})", module.path)),
        }
    }

    fn resolve_new_kernel_addresses(&mut self, stacks: &[CapturedStack]) {
        let new: HashSet<u64> = stacks
            .iter()
            .flat_map(|stack| lookup_addresses(&stack.kernel))
            .filter(|address| !self.kernel.contains_key(address))
            .collect();
        if new.is_empty() {
            return;
        }
        let addresses: Vec<u64> = new.into_iter().collect();
        // kallsyms holds the running kernel's randomized addresses: no vmlinux, no KASLR offset.
        let source = Source::Kernel(Kernel {
            kallsyms: MaybeDefault::Default,
            vmlinux: MaybeDefault::None,
            kaslr_offset: Some(0),
            debug_syms: false,
            ..Kernel::default()
        });
        let resolved: Vec<Resolution> =
            match blazesym_symbolizer(None).symbolize(&source, Input::AbsAddr(&addresses)) {
                Ok(symbolized) => symbolized
                    .into_iter()
                    .map(|symbolized| match symbolized {
                        Symbolized::Sym(sym) => Ok(kernel_frame_symbols(&sym)),
                        Symbolized::Unknown(reason) => {
                            Err(format!("not in /proc/kallsyms ({reason:?})"))
                        }
                    })
                    .collect(),
                Err(error) => {
                    vec![Err(format!("cannot read /proc/kallsyms: {error}")); addresses.len()]
                }
            };
        self.kernel.extend(addresses.into_iter().zip(resolved));
    }

    fn stack(&self, captured: &CapturedStack) -> Stack {
        let mut frames = Vec::with_capacity(captured.user.len() + captured.kernel.len());
        for (&address, lookup) in captured.user.iter().zip(lookup_addresses(&captured.user)) {
            let location = self.locations.get(&(captured.pid, lookup));
            let (resolution, module, file_offset) = match location {
                Some(Location::InModule {
                    module,
                    file_offset,
                }) => (
                    self.symbols
                        .get(&module.key)
                        .and_then(|offsets| offsets.get(file_offset))
                        .cloned()
                        .unwrap_or_else(|| Err("not symbolized".to_owned())),
                    Some(Arc::clone(module)),
                    Some(*file_offset),
                ),
                Some(Location::Resolved(symbols)) => (Ok(Arc::clone(symbols)), None, None),
                Some(Location::Unknown(why)) => (Err(why.clone()), None, None),
                None => (Err("not normalized".to_owned()), None, None),
            };
            push_frames(
                &mut frames,
                FrameKind::User,
                address,
                resolution,
                module.as_ref().map(|module| module.path.clone()),
                module.and_then(|module| module.build_id.clone()),
                file_offset,
            );
        }
        for (&address, lookup) in captured
            .kernel
            .iter()
            .zip(lookup_addresses(&captured.kernel))
        {
            let resolution = self
                .kernel
                .get(&lookup)
                .cloned()
                .unwrap_or_else(|| Err("not symbolized".to_owned()));
            let module = Some(KERNEL_MODULE.to_owned());
            push_frames(
                &mut frames,
                FrameKind::Kernel,
                address,
                resolution,
                module,
                None,
                None,
            );
        }
        Stack {
            pid: captured.pid,
            comm: captured.comm.clone(),
            values: captured.values.clone(),
            labels: captured.labels.clone(),
            user_end: captured.user_end.clone(),
            frames,
        }
    }
}

/// The addresses to look up for a leaf-first stack: the leaf as is, every return address minus
/// one (inside the call instruction).
fn lookup_addresses(stack: &[u64]) -> impl Iterator<Item = u64> + '_ {
    stack.iter().enumerate().map(|(depth, &address)| {
        if depth == 0 {
            address
        } else {
            address.saturating_sub(1)
        }
    })
}

fn push_frames(
    frames: &mut Vec<Frame>,
    kind: FrameKind,
    address: u64,
    resolution: Resolution,
    module: Option<String>,
    build_id: Option<String>,
    file_offset: Option<u64>,
) {
    match resolution {
        Ok(symbols) => frames.extend(symbols.iter().map(|symbol| Frame {
            kind,
            address,
            function: Some(symbol.function.clone()),
            module: symbol.module.clone().or_else(|| module.clone()),
            file: symbol.file.clone(),
            line: symbol.line,
            inlined: symbol.inlined,
            unknown: None,
            build_id: build_id.clone(),
            file_offset,
        })),
        Err(why) => frames.push(Frame {
            kind,
            address,
            function: None,
            module,
            file: None,
            line: None,
            inlined: false,
            unknown: Some(why),
            build_id,
            file_offset,
        }),
    }
}

fn blazesym_symbolizer(debug_dirs: Option<&[PathBuf]>) -> symbolize::Symbolizer {
    symbolize::Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .set_debug_dirs(debug_dirs)
        .build()
}

/// Normalizes the sorted `addresses` of `pid`; a process that is gone, or whose maps cannot be
/// read, leaves every address unknown with the reason.
fn normalize(normalizer: &Normalizer, pid: u32, addresses: &[u64]) -> Vec<Location> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let Some(blazesym_pid) = std::num::NonZeroU32::new(pid).map(Pid::Pid) else {
        return vec![Location::Unknown("pid 0 has no user space".to_owned()); addresses.len()];
    };
    if !Path::new(&format!("/proc/{pid}")).exists() {
        let why = format!("process {pid} exited before its stacks were symbolized");
        return vec![Location::Unknown(why); addresses.len()];
    }
    let opts = NormalizeOpts {
        sorted_addrs: true,
        ..NormalizeOpts::default()
    };
    let output = match normalizer.normalize_user_addrs_opts(blazesym_pid, addresses, &opts) {
        Ok(output) => output,
        Err(error) => {
            let why = format!("cannot read the mappings of pid {pid}: {error}");
            return vec![Location::Unknown(why); addresses.len()];
        }
    };
    let mut modules: HashMap<usize, Location> = HashMap::new();
    output
        .outputs
        .iter()
        .map(|&(offset, meta_index)| {
            let module =
                modules
                    .entry(meta_index)
                    .or_insert_with(|| match &output.meta[meta_index] {
                        UserMeta::Elf(elf) => {
                            let path = elf.path.to_string_lossy().into_owned();
                            let in_root =
                                root.join(elf.path.strip_prefix("/").unwrap_or(&elf.path));
                            Location::InModule {
                                module: Arc::new(Module::new(
                                    path,
                                    if in_root.exists() {
                                        in_root
                                    } else {
                                        elf.path.clone()
                                    },
                                    elf.build_id.as_deref().map(hex),
                                )),
                                file_offset: 0,
                            }
                        }
                        UserMeta::Sym(sym) => {
                            Location::Resolved(frame_symbols(sym, Some("[vdso]")))
                        }
                        UserMeta::Unknown(unknown) => {
                            Location::Unknown(unknown_mapping(unknown.reason))
                        }
                        other => Location::Unknown(format!("unsupported mapping: {other:?}")),
                    });
            match module {
                Location::InModule { module, .. } => Location::InModule {
                    module: Arc::clone(module),
                    file_offset: offset,
                },
                other => other.clone(),
            }
        })
        .collect()
}

fn unknown_mapping(reason: Reason) -> String {
    match reason {
        Reason::MissingComponent | Reason::Unsupported => "jit or anonymous mapping".to_owned(),
        Reason::Unmapped => "not mapped in the process (unmapped since it was captured)".to_owned(),
        other => format!("cannot normalize ({other:?})"),
    }
}

/// Leaf first: the innermost inlined function at the address, out to the function it is in.
/// `module` (the path the process mapped) wins over blazesym's (the path it opened).
fn frame_symbols(sym: &Sym<'_>, module: Option<&str>) -> Arc<[FrameSymbol]> {
    let module = module.map(str::to_owned).or_else(|| {
        sym.module
            .as_ref()
            .map(|module| module.to_string_lossy().into_owned())
    });
    let code_file = |info: &symbolize::CodeInfo<'_>| info.file.to_string_lossy().into_owned();
    let mut symbols: Vec<FrameSymbol> = sym
        .inlined
        .iter()
        .rev()
        .map(|inlined| FrameSymbol {
            function: inlined.name.to_string(),
            module: module.clone(),
            file: inlined.code_info.as_ref().map(code_file),
            line: inlined.code_info.as_ref().and_then(|info| info.line),
            inlined: true,
        })
        .collect();
    symbols.push(FrameSymbol {
        function: sym.name.to_string(),
        module,
        file: sym.code_info.as_deref().map(code_file),
        line: sym.code_info.as_ref().and_then(|info| info.line),
        inlined: false,
    });
    symbols.into()
}

/// Kernel modules are named by blazesym (`[nf_tables]`); the kernel image is `[kernel]`.
fn kernel_frame_symbols(sym: &Sym<'_>) -> Arc<[FrameSymbol]> {
    let module = sym
        .module
        .as_ref()
        .map(|module| module.to_string_lossy().into_owned())
        .unwrap_or_else(|| KERNEL_MODULE.to_owned());
    frame_symbols(sym, Some(&module))
}

const KERNEL_MODULE: &str = "[kernel]";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests;
