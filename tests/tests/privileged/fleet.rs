//! Several "nodes" on one machine, for the cross-node tests. A node is:
//! - a network namespace joined to the root namespace by a veth pair (test addresses only:
//!   10.231.0.0/24, one /30 per node);
//! - a memory cgroup (v1 or v2) whose limit stands for the node's RAM, with each workload in a
//!   child cgroup of it;
//! - a `memtrace daemon` inside the namespace, listening on the namespace's address.
//!
//! Everything is undone on drop, also after a failed test (processes killed, cgroups removed,
//! namespaces and links deleted); what an earlier run killed before its drops left behind is
//! removed first. Only the network namespace is entered (`setns` between fork and exec), not
//! `ip netns exec`: that also remounts `/sys`, hiding the cgroup and tracefs mounts the daemon
//! reads.
use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use memtrace_tests::{cgroup::Layout, memtrace_bin, require_root, workload_bin};

use crate::daemon::get;

/// Names of everything a run creates start with this, and end with the test process's pid.
const PREFIX: &str = "mte2e";
const NETNS_DIR: &str = "/run/netns";
/// The daemons' port (each namespace has its own address).
pub(crate) const DAEMON_PORT: u16 = 9847;

/// Run `ip ARGS`; a failure is the test's failure.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// The pid of the test run that named `name` (`mte2e-…-<pid>`).
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.rsplit_once('-')?.1.parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove the namespaces and cgroups of earlier runs whose test process is gone.
fn remove_stale() {
    let stale = |name: &str| owner_pid(name).is_some_and(|pid| !alive(pid));
    for entry in fs::read_dir(NETNS_DIR).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if stale(&name) {
            let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        }
    }
    for entry in fs::read_dir(Layout::host().memory_root())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if stale(&name) {
            remove_cgroup_tree(&entry.path());
        }
    }
}

/// Kill every process of the cgroup `dir` and below (all started by a test run), then remove the
/// cgroups, children first.
fn remove_cgroup_tree(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: signalling and reaping by pid; a pid that is not our child only makes
            // waitpid return ECHILD.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
        if fs::remove_dir(dir).is_ok() || !dir.exists() || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A network namespace, deleted on drop (with the veth end inside it, which takes its peer).
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(name: String) -> Self {
        ip(&["netns", "add", &name]);
        Self { name }
    }

    fn file(&self) -> fs::File {
        fs::File::open(Path::new(NETNS_DIR).join(&self.name)).expect("open the netns")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// A memory cgroup tree: processes killed and cgroups removed on drop.
pub(crate) struct CgroupTree {
    pub(crate) dir: PathBuf,
    /// As in `/proc/<pid>/cgroup`.
    pub(crate) path: String,
}

impl CgroupTree {
    fn new(path: String, limit_bytes: Option<u64>) -> Self {
        let layout = Layout::host();
        let dir = layout.create(Path::new(path.trim_start_matches('/')));
        if let Some(limit) = limit_bytes {
            layout.set_limit(&dir, limit);
        }
        Self { dir, path }
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.dir);
    }
}

/// Spawn `command` in the memory cgroup `cgroup_dir` (when given) and the network namespace
/// `netns`: both entered between fork and exec, so the process never runs anywhere else.
fn spawn_in(command: &mut Command, cgroup_dir: Option<&Path>, netns: Option<&fs::File>) -> Child {
    // Opened here: between fork and exec only async-signal-safe calls are allowed.
    let procs = cgroup_dir.map(|dir| {
        fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .expect("open cgroup.procs")
    });
    let procs_fd = procs.as_ref().map(AsRawFd::as_raw_fd);
    let netns_fd = netns.map(AsRawFd::as_raw_fd);
    // SAFETY: the hook makes only write(2) and setns(2) calls on fds that outlive the spawn.
    unsafe {
        command.pre_exec(move || {
            if let Some(fd) = procs_fd
                && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
            {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = netns_fd
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {command:?}: {err}"));
    drop(procs);
    child
}

/// A `memtrace daemon` inside a node's namespace.
struct NodeDaemon {
    child: Child,
    /// Its log, kept for failure messages.
    log: Arc<Mutex<Vec<String>>>,
    _state: tempfile::TempDir,
}

impl NodeDaemon {
    /// Outside the node's cgroups: the daemon is the node's, not one of its workloads.
    fn spawn(netns: &fs::File, listen: SocketAddr, extra: &[String]) -> Self {
        let state = tempfile::tempdir().expect("state tempdir");
        let mut command = Command::new(memtrace_bin());
        command
            .args(["daemon", "--interval", "1s"])
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--state-dir")
            .arg(state.path())
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn_in(&mut command, None, Some(netns));
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        // Keep draining the log so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        Self {
            child,
            log,
            _state: state,
        }
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log[log.len().saturating_sub(20)..].join("\n")
    }

    fn stop(&mut self, signal: i32) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(self.child.id() as i32, signal) };
            let _ = self.child.wait();
        }
    }
}

impl Drop for NodeDaemon {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM);
    }
}

