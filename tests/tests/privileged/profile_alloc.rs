//! `memtrace profile --alloc`: the allocator uprobes against `tests/programs/alloc-sites.c`,
//! whose sites allocate known sizes at a known depth, built three ways (frame pointers, none,
//! stripped); and against real servers (Redis on jemalloc, memcached on glibc).
//!
//! Unsampled: bytes and objects per site and outstanding (leaked) bytes are exact. Sampled:
//! each site's estimate is within 4 standard deviations of the truth, the deviation computed
//! from the sampling probability `p = 1 - exp(-size / rate)` of each of its allocations
//! (`Var = Σ size² (1 - p) / p`; a false failure about once in 15,000 checks).
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use memtrace_tests::{memtrace_bin, require_root};
use serde_json::Value;

use crate::support::serial;

/// One site of alloc-sites.c: its function, each allocation's size, how many, how many stay
/// outstanding (leaked) when the program reports `done`.
struct Site {
    function: &'static str,
    size: u64,
    count: u64,
    leaked: u64,
}

/// The figures of tests/programs/alloc-sites.c (its comments say the same).
const SITES: &[Site] = &[
    Site {
        function: "leak_site_a",
        size: 4096,
        count: 16,
        leaked: 16,
    },
    Site {
        function: "leak_site_b",
        size: 1000,
        count: 8,
        leaked: 8,
    },
    Site {
        function: "temp_site",
        size: 256,
        count: 1000,
        leaked: 0,
    },
    Site {
        function: "posix_memalign_site",
        size: 1000,
        count: 4,
        leaked: 4,
    },
    Site {
        function: "aligned_alloc_site",
        size: 1088,
        count: 4,
        leaked: 0,
    },
    Site {
        function: "memalign_site",
        size: 2000,
        count: 4,
        leaked: 4,
    },
    Site {
        function: "valloc_site",
        size: 3000,
        count: 4,
        leaked: 0,
    },
    Site {
        function: "big_site",
        size: 256 * 1024,
        count: 2,
        leaked: 2,
    },
    Site {
        function: "lib_alloc_site",
        size: 5000,
        count: 10,
        leaked: 10,
    },
];
/// realloc(NULL, 24) doubling to 3072: 8 allocations, the last outstanding.
const REALLOC_SIZES: [u64; 8] = [24, 48, 96, 192, 384, 768, 1536, 3072];
/// 4 threads × (5000 × 160 freed + 1 × 512 leaked).
const THREADS: u64 = 4;

/// (alloc bytes, alloc objects, in-use bytes, in-use objects) per site function.
fn expected() -> BTreeMap<&'static str, [i64; 4]> {
    let mut out = BTreeMap::new();
    for site in SITES {
        let (size, count, leaked) = (site.size as i64, site.count as i64, site.leaked as i64);
        out.insert(site.function, [size * count, count, size * leaked, leaked]);
    }
    let realloc_total: u64 = REALLOC_SIZES.iter().sum();
    out.insert("realloc_chain", [realloc_total as i64, 8, 3072, 1]);
    let t = THREADS as i64;
    out.insert(
        "thread_site",
        [t * (5000 * 160 + 512), t * 5001, t * 512, t],
    );
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Build {
    FramePointers,
    NoFramePointers,
    Stripped,
}

struct Built {
    _dir: tempfile::TempDir,
    exe: PathBuf,
    lib: PathBuf,
}

fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("programs")
}

