//! `memtrace profile`: which code grows memory, and what it leaks.
//!
//! Two collectors hand the same [`Capture`] (raw stacks with values) to one reporting path:
//! - [`sites`]: where memory is first touched (sampled page faults) and where the address space
//!   grows (mmap, brk, mremap), aggregated in the kernel by stack: cheap enough to leave on.
//! - [`alloc`]: uprobes on the allocator the process uses (glibc, jemalloc, tcmalloc): bytes per
//!   allocation site, and leak suspects (outstanding allocations older than `--min-age`).
//!
//! Then [`unwind`] (stack snapshots unwound from `.eh_frame`), [`symbolize`] (addresses to
//! functions, files and lines) and [`report`] (text, folded stacks, pprof, SVG flame graph, JSON).
pub mod alloc;
pub mod capture;
pub mod report;
pub mod sites;
pub mod symbolize;
pub mod unwind;

pub use capture::{Capture, CaptureStats, CapturedStack, SampleType, StackEnd};
