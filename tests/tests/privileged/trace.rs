//! Issue 14's calmer `memtrace trace`: only the probe families its events need, identical
//! events as one line, summaries per comm.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use memtrace_tests::{Workload, memtrace_bin, require_root};

use crate::support::{serial, spawn_attached_trace};

/// Stops a trace with Ctrl-C and returns its stdout.
fn interrupt(child: std::process::Child) -> String {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().expect("memtrace output");
    assert!(
        out.status.success(),
        "memtrace exited with {:?}",
        out.status
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn trace_oom_attaches_the_oom_family_alone() {
    require_root();
    let _serial = serial();
    let out = Command::new(memtrace_bin())
        .args(["trace", "-e", "oom", "-d", "1s"])
        .stdin(Stdio::null())
        .output()
        .expect("run memtrace");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l == "memtrace: tracing with oom probes attached; Ctrl-C to stop"),
        "{stderr}"
    );
    // Nothing counts per process: the summary is the events line alone.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "header, title, events line: {stdout}");
    assert!(lines[1].ends_with(" final summary:"), "{stdout}");
    assert!(
        lines[2].starts_with("events: ") && lines[2].contains(" shown"),
        "{stdout}"
    );
}

/// 500 mmap+munmap pairs of 1 MiB: one line `500 × len=1.0 MiB` for the mmaps (and one for the
/// munmaps), as text by default and, with `--collapse`, as one JSON object with `events`.
#[test]
fn trace_collapses_identical_mmaps_into_one_line_with_their_count() {
    require_root();
    let _serial = serial();
    const N: u64 = 500;
    for json in [false, true] {
        let mut workload = Workload::start(&["burst", &N.to_string(), "1048576"]);
        let pid = workload.pid().to_string();
        let mut args = vec!["-p", &pid, "-e", "vm", "--no-summary"];
        if json {
            args.extend(["-o", "json", "--collapse"]);
        }
        let (child, _stderr) = spawn_attached_trace(&args);
        workload.run();
        // Longer than a run stays pending once idle.
        std::thread::sleep(Duration::from_millis(500));
        let stdout = interrupt(child);
        assert!(workload.finish().success());
        let lines: Vec<&str> = stdout.lines().collect();
        if json {
            let mmaps: Vec<serde_json::Value> = lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
                .filter(|v: &serde_json::Value| v["kind"] == "mmap" && v["len"] == 1 << 20)
                .collect();
            let counts: Vec<u64> = mmaps
                .iter()
                .map(|v| v["events"].as_u64().unwrap_or(1))
                .collect();
            assert_eq!(counts.iter().sum::<u64>(), N, "{stdout}");
            // Runs are written at the latest every second: a slow machine may split them.
            assert!(counts.len() <= 3, "{counts:?}");
        } else {
            let mmaps: Vec<&&str> = lines
                .iter()
                .filter(|l| l.contains(" mmap ") && l.contains("len=1.0 MiB"))
                .collect();
            let counts: Vec<u64> = mmaps
                .iter()
                .map(|l| {
                    l.split(" mmap ")
                        .nth(1)
                        .and_then(|rest| rest.trim().split(" × ").next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1)
                })
                .collect();
            assert_eq!(counts.iter().sum::<u64>(), N, "{stdout}");
            assert!(counts.len() <= 3, "{stdout}");
            assert!(
                mmaps[0].contains(&format!("{} × len=1.0 MiB", counts[0])),
                "{stdout}"
            );
        }
    }
}

/// `--by comm`: two processes of one name are one row, their counters summed.
#[test]
fn trace_by_comm_sums_two_processes_of_one_name() {
    require_root();
    let _serial = serial();
    const N: u64 = 50;
    let mut a = Workload::start(&["burst", &N.to_string(), "1048576"]);
    let mut b = Workload::start(&["burst", &N.to_string(), "1048576"]);
    let (child, _stderr) = spawn_attached_trace(&[
        "-c",
        // As the kernel keeps it (15 characters; the full name is accepted with a warning).
        "memtrace-worklo",
        "-e",
        "vm",
        "--by",
        "comm",
        "-o",
        "json",
    ]);
    a.run();
    b.run();
    std::thread::sleep(Duration::from_millis(300));
    let stdout = interrupt(child);
    assert!(a.finish().success() && b.finish().success());
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .filter(|v: &serde_json::Value| v["kind"] == "summary")
        .collect();
    assert_eq!(rows.len(), 1, "one row for the comm: {stdout}");
    let row = &rows[0];
    assert_eq!(row["group_by"], "comm");
    assert_eq!(row["group"], "memtrace-worklo");
    assert_eq!(row["processes"], 2, "{row}");
    assert_eq!(row["exited_processes"], 0, "{row}");
    // Each mapped N MiB in the burst (plus what its start-up mapped).
    let mapped = row["counters"]["mmap_bytes"].as_u64().expect("mmap_bytes");
    assert!(mapped >= (2 * N) << 20, "{row}");
    assert!(
        row["counters"]["mmap_calls"].as_u64().expect("mmap_calls") >= 2 * N,
        "{row}"
    );
}
