//! The cross-node mode end to end (issue 11, "Tests"): three nodes on one machine (see
//! `fleet.rs`), each with its own daemon, real workloads in each node's cgroup, a real
//! Prometheus scraping the three daemons, and an agent-mode Prometheus remote-writing to a
//! second one.
//!
//! The scenario (sizes for a 2-core machine shared with builds):
//!
//! | node (its RAM) | workloads, each in its own child cgroup |
//! |---|---|
//! | node-a (512 MiB) | 2 small `redis-server`, `e2e-steady`, `e2e-leaky` (flat), `e2e-oomer` (32 MiB cgroup, OOM-killed 3×) |
//! | node-b (512 MiB) | the big `redis-server` (4× the keys, ≥ 64 MiB anon) and a small one, `e2e-steady`, `e2e-leaky` **leaking 512 KiB/s**, `e2e-oomer` (3×) |
//! | node-c (416 MiB) | 2 small `redis-server`, `e2e-steady`, `e2e-leaky` (flat), `e2e-hog` (grows 4 MiB/s) next to `e2e-victim` (rewrites a 512 MiB file: stalls in memcg reclaim on writeback) |
//!
//! `e2e-*` are the workload binary under other names (their comm). `e2e-steady` is the healthy
//! control: nothing may be reported for it. The leaker stays under 64 MiB so that it is a leak,
//! not a hot shard.
//!
//! The test first checks every pattern through the daemons' own APIs (`/api/v1/snapshot`,
//! `/api/v1/oom`, `/metrics`), so that a diagnostic that misses a problem is told apart from a
//! scenario that failed to plant it; then `memtrace cluster diagnose` (JSON and the text views),
//! the Prometheus rules in a server and in a receiver fed by an agent, and a node taken down.
//!
//! Wall time, about 2 min on the 2-core machine (up to 3.5 min): ~40 s to plant the problems, ~50 s of
//! diagnose window (daemons at `--history-step 1s`, `cluster diagnose --window 45s`), up to
//! 3 min for the alerts (`for:` 5 s, the rules' 1 h window 3 min) and ~15 s of node-down checks.
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use memtrace_api::{
    OomResponse, ProcessView, Snapshot,
    diagnose::{DiagnoseReport, Finding, FindingKind},
    workloads::{OomScope, WorkloadsResponse},
};
use memtrace_tests::{Workload, memtrace_bin};

use crate::{
    daemon::{get, samples},
    fleet::{Fleet, redis},
    prometheus::{Prometheus, Setup},
    support::serial,
};

const MIB: u64 = 1 << 20;
/// Value size and key counts of `DEBUG POPULATE`: the big replica holds 4× the data.
const REDIS_VALUE_BYTES: &str = "128";
const SMALL_REDIS_KEYS: &str = "100000";
const BIG_REDIS_KEYS: &str = "400000";
/// The leaker: 256 KiB every 500 ms.
const LEAK_STEP_KIB: &str = "256";
const LEAK_DELAY_MS: &str = "500";
const OOMER_LIMIT: u64 = 32 * MIB;
const OOM_KILLS_PER_NODE: usize = 3;
/// The hog on node-c grows 1 MiB every 250 ms (4 MiB/s, ~300 MiB over the test) next to the
/// victim, which keeps rewriting a file larger than the node's 416 MiB: its dirty page cache
/// must be written back before it can be reclaimed, so it stalls in memcg reclaim from the start,
/// whatever the CPU load (rereading a clean file stalled 0.03–0.2 s/s depending on load).
const HOG_STEP_KIB: &str = "1024";
const HOG_DELAY_MS: &str = "250";
const VICTIM_FILE_BYTES: usize = 512 << 20;

/// One process of the scenario on a node.
#[derive(Clone, Debug)]
struct Instance {
    node: String,
    cgroup: String,
    pid: u32,
}

struct Scenario {
    /// Dropped first (stdin closed); the fleet then kills whatever is left in its cgroups.
    _workloads: Vec<Workload>,
    redis_small: Vec<Instance>,
    redis_big: Instance,
    steady: Vec<Instance>,
    leaky_flat: Vec<Instance>,
    leaker: Instance,
    hog: Instance,
    victim: Instance,
    /// The OOM storm's victims (node-a's first, then node-b's, in turn).
    oom_victims: Vec<Instance>,
    /// When the leaker, the hog and the victim started.
    problems_since: Instant,
    fleet: Fleet,
}

