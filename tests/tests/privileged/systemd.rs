//! The systemd unit run for real: `deploy/systemd/memtrace.service` installed by the README's own
//! install steps, started by systemd as PID 1 (a VM: `cargo xtask vm-test` runs these), and
//! checked through the kernel's view of the running daemon (`/proc`), not only systemctl's: a
//! dynamic user, the unit's capabilities and no more, no_new_privs, the state directory, every
//! family attached, a workload's faults on `/metrics`, a restart after `kill -9`, a clean stop.
//! The guest has no source tree: the README, the unit, the config and the sysctl file are built
//! into this binary.
use std::{
    collections::HashMap,
    net::SocketAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use memtrace_tests::{Workload, memtrace_bin, proc_faults, require_root};

use crate::{
    daemon::{get, samples},
    privileges::{expected_kept, thread_privileges},
    support::serial,
};

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
/// The committed deploy files, by their path in the repository (where the README's steps read
/// them from).
const DEPLOY_FILES: [(&str, &str); 3] = [
    (
        "deploy/systemd/memtrace.service",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/systemd/memtrace.service"
        )),
    ),
    (
        "deploy/daemon.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/daemon.toml"
        )),
    ),
    (
        "deploy/systemd/60-memtrace.conf",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/systemd/60-memtrace.conf"
        )),
    ),
];
const UNIT: &str = DEPLOY_FILES[0].1;
const CONFIG: &str = DEPLOY_FILES[1].1;

/// Where the README's steps put things; none may exist before the test (it never overwrites an
/// installed memtrace).
const INSTALLED: [&str; 4] = [
    "/usr/local/bin/memtrace",
    "/etc/systemd/system/memtrace.service",
    "/etc/memtrace/daemon.toml",
    "/etc/sysctl.d/60-memtrace.conf",
];
const STATE_DIR: &str = "/var/lib/memtrace";
const PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

/// systemd's range for `DynamicUser=` (systemd.exec(5); "UIDs and GIDs on systemd systems").
const DYNAMIC_UIDS: std::ops::RangeInclusive<u32> = 61184..=65519;

/// Capability numbers (linux/capability.h) of the names the unit may use.
const CAPABILITIES: [(&str, u32); 4] = [
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
];

/// These tests start a real service: on a host whose PID 1 is not systemd they fail, loudly.
fn require_systemd_as_pid1() {
    require_root();
    let comm = std::fs::read_to_string("/proc/1/comm").expect("/proc/1/comm");
    assert!(
        comm.trim() == "systemd" && Path::new("/run/systemd/system").is_dir(),
        "PID 1 is {:?}, not systemd: these tests install and start the systemd unit; run them in \
         a VM whose PID 1 is systemd (`cargo xtask vm-test`)",
        comm.trim()
    );
}

/// The value of `key = …` in the unit (the last one, as systemd reads it).
fn unit_setting(key: &str) -> &'static str {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .unwrap_or_else(|| panic!("{key}= not in the unit"))
        .trim()
}

/// The capability mask of the unit's `CapabilityBoundingSet=`.
fn unit_bounding_set() -> u64 {
    unit_setting("CapabilityBoundingSet")
        .split_whitespace()
        .map(|name| {
            let (_, bit) = CAPABILITIES
                .iter()
                .find(|(known, _)| *known == name)
                .unwrap_or_else(|| panic!("capability {name} not in this test's table"));
            1u64 << bit
        })
        .fold(0, |mask, bit| mask | bit)
}

/// A capability mask by name, for messages.
fn capability_names(mask: u64) -> String {
    let names: Vec<String> = (0..64)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| {
            CAPABILITIES
                .iter()
                .find(|(_, known)| *known == bit)
                .map_or_else(|| format!("cap{bit}"), |(name, _)| (*name).to_owned())
        })
        .collect();
    format!("{mask:#x} [{}]", names.join(" "))
}

