//! The text report: the top sites by the default sample type, for a terminal.
//!
//! A site is a distinct stack (the same code in several processes is one site). Each shows its
//! values, its share of the default column's total, the leaf as `function (file:line) in
//! module`, and its callers, shortened. The footer says what the capture could not see.
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use crate::profile::capture::SampleType;
use crate::profile::symbolize::{Frame, FrameKind, Profile, Stack, short_module};
use crate::units::human_bytes;

/// Callers shown under a site before `… N more`.
const CALLERS_SHOWN: usize = 6;

struct Site<'a> {
    stack: &'a Stack,
    values: Vec<i64>,
    /// Labels are not summed: the largest (the oldest age, say) is shown.
    labels: BTreeMap<&'static str, i64>,
}

pub(super) fn write(profile: &Profile, top: usize, out: &mut dyn Write) -> std::io::Result<()> {
    let column = profile.default_sample_type;
    let sample_type = &profile.sample_types[column];
    writeln!(out, "memtrace profile: {}", profile.target)?;
    writeln!(
        out,
        "sampling: {}; {} from {}; sites by {} ({})",
        profile.sampling,
        humantime::format_duration(Duration::from_millis(profile.duration_ms)),
        humantime::format_rfc3339_seconds(
            UNIX_EPOCH + Duration::from_millis(profile.started_unix_ms)
        ),
        sample_type.name,
        sample_type.unit,
    )?;
    writeln!(out)?;

    let sites = sites(profile);
    let total: i64 = sites.iter().map(|site| site.values[column]).sum();
    let widths: Vec<usize> = profile
        .sample_types
        .iter()
        .enumerate()
        .map(|(index, sample_type)| {
            sites
                .iter()
                .take(top)
                .map(|site| format_value(sample_type, site.values[index]).len())
                .chain([sample_type.name.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut header = String::new();
    for (sample_type, width) in profile.sample_types.iter().zip(&widths) {
        header.push_str(&format!("{:>width$}  ", sample_type.name.to_uppercase()));
    }
    writeln!(out, "{header}{:>6}  SITE", "SHARE")?;
    for site in sites.iter().take(top) {
        let mut row = String::new();
        for ((sample_type, width), value) in
            profile.sample_types.iter().zip(&widths).zip(&site.values)
        {
            row.push_str(&format!("{:>width$}  ", format_value(sample_type, *value)));
        }
        let share = if total > 0 {
            100.0 * site.values[column] as f64 / total as f64
        } else {
            0.0
        };
        let indent = " ".repeat(row.len() + 8);
        writeln!(out, "{row}{share:>5.1}%  {}", leaf(site.stack))?;
        if let Some(callers) = callers(site.stack, FrameKind::User) {
            writeln!(out, "{indent}← {callers}")?;
        }
        if let Some(kernel) = callers(site.stack, FrameKind::Kernel) {
            writeln!(out, "{indent}kernel: {kernel}")?;
        }
        if site.stack.user_end.is_truncated() {
            let end = site
                .stack
                .user_end
                .detail()
                .unwrap_or_else(|| site.stack.user_end.name().to_owned());
            writeln!(out, "{indent}(stack truncated: {end})")?;
        }
        if !site.labels.is_empty() {
            let labels: Vec<String> = site
                .labels
                .iter()
                .map(|(name, value)| format!("{name} {value}"))
                .collect();
            writeln!(out, "{indent}{}", labels.join(", "))?;
        }
    }
    if sites.len() > top {
        writeln!(out, "… {} more sites", sites.len() - top)?;
    }
    writeln!(out)?;
    footer(profile, out)
}

/// What makes two frames the same in a site: function, module, line and kind.
type SiteFrame<'a> = (Option<&'a str>, Option<&'a str>, Option<u32>, FrameKind);

/// Stacks with the same frames merged, largest default value first.
fn sites(profile: &Profile) -> Vec<Site<'_>> {
    let mut by_frames: HashMap<Vec<SiteFrame<'_>>, Site<'_>> = HashMap::new();
    for stack in &profile.stacks {
        let key = stack
            .frames
            .iter()
            .map(|frame| {
                (
                    frame.function.as_deref(),
                    frame.module.as_deref(),
                    frame.line,
                    frame.kind,
                )
            })
            .collect();
        let site = by_frames.entry(key).or_insert_with(|| Site {
            stack,
            values: vec![0; profile.sample_types.len()],
            labels: BTreeMap::new(),
        });
        for (sum, value) in site.values.iter_mut().zip(&stack.values) {
            *sum += value;
        }
        for &(name, value) in &stack.labels {
            let label = site.labels.entry(name).or_insert(value);
            *label = (*label).max(value);
        }
    }
    let column = profile.default_sample_type;
    let mut sites: Vec<Site<'_>> = by_frames.into_values().collect();
    sites.sort_by(|a, b| {
        b.values[column]
            .cmp(&a.values[column])
            .then_with(|| leaf(a.stack).cmp(&leaf(b.stack)))
            .then_with(|| a.stack.pid.cmp(&b.stack.pid))
    });
    sites
}

fn format_value(sample_type: &SampleType, value: i64) -> String {
    match sample_type.unit {
        "bytes" if value >= 0 => human_bytes(value.unsigned_abs()),
        "bytes" => format!("-{}", human_bytes(value.unsigned_abs())),
        "count" => value.to_string(),
        unit => format!("{value} {unit}"),
    }
}

/// The site's first user frame (or kernel frame, for a stack without user frames), in full.
fn leaf(stack: &Stack) -> String {
    let frame = stack
        .frames
        .iter()
        .find(|frame| frame.kind == FrameKind::User)
        .or_else(|| stack.frames.first());
    match frame {
        None => "[no frames]".to_owned(),
        Some(frame) => describe(frame),
    }
}

fn describe(frame: &Frame) -> String {
    let mut text = frame.display_name();
    if let (Some(file), Some(line)) = (&frame.file, frame.line) {
        text.push_str(&format!(" ({}:{line})", short_module(file)));
    }
    if let (Some(_), Some(module)) = (&frame.function, &frame.module) {
        text.push_str(&format!(" in {}", short_module(module)));
    }
    if let Some(why) = &frame.unknown {
        text.push_str(&format!(" [{why}]"));
    }
    text
}

/// The frames of `kind` after the leaf (all kernel frames), by name, shortened.
fn callers(stack: &Stack, kind: FrameKind) -> Option<String> {
    let skip = usize::from(kind == FrameKind::User);
    let names: Vec<String> = stack
        .frames
        .iter()
        .filter(|frame| frame.kind == kind)
        .skip(skip)
        .map(Frame::display_name)
        .collect();
    // Runs of one name (recursion, or several frames of a module without symbols) as one.
    let mut runs: Vec<(String, usize)> = Vec::new();
    for name in names {
        match runs.last_mut() {
            Some((last, count)) if *last == name => *count += 1,
            _ => runs.push((name, 1)),
        }
    }
    if runs.is_empty() {
        return None;
    }
    let mut shown = runs
        .iter()
        .take(CALLERS_SHOWN)
        .map(|(name, count)| {
            if *count > 1 {
                format!("{name} ×{count}")
            } else {
                name.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ← ");
    if runs.len() > CALLERS_SHOWN {
        shown.push_str(&format!(" ← … {} more", runs.len() - CALLERS_SHOWN));
    }
    Some(shown)
}

fn footer(profile: &Profile, out: &mut dyn Write) -> std::io::Result<()> {
    let stats = &profile.stats;
    let truncated_share = if stats.samples > 0 {
        100.0 * stats.truncated_stacks as f64 / stats.samples as f64
    } else {
        0.0
    };
    writeln!(
        out,
        "samples: {}; truncated stacks: {} ({truncated_share:.1}%); user stack depth: {}",
        stats.samples,
        stats.truncated_stacks,
        depth_summary(&stats.depth_histogram),
    )?;
    let losses: Vec<String> = stats
        .lost
        .iter()
        .filter(|(_, count)| *count > 0)
        .map(|(name, count)| format!("{name} {count}"))
        .collect();
    if !losses.is_empty() {
        writeln!(out, "lost: {}", losses.join(", "))?;
    }
    let mut unknown: BTreeMap<&str, usize> = BTreeMap::new();
    for frame in profile.stacks.iter().flat_map(|stack| &stack.frames) {
        if let Some(why) = &frame.unknown {
            *unknown.entry(why).or_default() += 1;
        }
    }
    for (why, frames) in unknown {
        writeln!(out, "unknown frames ({frames}): {why}")?;
    }
    Ok(())
}

/// `min 1, median 4, p90 9, max 12`, weighted by samples; `none` without samples.
fn depth_summary(histogram: &BTreeMap<usize, u64>) -> String {
    let total: u64 = histogram.values().sum();
    if total == 0 {
        return "none".to_owned();
    }
    let quantile = |q: f64| {
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (&depth, &samples) in histogram {
            seen += samples;
            if seen >= rank {
                return depth;
            }
        }
        0
    };
    let min = histogram.keys().next().copied().unwrap_or(0);
    let max = histogram.keys().next_back().copied().unwrap_or(0);
    format!(
        "min {min}, median {}, p90 {}, max {max}",
        quantile(0.5),
        quantile(0.9)
    )
}