/// Daemon flags beyond today's: the node's identity and scope, and a history fine enough for a
/// test of a minute or two (one point a second).
fn agreed_daemon_args(node: &crate::fleet::Node) -> Vec<String> {
    [
        "--node-name",
        &node.name,
        "--cgroup-root",
        &node.root.path,
        "--history-step",
        "1s",
        "--history-points",
        "600",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn snapshot(addr: SocketAddr) -> Snapshot {
    let (status, body) = get(addr, "/api/v1/snapshot");
    assert_eq!(status, 200, "snapshot from {addr}: {body}");
    serde_json::from_str(&body).expect("snapshot JSON")
}

fn process<'a>(snapshot: &'a Snapshot, instance: &Instance) -> &'a ProcessView {
    snapshot
        .processes
        .iter()
        .find(|p| p.pid == instance.pid)
        .unwrap_or_else(|| panic!("{instance:?} not in the snapshot"))
}

fn anon(snapshot: &Snapshot, instance: &Instance) -> u64 {
    process(snapshot, instance).counters.rss_anon_bytes
}

impl Scenario {
    /// The fleet with its daemons, `before_workloads(fleet)` (e.g. Prometheus, to see the
    /// problems begin), then the workloads.
    fn start<T>(
        daemon_args: impl Fn(&crate::fleet::Node) -> Vec<String>,
        before_workloads: impl FnOnce(&Fleet) -> T,
    ) -> (Self, T) {
        let mut fleet = Fleet::new(&[
            ("node-a", 512 * MIB),
            ("node-b", 512 * MIB),
            ("node-c", 416 * MIB),
        ]);
        fleet.start_daemons(daemon_args);
        let before = before_workloads(&fleet);
        let mut workloads = Vec::new();

        // redis-server replicas: two a node, the first of node-b with 4× the keys.
        let mut redis_small = Vec::new();
        let mut redis_big = None;
        for name in ["node-a", "node-b", "node-c"] {
            for (index, port) in [(1, 6379u16), (2, 6380)] {
                let node = fleet.node_mut(name);
                let cgroup = node.add_cgroup(&format!("redis-{index}"), None);
                let dir = tempfile::tempdir().expect("redis dir");
                let pid = node.start_redis(&cgroup, port, dir.path());
                let big = name == "node-b" && index == 1;
                let keys = if big {
                    BIG_REDIS_KEYS
                } else {
                    SMALL_REDIS_KEYS
                };
                let addr = SocketAddr::from((node.ip, port));
                let reply = redis(addr, &["DEBUG", "POPULATE", keys, "key", REDIS_VALUE_BYTES])
                    .expect("DEBUG POPULATE");
                assert_eq!(reply, "+OK", "DEBUG POPULATE on {addr}");
                let instance = Instance {
                    node: name.to_owned(),
                    cgroup,
                    pid,
                };
                if big {
                    redis_big = Some(instance);
                } else {
                    redis_small.push(instance);
                }
            }
        }

        // The healthy control and the flat replicas of the leaky workload: 16 MiB each.
        let mut steady = Vec::new();
        let mut leaky_flat = Vec::new();
        for node in ["node-a", "node-b", "node-c"] {
            let (instance, mut workload) =
                start_workload(&mut fleet, node, "e2e-steady", &["touch-anon", "4096"]);
            workload.run();
            workloads.push(workload);
            steady.push(instance);
            if node != "node-b" {
                let (instance, mut workload) =
                    start_workload(&mut fleet, node, "e2e-leaky", &["touch-anon", "4096"]);
                workload.run();
                workloads.push(workload);
                leaky_flat.push(instance);
            }
        }
        let problems_since = Instant::now();
        let (leaker, mut workload) = start_workload(
            &mut fleet,
            "node-b",
            "e2e-leaky",
            &["slow-hog", LEAK_STEP_KIB, LEAK_DELAY_MS],
        );
        workload.go();
        workloads.push(workload);

        // node-c: the victim rereads a file its cgroup's share of the node cannot cache, while
        // the hog takes most of the node.
        let file = fleet.dir.path().join("victim-data");
        write_uncached(&file, VICTIM_FILE_BYTES);
        let file = file.to_str().expect("UTF-8 path").to_owned();
        let (victim, mut workload) =
            start_workload(&mut fleet, "node-c", "e2e-victim", &["rewrite", &file]);
        workload.go();
        workloads.push(workload);
        let (hog, mut workload) = start_workload(
            &mut fleet,
            "node-c",
            "e2e-hog",
            &["slow-hog", HOG_STEP_KIB, HOG_DELAY_MS],
        );
        workload.go();
        workloads.push(workload);

        // The OOM storm: the same workload OOM-killed in its 32 MiB cgroup on node-a and node-b,
        // a few times each, within seconds.
        let program = fleet.program("e2e-oomer");
        let mut oomer_cgroups = Vec::new();
        for node in ["node-a", "node-b"] {
            let node = fleet.node_mut(node);
            let cgroup = node.add_cgroup("e2e-oomer", Some(OOMER_LIMIT));
            oomer_cgroups.push((node.name.clone(), cgroup));
        }
        let mut oom_victims = Vec::new();
        for _ in 0..OOM_KILLS_PER_NODE {
            for (node, cgroup) in &oomer_cgroups {
                let dir = fleet.node(node).cgroup_dir(cgroup);
                let mut oomer = Workload::start_program_in(&program, &dir, &["hog"]);
                let pid = oomer.pid();
                oomer.go();
                let status = oomer.finish();
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(libc::SIGKILL),
                    "{node}: the oomer was not OOM-killed: {status:?}"
                );
                oom_victims.push(Instance {
                    node: node.clone(),
                    cgroup: cgroup.clone(),
                    pid,
                });
            }
            // Apart enough for a 1 s sampler to see each life.
            std::thread::sleep(Duration::from_millis(1500));
        }