/// The daemon's address: `listen` of the installed config.
fn listen_addr() -> SocketAddr {
    CONFIG
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))
        .expect("listen in deploy/daemon.toml")
        .trim_matches('"')
        .parse()
        .expect("listen address")
}

/// `RestartSec=` of the unit.
fn restart_sec() -> Duration {
    let value = unit_setting("RestartSec");
    Duration::from_secs(
        value
            .trim_end_matches('s')
            .parse()
            .unwrap_or_else(|_| panic!("RestartSec={value}: seconds expected")),
    )
}

/// Runs `program args`, which must succeed; its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The unit's log of this boot, for failure messages.
fn journal() -> String {
    Command::new("journalctl")
        .args([
            "-b",
            "-u",
            "memtrace",
            "--no-pager",
            "-o",
            "short-monotonic",
        ])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_else(|err| format!("(journalctl: {err})"))
}

/// `systemctl show -p …` of the unit.
fn show(properties: &[&str]) -> HashMap<String, String> {
    run(
        "systemctl",
        &["show", "-p", &properties.join(","), "memtrace.service"],
    )
    .lines()
    .filter_map(|l| l.split_once('='))
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn main_pid() -> u32 {
    show(&["MainPID"])["MainPID"].parse().expect("MainPID")
}

/// The README's install steps (the `sh` block after "Install on one host under systemd").
fn readme_install_steps() -> Vec<&'static str> {
    let section = README
        .split_once("Install on one host under systemd")
        .expect("README: no \"Install on one host under systemd\"")
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("README: no sh block of install steps")
        .0;
    block.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// memtrace installed and started by the README's steps; on drop stopped, disabled, every
/// installed file removed and the sysctl restored.
struct Installed {
    paranoid_before: String,
    state_dir_existed: bool,
}

impl Installed {
    fn by_the_readme() -> Self {
        for path in INSTALLED {
            assert!(
                !Path::new(path).exists(),
                "{path} exists: refusing to overwrite an installed memtrace"
            );
        }
        let paranoid_before = std::fs::read_to_string(PARANOID).expect("perf_event_paranoid");
        let installed = Self {
            paranoid_before,
            state_dir_existed: Path::new(STATE_DIR).exists(),
        };
        // A checkout as the README assumes it: the committed files, and the built binary where
        // `cargo build --release` leaves it.
        let checkout = tempfile::tempdir().expect("checkout tempdir");
        for (path, text) in DEPLOY_FILES {
            let dest = checkout.path().join(path);
            std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
            std::fs::write(dest, text).expect("write deploy file");
        }
        let release = checkout.path().join("target/release");
        std::fs::create_dir_all(&release).expect("mkdir target/release");
        std::fs::copy(memtrace_bin(), release.join("memtrace")).expect("copy memtrace");
        for step in readme_install_steps() {
            let out = Command::new("sh")
                .args(["-e", "-c", step])
                .current_dir(checkout.path())
                .output()
                .expect("sh");
            assert!(
                out.status.success(),
                "README install step `{step}`: {}\n{}{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                journal()
            );
        }
        let paranoid = std::fs::read_to_string(PARANOID).expect("perf_event_paranoid");
        assert_eq!(
            paranoid.trim(),
            "2",
            "60-memtrace.conf installed, yet perf_event_paranoid is {paranoid}"
        );
        installed
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("systemctl").args(args).output();
        };
        quiet(&["disable", "--now", "memtrace.service"]);
        for path in INSTALLED {
            let _ = std::fs::remove_file(path);
        }
        let _ = std::fs::remove_dir("/etc/memtrace");
        quiet(&["daemon-reload"]);
        quiet(&["reset-failed", "memtrace.service"]);
        if !self.state_dir_existed {
            let _ = std::fs::remove_file(STATE_DIR);
            let _ = std::fs::remove_dir_all("/var/lib/private/memtrace");
        }
        let _ = std::fs::write(PARANOID, self.paranoid_before.trim());
    }
}

