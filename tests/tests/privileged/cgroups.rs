//! Processes too short-lived for `/proc` to be read still land in their cgroup: the kernel
//! reports the cgroup at the exit and at the OOM kill, and the daemon and `trace` use it.
use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_tests::{MemoryCgroup, require_root, workload_bin};

use crate::{
    daemon::{Daemon, get, samples},
    support::{serial, spawn_attached_trace},
};

/// `command` started inside `cgroup` (moved between fork and exec, so it runs nowhere else),
/// reaped with `wait4`: its pid, wait status and (minor, major) faults, its waited-for
/// descendants' included.
#[expect(
    clippy::zombie_processes,
    reason = "reaped with wait4, which also gives its resource usage"
)]
fn run_in(cgroup: &MemoryCgroup, command: &mut Command) -> (u32, i32, u64) {
    use std::os::fd::AsRawFd;
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.dir.join("cgroup.procs"))
        .expect("open cgroup.procs");
    let fd = procs.as_raw_fd();
    // SAFETY: the hook calls only write(2) on an fd that outlives the spawn.
    unsafe {
        command.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaping our own child (std's `Child` is not waited for after this).
    let rc = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid as i32, "wait4: {}", std::io::Error::last_os_error());
    (pid, status, (usage.ru_minflt + usage.ru_majflt) as u64)
}

/// Collects a child's stdout lines on a thread, so it never blocks on a full pipe while the
/// test is busy; joined once the child ends.
fn collect_lines(child: &mut std::process::Child) -> std::thread::JoinHandle<Vec<String>> {
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    std::thread::spawn(move || stdout.lines().map_while(Result::ok).collect())
}

/// The daemon's `cgroup_page_faults_total` for `path`, minor and major summed.
fn cgroup_faults(daemon: &Daemon, path: &str) -> f64 {
    let label = format!("cgroup=\"{path}\"");
    samples(&daemon.metrics(), "memtrace_cgroup_page_faults_total")
        .iter()
        .filter(|(labels, _)| labels.contains(&label))
        .map(|(_, value)| value)
        .sum()
}

/// Issue 10 A: a build-like burst of 200 short processes (each ending on a helper thread after
/// its leader) in a memory cgroup. The daemon counts their faults for that cgroup (within 1 %
/// of what `wait4` reports), and `trace` names that cgroup and the leader's comm on every exit.
#[test]
fn short_lived_processes_count_in_their_cgroup_and_exits_name_it() {
    require_root();
    let _serial = serial();
    let daemon = Daemon::start(&[]);
    // Kept: memtrace writes to its stderr until it ends.
    let (mut trace, _stderr) = spawn_attached_trace(&[
        "--event",
        "exit",
        "--output",
        "json",
        "--no-summary",
        "--duration",
        "120s",
    ]);
    let lines = collect_lines(&mut trace);

    let cgroup = MemoryCgroup::new("memtrace-burst", 1 << 30);
    let before = cgroup_faults(&daemon, &cgroup.path);
    let mut pids = HashSet::new();
    let mut faults = 0;
    for _ in 0..200 {
        let (pid, status, process_faults) =
            run_in(&cgroup, Command::new(workload_bin()).args(["short", "64"]));
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}"
        );
        pids.insert(pid);
        faults += process_faults;
    }
    let expected = before + faults as f64;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut counted = cgroup_faults(&daemon, &cgroup.path);
    while (counted - expected).abs() > expected * 0.01 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        counted = cgroup_faults(&daemon, &cgroup.path);
    }
    assert!(
        (counted - expected).abs() <= expected * 0.01,
        "cgroup {} counted {counted} faults, wait4 says {expected}",
        cgroup.path
    );

    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(trace.id() as i32, libc::SIGINT) };
    assert!(trace.wait().expect("wait trace").success());
    let mut exits = HashSet::new();
    for line in lines.join().expect("stdout reader") {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        let Some(pid) = v["pid"].as_u64().map(|p| p as u32) else {
            continue;
        };
        if v["kind"] != "exit" || !pids.contains(&pid) {
            continue;
        }
        assert_eq!(v["cgroup"], cgroup.path.as_str(), "{line}");
        assert_eq!(v["comm"], "memtrace-worklo", "{line}");
        exits.insert(pid);
    }
    assert!(trace.wait().expect("wait trace").success());
    assert_eq!(
        exits.len(),
        pids.len(),
        "exit events of the burst's processes"
    );
}

