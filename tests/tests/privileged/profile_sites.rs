//! `memtrace profile -p | --cgroup | --all` (growth sites): tests/programs/touch-sites.c, built
//! here with gcc with and without frame pointers, touches 64 MiB in `touch_big` and 16 MiB in
//! `touch_small`, maps 8 MiB in `map_only`, moves the break by 4 MiB in `grow_brk` and has the
//! kernel first-touch 4 MiB for `read_zero` (a read(2) of /dev/zero). The profile's JSON report
//! must attribute them to those functions.
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use memtrace_tests::{MemoryCgroup, memtrace_bin, require_root};
use serde_json::Value;

use crate::support::serial;

const MIB: f64 = 1024.0 * 1024.0;

/// The sample period of these tests: small enough that 16 MiB (4096 faults) is 512 samples.
const PERIOD: u64 = 8;

/// Samples expected of `mib` MiB first-touched at `period`.
fn samples_of(mib: f64, period: u64) -> f64 {
    mib * MIB / memtrace_tests::page_size() as f64 / period as f64
}

/// The bound on the 4:1 ratio. Treating each site's samples as Poisson (conservative: the
/// kernel takes every `PERIOD`-th fault, which varies less), the ratio's relative standard
/// deviation is sqrt(1/n_big + 1/n_small) with n = pages / PERIOD: 4.9 % at period 8; allowed:
/// four of them.
fn ratio_tolerance(period: u64) -> f64 {
    let (big, small) = (samples_of(64.0, period), samples_of(16.0, period));
    4.0 * (1.0 / big + 1.0 / small).sqrt()
}

/// The bound on one site's estimate of `mib` MiB: four relative standard deviations, 1/sqrt(n).
fn estimate_tolerance(mib: f64, period: u64) -> f64 {
    4.0 / samples_of(mib, period).sqrt()
}