        let scenario = Self {
            _workloads: workloads,
            redis_small,
            redis_big: redis_big.expect("node-b's big replica"),
            steady,
            leaky_flat,
            leaker,
            hog,
            victim,
            oom_victims,
            problems_since,
            fleet,
        };
        (scenario, before)
    }

    fn addr(&self, node: &str) -> SocketAddr {
        self.fleet.node(node).daemon_addr()
    }
}

/// Start the workload binary as `comm` in a child cgroup `comm` of `node`.
fn start_workload(
    fleet: &mut Fleet,
    node: &str,
    comm: &str,
    args: &[&str],
) -> (Instance, Workload) {
    let program = fleet.program(comm);
    let node = fleet.node_mut(node);
    let cgroup = node.add_cgroup(comm, None);
    let workload = Workload::start_program_in(&program, &node.cgroup_dir(&cgroup), args);
    let instance = Instance {
        node: node.name.clone(),
        cgroup,
        pid: workload.pid(),
    };
    (instance, workload)
}

/// `len` bytes of data in `path`, written and then dropped from the page cache, so that whoever
/// reads it next allocates its page cache (in their own cgroup).
pub(crate) fn write_uncached(path: &std::path::Path, len: usize) {
    use std::{io::Write as _, os::fd::AsRawFd as _};
    let mut file = std::fs::File::create(path).expect("create data file");
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    for _ in 0..len / chunk.len() {
        file.write_all(&chunk).expect("write data file");
    }
    file.sync_all().expect("fsync data file");
    // SAFETY: a valid fd; whole-file advice.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
}