/// Issue 10, load defect 2: a process that execs a fast allocator in a 32 MiB memory cgroup,
/// killed six times; each kill is recorded with that cgroup and its limit, though the victims
/// live too short to be sampled.
#[test]
fn short_lived_oom_victims_are_attributed_to_their_cgroup() {
    require_root();
    let _serial = serial();
    let daemon = Daemon::start(&[]);
    let cgroup = MemoryCgroup::new("memtrace-oom-storm", 32 << 20);
    let mut victims = HashSet::new();
    for _ in 0..6 {
        let (pid, status, _) = run_in(
            &cgroup,
            Command::new("/bin/sh")
                .args(["-c", r#"exec "$0" hog-now"#])
                .arg(workload_bin()),
        );
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
            "not OOM-killed: status {status:#x}"
        );
        victims.insert(u64::from(pid));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let ours = loop {
        let (status, body) = get(daemon.addr, "/api/v1/oom");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("oom JSON");
        let ours: Vec<serde_json::Value> = v["ooms"]
            .as_array()
            .expect("ooms")
            .iter()
            .filter(|o| {
                o["victim_pid"]
                    .as_u64()
                    .is_some_and(|p| victims.contains(&p))
            })
            .cloned()
            .collect();
        if ours.len() == victims.len() || Instant::now() > deadline {
            break ours;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(ours.len(), 6, "{ours:#?}");
    for oom in &ours {
        assert_eq!(oom["victim_cgroup"], cgroup.path.as_str(), "{oom:#}");
        assert_eq!(oom["cgroup_limit_bytes"], 32 << 20, "{oom:#}");
    }
}

/// Issue 10 B: `trace --cgroup` follows a process from the moment it joins the cgroup: one that
/// moves itself in and at once execs a program mapping 32 regions has all 32 streamed, ten
/// times in a row (the trace's rescan of the cgroup runs only once a second).
#[test]
fn trace_cgroup_follows_a_process_from_its_move_into_the_cgroup() {
    require_root();
    let _serial = serial();
    let cgroup = MemoryCgroup::new("memtrace-join", 1 << 30);
    // Kept: memtrace writes to its stderr until it ends.
    let (mut trace, _stderr) = spawn_attached_trace(&[
        "--cgroup",
        &cgroup.path,
        "--event",
        "mmap",
        "--output",
        "json",
        "--no-summary",
        "--duration",
        "120s",
    ]);
    let lines = collect_lines(&mut trace);

    const REGIONS: u64 = 32;
    const FIRST_PAGES: u64 = 301;
    let page = memtrace_tests::page_size() as u64;
    let script = format!(
        r#"echo $$ > {}/cgroup.procs && exec "$0" map-regions {REGIONS} {FIRST_PAGES}"#,
        cgroup.dir.display()
    );
    let mut runs = Vec::new();
    for _ in 0..10 {
        let status = Command::new("/bin/sh")
            .args(["-c", &script])
            .arg(workload_bin())
            .spawn()
            .expect("spawn sh");
        let pid = u64::from(status.id());
        let mut status = status;
        assert!(status.wait().expect("wait").success());
        runs.push(pid);
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(trace.id() as i32, libc::SIGINT) };
    assert!(trace.wait().expect("wait trace").success());
    let mut streamed: std::collections::HashMap<u64, HashSet<u64>> = Default::default();
    for line in lines.join().expect("stdout reader") {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        let (Some(pid), Some(len)) = (v["pid"].as_u64(), v["len"].as_u64()) else {
            continue;
        };
        let pages = len / page;
        if v["kind"] == "mmap" && (FIRST_PAGES..FIRST_PAGES + REGIONS).contains(&pages) {
            streamed.entry(pid).or_default().insert(pages);
        }
    }
    for pid in runs {
        let seen = streamed.get(&pid).map_or(0, HashSet::len);
        assert_eq!(
            seen as u64, REGIONS,
            "pid {pid}: {seen}/{REGIONS} mappings streamed"
        );
    }
}

/// Issue 10 C: a process that was running before the trace and whose RSS does not change while
/// it is traced still has its RSS by type in the summary, as the kernel counts it.
#[test]
fn trace_summary_shows_the_rss_of_a_process_running_before_it() {
    require_root();
    let _serial = serial();
    let mut idle = memtrace_tests::Workload::start(&["touch-anon", "1"]);
    let pid = idle.pid();
    // Kept: memtrace writes to its stderr until it ends.
    let (trace, _stderr) = spawn_attached_trace(&[
        "--pid",
        &pid.to_string(),
        "--output",
        "json",
        "--duration",
        "2s",
    ]);
    // One anonymous page touched while traced: only the anon type changes.
    idle.run();
    let out = trace.wait_with_output().expect("wait trace");
    assert!(out.status.success());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib = |key: &str| -> u64 {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} in {status}"));
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .find(|v| v["kind"] == "summary" && v["pid"] == pid)
        .expect("a summary row for the process");
    assert!(kib("RssFile:") > 0);
    assert_eq!(
        summary["counters"]["rss_file_bytes"],
        kib("RssFile:"),
        "{summary}"
    );
    assert_eq!(
        summary["counters"]["rss_anon_bytes"],
        kib("RssAnon:"),
        "{summary}"
    );
    assert!(idle.finish().success());
}