/// One node. Dropped in field order: daemon, servers, cgroups (with every workload in them),
/// the host's veth end, the namespace.
pub(crate) struct Node {
    pub(crate) name: String,
    /// The namespace's address: the daemon and the servers listen on it.
    pub(crate) ip: Ipv4Addr,
    daemon: Option<NodeDaemon>,
    servers: Vec<Child>,
    pub(crate) root: CgroupTree,
    /// Child cgroups (kept to be removed before the root).
    children: Vec<CgroupTree>,
    host_veth: String,
    /// Its peer, inside the namespace.
    peer_veth: String,
    netns: NetNs,
}

impl Node {
    fn new(index: u8, name: &str, limit_bytes: u64) -> Self {
        let pid = std::process::id();
        let short = name.rsplit('-').next().unwrap_or(name);
        let netns = NetNs::new(format!("{PREFIX}-{short}-{pid}"));
        // Interface names have at most 15 bytes.
        let host_veth = format!("mte{short}{}", pid % 100_000);
        let peer = format!("mtp{short}{}", pid % 100_000);
        let host_ip = Ipv4Addr::new(10, 231, 0, 4 * index + 1);
        let node_ip = Ipv4Addr::new(10, 231, 0, 4 * index + 2);
        let root = CgroupTree::new(format!("/{PREFIX}-{short}-{pid}"), Some(limit_bytes));
        ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &netns.name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_veth]);
        ip(&["link", "set", &host_veth, "up"]);
        ip(&[
            "-n",
            &netns.name,
            "addr",
            "add",
            &format!("{node_ip}/30"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &netns.name, "link", "set", &peer, "up"]);
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        Self {
            name: name.to_owned(),
            ip: node_ip,
            daemon: None,
            servers: Vec::new(),
            root,
            children: Vec::new(),
            host_veth,
            peer_veth: peer,
            netns,
        }
    }

    /// The daemon's address, reachable from the root namespace.
    pub(crate) fn daemon_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, DAEMON_PORT))
    }

    /// `host:port` as `memtrace cluster --nodes` and Prometheus take it.
    pub(crate) fn target(&self) -> String {
        self.daemon_addr().to_string()
    }

    /// A child cgroup `name` of the node's root, with its own limit if given. Returns its path as
    /// in `/proc/<pid>/cgroup`.
    pub(crate) fn add_cgroup(&mut self, name: &str, limit_bytes: Option<u64>) -> String {
        let path = format!("{}/{name}", self.root.path);
        self.children
            .push(CgroupTree::new(path.clone(), limit_bytes));
        path
    }

    pub(crate) fn cgroup_dir(&self, path: &str) -> PathBuf {
        Layout::host()
            .memory_root()
            .join(path.trim_start_matches('/'))
    }

    fn spawn_daemon(&mut self, extra: &[String]) {
        let daemon = NodeDaemon::spawn(&self.netns.file(), self.daemon_addr(), extra);
        self.daemon = Some(daemon);
    }

    fn wait_ready(&self) {
        let daemon = self.daemon.as_ref().expect("daemon started");
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(self.daemon_addr(), "/readyz").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "{}: daemon not ready within 30 s; its log:\n{}",
                self.name,
                daemon.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL the daemon, as a crash would.
    pub(crate) fn kill_daemon(&mut self) {
        if let Some(daemon) = self.daemon.as_mut() {
            daemon.stop(libc::SIGKILL);
        }
    }

    /// Take the node's end of its link down: its daemon keeps running but nothing reaches it
    /// (packets to it are dropped; the root namespace keeps its route, so nothing leaks to the
    /// default route either).
    pub(crate) fn link_down(&self) {
        ip(&[
            "-n",
            &self.netns.name,
            "link",
            "set",
            &self.peer_veth,
            "down",
        ]);
    }

    /// Bring the node's end of its link back up.
    pub(crate) fn link_up(&self) {
        ip(&["-n", &self.netns.name, "link", "set", &self.peer_veth, "up"]);
    }

    /// A `redis-server` (Debian's) in cgroup `cgroup` listening on the node's address at `port`,
    /// with nothing persisted. Returns its pid once it answers PING.
    pub(crate) fn start_redis(&mut self, cgroup: &str, port: u16, dir: &Path) -> u32 {
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", &self.ip.to_string()])
            .args(["--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no", "--enable-debug-command", "yes"])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let netns = self.netns.file();
        let child = spawn_in(&mut command, Some(&self.cgroup_dir(cgroup)), Some(&netns));
        let pid = child.id();
        self.servers.push(child);
        let addr = SocketAddr::from((self.ip, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if matches!(redis(addr, &["PING"]), Ok(reply) if reply == "+PONG") {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "{}: redis-server on {addr} not answering within 10 s (Debian package \
                 redis-server; cargo xtask test installs it)",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        drop(self.daemon.take());
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        while let Some(child) = self.children.pop() {
            drop(child);
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.host_veth])
            .stderr(Stdio::null())
            .status();
    }
}

/// One RESP command to a redis server; its reply's first line (`+OK`, `-ERR …`, `:1`).
pub(crate) fn redis(addr: SocketAddr, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
}

/// The nodes, and a directory for what the workloads need (program links, data files).
pub(crate) struct Fleet {
    pub(crate) nodes: Vec<Node>,
    pub(crate) dir: tempfile::TempDir,
}

impl Fleet {
    /// Nodes named `name` with the memory limit `limit_bytes` each (their "RAM").
    pub(crate) fn new(specs: &[(&str, u64)]) -> Self {
        require_root();
        remove_stale();
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes = specs
            .iter()
            .zip(0u8..)
            .map(|(&(name, limit), index)| Node::new(index, name, limit))
            .collect();
        Self { nodes, dir }
    }

    pub(crate) fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub(crate) fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Start every node's daemon with `args(node)`, all at once, and wait until each is ready.
    pub(crate) fn start_daemons(&mut self, args: impl Fn(&Node) -> Vec<String>) {
        for node in &mut self.nodes {
            let extra = args(node);
            node.spawn_daemon(&extra);
        }
        for node in &self.nodes {
            node.wait_ready();
        }
    }

    /// The workload binary under the name `comm` (a link: the kernel names a process after the
    /// file it executed), so that each test workload is a workload of its own.
    pub(crate) fn program(&self, comm: &str) -> PathBuf {
        assert!(comm.len() <= 15, "comm {comm} longer than the kernel keeps");
        let link = self.dir.path().join(comm);
        if !link.exists() {
            std::os::unix::fs::symlink(workload_bin(), &link).expect("link the workload binary");
        }
        link
    }

    /// `host:port` of every node, in node order.
    pub(crate) fn targets(&self) -> Vec<String> {
        self.nodes.iter().map(Node::target).collect()
    }
}
