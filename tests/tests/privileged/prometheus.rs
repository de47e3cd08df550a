//! Real Prometheus servers for the cross-node tests (Debian's `prometheus`, 2.42): a server
//! scraping several daemons with rule files loaded, an agent (`--enable-feature=agent`)
//! remote-writing what it scrapes, and a server receiving remote writes
//! (`--web.enable-remote-write-receiver`) and evaluating rules over them.
use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::daemon::get;

/// How a Prometheus runs.
#[derive(Default)]
pub(crate) struct Setup {
    /// `host:port` targets of the `memtrace` job (scraped every second).
    pub(crate) targets: Vec<String>,
    pub(crate) rule_files: Vec<PathBuf>,
    /// Agent mode: scrape and remote-write only (no rules, no queries).
    pub(crate) agent: bool,
    /// Where to remote-write what it scrapes.
    pub(crate) remote_write: Option<SocketAddr>,
    /// Accept remote writes on `/api/v1/write`.
    pub(crate) receiver: bool,
}

pub(crate) struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Prometheus {
    pub(crate) fn start(setup: &Setup) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
        if !setup.rule_files.is_empty() {
            config.push_str("rule_files:\n");
            for file in &setup.rule_files {
                let _ = writeln!(config, "  - '{}'", file.display());
            }
        }
        if !setup.targets.is_empty() {
            let targets: Vec<String> = setup.targets.iter().map(|t| format!("'{t}'")).collect();
            let _ = write!(
                config,
                "scrape_configs:\n  - job_name: memtrace\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            );
        }
        if let Some(receiver) = setup.remote_write {
            let _ = write!(
                config,
                "remote_write:\n  - url: 'http://{receiver}/api/v1/write'\n    queue_config:\n      batch_send_deadline: 1s\n"
            );
        }
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).expect("log file");
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let data = dir.path().join("data");
        if setup.agent {
            command
                .arg("--enable-feature=agent")
                .arg(format!("--storage.agent.path={}", data.display()));
        } else {
            command.arg(format!("--storage.tsdb.path={}", data.display()));
        }
        if setup.receiver {
            command.arg("--web.enable-remote-write-receiver");
        }
        let child =
            command.stdout(Stdio::null()).stderr(log).spawn().expect(
                "run prometheus (Debian package `prometheus`; cargo xtask test installs it)",
            );
        let prometheus = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(prometheus.addr(), "/-/ready").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30 s; its log:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn api(&self, path: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut request = agent.get(&format!("http://{}{path}", self.addr()));
        for (key, value) in query {
            request = request.query(key, value);
        }
        let mut response = request
            .call()
            .unwrap_or_else(|err| panic!("prometheus {path}: {err}"));
        let body: serde_json::Value = response.body_mut().read_json().expect("API JSON");
        assert_eq!(body["status"], "success", "{body}");
        body["data"].clone()
    }

    /// Instant query: `[(labels, value)]`.
    pub(crate) fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        self.api("/api/v1/query", &[("query", promql)])["result"]
            .as_array()
            .expect("vector")
            .iter()
            .map(|r| {
                let value = r["value"][1].as_str().and_then(|v| v.parse().ok());
                (r["metric"].clone(), value.unwrap_or(f64::NAN))
            })
            .collect()
    }

    /// Poll `promql` until `ok` holds for its result, or fail after `timeout`.
    pub(crate) fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        ok: impl Fn(&[(serde_json::Value, f64)]) -> bool,
    ) -> Vec<(serde_json::Value, f64)> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(promql);
            if ok(&result) {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: condition not met within {timeout:?}; last result {result:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The active alerts (`/api/v1/alerts`): each with `labels`, `state`, `value`.
    pub(crate) fn alerts(&self) -> Vec<serde_json::Value> {
        self.api("/api/v1/alerts", &[])["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
