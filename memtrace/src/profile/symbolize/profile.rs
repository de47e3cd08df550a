//! A symbolized capture: what every report format writes.
use crate::profile::capture::{CaptureStats, SampleType, StackEnd};

/// A [`Capture`](crate::profile::Capture) whose addresses became frames.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub target: String,
    pub sampling: String,
    pub started_unix_ms: u64,
    pub duration_ms: u64,
    pub sample_types: Vec<SampleType>,
    /// The column flame graphs and the text top list sort by.
    pub default_sample_type: usize,
    pub stats: CaptureStats,
    pub stacks: Vec<Stack>,
}

/// One stack with its values, frames leaf first: user frames, then kernel frames.
#[derive(Clone, Debug, PartialEq)]
pub struct Stack {
    pub pid: u32,
    pub comm: String,
    pub values: Vec<i64>,
    pub labels: Vec<(&'static str, i64)>,
    pub user_end: StackEnd,
    pub frames: Vec<Frame>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    User,
    Kernel,
}

impl FrameKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Kernel => "kernel",
        }
    }
}

/// One function at one address. An address inside inlined code gives several frames with the
/// same address: the innermost inlined function first (`inlined: true`), the function it was
/// inlined into last.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub kind: FrameKind,
    /// The address as captured (a return address for every frame but the leaf).
    pub address: u64,
    /// `None` when unknown; [`Frame::unknown`] says why.
    pub function: Option<String>,
    /// The module's path as the process mapped it (`/usr/bin/redis-server`), `[kernel]`, or a
    /// kernel module's name.
    pub module: Option<String>,
    /// The source file as its debug information names it.
    pub file: Option<String>,
    pub line: Option<u32>,
    pub inlined: bool,
    /// Why `function` is unknown, in words a user can act on.
    pub unknown: Option<String>,
    /// The normalized location, kept so a report names the exact binary and offset even after
    /// the process exited: the module's GNU build id (hex)…
    pub build_id: Option<String>,
    /// …and the file offset that was looked up (`address - 1` for return addresses).
    pub file_offset: Option<u64>,
}

impl Frame {
    /// The function's name, or `[unknown]` in the module, for one-line renderings.
    pub fn display_name(&self) -> String {
        match (&self.function, &self.module) {
            (Some(function), _) => function.clone(),
            (None, Some(module)) => format!("[unknown in {}]", short_module(module)),
            (None, None) => "[unknown]".to_owned(),
        }
    }
}

/// A module's file name without its directory (`libc.so.6`).
pub fn short_module(module: &str) -> &str {
    module.rsplit('/').next().unwrap_or(module)
}
