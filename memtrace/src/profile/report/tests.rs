//! Golden tests of every format over one fixed, symbolized profile.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use prost::Message;

use super::*;
use crate::profile::capture::{CaptureStats, SampleType, StackEnd};
use crate::profile::symbolize::{Frame, FrameKind, Stack};

const MODULE: &str = "/tmp/x/alloc-sites";
const BUILD_ID: &str = "3f2a9c0d5e6b7a8190aabbccddeeff0011223344";
const BIAS: u64 = 0x55d0_c0a0_0000;

fn user(address: u64, function: &str, line: u32, leaf: bool) -> Frame {
    let looked_up = if leaf { address } else { address - 1 };
    Frame {
        kind: FrameKind::User,
        address,
        function: Some(function.to_owned()),
        module: Some(MODULE.to_owned()),
        file: Some("alloc-sites.c".to_owned()),
        line: Some(line),
        inlined: false,
        unknown: None,
        build_id: Some(BUILD_ID.to_owned()),
        file_offset: Some(looked_up - BIAS),
    }
}

fn kernel(address: u64, function: &str) -> Frame {
    Frame {
        kind: FrameKind::Kernel,
        address,
        function: Some(function.to_owned()),
        module: Some("[kernel]".to_owned()),
        file: None,
        line: None,
        inlined: false,
        unknown: None,
        build_id: None,
        file_offset: None,
    }
}

/// Two leak sites under one caller (one reached through an inlined helper), a site whose outer
/// frame is in a stripped library, a truncated stack, and a page-fault stack with kernel frames.
pub(crate) fn fixture() -> Profile {
    let main = user(BIAS + 0x1290, "main", 80, false);
    let run = user(BIAS + 0x1250, "run_workload", 70, false);
    let mut helper = user(BIAS + 0x1208, "grow_buffer", 33, false);
    helper.inlined = true;
    let mut outer = user(BIAS + 0x1208, "leak_site_b", 51, false);
    outer.line = Some(55);
    let stripped = Frame {
        kind: FrameKind::User,
        address: 0x7f00_1234_5678,
        function: None,
        module: Some("/usr/lib/libstripped.so.1".to_owned()),
        file: None,
        line: None,
        inlined: false,
        unknown: Some(
            "no symbols in /usr/lib/libstripped.so.1 (install libstripped1-dbgsym from the \
             debian-debug archive)"
                .to_owned(),
        ),
        build_id: Some("00aa".to_owned()),
        file_offset: Some(0x5677),
    };
    let stack = |values: Vec<i64>, labels, user_end, frames| Stack {
        pid: 1234,
        comm: "alloc-sites".to_owned(),
        values,
        labels,
        user_end,
        frames,
    };
    Profile {
        target: "pid 1234 (alloc-sites)".to_owned(),
        sampling: "every call".to_owned(),
        started_unix_ms: 1_796_000_000_000,
        duration_ms: 30_000,
        sample_types: vec![
            SampleType {
                name: "alloc_space",
                unit: "bytes",
            },
            SampleType {
                name: "alloc_objects",
                unit: "count",
            },
        ],
        default_sample_type: 0,
        stats: CaptureStats {
            samples: 1000,
            truncated_stacks: 3,
            depth_histogram: BTreeMap::from([(1, 3), (4, 990), (5, 7)]),
            lost: vec![
                ("outstanding map full".to_owned(), 12),
                ("ring buffer full".to_owned(), 0),
            ],
        },
        stacks: vec![
            stack(
                vec![65536, 16],
                vec![("oldest_age_ms", 31000)],
                StackEnd::Complete,
                vec![
                    user(BIAS + 0x1234, "leak_site_a", 42, true),
                    run.clone(),
                    main.clone(),
                ],
            ),
            stack(
                vec![16384, 4],
                vec![("oldest_age_ms", 29000)],
                StackEnd::Complete,
                vec![
                    user(BIAS + 0x11f0, "malloc_wrapper", 20, true),
                    helper,
                    outer,
                    run.clone(),
                    main.clone(),
                ],
            ),
            stack(
                vec![4096, 1],
                vec![],
                StackEnd::NoUnwindInfo {
                    address: 0x7f00_1234_9abc,
                },
                vec![
                    user(BIAS + 0x1300, "leak_site_c", 90, true),
                    stripped.clone(),
                    Frame {
                        address: 0x7f00_1234_9abc,
                        file_offset: Some(0x9abb),
                        ..stripped
                    },
                ],
            ),
            stack(
                vec![2048, 1],
                vec![],
                StackEnd::SnapshotEnd,
                vec![user(BIAS + 0x1234, "leak_site_a", 42, true)],
            ),
            stack(
                vec![8192, 2],
                vec![],
                StackEnd::Complete,
                vec![
                    user(BIAS + 0x1400, "touch_pages", 101, true),
                    main,
                    kernel(0xffff_ffff_8100_1234, "handle_mm_fault"),
                    kernel(0xffff_ffff_8100_5678, "exc_page_fault"),
                ],
            ),
        ],
    }
}