/// Polls `/readyz` until 200; how long it took. On timeout: the last answer and the journal.
fn wait_ready(addr: SocketAddr, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (status, body) = get(addr, "/readyz");
        if status == 200 {
            assert_eq!(body, "ready");
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "not ready within {within:?} (without --allow-degraded: every family must attach): \
             last /readyz {status} {body:?}\n{}",
            journal()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The kernel's view of the unit's main process `pid`: a dynamic user that /etc/passwd does not
/// know, exactly the unit's capabilities (less what the daemon drops after attach), no_new_privs,
/// and its state directory. Returns the uid.
fn assert_sandboxed(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let ids = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .split_whitespace()
            .map(|id| id.parse().expect("id"))
            .collect()
    };
    let uids = ids("Uid:");
    let uid = uids[0];
    assert!(
        uids.iter().all(|&u| u == uid) && ids("Gid:").iter().all(|&g| g == uid),
        "real, effective, saved and fs ids all the dynamic user's: {uids:?}"
    );
    assert!(
        DYNAMIC_UIDS.contains(&uid),
        "uid {uid} not in systemd's dynamic range {DYNAMIC_UIDS:?}"
    );
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        assert!(
            fields.first() != Some(&"memtrace") && fields.get(2) != Some(&uid.to_string().as_str()),
            "a dynamic user is in no passwd file, yet: {line}"
        );
    }
    // systemd allocated it for this unit (the guest has no nss-systemd to ask by name).
    assert_eq!(
        show(&["UID"])["UID"],
        uid.to_string(),
        "the unit's dynamic UID"
    );

    let kept = expected_kept();
    let bounding = unit_bounding_set();
    let threads = thread_privileges(pid);
    assert!(threads.len() > 1, "the runtime's threads too: {threads:?}");
    for &(inheritable, permitted, effective, bound, ambient, no_new_privs) in &threads {
        let describe = format!(
            "CapInh {} CapPrm {} CapEff {} CapBnd {} CapAmb {} NoNewPrivs {no_new_privs}; \
             expected kept {}, bounding (the unit's) {}",
            capability_names(inheritable),
            capability_names(permitted),
            capability_names(effective),
            capability_names(bound),
            capability_names(ambient),
            capability_names(kept),
            capability_names(bounding),
        );
        assert_eq!(
            (
                inheritable,
                permitted,
                effective,
                bound,
                ambient,
                no_new_privs
            ),
            (0, kept, kept, bounding, 0, true),
            "{describe}"
        );
    }

    // StateDirectory= with DynamicUser=: a link into /var/lib/private, owned by the user.
    let link = std::fs::read_link(STATE_DIR).expect("the state directory is a symlink");
    assert_eq!(link, PathBuf::from("private/memtrace"));
    let meta = std::fs::metadata("/var/lib/private/memtrace").expect("state dir");
    assert!(meta.is_dir());
    assert_eq!(meta.uid(), uid, "state directory owner");
    uid
}

