//! The symbolizer against real binaries: a C fixture built by gcc (with debug information, and a
//! stripped copy), run, asked for its own addresses; an exited process; the kernel's kallsyms.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use super::*;
use crate::profile::capture::{CaptureStats, SampleType, StackEnd};

const SOURCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/profile/testdata/symbolize_fixture.c"
);

/// Builds the fixture into `dir` (`-O0 -g`), and a stripped copy when `stripped`.
pub(crate) fn build_fixture(dir: &Path, stripped: bool) -> PathBuf {
    let binary = dir.join(if stripped {
        "fixture-stripped"
    } else {
        "fixture"
    });
    let status = Command::new("gcc")
        .args(["-O0", "-g", "-o"])
        .arg(&binary)
        .arg(SOURCE)
        .status()
        .expect("gcc runs (TEST_APT_PACKAGES has it)");
    assert!(status.success(), "gcc failed on {SOURCE}");
    if stripped {
        let status = Command::new("strip")
            .arg("--strip-all")
            .arg(&binary)
            .status()
            .unwrap();
        assert!(status.success(), "strip failed");
    }
    binary
}

/// The running fixture and the addresses it printed: `fixture_callee`'s entry, the return
/// address into `fixture_caller` (after line 14's call), the one into `fixture_outer` (after
/// line 21's call, inlined at line 26).
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    callee: u64,
    into_caller: u64,
    into_outer: u64,
}