/// Every pattern of the scenario, as today's daemons report it: each node's own daemon sees
/// its workloads (today every daemon sees the whole machine, so each is looked up in its own
/// node's cgroups).
fn check_patterns_through_todays_apis(scenario: &Scenario) {
    // Hot shard: the big replica holds ≥ 64 MiB anon and ≥ 3× every small one.
    let big_snapshot = snapshot(scenario.addr("node-b"));
    let big = anon(&big_snapshot, &scenario.redis_big);
    assert_eq!(
        process(&big_snapshot, &scenario.redis_big)
            .cgroup
            .as_deref(),
        Some(scenario.redis_big.cgroup.as_str())
    );
    assert!(big >= 64 * MIB, "big replica anon {} MiB", big / MIB);
    for small in &scenario.redis_small {
        let snapshot = snapshot(scenario.addr(&small.node));
        let small_anon = anon(&snapshot, small);
        assert_eq!(process(&snapshot, small).comm, "redis-server");
        assert!(
            big >= 3 * small_anon,
            "big replica {} MiB is not 3× {small:?}'s {} MiB",
            big / MIB,
            small_anon / MIB
        );
    }
    let metrics = get(scenario.addr("node-b"), "/metrics").1;
    let big_series = samples(&metrics, "memtrace_process_rss_bytes")
        .into_iter()
        .find(|(labels, _)| {
            labels.contains(r#"comm="redis-server""#)
                && labels.contains(&format!(r#"cgroup="{}""#, scenario.redis_big.cgroup))
                && labels.contains(r#"type="anon""#)
        });
    assert!(
        big_series
            .as_ref()
            .is_some_and(|(_, v)| *v >= (64 * MIB) as f64),
        "node-b's /metrics lacks the big replica's anon RSS ≥ 64 MiB: {big_series:?}"
    );

    // Leak: over 10 s the leaker grows (~5 MiB), its other replicas and the control stay flat;
    // the victim, meanwhile, stalls in reclaim next to the hog.
    let flat: Vec<&Instance> = scenario.leaky_flat.iter().chain(&scenario.steady).collect();
    let before: Vec<Snapshot> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| snapshot(scenario.addr(n)))
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let after: Vec<Snapshot> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| snapshot(scenario.addr(n)))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let index = |node: &str| {
        ["node-a", "node-b", "node-c"]
            .iter()
            .position(|n| *n == node)
            .expect("node")
    };
    let leaker_growth = anon(&after[1], &scenario.leaker) - anon(&before[1], &scenario.leaker);
    assert!(
        leaker_growth >= 4 * MIB,
        "the leaker grew only {} KiB in {elapsed:.1} s",
        leaker_growth >> 10
    );
    let leaker_now = anon(&after[1], &scenario.leaker);
    assert!(
        leaker_now < 64 * MIB,
        "the leaker reached {} MiB: it would be a hot shard too (shorten the scenario)",
        leaker_now / MIB
    );
    for instance in &flat {
        let i = index(&instance.node);
        let (was, is) = (anon(&before[i], instance), anon(&after[i], instance));
        assert!(
            was.abs_diff(is) <= MIB,
            "{instance:?} is not flat: {} → {} KiB",
            was >> 10,
            is >> 10
        );
    }

    // Noisy neighbour: the hog grows (4 MiB/s), the victim stalls ≥ 0.05 s/s in memcg reclaim.
    let hog_growth = anon(&after[2], &scenario.hog) - anon(&before[2], &scenario.hog);
    assert!(
        hog_growth >= 16 * MIB,
        "the hog grew only {} MiB in {elapsed:.1} s",
        hog_growth / MIB
    );
    let hog = anon(&after[2], &scenario.hog);
    let stalled_ns = process(&after[2], &scenario.victim).counters.reclaim_ns
        - process(&before[2], &scenario.victim).counters.reclaim_ns;
    let stall_per_sec = stalled_ns as f64 / 1e9 / elapsed;
    assert!(
        stall_per_sec >= 0.05,
        "the victim stalled {stall_per_sec:.3} s/s in reclaim"
    );
    assert!(
        process(&after[2], &scenario.victim)
            .rates
            .reclaim_stall_seconds_per_sec
            > 0.0
    );
    eprintln!(
        "scenario as the daemons see it: big replica {} MiB anon, leaker +{} KiB in {elapsed:.1} s \
         (now {} MiB), hog {} MiB, victim stalled {stall_per_sec:.3} s/s",
        big / MIB,
        leaker_growth >> 10,
        leaker_now / MIB,
        hog / MIB
    );

    // OOM storm: each node's daemon recorded its node's kills, in the oomer's 32 MiB cgroup.
    for node in ["node-a", "node-b"] {
        let expected: BTreeSet<u32> = scenario
            .oom_victims
            .iter()
            .filter(|v| v.node == node)
            .map(|v| v.pid)
            .collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, body) = get(scenario.addr(node), "/api/v1/oom");
            assert_eq!(status, 200);
            let ooms: OomResponse = serde_json::from_str(&body).expect("OOM JSON");
            let cgroup = &scenario
                .oom_victims
                .iter()
                .find(|v| v.node == node)
                .expect("a victim")
                .cgroup;
            let here: Vec<_> = ooms
                .ooms
                .iter()
                .filter(|o| o.victim_cgroup.as_deref() == Some(cgroup.as_str()))
                .collect();
            let seen: BTreeSet<u32> = here.iter().map(|o| o.victim_pid).collect();
            if seen == expected {
                for oom in &here {
                    assert_eq!(oom.victim_comm, "e2e-oomer");
                    assert_eq!(oom.cgroup_limit_bytes, Some(OOMER_LIMIT));
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{node}: OOM victims {seen:?} in {cgroup}, expected {expected:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The servers of the scale path, kept running while the test looks at them.
struct ScalePath {
    /// Scrapes the daemons and evaluates the rules.
    server: Prometheus,
    /// Scrapes the daemons and remote-writes everything to the receiver.
    _agent: Prometheus,
    /// Evaluates the rules over what the agent wrote.
    receiver: Prometheus,
}

impl ScalePath {
    /// One Prometheus scraping the fleet's daemons; an agent scraping them too and
    /// remote-writing to a receiver. Returns once both servers have every daemon `up`.
    fn start(fleet: &Fleet, rule_files: &[PathBuf]) -> Self {
        let targets = fleet.targets();
        let expected_up: BTreeSet<String> = targets.iter().cloned().collect();
        let every_daemon = |r: &[(serde_json::Value, f64)]| {
            let up: BTreeSet<String> = r
                .iter()
                .filter(|(_, v)| *v == 1.0)
                .filter_map(|(labels, _)| labels["instance"].as_str().map(str::to_owned))
                .collect();
            up == expected_up
        };
        let server = Prometheus::start(&Setup {
            targets: targets.clone(),
            rule_files: rule_files.to_vec(),
            ..Setup::default()
        });
        let receiver = Prometheus::start(&Setup {
            rule_files: rule_files.to_vec(),
            receiver: true,
            ..Setup::default()
        });
        let agent = Prometheus::start(&Setup {
            targets,
            agent: true,
            remote_write: Some(receiver.addr()),
            ..Setup::default()
        });
        let up = r#"up{job="memtrace"}"#;
        server.wait_for(up, Duration::from_secs(30), every_daemon);
        // `up` is written too: the receiver knows every daemon the agent scrapes.
        receiver.wait_for(up, Duration::from_secs(60), every_daemon);
        Self {
            server,
            _agent: agent,
            receiver,
        }
    }

    /// Both servers have the big replica's anon RSS from node-b's daemon.
    fn check_sees_the_big_replica(&self, scenario: &Scenario) {
        let big = format!(
            r#"memtrace_process_rss_bytes{{comm="redis-server",type="anon",cgroup="{}",instance="{}"}}"#,
            scenario.redis_big.cgroup,
            scenario.fleet.node("node-b").target()
        );
        for prometheus in [&self.server, &self.receiver] {
            prometheus.wait_for(&big, Duration::from_secs(30), |r| {
                r.iter().any(|(_, v)| *v >= (64 * MIB) as f64)
            });
        }
    }
}

/// `memtrace cluster diagnose --nodes … -o json`, with the diagnostics' windows shortened to
/// the test's (the thresholds themselves stay the defaults). Returns the report and the time it
/// took.
fn cluster_diagnose(targets: &[String], extra: &[&str]) -> (DiagnoseReport, Duration) {
    let started = Instant::now();
    let output = Command::new(memtrace_bin())
        .args([
            "cluster",
            "diagnose",
            "--nodes",
            &targets.join(","),
            "-o",
            "json",
        ])
        .args(["--window", "45s"])
        .args(extra)
        .output()
        .expect("run memtrace cluster diagnose");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|err| {
        panic!(
            "cluster diagnose -o json: {err}; status {:?}, stdout {stdout}, stderr {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (report, took)
}

/// `memtrace cluster VIEW` in text, as a user reads it: it must succeed (every node answered).
fn cluster_text(view: &str, targets: &[String]) -> String {
    let output = Command::new(memtrace_bin())
        .args(["cluster", view, "--nodes", &targets.join(",")])
        .args(if view == "diagnose" {
            &["--window", "45s"][..]
        } else {
            &[][..]
        })
        .output()
        .expect("run memtrace cluster");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "cluster {view}: {:?}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("$ memtrace cluster {view} --nodes …\n{stdout}");
    stdout
}

/// The workload key and instance name the node's daemon gives the scenario's `instance`.
fn identity(addr: SocketAddr, instance: &Instance) -> (String, String) {
    let (status, body) = get(addr, "/api/v1/workloads?history=0");
    assert_eq!(status, 200, "{body}");
    let summary: WorkloadsResponse = serde_json::from_str(&body).expect("workloads JSON");
    assert_eq!(summary.node.name, instance.node);
    summary
        .workloads
        .iter()
        .flat_map(|w| w.instances.iter().map(move |i| (w, i)))
        .find(|(_, i)| {
            i.instance == format!("pid/{}", instance.pid)
                || i.cgroup.as_deref() == Some(instance.cgroup.as_str())
        })
        .map(|(w, i)| (w.workload.clone(), i.instance.clone()))
        .unwrap_or_else(|| panic!("{instance:?} not in {}'s workloads", instance.node))
}

/// The workload key the node's daemon gave the OOM kill of `victim`.
fn oom_workload(scenario: &Scenario, victim: &Instance) -> String {
    let (status, body) = get(scenario.addr(&victim.node), "/api/v1/workloads?history=0");
    assert_eq!(status, 200, "{body}");
    let summary: WorkloadsResponse = serde_json::from_str(&body).expect("workloads JSON");
    let kill = summary
        .ooms
        .iter()
        .find(|o| o.victim_pid == victim.pid)
        .unwrap_or_else(|| panic!("{victim:?} not in {:#?}", summary.ooms));
    assert_eq!(kill.scope, OomScope::Memcg, "{kill:?}");
    assert_eq!(kill.cgroup_limit_bytes, Some(OOMER_LIMIT), "{kill:?}");
    kill.workload.clone()
}

fn names(finding: &Finding, scenario: &Scenario, instance: &Instance) -> bool {
    let (_, name) = identity(scenario.addr(&instance.node), instance);
    finding
        .instances
        .iter()
        .any(|i| i.node == instance.node && i.instance == name)
}

fn nodes(finding: &Finding) -> BTreeSet<&str> {
    finding.nodes.iter().map(String::as_str).collect()
}

#[test]
fn three_nodes_cluster_diagnose_finds_exactly_the_planted_problems() {
    let _serial = serial();
    let started = Instant::now();
    // The Prometheus rules, with their `for:` shortened to 5 s for the test (the expressions,
    // thresholds and ranges are the shipped ones), in a server scraping the daemons and in a
    // receiver fed by an agent's remote writes, both from before the problems begin.
    let (mut scenario, scale_path) = Scenario::start(agreed_daemon_args, |fleet| {
        ScalePath::start(fleet, &[shortened_rules(fleet)])
    });
    check_patterns_through_todays_apis(&scenario);
    let key = |instance: &Instance| identity(scenario.addr(&instance.node), instance).0;
    let redis_key = key(&scenario.redis_big);
    let leaky_key = key(&scenario.leaker);
    let hog_key = key(&scenario.hog);
    let victim_key = key(&scenario.victim);
    let steady_key = key(&scenario.steady[0]);
    // The OOM victims are gone: their key is the one their daemon gave the kill.
    let oomer_key = oom_workload(&scenario, &scenario.oom_victims[0]);
    assert_eq!(
        oom_workload(&scenario, &scenario.oom_victims[1]),
        oomer_key,
        "one workload on node-a and node-b"
    );

    // Let the leak and the stalls fill the diagnose window (45 s, one history point a second).
    std::thread::sleep(
        (scenario.problems_since + Duration::from_secs(50))
            .saturating_duration_since(Instant::now()),
    );
    let targets = scenario.fleet.targets();
    let (report, _) = cluster_diagnose(&targets, &[]);
    // The text views a user reads (printed for the README's examples), naming what JSON does.
    let text = cluster_text("diagnose", &targets);
    for line in [
        format!("hot_shard  {redis_key}: "),
        format!("leak  {leaky_key}: "),
        format!("oom_storm  {oomer_key}: "),
        format!("noisy_neighbour  {hog_key} on node-c"),
    ] {
        assert!(text.contains(&line), "{line:?} not in:\n{text}");
    }
    assert!(cluster_text("top", &targets).contains("redis-server"));
    let nodes_text = cluster_text("nodes", &targets);
    for node in ["node-a", "node-b", "node-c"] {
        assert!(nodes_text.contains(node), "{node} not in:\n{nodes_text}");
    }
    assert!(cluster_text("oom", &targets).contains("e2e-oomer"));
    assert_eq!(report.coverage.asked, 3);
    assert_eq!(
        report.coverage.answered, 3,
        "{:?}",
        report.coverage.failures
    );
    let findings = &report.findings;
    let of = |kind: FindingKind, workload: &str| -> Vec<&Finding> {
        findings
            .iter()
            .filter(|f| f.kind == kind && f.workload == workload)
            .collect()
    };

    // 1. Hot shard: redis, the big replica on node-b.
    let [hot] = of(FindingKind::HotShard, &redis_key)[..] else {
        panic!("expected one hot_shard for {redis_key}: {findings:#?}")
    };
    assert!(names(hot, &scenario, &scenario.redis_big), "{hot:#?}");
    assert!(nodes(hot).contains("node-b"), "{hot:#?}");
    assert!(hot.verdict.contains("node-b"), "{hot:#?}");
    // 2. Leak: a subset, only the leaker (node-b).
    let [leak] = of(FindingKind::Leak, &leaky_key)[..] else {
        panic!("expected one leak for {leaky_key}: {findings:#?}")
    };
    assert!(names(leak, &scenario, &scenario.leaker), "{leak:#?}");
    assert_eq!(nodes(leak), BTreeSet::from(["node-b"]), "{leak:#?}");
    // The classification, in the verdict or the typed evidence.
    let leak_json = serde_json::to_string(leak).expect("finding JSON");
    assert!(leak_json.contains("subset"), "{leak:#?}");
    // 3. OOM storm: the oomer on node-a and node-b, its cgroup's limit (memcg scope).
    let [storm] = of(FindingKind::OomStorm, &oomer_key)[..] else {
        panic!("expected one oom_storm for {oomer_key}: {findings:#?}")
    };
    assert_eq!(
        nodes(storm),
        BTreeSet::from(["node-a", "node-b"]),
        "{storm:#?}"
    );
    let storm_json = serde_json::to_string(storm).expect("finding JSON");
    assert!(storm_json.contains("memcg"), "{storm:#?}");
    assert!(!storm_json.contains("global"), "{storm:#?}");
    // 4. Noisy neighbour: the hog on node-c.
    let [noisy] = of(FindingKind::NoisyNeighbour, &hog_key)[..] else {
        panic!("expected one noisy_neighbour naming {hog_key}: {findings:#?}")
    };
    assert_eq!(nodes(noisy), BTreeSet::from(["node-c"]), "{noisy:#?}");
    assert!(names(noisy, &scenario, &scenario.hog), "{noisy:#?}");

    // Nothing else, except what the planted problems imply by the diagnostics' own rules: the
    // hog's 300 MiB is growth (a leak of its only instance) and pressure (app or node), the
    // oomer and the victim are under pressure (app or node). Nothing names the control.
    for finding in findings {
        let expected = [
            (FindingKind::HotShard, &redis_key),
            (FindingKind::Leak, &leaky_key),
            (FindingKind::OomStorm, &oomer_key),
            (FindingKind::NoisyNeighbour, &hog_key),
        ]
        .contains(&(finding.kind, &finding.workload));
        let implied = match finding.kind {
            FindingKind::Leak => {
                finding.workload == hog_key && nodes(finding) == BTreeSet::from(["node-c"])
            }
            FindingKind::AppOrNode => {
                [&hog_key, &victim_key, &oomer_key].contains(&&finding.workload)
            }
            _ => false,
        };
        assert!(expected || implied, "unexpected finding {finding:#?}");
        assert_ne!(
            finding.workload, steady_key,
            "a finding for the healthy control: {finding:#?}"
        );
        assert!(
            finding.instances.iter().all(|i| scenario
                .steady
                .iter()
                .all(|s| !names_instance(&scenario, s, i))),
            "a finding naming the healthy control: {finding:#?}"
        );
    }

    // The rules fire for the same planted problems, in both servers, and never for the control.
    // Each alert fires while its window holds its problem (the hog's growth leaves a 3 min window
    // later than the leak is judged), so what fired is gathered over the polls.
    scale_path.check_sees_the_big_replica(&scenario);
    let servers = [&scale_path.server, &scale_path.receiver];
    // Each planted problem by its own alert.
    let expected = [
        ("MemtraceHotShard", &redis_key),
        ("MemtraceLeak", &leaky_key),
        ("MemtraceOomStorm", &oomer_key),
        ("MemtraceNoisyNeighbour", &hog_key),
    ];
    let mut fired: [BTreeSet<(String, String)>; 2] = Default::default();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        for (prometheus, fired) in servers.iter().zip(&mut fired) {
            for alert in prometheus.alerts() {
                let labels = &alert["labels"];
                if alert["state"] == "firing"
                    && let Some(workload) = labels["workload"].as_str()
                {
                    let name = labels["alertname"].as_str().unwrap_or_default();
                    fired.insert((name.to_owned(), workload.to_owned()));
                }
            }
        }
        for fired in &fired {
            assert!(
                fired.iter().all(|(_, w)| *w != steady_key),
                "an alert for the healthy control: {fired:?}"
            );
        }
        let all_fired = |fired: &BTreeSet<(String, String)>| {
            expected
                .iter()
                .all(|(alert, key)| fired.iter().any(|(a, w)| a == alert && w == *key))
        };
        if fired.iter().all(all_fired) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alerts for {expected:?} not all fired within 180 s: server {:?}, receiver {:?}",
            fired[0],
            fired[1]
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("fired in the server: {:?}", fired[0]);
    drop(scale_path);

    // A node taken down mid-run: reported unavailable within the deadline, the others served.
    scenario.fleet.node("node-c").link_down();
    let (report, took) = cluster_diagnose(&targets, &["--timeout", "2s", "--deadline", "10s"]);
    assert!(
        took < Duration::from_secs(12),
        "diagnose took {took:?} with node-c down"
    );
    assert_eq!(report.coverage.answered, 2, "{report:#?}");
    let [down] = &report.coverage.failures[..] else {
        panic!("expected node-c's failure: {:#?}", report.coverage)
    };
    assert_eq!(down.target, scenario.fleet.node("node-c").target());
    assert!(down.elapsed_seconds <= 10.0, "{down:?}");
    assert!(!down.error.is_empty());
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::OomStorm),
        "node-a and node-b's findings are still served: {report:#?}"
    );
    // …then its daemon killed and the link back: refused at once, and said so.
    scenario.fleet.node_mut("node-c").kill_daemon();
    scenario.fleet.node("node-c").link_up();
    // Right after the link comes back the kernel may still hold the neighbour entry it failed
    // to resolve while the link was down ("no route to host"); within seconds it is "refused".
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (report, took) = cluster_diagnose(&targets, &["--timeout", "2s", "--deadline", "10s"]);
        assert!(
            took < Duration::from_secs(5),
            "diagnose took {took:?} with node-c unreachable or refusing"
        );
        assert_eq!(report.coverage.answered, 2, "{report:#?}");
        let [refused] = &report.coverage.failures[..] else {
            panic!("expected node-c's failure: {:#?}", report.coverage)
        };
        if refused.error.contains("refused") {
            break;
        }
        assert!(
            refused.error.contains("no route to host") && Instant::now() < deadline,
            "{refused:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "three-node diagnose scenario took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn names_instance(
    scenario: &Scenario,
    ours: &Instance,
    reported: &memtrace_api::diagnose::InstanceRef,
) -> bool {
    reported.node == ours.node && reported.instance == identity(scenario.addr(&ours.node), ours).1
}

/// `deploy/prometheus/memtrace-rules.yml` scaled to the test, in the fleet's directory: every
/// `for:` 5 s, groups evaluated every 5 s, the 1 h window 3 min and its 30 min halves 90 s. The expressions and thresholds
/// (per hour, per second, bytes) are the shipped ones; the 5 min OOM storm window is kept.
pub(crate) fn shortened_rules(fleet: &Fleet) -> PathBuf {
    let shipped =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/memtrace-rules.yml");
    let rules = std::fs::read_to_string(&shipped)
        .unwrap_or_else(|err| panic!("{}: {err}", shipped.display()));
    // The rule groups evaluate every minute in production; over a 3 min window that would leave
    // the leak's 90 s halves one recorded point each.
    let windows = [
        ("interval: 1m", "interval: 5s"),
        ("[1h]", "[3m]"),
        ("offset 1h", "offset 3m"),
        ("[30m]", "[90s]"),
        ("offset 30m", "offset 90s"),
    ];
    let shortened: String = rules
        .lines()
        .map(|line| match line.split_once("for:") {
            Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 5s\n"),
            _ => {
                let line = windows
                    .iter()
                    .fold(line.to_owned(), |line, (from, to)| line.replace(from, to));
                format!("{line}\n")
            }
        })
        .collect();
    let path = fleet.dir.path().join("memtrace-rules.yml");
    std::fs::write(&path, shortened).expect("write rules");
    path
}