/// Builds touch-sites.c into `dir` with `flags`.
fn build(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/touch-sites.c");
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(["-O2", "-g"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .status()
        .expect("gcc (cargo xtask test installs it)");
    assert!(status.success(), "gcc {flags:?} failed: {status}");
    out
}

/// A running touch-sites: waits for `go`, then prints `done` and waits for stdin to close.
struct TouchSites {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl TouchSites {
    fn start(program: &Path, cgroup: Option<&MemoryCgroup>) -> Self {
        let mut child = Command::new(program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start touch-sites");
        if let Some(cgroup) = cgroup {
            cgroup.add(child.id());
        }
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read ready");
        assert!(line.starts_with("ready"), "touch-sites said {line:?}");
        Self {
            stdin: child.stdin.take(),
            child,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs the sites and waits for them to finish.
    fn run(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("write go");
        stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read done");
        assert_eq!(line.trim(), "done", "touch-sites said {line:?}");
    }
}

impl Drop for TouchSites {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// `memtrace profile ARGS -o FILE.json`, started and attached.
struct Profiler {
    child: Child,
    output: PathBuf,
    stderr: BufReader<std::process::ChildStderr>,
}

impl Profiler {
    fn start(dir: &Path, args: &[&str]) -> Self {
        let output = dir.join("profile.json");
        let mut child = Command::new(memtrace_bin())
            .arg("profile")
            .args(args)
            .arg("-o")
            .arg(&output)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn memtrace profile");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        loop {
            line.clear();
            let n = stderr.read_line(&mut line).expect("read stderr");
            assert!(
                n > 0,
                "memtrace profile ended before attaching: {:?}",
                child.wait()
            );
            if line.contains("profiling") {
                break;
            }
            assert!(!line.contains("error"), "memtrace profile: {line}");
        }
        Self {
            child,
            output,
            stderr,
        }
    }

    /// Ctrl-C, then the report.
    fn finish(mut self) -> Value {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("wait memtrace");
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stderr, &mut rest);
        assert!(
            status.success(),
            "memtrace profile failed: {status}: {rest}"
        );
        let text = std::fs::read_to_string(&self.output).expect("read the JSON report");
        serde_json::from_str(&text).expect("the report is JSON")
    }
}

/// The report's reading: values by sample-type name, summed over stacks.
struct Report<'a> {
    json: &'a Value,
}

impl<'a> Report<'a> {
    fn column(&self, name: &str) -> usize {
        self.json["sample_types"]
            .as_array()
            .expect("sample_types")
            .iter()
            .position(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no sample type {name} in {}", self.json["sample_types"]))
    }

    fn stacks(&self, pid: u32) -> impl Iterator<Item = &'a Value> {
        self.json["stacks"]
            .as_array()
            .expect("stacks")
            .iter()
            .filter(move |s| s["pid"] == pid)
    }

    /// The function of user frame `depth` (0: the leaf), counting one frame per address (an
    /// address in inlined code lists the inlined functions first, then the one they are in).
    fn function(stack: &Value, depth: usize) -> Option<&str> {
        stack["frames"]
            .as_array()?
            .iter()
            .filter(|f| f["kind"] == "user" && f["inlined"] != true)
            .nth(depth)?["function"]
            .as_str()
    }

    /// `column` summed over `pid`'s stacks whose user frame `depth` is `function`.
    fn sum(&self, pid: u32, column: &str, depth: usize, function: &str) -> f64 {
        let column = self.column(column);
        self.stacks(pid)
            .filter(|s| Self::function(s, depth) == Some(function))
            .map(|s| s["values"][column].as_f64().expect("value"))
            .sum()
    }

    fn total(&self, pid: u32, column: &str) -> f64 {
        let column = self.column(column);
        self.stacks(pid)
            .map(|s| s["values"][column].as_f64().expect("value"))
            .sum()
    }
}

/// The first-touch ratio, the exact leaf, the growth callers, and the truncation stats, for one
/// build of touch-sites.
fn check_build(program: &Path, frame_pointers: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sites = TouchSites::start(program, None);
    let pid = sites.pid().to_string();
    // Kernel stacks asked for with one build, not the other.
    let period = PERIOD.to_string();
    let mut args = vec!["-p", pid.as_str(), "--fault-period", period.as_str()];
    if frame_pointers {
        args.push("--kernel-stacks");
    }
    let profiler = Profiler::start(dir.path(), &args);
    sites.run();
    let json = profiler.finish();
    let report = Report { json: &json };
    let pid = sites.pid();
    let build = if frame_pointers { "with" } else { "without" };

    // 4:1 by the exact leaf (the faulting write is in each function itself).
    let big = report.sum(pid, "first_touch_bytes", 0, "touch_big");
    let small = report.sum(pid, "first_touch_bytes", 0, "touch_small");
    assert!(
        small > 0.0,
        "{build} frame pointers: no first touch in touch_small: {json:#}"
    );
    let ratio = big / small;
    let tolerance = ratio_tolerance(PERIOD);
    assert!(
        (ratio / 4.0 - 1.0).abs() <= tolerance,
        "{build} frame pointers: touch_big:touch_small = {:.1} MiB : {:.1} MiB = {ratio:.3}, expected 4 within ±{:.1} %",
        big / MIB,
        small / MIB,
        tolerance * 100.0
    );
    // The estimate itself is unbiased.
    assert!(
        (big / (64.0 * MIB) - 1.0).abs() <= estimate_tolerance(64.0, PERIOD),
        "{build} frame pointers: touch_big first-touched {:.1} MiB, expected 64",
        big / MIB
    );
    // Faults taken in the kernel (read(2) filling a new buffer): the leaf is the read wrapper,
    // its caller read from the user stack pointer.
    let by_read = report.sum(pid, "first_touch_bytes", 1, "read_zero");
    assert!(
        (by_read / (4.0 * MIB) - 1.0).abs() <= estimate_tolerance(4.0, PERIOD),
        "{build} frame pointers: read_zero had {:.2} MiB first-touched by the kernel, expected 4",
        by_read / MIB
    );
    // Nearly every sampled first touch of the process is at one of the three sites (the rest:
    // stdio buffers, the stack).
    let all = report.total(pid, "first_touch_bytes");
    assert!(
        (big + small + by_read) / all >= 0.95,
        "{build} frame pointers: only {:.1} of {:.1} MiB first-touched at the three sites",
        (big + small + by_read) / MIB,
        all / MIB
    );
    // Kernel stacks where asked for: which path faulted (the read's); none otherwise.
    let has_kernel_frames = |s: &Value| {
        s["frames"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["kind"] == "kernel"))
    };
    let read_stacks: Vec<&Value> = report
        .stacks(pid)
        .filter(|s| Report::function(s, 1) == Some("read_zero"))
        .collect();
    if frame_pointers {
        assert!(
            read_stacks.iter().all(|s| has_kernel_frames(s)),
            "--kernel-stacks: the read's faults have kernel stacks: {read_stacks:#?}"
        );
    } else {
        assert!(
            !report.stacks(pid).any(has_kernel_frames),
            "no kernel frames without --kernel-stacks"
        );
    }

    // Growth: the wrapper's caller is exact (read at the user stack pointer), frame pointers
    // or not.
    let mapped = report.sum(pid, "mmap_bytes", 1, "map_only");
    assert_eq!(mapped, 8.0 * MIB, "{build} frame pointers: map_only's mmap");
    let mapped = report.sum(pid, "mmap_bytes", 1, "map_no_thp");
    assert_eq!(
        mapped,
        84.0 * MIB,
        "{build} frame pointers: map_no_thp's mmaps"
    );
    let brk = report.total(pid, "brk_bytes");
    assert_eq!(
        brk,
        4.0 * MIB,
        "{build} frame pointers: the break grew by 4 MiB"
    );
    let column = report.column("brk_bytes");
    let from_sbrk: f64 = report
        .stacks(pid)
        .filter(|s| Report::function(s, 1).is_some_and(|f| f.ends_with("sbrk")))
        .map(|s| s["values"][column].as_f64().expect("value"))
        .sum();
    assert_eq!(
        from_sbrk, brk,
        "{build} frame pointers: the brk wrapper's caller is sbrk"
    );

    // Stacks: with frame pointers the touch sites unwind to main; without, the walk stops at
    // the leaf, and the report counts those samples as truncated.
    let stats = &json["stats"];
    let samples = stats["samples"].as_u64().expect("stats.samples");
    let truncated = stats["truncated_stacks"]
        .as_u64()
        .expect("stats.truncated_stacks");
    assert!(truncated <= samples, "{stats}");
    let touch_samples = samples_of((big + small) / MIB, PERIOD) as u64;
    let main_callers = report.sum(pid, "first_touch_bytes", 1, "main");
    if frame_pointers {
        assert!(
            truncated * 20 <= samples,
            "with frame pointers nearly every walk reaches the program's entry: {stats}"
        );
        assert!(
            main_callers >= 0.99 * (big + small),
            "with frame pointers the touch sites are called from main: {:.1} of {:.1} MiB",
            main_callers / MIB,
            (big + small) / MIB
        );
    } else {
        assert_eq!(
            main_callers, 0.0,
            "without frame pointers the caller cannot be walked"
        );
        assert!(
            truncated >= touch_samples,
            "without frame pointers the {touch_samples} touch samples are truncated stacks: {stats}"
        );
    }
    assert!(
        stats["lost"].is_object(),
        "the report states the losses: {stats}"
    );
}

#[test]
fn first_touch_and_growth_sites_with_and_without_frame_pointers() {
    require_root();
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let with = build(dir.path(), "touch-sites-fp", &["-fno-omit-frame-pointer"]);
    let without = build(dir.path(), "touch-sites-nofp", &["-fomit-frame-pointer"]);
    check_build(&with, true);
    check_build(&without, false);
}

/// `--cgroup` and `--all` find the program too.
#[test]
fn cgroup_and_all_targets_pick_up_the_program() {
    require_root();
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let program = build(dir.path(), "touch-sites", &["-fno-omit-frame-pointer"]);
    let cgroup = MemoryCgroup::new("memtrace-profile", 1 << 30);
    let period = PERIOD.to_string();
    for target in [vec!["--cgroup", cgroup.path.as_str()], vec!["--all"]] {
        let mut sites = TouchSites::start(&program, Some(&cgroup));
        let mut args = target.clone();
        args.extend(["--fault-period", &period]);
        let profiler = Profiler::start(dir.path(), &args);
        sites.run();
        let json = profiler.finish();
        let report = Report { json: &json };
        let big = report.sum(sites.pid(), "first_touch_bytes", 0, "touch_big");
        assert!(
            (big / (64.0 * MIB) - 1.0).abs() <= estimate_tolerance(64.0, PERIOD),
            "{target:?}: touch_big first-touched {:.1} MiB, expected 64",
            big / MIB
        );
        assert_eq!(
            report.sum(sites.pid(), "mmap_bytes", 1, "map_only"),
            8.0 * MIB,
            "{target:?}: map_only's mmap"
        );
        drop(sites);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What was named is checked before anything is loaded, in one line.
#[test]
fn a_missing_process_or_cgroup_is_a_clear_error() {
    require_root();
    for (args, expected) in [
        (vec!["-p", "4194303"], "no such process: 4194303"),
        (
            vec!["--cgroup", "/memtrace-no-such-cgroup"],
            "no such cgroup: /memtrace-no-such-cgroup",
        ),
    ] {
        let output = Command::new(memtrace_bin())
            .arg("profile")
            .args(&args)
            .output()
            .expect("run memtrace profile");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?}: one line: {stderr}"
        );
    }
}