impl Running {
    fn start(binary: &Path) -> Self {
        let mut child = Command::new(binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addresses: Vec<u64> = line
            .split_whitespace()
            .map(|text| u64::from_str_radix(text.trim_start_matches("0x"), 16).unwrap())
            .collect();
        let [callee, into_caller, into_outer] = addresses[..] else {
            panic!("the fixture printed {line:?}");
        };
        Self {
            child,
            stdin,
            callee,
            into_caller,
            into_outer,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exit(&mut self) {
        drop(self.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn capture(pid: u32, user: Vec<u64>, kernel: Vec<u64>) -> Capture {
    Capture {
        target: format!("pid {pid} (fixture)"),
        sampling: "every call".to_owned(),
        sample_types: vec![SampleType {
            name: "alloc_space",
            unit: "bytes",
        }],
        default_sample_type: 0,
        stacks: vec![CapturedStack {
            pid,
            comm: "fixture".to_owned(),
            user,
            user_end: StackEnd::Complete,
            kernel,
            values: vec![4096],
            labels: vec![],
        }],
        stats: CaptureStats::default(),
        started_unix_ms: 0,
        duration_ms: 1000,
    }
}

fn summary(frame: &Frame) -> (Option<&str>, Option<u32>, bool) {
    (frame.function.as_deref(), frame.line, frame.inlined)
}

#[test]
fn a_running_process_resolves_functions_lines_and_inlined_calls() {
    let dir = tempfile::tempdir().unwrap();
    let binary = build_fixture(dir.path(), false);
    let running = Running::start(&binary);
    let stack = vec![running.callee, running.into_caller, running.into_outer];
    let profile = Symbolizer::new()
        .symbolize(&capture(running.pid(), stack, vec![]))
        .unwrap();

    let frames = &profile.stacks[0].frames;
    let summaries: Vec<_> = frames.iter().map(summary).collect();
    assert_eq!(
        summaries,
        [
            (Some("fixture_callee"), Some(8), false),
            // A return address is looked up minus one: the call's line, not the next one's.
            (Some("fixture_caller"), Some(14), false),
            (Some("fixture_inlined"), Some(21), true),
            (Some("fixture_outer"), Some(26), false),
        ],
        "{frames:#?}"
    );
    let module = binary.to_string_lossy();
    for frame in frames {
        assert_eq!(frame.kind, FrameKind::User);
        assert_eq!(frame.module.as_deref(), Some(&*module));
        assert_eq!(frame.file.as_deref(), Some("symbolize_fixture.c"));
        assert!(
            frame.build_id.as_ref().is_some_and(|id| id.len() == 40),
            "{frame:?}"
        );
        assert_eq!(frame.unknown, None);
    }
    assert_eq!(frames[0].address, running.callee);
    assert_eq!(
        frames[2].address, running.into_outer,
        "an inlined frame keeps its address"
    );
    assert_eq!(frames[2].file_offset, frames[3].file_offset);
}

#[test]
fn an_exited_process_still_resolves_what_was_seen_and_says_so_for_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let binary = build_fixture(dir.path(), false);
    let mut running = Running::start(&binary);
    let mut symbolizer = Symbolizer::new();
    let seen = capture(
        running.pid(),
        vec![running.callee, running.into_caller],
        vec![],
    );
    let before = symbolizer.symbolize(&seen).unwrap();
    running.exit();
    assert!(!Path::new(&format!("/proc/{}", running.pid())).exists());

    let after = symbolizer.symbolize(&seen).unwrap();
    assert_eq!(after, before);
    assert_eq!(
        after.stacks[0].frames[1].function.as_deref(),
        Some("fixture_caller")
    );

    let unseen = capture(running.pid(), vec![running.into_outer], vec![]);
    let frame = &symbolizer.symbolize(&unseen).unwrap().stacks[0].frames[0];
    assert_eq!(frame.function, None);
    let why = frame.unknown.as_deref().unwrap();
    assert!(
        why.contains("exited before its stacks were symbolized"),
        "{why}"
    );
}

#[test]
fn a_stripped_binary_gives_no_wrong_function_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let binary = build_fixture(dir.path(), true);
    let running = Running::start(&binary);
    let stack = vec![running.callee, running.into_caller];
    let profile = Symbolizer::new()
        .symbolize(&capture(running.pid(), stack, vec![]))
        .unwrap();
    let module = binary.to_string_lossy();
    for frame in &profile.stacks[0].frames {
        assert_eq!(frame.function, None, "{frame:?}");
        assert_eq!(frame.module.as_deref(), Some(&*module));
        let why = frame.unknown.as_deref().unwrap();
        assert!(why.starts_with(&format!("no symbols in {module}")), "{why}");
        assert!(
            frame.file_offset.is_some(),
            "the normalized offset is kept: {frame:?}"
        );
    }
}

#[test]
fn a_stripped_binary_resolves_through_its_debug_file_found_by_build_id() {
    let dir = tempfile::tempdir().unwrap();
    let binary = build_fixture(dir.path(), false);
    // As Debian's packaging does: the debug information in a separate file, a debug link to it,
    // and the file installed under <debug dir>/.build-id/xx/yyyy.debug.
    let debug_file = dir.path().join("fixture.debug");
    let run = |program: &str, args: &[&std::ffi::OsStr]| {
        let status = Command::new(program).args(args).status().unwrap();
        assert!(status.success(), "{program} {args:?}");
    };
    run(
        "objcopy",
        &[
            "--only-keep-debug".as_ref(),
            binary.as_os_str(),
            debug_file.as_os_str(),
        ],
    );
    run("strip", &["--strip-all".as_ref(), binary.as_os_str()]);
    let link = format!("--add-gnu-debuglink={}", debug_file.display());
    run("objcopy", &[link.as_ref(), binary.as_os_str()]);
    let build_id = blazesym::helper::read_elf_build_id(&binary)
        .unwrap()
        .unwrap();
    let debug_dir = dir.path().join("debug");
    let by_build_id = debug_dir.join(format!(
        ".build-id/{:02x}/{}.debug",
        build_id[0],
        hex(&build_id[1..])
    ));
    std::fs::create_dir_all(by_build_id.parent().unwrap()).unwrap();
    std::fs::rename(&debug_file, &by_build_id).unwrap();

    let running = Running::start(&binary);
    let stack = vec![running.callee, running.into_caller];
    let mut symbolizer = Symbolizer::with_debug_dirs(vec![debug_dir]);
    let profile = symbolizer
        .symbolize(&capture(running.pid(), stack, vec![]))
        .unwrap();
    let summaries: Vec<_> = profile.stacks[0].frames.iter().map(summary).collect();
    assert_eq!(
        summaries,
        [
            (Some("fixture_callee"), Some(8), false),
            (Some("fixture_caller"), Some(14), false)
        ]
    );
}

#[test]
fn an_anonymous_mapping_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(&build_fixture(dir.path(), false));
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", running.pid())).unwrap();
    let stack_start = maps
        .lines()
        .find(|line| line.ends_with("[stack]"))
        .and_then(|line| line.split('-').next())
        .map(|start| u64::from_str_radix(start, 16).unwrap())
        .unwrap();
    let profile = Symbolizer::new()
        .symbolize(&capture(running.pid(), vec![stack_start + 16], vec![]))
        .unwrap();
    let frame = &profile.stacks[0].frames[0];
    assert_eq!(frame.function, None);
    assert_eq!(frame.unknown.as_deref(), Some("jit or anonymous mapping"));
}

#[test]
fn kernel_addresses_resolve_through_kallsyms() {
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let address = kallsyms
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let (address, kind, name) = (fields.next()?, fields.next()?, fields.next()?);
            (name == "handle_mm_fault" && kind.eq_ignore_ascii_case("t"))
                .then(|| u64::from_str_radix(address, 16).unwrap())
        })
        .unwrap();
    assert_ne!(address, 0, "kallsyms hides addresses: run as root");
    // A leaf inside the function, and a return address just past its start.
    let capture = capture(1, vec![], vec![address + 4, address + 1]);
    let profile = Symbolizer::new().symbolize(&capture).unwrap();
    let frames = &profile.stacks[0].frames;
    assert_eq!(frames.len(), 2);
    for frame in frames {
        assert_eq!(frame.kind, FrameKind::Kernel);
        assert_eq!(
            frame.function.as_deref(),
            Some("handle_mm_fault"),
            "{frame:?}"
        );
    }
}

#[test]
fn values_must_match_the_sample_types() {
    let mut capture = capture(1, vec![], vec![]);
    capture.stacks[0].values.push(1);
    let error = Symbolizer::new().symbolize(&capture).unwrap_err();
    assert!(
        matches!(
            error,
            SymbolizeError::ValuesMismatch {
                pid: 1,
                values: 2,
                sample_types: 1
            }
        ),
        "{error}"
    );
}

#[test]
fn symbolizer_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Symbolizer>();
}