fn gcc(args: &[&str]) {
    let out = Command::new("gcc")
        .args(args)
        .output()
        .expect("gcc (apt install gcc)");
    assert!(
        out.status.success(),
        "gcc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// alloc-sites and its library, built as `build` says.
fn build(build: Build) -> Built {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("alloc-sites");
    let lib = dir.path().join("libdlsites.so");
    let src = programs_dir().join("alloc-sites.c");
    let lib_src = programs_dir().join("alloc-lib.c");
    let fp = if build == Build::FramePointers {
        "-fno-omit-frame-pointer"
    } else {
        "-fomit-frame-pointer"
    };
    let common = [
        "-O1",
        "-g",
        "-fno-builtin",
        "-fno-optimize-sibling-calls",
        fp,
    ];
    let mut args: Vec<&str> = common.to_vec();
    args.extend([
        "-pthread",
        src.to_str().unwrap(),
        "-o",
        exe.to_str().unwrap(),
        "-ldl",
    ]);
    gcc(&args);
    let mut args: Vec<&str> = common.to_vec();
    args.extend([
        "-shared",
        "-fPIC",
        lib_src.to_str().unwrap(),
        "-o",
        lib.to_str().unwrap(),
    ]);
    gcc(&args);
    if build == Build::Stripped {
        let status = Command::new("strip")
            .arg("--strip-all")
            .arg(&exe)
            .status()
            .expect("strip");
        assert!(status.success());
    }
    Built {
        _dir: dir,
        exe,
        lib,
    }
}

/// alloc-sites running, waiting for its `go`.
struct Program {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Program {
    fn start(built: &Built) -> Self {
        Self::start_with(built, &[built.lib.as_os_str()])
    }

    fn start_with(built: &Built, args: &[&std::ffi::OsStr]) -> Self {
        let mut child = Command::new(&built.exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn alloc-sites");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut program = Self {
            child,
            stdin,
            stdout,
        };
        assert_eq!(program.line(), "ready");
        program
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("alloc-sites stdout");
        line.trim().to_owned()
    }

    /// Run every site; returns when they all ran (the allocations are still outstanding).
    fn run_sites(&mut self) {
        writeln!(self.stdin, "go").unwrap();
        assert_eq!(self.line(), "done");
    }

    fn finish(mut self) {
        let _ = writeln!(self.stdin, "exit");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "alloc-sites: {status:?}");
    }
}

/// `memtrace profile --alloc -p PID ARGS --format json -o FILE`, returned once it attached;
/// killed if the test fails first.
struct Profiler {
    child: Option<Child>,
    output: tempfile::NamedTempFile,
    stderr: mpsc::Receiver<String>,
}

impl Profiler {
    fn attach(pid: u32, args: &[&str]) -> Self {
        let output = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        let mut child = Command::new(memtrace_bin())
            .args([
                "profile",
                "--alloc",
                "-p",
                &pid.to_string(),
                "--format",
                "json",
                "-o",
            ])
            .arg(output.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn memtrace");
        let (tx, rx) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.starts_with("profiling allocations of") => break,
                Ok(line) => seen.push(line),
                Err(_) => panic!("memtrace did not attach: {}", seen.join("\n")),
            }
        }
        // The line is printed before attaching; attaching a handful of uprobes takes
        // milliseconds, the first probed call has to wait for none of it.
        std::thread::sleep(Duration::from_millis(500));
        Self {
            child: Some(child),
            output,
            stderr: rx,
        }
    }

    /// Ctrl-C, then the JSON report.
    fn stop(mut self) -> Value {
        let child = self.child.take().expect("running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = child.wait_with_output().expect("memtrace").status;
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        assert!(
            status.success(),
            "memtrace: {status:?}\n{}",
            stderr.join("\n")
        );
        let text = std::fs::read_to_string(self.output.path()).expect("the JSON report");
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}: {text}"))
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A server killed when the test ends, passed or failed.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stacks(report: &Value) -> &Vec<Value> {
    report["stacks"].as_array().expect("stacks")
}

fn leaf_function(stack: &Value) -> Option<&str> {
    stack["frames"][0]["function"].as_str()
}

fn values(stack: &Value) -> Vec<i64> {
    stack["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| v.as_i64().expect("integer value"))
        .collect()
}

/// Values summed by leaf function (a site may be several stacks: an unrolled loop's two calls,
/// different outer frames).
fn by_leaf(report: &Value) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for stack in stacks(report) {
        let name = leaf_function(stack).unwrap_or("[unknown]").to_owned();
        let values = values(stack);
        let sum = out.entry(name).or_insert_with(|| vec![0; values.len()]);
        for (s, v) in sum.iter_mut().zip(values) {
            *s += v;
        }
    }
    out
}

/// Runs alloc-sites under the profiler with `args`; returns the report.
fn profile_sites(built: &Built, args: &[&str], wait_after: Duration) -> Value {
    let mut program = Program::start(built);
    let profiler = Profiler::attach(program.child.id(), args);
    program.run_sites();
    std::thread::sleep(wait_after);
    let report = profiler.stop();
    program.finish();
    report
}

/// Unsampled, every build: bytes and objects per site, allocated and in use, exact; every site
/// allocation's leaf is its site function (100 %); the stack-depth histogram is printed and
/// the sites' stacks reach `main` where unwinding information exists.
#[test]
fn unsampled_sites_are_exact_in_every_build() {
    require_root();
    let _serial = serial();
    for kind in [
        Build::FramePointers,
        Build::NoFramePointers,
        Build::Stripped,
    ] {
        let built = build(kind);
        let report = profile_sites(&built, &["--unsampled"], Duration::ZERO);
        assert_eq!(report["sampling"], "every call", "{kind:?}");
        assert_eq!(
            sample_type_names(&report),
            [
                "alloc_space",
                "alloc_objects",
                "inuse_space",
                "inuse_objects"
            ]
        );
        let got = by_leaf(&report);
        let expected = expected();
        eprintln!(
            "{kind:?}: depth histogram {} truncated {} lost {}",
            report["stats"]["depth_histogram"],
            report["stats"]["truncated_stacks"],
            report["stats"]["lost"]
        );
        // Nothing of the fork child (it allocates 100 × 7777 bytes).
        for stack in stacks(&report) {
            assert_eq!(stack["pid"], report["stacks"][0]["pid"]);
            let v = values(stack);
            assert!(
                v[0] % 7777 != 0 || v[0] == 0,
                "{kind:?}: a fork child's allocation: {stack}"
            );
        }
        if kind == Build::Stripped {
            // No symbols: the executable's sites are unknown (never another function's name),
            // and all of their bytes are attributed to the executable's module.
            let exe = built.exe.to_str().unwrap();
            let mut exe_bytes = 0;
            for stack in stacks(&report) {
                let leaf = &stack["frames"][0];
                if leaf["module"].as_str() == Some(exe) {
                    assert!(leaf["function"].is_null(), "stripped: {leaf}");
                    exe_bytes += values(stack)[0];
                }
            }
            let expected_exe: i64 = expected
                .iter()
                .filter(|(f, _)| **f != "lib_alloc_site")
                .map(|(_, v)| v[0])
                .sum();
            assert_eq!(
                exe_bytes, expected_exe,
                "stripped: bytes allocated by the executable"
            );
            assert_eq!(
                got["lib_alloc_site"], expected["lib_alloc_site"],
                "stripped"
            );
            continue;
        }
        let mut right = 0;
        let total: i64 = expected.values().map(|v| v[1]).sum();
        for (function, want) in &expected {
            let have = got.get(*function).cloned().unwrap_or_default();
            assert_eq!(
                have,
                want.to_vec(),
                "{kind:?}: {function} (alloc bytes, objects, in-use bytes, objects)"
            );
            right += have[1];
        }
        eprintln!("{kind:?}: {right} of {total} site allocations at the right leaf");
        assert_site_stacks(kind, &report);
    }
}

/// The sites' stacks: site <- run_sites <- main (thread_site: <- thread_main; the library's
/// site: <- dlopen_site).
fn assert_site_stacks(kind: Build, report: &Value) {
    let expected = expected();
    for stack in stacks(report) {
        let frames: Vec<&str> = stack["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["function"].as_str().unwrap_or("?"))
            .collect();
        let Some(leaf) = frames.first() else { continue };
        let caller = match *leaf {
            "thread_site" => "thread_main",
            "lib_alloc_site" => "dlopen_site",
            f if expected.contains_key(f) => "run_sites",
            _ => continue,
        };
        assert_eq!(frames.get(1), Some(&caller), "{kind:?}: {frames:?}");
        if caller == "run_sites" {
            assert_eq!(frames.get(2), Some(&"main"), "{kind:?}: {frames:?}");
        }
    }
}

fn sample_type_names(report: &Value) -> Vec<&str> {
    report["sample_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

/// `--duty-cycle 100%`: allocation sites only, from the allocating functions' entry probes (no
/// free, no return probe). Bytes and objects allocated per site are exact, as with both probes;
/// `realloc(NULL, n)`, which glibc passes on to malloc, is counted once; the stacks are as deep;
/// there are no in-use columns.
#[test]
fn sites_only_are_exact_at_a_full_duty_cycle() {
    require_root();
    let _serial = serial();
    for kind in [Build::FramePointers, Build::NoFramePointers] {
        let built = build(kind);
        let report = profile_sites(
            &built,
            &["--unsampled", "--duty-cycle", "100%"],
            Duration::ZERO,
        );
        assert_eq!(
            report["sampling"], "every call; allocation sites only, probes attached throughout",
            "{kind:?}"
        );
        assert_eq!(sample_type_names(&report), ["alloc_space", "alloc_objects"]);
        let got = by_leaf(&report);
        for (function, want) in expected() {
            assert_eq!(
                got.get(function).cloned().unwrap_or_default(),
                want[..2].to_vec(),
                "{kind:?}: {function} (alloc bytes, objects)"
            );
        }
        assert_site_stacks(kind, &report);
    }
}

/// `--duty-cycle 25% --burst 200ms` on a steady allocator (one malloc(1000) a millisecond, 3000
/// of them, about 3.4 s): the bursts count a share of them near the share of time they were on,
/// each exactly (1000 bytes an object), at the right site, and the report says how long they
/// were on.
#[test]
fn a_duty_cycle_counts_in_bursts_and_says_how_long() {
    require_root();
    let _serial = serial();
    let built = build(Build::NoFramePointers);
    let args = ["--paced", "3000", "1000"].map(std::ffi::OsStr::new);
    let mut program = Program::start_with(&built, &args);
    let profiler = Profiler::attach(
        program.child.id(),
        &["--unsampled", "--duty-cycle", "25%", "--burst", "200ms"],
    );
    program.run_sites();
    let report = profiler.stop();
    program.finish();
    let sampling = report["sampling"].as_str().unwrap();
    eprintln!("{sampling}");
    // "… counted while the probes were attached: 1.0 s of 4.0 s (25.3 %; --duty-cycle 25%, …".
    let share: f64 = sampling
        .split_once("s (")
        .and_then(|(_, rest)| rest.split_once(" %"))
        .and_then(|(percent, _)| percent.parse().ok())
        .unwrap_or_else(|| panic!("no attached share in {sampling:?}"));
    assert!((15.0..=35.0).contains(&share), "attached {share} %");
    assert_eq!(sample_type_names(&report), ["alloc_space", "alloc_objects"]);
    let got = by_leaf(&report);
    let paced = got.get("paced_site").cloned().unwrap_or_default();
    eprintln!("paced_site: {paced:?} of 3000 × 1000 bytes; every site: {got:?}");
    let [bytes, objects] = paced[..] else {
        panic!("paced_site not counted: {got:?}")
    };
    assert_eq!(bytes, objects * 1000, "paced_site: each object exactly");
    // A quarter of 3000, within a burst's worth (200 ms: 190 calls) either way and more: the
    // bursts' phase against the program's start and end is not controlled.
    assert!(
        (3000 * 10 / 100..=3000 * 45 / 100).contains(&objects),
        "paced_site: {objects} of 3000 counted at a {share} % duty cycle"
    );
    let everything: i64 = got.values().map(|v| v[1]).sum();
    assert!(
        objects * 100 >= everything * 99,
        "paced_site is the allocations: {got:?}"
    );
}

/// `--leaks`: what the sites left outstanding, by site, exactly; the temporaries not at all.
#[test]
fn leaks_are_the_outstanding_allocations_by_site() {
    require_root();
    let _serial = serial();
    let built = build(Build::NoFramePointers);
    let report = profile_sites(
        &built,
        &["--unsampled", "--leaks", "--min-age", "1s"],
        Duration::from_millis(1500),
    );
    let got = by_leaf(&report);
    for (function, want) in expected() {
        let have = got.get(function).cloned();
        if want[3] == 0 {
            assert_eq!(have, None, "{function} leaked nothing");
        } else {
            assert_eq!(
                have,
                Some(vec![want[2], want[3]]),
                "{function} (leaked bytes, objects)"
            );
        }
    }
    for stack in stacks(&report) {
        let age = stack["labels"]["oldest_age_ms"]
            .as_i64()
            .expect("oldest_age_ms");
        assert!(age >= 1000, "{stack}");
    }
}

/// Sampled at one per 4 KiB: each site's allocated bytes within 4 σ of the truth.
#[test]
fn sampled_sites_are_within_the_statistical_bound() {
    require_root();
    let _serial = serial();
    const RATE: f64 = 4096.0;
    let built = build(Build::NoFramePointers);
    let report = profile_sites(&built, &["--sample-rate", "4KiB"], Duration::ZERO);
    let got = by_leaf(&report);
    // (site, [(size, count)]).
    let mut sites: Vec<(&str, Vec<(u64, u64)>)> = SITES
        .iter()
        .map(|s| (s.function, vec![(s.size, s.count)]))
        .collect();
    sites.push((
        "realloc_chain",
        REALLOC_SIZES.iter().map(|&s| (s, 1)).collect(),
    ));
    sites.push(("thread_site", vec![(160, THREADS * 5000), (512, THREADS)]));
    for (function, allocations) in sites {
        let truth: f64 = allocations.iter().map(|&(s, n)| (s * n) as f64).sum();
        let variance: f64 = allocations
            .iter()
            .map(|&(s, n)| {
                let p = 1.0 - (-(s as f64) / RATE).exp();
                n as f64 * (s as f64).powi(2) * (1.0 - p) / p
            })
            .sum();
        let estimate = got.get(function).map_or(0, |v| v[0]) as f64;
        let bound = 4.0 * variance.sqrt() + 1.0;
        eprintln!("{function}: truth {truth}, estimate {estimate}, bound ±{bound:.0}");
        assert!(
            (estimate - truth).abs() <= bound,
            "{function}: estimate {estimate} vs {truth} (bound ±{bound:.0})"
        );
    }
}

/// A server's top allocation sites (sampled, the default): (leaf function or `None`, leaf
/// module, the report's reason when unknown).
fn top_sites(pid: u32, load: impl FnOnce()) -> Vec<(Option<String>, String, String)> {
    let profiler = Profiler::attach(pid, &[]);
    load();
    let report = profiler.stop();
    let mut stacks: Vec<&Value> = stacks(&report).iter().collect();
    stacks.sort_by_key(|s| std::cmp::Reverse(values(s)[0]));
    let top: Vec<(Option<String>, String, String)> = stacks
        .iter()
        .take(5)
        .map(|s| {
            let leaf = &s["frames"][0];
            (
                leaf["function"].as_str().map(str::to_owned),
                leaf["module"].as_str().unwrap_or_default().to_owned(),
                leaf["unknown"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    eprintln!("top sites: {top:?}");
    assert!(!top.is_empty(), "no samples: {report}");
    top
}

#[test]
fn redis_top_sites_are_its_functions() {
    require_root();
    let _serial = serial();
    let port = "6391";
    let redis = Server(
        Command::new("redis-server")
            .args(["--port", port, "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt install redis-server)"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let top = top_sites(redis.0.id(), || {
        let status = Command::new("redis-benchmark")
            .args([
                "-p",
                port,
                "-q",
                "-n",
                "50000",
                "-r",
                "100000",
                "-d",
                "256",
                "-t",
                "set,lpush",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("redis-benchmark (apt install redis-tools)");
        assert!(status.success());
    });
    // Redis allocates through zmalloc's family (its exported symbols name them even in
    // Debian's stripped build): the top sites are those, never unknown.
    for (function, module, unknown) in &top {
        let function = function
            .as_deref()
            .unwrap_or_else(|| panic!("unknown site in {module}: {unknown}"));
        assert!(module.contains("redis"), "{function} in {module}: {top:?}");
    }
    assert!(
        top.iter()
            .any(|(f, _, _)| f.as_deref().is_some_and(|f| f.starts_with('z'))),
        "no zmalloc-family site: {top:?}"
    );
}

/// memcached (glibc malloc): the top sites are memcached's code. Debian's memcached is stripped
/// and exports no functions: without memcached-dbgsym (the debian-debug archive) its sites are
/// unknown, and the report must say so and name the package, never another function.
#[test]
fn memcached_top_sites_are_its_functions() {
    require_root();
    let _serial = serial();
    let port = 11_291;
    let memcached = Server(
        Command::new("memcached")
            .args([
                "-u",
                "root",
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-m",
                "64",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("memcached (apt install memcached)"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let top = top_sites(memcached.0.id(), || {
        for round in 0..100 {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let value = "x".repeat(1000 + round * 37);
            for key in 0..20 {
                write!(
                    stream,
                    "set k{round}_{key} 0 0 {}\r\n{value}\r\n",
                    value.len()
                )
                .unwrap();
            }
            write!(stream, "quit\r\n").unwrap();
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stream, &mut sink);
            assert!(String::from_utf8_lossy(&sink).contains("STORED"));
        }
    });
    let dbgsym = Path::new("/usr/lib/debug/.build-id").exists()
        && Command::new("dpkg")
            .args(["-s", "memcached-dbgsym"])
            .output()
            .is_ok_and(|o| o.status.success());
    // memcached's slab pages (1 MiB mallocs) are the largest site.
    assert!(top[0].1.ends_with("memcached"), "{top:?}");
    for (function, module, unknown) in &top {
        match function {
            Some(_) => {}
            None if module.ends_with("memcached") && !dbgsym => {
                assert!(unknown.contains("memcached-dbgsym"), "{unknown}");
            }
            None => panic!("unknown site in {module} ({unknown}): {top:?}"),
        }
    }
}
