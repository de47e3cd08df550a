//! OOM history survives a crash: a real OOM kill, the daemon SIGKILLed right after it, and the
//! record (with its flight recording) and its counter back after a restart on the same
//! `--state-dir`.
use std::time::{Duration, Instant};

use memtrace_api::OomRecord;
use memtrace_tests::{MemoryCgroup, Workload, require_root};

use crate::daemon::{Daemon, get, samples};
use crate::support::serial;

fn ooms(daemon: &Daemon) -> Vec<OomRecord> {
    let (status, body) = get(daemon.addr, "/api/v1/oom");
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("oom JSON");
    serde_json::from_value(body["ooms"].clone()).expect("OomRecord schema")
}

fn kills(daemon: &Daemon, cgroup: &str) -> f64 {
    let label = format!("cgroup=\"{cgroup}\"");
    samples(&daemon.metrics(), "memtrace_oom_kills_total")
        .into_iter()
        .filter(|(labels, _)| labels.contains(&label))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn oom_history_survives_a_sigkilled_daemon() {
    require_root();
    let _serial = serial();
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().to_str().expect("utf-8 tempdir");
    let daemon = Daemon::start(&["--state-dir", state_dir]);

    let cgroup = MemoryCgroup::new("memtrace-persist-oom", 32 << 20);
    let mut hog = Workload::start_in(&cgroup, &["slow-hog", "2048", "100"]);
    let victim = hog.pid();
    hog.go();
    let status = hog.finish();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "not OOM-killed: {status:?}"
    );

    // Right after the kill is recorded, the daemon is killed without a chance to clean up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        if let Some(oom) = ooms(&daemon).into_iter().find(|o| o.victim_pid == victim) {
            break oom;
        }
        assert!(
            Instant::now() < deadline,
            "the kill of {victim} was not recorded"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    daemon.crash();
    assert!(
        std::fs::read_dir(state.path()).expect("state dir").count() >= 1,
        "nothing written to {state_dir}"
    );

    let daemon = Daemon::start(&["--state-dir", state_dir]);
    let after = ooms(&daemon)
        .into_iter()
        .find(|o| o.victim_pid == victim)
        .unwrap_or_else(|| panic!("victim {victim} forgotten after the restart"));
    assert_eq!(after.victim_cgroup.as_deref(), Some(cgroup.path.as_str()));
    assert_eq!(after.timestamp_unix_ms, before.timestamp_unix_ms);
    assert!(
        after.flight_recording.len() >= 2,
        "flight recording lost: {:?}",
        after.flight_recording
    );
    assert_eq!(
        after.flight_recording.first(),
        before.flight_recording.first(),
        "the same recording"
    );
    assert_eq!(after.cgroup_limit_bytes, Some(32 << 20));
    assert_eq!(kills(&daemon, &cgroup.path), 1.0, "the counter resumes");
}
