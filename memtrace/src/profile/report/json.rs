//! JSON for scripts: one object, the contract the collectors' tests read (see
//! `memtrace profile --format json` in the README).
use std::collections::BTreeMap;

use serde::Serialize;

use crate::profile::symbolize::{Frame, Profile, Stack};

#[derive(Serialize)]
struct JsonProfile<'a> {
    target: &'a str,
    sampling: &'a str,
    started_unix_ms: u64,
    duration_ms: u64,
    sample_types: Vec<JsonSampleType<'a>>,
    default_sample_type: usize,
    stats: JsonStats<'a>,
    stacks: Vec<JsonStack<'a>>,
}

#[derive(Serialize)]
struct JsonSampleType<'a> {
    name: &'a str,
    unit: &'a str,
}

#[derive(Serialize)]
struct JsonStats<'a> {
    samples: u64,
    truncated_stacks: u64,
    /// Depth (as a string key, JSON's only kind) → samples.
    depth_histogram: BTreeMap<String, u64>,
    lost: BTreeMap<&'a str, u64>,
}

#[derive(Serialize)]
struct JsonStack<'a> {
    pid: u32,
    comm: &'a str,
    values: &'a [i64],
    labels: BTreeMap<&'a str, i64>,
    user_end: &'static str,
    /// The address without unwind information, or an `other` end's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    user_end_detail: Option<String>,
    frames: Vec<JsonFrame<'a>>,
}

#[derive(Serialize)]
struct JsonFrame<'a> {
    kind: &'static str,
    address: String,
    function: Option<&'a str>,
    module: Option<&'a str>,
    file: Option<&'a str>,
    line: Option<u32>,
    inlined: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    build_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_offset: Option<String>,
}

pub(super) fn write(profile: &Profile, out: &mut dyn std::io::Write) -> serde_json::Result<()> {
    let json = JsonProfile {
        target: &profile.target,
        sampling: &profile.sampling,
        started_unix_ms: profile.started_unix_ms,
        duration_ms: profile.duration_ms,
        sample_types: profile
            .sample_types
            .iter()
            .map(|sample_type| JsonSampleType {
                name: sample_type.name,
                unit: sample_type.unit,
            })
            .collect(),
        default_sample_type: profile.default_sample_type,
        stats: JsonStats {
            samples: profile.stats.samples,
            truncated_stacks: profile.stats.truncated_stacks,
            depth_histogram: profile
                .stats
                .depth_histogram
                .iter()
                .map(|(depth, samples)| (depth.to_string(), *samples))
                .collect(),
            lost: profile
                .stats
                .lost
                .iter()
                .map(|(name, count)| (name.as_str(), *count))
                .collect(),
        },
        stacks: profile.stacks.iter().map(stack).collect(),
    };
    serde_json::to_writer_pretty(&mut *out, &json)?;
    out.write_all(b"\n").map_err(serde_json::Error::io)
}

fn stack(stack: &Stack) -> JsonStack<'_> {
    JsonStack {
        pid: stack.pid,
        comm: &stack.comm,
        values: &stack.values,
        labels: stack.labels.iter().copied().collect(),
        user_end: stack.user_end.name(),
        user_end_detail: stack.user_end.detail(),
        frames: stack.frames.iter().map(frame).collect(),
    }
}

fn frame(frame: &Frame) -> JsonFrame<'_> {
    JsonFrame {
        kind: frame.kind.name(),
        address: format!("{:#x}", frame.address),
        function: frame.function.as_deref(),
        module: frame.module.as_deref(),
        file: frame.file.as_deref(),
        line: frame.line,
        inlined: frame.inlined,
        unknown: frame.unknown.as_deref(),
        build_id: frame.build_id.as_deref(),
        file_offset: frame.file_offset.map(|offset| format!("{offset:#x}")),
    }
}
