//! Folded stacks (`root;…;leaf value`), as flamegraph.pl, inferno and speedscope read them.
//!
//! One line per distinct stack, weighted by the default sample type. Kernel frames carry `_[k]`
//! and inlined functions `_[i]` (the annotations flame graph tools colour). A stack that ends
//! early sits under a `[truncated: why]` root, so it is not merged into the complete stacks its
//! outer frames would wrongly resemble. Over several processes each stack starts with its
//! process name.
use std::collections::{BTreeMap, BTreeSet};

use crate::profile::symbolize::{Frame, FrameKind, Profile, Stack};

pub(super) fn write(profile: &Profile, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for (line, value) in lines(profile) {
        writeln!(out, "{line} {value}")?;
    }
    Ok(())
}

/// Each distinct folded stack with its summed value (zero and negative totals left out: flame
/// graphs draw widths), sorted by stack.
pub(super) fn lines(profile: &Profile) -> BTreeMap<String, i64> {
    let processes: BTreeSet<&str> = profile
        .stacks
        .iter()
        .map(|stack| stack.comm.as_str())
        .collect();
    let mut folded: BTreeMap<String, i64> = BTreeMap::new();
    for stack in &profile.stacks {
        let line = fold(stack, processes.len() > 1);
        *folded.entry(line).or_default() += stack.values[profile.default_sample_type];
    }
    folded.retain(|_, value| *value > 0);
    folded
}

fn fold(stack: &Stack, with_process: bool) -> String {
    let mut names: Vec<String> = Vec::with_capacity(stack.frames.len() + 2);
    if with_process {
        names.push(sanitize(&stack.comm));
    }
    if stack.user_end.is_truncated() {
        names.push(format!("[truncated: {}]", stack.user_end.name()));
    }
    // Leaf-first user frames then leaf-first kernel frames: the kernel ran on top of the user
    // leaf, so root first is the user frames reversed, then the kernel frames reversed.
    let user = stack
        .frames
        .iter()
        .filter(|frame| frame.kind == FrameKind::User);
    let kernel = stack
        .frames
        .iter()
        .filter(|frame| frame.kind == FrameKind::Kernel);
    names.extend(user.rev().chain(kernel.rev()).map(frame_name));
    names.join(";")
}

fn frame_name(frame: &Frame) -> String {
    let mut name = sanitize(&frame.display_name());
    if frame.inlined {
        name.push_str("_[i]");
    }
    if frame.kind == FrameKind::Kernel {
        name.push_str("_[k]");
    }
    name
}

/// `;` separates frames and a line ends a stack: neither may appear in a name. Spaces may (C++
/// names have them): the readers split the value off at the last one.
fn sanitize(name: &str) -> String {
    name.replace(';', ":").replace('\n', " ")
}