/// Runs the workload's touch loop and polls `/metrics` until its minor faults, as the kernel
/// counts them, are served in `memtrace_process_page_faults_total`. The loop's faults are user
/// page-fault exceptions, counted by the task sampler (the kernel's own per-task counter) and by
/// the per-fault hooks it falls back to alike; a fault the kernel counts outside an exception
/// (e.g. while exec copies the arguments) only by the sampler, so on the fallback (6.1: the
/// sampler needs BTF) only the loop's are required.
fn assert_workload_faults_served(addr: SocketAddr, workload: &mut Workload) {
    let (before, _) = proc_faults(workload.pid());
    workload.run();
    let (after, _) = proc_faults(workload.pid());
    let touch_loop = after - before;
    assert!(touch_loop > 0, "the touch loop took no fault");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(addr, "/metrics");
        let served: f64 = samples(&body, "memtrace_process_page_faults_total")
            .iter()
            .filter(|(labels, _)| {
                labels.contains(r#"comm="memtrace-worklo""#) && labels.contains(r#"type="minor""#)
            })
            .map(|(_, v)| v)
            .sum();
        if status == 200 && served >= touch_loop as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics ({status}) serves {served} minor faults of the workload; its touch loop took \
             {touch_loop} (the kernel counts {after} in all)"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `systemctl stop`: inactive, its own clean exit (status 0 after SIGTERM), no SIGKILL.
fn assert_stops_cleanly() -> Duration {
    let start = Instant::now();
    run("systemctl", &["stop", "memtrace.service"]);
    let took = start.elapsed();
    let state = show(&["ActiveState", "Result", "ExecMainCode", "ExecMainStatus"]);
    let expected: HashMap<String, String> = [
        ("ActiveState", "inactive"),
        ("Result", "success"),
        // CLD_EXITED: it exited by itself (a death by signal would be CLD_KILLED, 2).
        ("ExecMainCode", "1"),
        ("ExecMainStatus", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let log = journal();
    assert_eq!(state, expected, "after systemctl stop:\n{log}");
    assert!(
        !log.contains("Killing"),
        "stop needed SIGKILL (the daemon ignored SIGTERM):\n{log}"
    );
    took
}

#[test]
#[ignore = "needs systemd as PID 1: cargo xtask vm-test runs it"]
fn unit_installed_as_documented_runs_sandboxed_serves_metrics_and_stops_cleanly() {
    require_systemd_as_pid1();
    let _serial = serial();
    let installed = Installed::by_the_readme();
    let addr = listen_addr();
    let start = wait_ready(addr, Duration::from_secs(180));
    let pid = main_pid();
    let uid = assert_sandboxed(pid);

    let mut workload = Workload::start(&["touch-anon", "20000"]);
    assert_workload_faults_served(addr, &mut workload);
    assert!(workload.finish().success());

    let stop = assert_stops_cleanly();
    eprintln!(
        "systemd: ready {start:.1?} after `systemctl enable --now` (pid {pid}, uid {uid}); \
         `systemctl stop` took {stop:.1?}"
    );
    drop(installed);
    assert!(!Path::new(INSTALLED[1]).exists());
}

#[test]
#[ignore = "needs systemd as PID 1: cargo xtask vm-test runs it"]
fn unit_restarts_after_kill_9_and_stops_cleanly_after() {
    require_systemd_as_pid1();
    let _serial = serial();
    let _installed = Installed::by_the_readme();
    let addr = listen_addr();
    let start = wait_ready(addr, Duration::from_secs(180));
    let killed = main_pid();

    // SAFETY: a plain kill(2) of the unit's main process, as the OOM killer or a crash would.
    assert_eq!(unsafe { libc::kill(killed as i32, libc::SIGKILL) }, 0);
    let killed_at = Instant::now();
    // RestartSec, then a start like the first one (twice its time, and 10 s, of slack: the VM
    // runs under TCG on cores shared with other work).
    let bound = restart_sec() + start * 2 + Duration::from_secs(10);
    let restarted = loop {
        let pid = main_pid();
        if pid != 0 && pid != killed && get(addr, "/metrics").0 == 200 {
            break pid;
        }
        assert!(
            killed_at.elapsed() < bound,
            "no new main process serving /metrics within {bound:?} of kill -9 (Restart=on-failure):\n{}",
            journal()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let back = killed_at.elapsed();
    // Served before its first sample; ready once sampled.
    wait_ready(addr, Duration::from_secs(60));
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        !samples(&body, "memtrace_process_page_faults_total").is_empty(),
        "/metrics after the restart serves no memtrace metrics: {body}"
    );
    assert_eq!(show(&["NRestarts"])["NRestarts"], "1", "{}", journal());
    assert_sandboxed(restarted);

    let stop = assert_stops_cleanly();
    eprintln!(
        "systemd: ready {start:.1?} after start; after kill -9 of {killed}, {restarted} served \
         /metrics {back:.1?} later (RestartSec {:?}); stop took {stop:.1?}",
        restart_sec()
    );
}