fn render(profile: &Profile, format: Format, top: usize) -> Vec<u8> {
    let mut out = Vec::new();
    write(profile, format, top, &mut out).unwrap();
    out
}

#[test]
fn text_report() {
    let text = String::from_utf8(render(&fixture(), Format::Text, 20)).unwrap();
    insta::assert_snapshot!(text);
}

#[test]
fn text_report_keeps_the_top_sites() {
    let text = String::from_utf8(render(&fixture(), Format::Text, 2)).unwrap();
    assert!(
        text.contains("leak_site_a (alloc-sites.c:42) in alloc-sites"),
        "{text}"
    );
    assert!(!text.contains("touch_pages"), "{text}");
    assert!(text.contains("… 3 more sites"), "{text}");
}

#[test]
fn folded_stacks() {
    let folded = String::from_utf8(render(&fixture(), Format::Folded, 20)).unwrap();
    insta::assert_snapshot!(folded);
}

#[test]
fn json_report() {
    let json = String::from_utf8(render(&fixture(), Format::Json, 20)).unwrap();
    insta::assert_snapshot!(json);
}

#[test]
fn json_report_follows_the_contract() {
    let json: serde_json::Value =
        serde_json::from_slice(&render(&fixture(), Format::Json, 20)).unwrap();
    assert_eq!(json["target"], "pid 1234 (alloc-sites)");
    assert_eq!(json["stats"]["depth_histogram"]["4"], 990);
    assert_eq!(json["stats"]["lost"]["outstanding map full"], 12);
    let first = &json["stacks"][0];
    assert_eq!(first["values"], serde_json::json!([65536, 16]));
    assert_eq!(first["labels"]["oldest_age_ms"], 31000);
    assert_eq!(first["user_end"], "complete");
    assert_eq!(first["frames"][0]["kind"], "user");
    assert_eq!(first["frames"][0]["address"], "0x55d0c0a01234");
    assert_eq!(first["frames"][0]["function"], "leak_site_a");
    assert_eq!(first["frames"][0]["line"], 42);
    assert_eq!(first["frames"][0]["inlined"], false);
    let truncated = &json["stacks"][2];
    assert_eq!(truncated["user_end"], "no_unwind_info");
    assert!(truncated["frames"][1]["function"].is_null());
    assert!(
        truncated["frames"][1]["unknown"]
            .as_str()
            .unwrap()
            .contains("-dbgsym")
    );
    assert_eq!(json["stacks"][4]["frames"][2]["kind"], "kernel");
}

#[test]
fn pprof_decodes_back_to_the_profile() {
    let profile = fixture();
    let mut gunzipped = Vec::new();
    flate2::read::GzDecoder::new(render(&profile, Format::Pprof, 20).as_slice())
        .read_to_end(&mut gunzipped)
        .unwrap();
    let decoded = pprof_proto::Profile::decode(gunzipped.as_slice()).unwrap();
    let string = |index: i64| decoded.string_table[usize::try_from(index).unwrap()].as_str();

    assert_eq!(decoded.string_table[0], "");
    let types: Vec<(&str, &str)> = decoded
        .sample_type
        .iter()
        .map(|t| (string(t.r#type), string(t.unit)))
        .collect();
    assert_eq!(
        types,
        [("alloc_space", "bytes"), ("alloc_objects", "count")]
    );
    assert_eq!(string(decoded.default_sample_type), "alloc_space");
    assert_eq!(decoded.duration_nanos, 30_000_000_000);
    assert_eq!(decoded.sample.len(), profile.stacks.len());

    // Every sample's stack, leaf first, by function name, as the profile has it.
    let location = |id: u64| &decoded.location[usize::try_from(id - 1).unwrap()];
    let function = |id: u64| &decoded.function[usize::try_from(id - 1).unwrap()];
    for (sample, stack) in decoded.sample.iter().zip(&profile.stacks) {
        assert_eq!(sample.value, stack.values);
        let names: Vec<&str> = sample
            .location_id
            .iter()
            .flat_map(|&id| {
                location(id)
                    .line
                    .iter()
                    .map(|line| string(function(line.function_id).name))
            })
            .collect();
        let kernel = stack
            .frames
            .iter()
            .filter(|frame| frame.kind == FrameKind::Kernel);
        let user = stack
            .frames
            .iter()
            .filter(|frame| frame.kind == FrameKind::User);
        let expected: Vec<String> = kernel
            .chain(user)
            .filter(|frame| frame.function.is_some())
            .map(Frame::display_name)
            .collect();
        assert_eq!(names, expected);
    }

    // An unknown frame keeps its address and module for a tool to symbolize; nothing invented.
    let unknown = location(decoded.sample[2].location_id[1]);
    assert!(unknown.line.is_empty(), "{unknown:?}");
    assert_eq!(unknown.address, 0x7f00_1234_5678 - 1);
    let stripped = decoded
        .mapping
        .iter()
        .find(|m| m.id == unknown.mapping_id)
        .unwrap();
    assert_eq!(string(stripped.filename), "/usr/lib/libstripped.so.1");
    assert_eq!(string(stripped.build_id), "00aa");
    assert!(!stripped.has_functions);

    // The inlined helper and the function it is in share one location, innermost first.
    let inlined = location(decoded.sample[1].location_id[1]);
    let lines: Vec<(&str, i64)> = inlined
        .line
        .iter()
        .map(|line| (string(function(line.function_id).name), line.line))
        .collect();
    assert_eq!(lines, [("grow_buffer", 33), ("leak_site_b", 55)]);
    assert_eq!(
        inlined.address,
        BIAS + 0x1208 - 1,
        "return addresses are looked up minus one"
    );

    // The leaf keeps its address; the module's mapping carries its build id and file offset.
    let leaf = location(decoded.sample[0].location_id[0]);
    assert_eq!(leaf.address, BIAS + 0x1234);
    let mapping = decoded
        .mapping
        .iter()
        .find(|mapping| mapping.id == leaf.mapping_id)
        .unwrap();
    assert_eq!(string(mapping.filename), MODULE);
    assert_eq!(string(mapping.build_id), BUILD_ID);
    assert!(mapping.has_functions && mapping.has_line_numbers && mapping.has_inline_frames);
    assert_eq!(
        leaf.address - mapping.memory_start + mapping.file_offset,
        0x1234
    );

    let labels: Vec<(&str, i64, &str)> = decoded.sample[0]
        .label
        .iter()
        .map(|label| (string(label.key), label.num, string(label.num_unit)))
        .collect();
    assert!(labels.contains(&("pid", 1234, "")), "{labels:?}");
    assert!(
        labels.contains(&("oldest_age_ms", 31000, "milliseconds")),
        "{labels:?}"
    );
}

#[test]
fn svg_flame_graph_draws_every_leaf() {
    let svg = String::from_utf8(render(&fixture(), Format::Svg, 20)).unwrap();
    assert!(svg.starts_with("<?xml"), "{}", &svg[..100.min(svg.len())]);
    for function in [
        "leak_site_a",
        "malloc_wrapper",
        "leak_site_c",
        "touch_pages",
        "handle_mm_fault",
    ] {
        assert!(
            svg.contains(function),
            "{function} missing from the flame graph"
        );
    }
    assert!(svg.contains("memtrace profile: pid 1234 (alloc-sites)"));
}

#[test]
fn svg_of_an_empty_profile_is_an_error() {
    let mut profile = fixture();
    profile.stacks.clear();
    let error = write(&profile, Format::Svg, 20, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(
            error,
            ReportError::NoSamples {
                sample_type: "alloc_space"
            }
        ),
        "{error}"
    );
}

#[test]
fn format_follows_the_flag_then_the_extension() {
    let cases = [
        (Some("x.svg"), None, Format::Svg),
        (Some("x.folded"), None, Format::Folded),
        (Some("allocs.pb.gz"), None, Format::Pprof),
        (Some("x.JSON"), None, Format::Json),
        (Some("x.txt"), None, Format::Text),
        (None, None, Format::Text),
        (Some("x.svg"), Some(Format::Json), Format::Json),
    ];
    for (path, format, expected) in cases {
        assert_eq!(
            format_for(path.map(Path::new), format),
            expected,
            "{path:?} {format:?}"
        );
    }
}

/// pprof's own reader (`go tool pprof`, from Debian's golang-go) takes the file and finds the
/// same sites with the same values.
#[test]
fn go_tool_pprof_reads_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.pb.gz");
    std::fs::write(&path, render(&fixture(), Format::Pprof, 20)).unwrap();
    let output = std::process::Command::new("go")
        .args(["tool", "pprof", "-top", "-sample_index=alloc_space"])
        .arg(&path)
        .env("HOME", dir.path())
        .output()
        .expect("go runs (TEST_APT_PACKAGES has golang-go)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // `flat flat% sum% cum cum% name`: each leaf's own bytes, as the profile has them.
    let flat = |function: &str| {
        stdout
            .lines()
            .find(|line| line.split_whitespace().last() == Some(function))
            .and_then(|line| line.split_whitespace().next())
            .map(str::to_owned)
    };
    for (function, bytes) in [
        ("leak_site_a", "66kB"),
        ("malloc_wrapper", "16kB"),
        ("handle_mm_fault", "8kB"),
        ("leak_site_c", "4kB"),
    ] {
        assert_eq!(
            flat(function).as_deref(),
            Some(bytes),
            "{function} in:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn write_output_picks_the_format_from_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.folded");
    write_output(&fixture(), Some(&path), None, 20).unwrap();
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written.as_bytes(), render(&fixture(), Format::Folded, 20));

    let missing = dir.path().join("no/such/dir/x.json");
    let error = write_output(&fixture(), Some(&missing), None, 20).unwrap_err();
    assert!(
        matches!(&error, ReportError::Create { path, .. } if path == &missing),
        "{error}"
    );
}
