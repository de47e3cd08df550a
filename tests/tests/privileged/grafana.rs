//! The Grafana dashboards of `deploy/grafana/dashboards/` against reality: two nodes (see
//! `fleet.rs`), each with its daemon and live workloads, a real Prometheus scraping them and
//! `memtrace cluster serve` with the recording rules and alerts loaded, and OOM kills on both
//! nodes. Then **every** panel's query, annotation query and variable query of the committed
//! JSON runs through Prometheus' HTTP API with the variables substituted as Grafana does: each
//! must parse, and return data unless it is in [`EMPTY_HERE`], which says why it cannot have any
//! here.
//!
//! No Grafana server runs here; what Grafana does with a dashboard that this test does for it:
//! `label_values(SELECTOR, LABEL)` variable queries become `/api/v1/label/LABEL/values` with
//! `match[]=SELECTOR`, a variable's `regex` keeps the first capture group, multi-value and All
//! variables are regex-escaped and joined as `(a|b)` (or their `allValue`), `$__rate_interval`
//! and `$__interval` become durations, and panels run range queries unless `instant`.
//!
//! | node | workloads (each in its own child cgroup of the node) |
//! |---|---|
//! | node-a | `gf-steady` (16 MiB anon), `gf-grower` (grows 512 KiB/s, 256 MiB limit), `gf-oomer` (32 MiB limit, OOM-killed 2×) |
//! | node-b | `gf-steady` (48 MiB anon: the skew), `gf-writer` (rewrites a 64 MiB file in a 24 MiB cgroup: memcg reclaim), `gf-oomer` (2×) |
//!
//! With `MEMTRACE_GRAFANA_PNG=FILE` and `MEMTRACE_PYTHON=PYTHON` (a venv with matplotlib: `cargo
//! xtask grafana --png`), the Node dashboard's results for node-b are also plotted to FILE by
//! `deploy/grafana/render.py`, after a longer run so that the lines have a shape.
//!
//! Wall time about 2 min, most of it waiting for the leak rule's half window (the PNG run 2 min
//! more).
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use memtrace_tests::{Workload, memtrace_bin};
use serde_json::{Value, json};

use crate::{
    cluster_e2e::{shortened_rules, write_uncached},
    daemon::get,
    fleet::Fleet,
    prometheus::{Prometheus, Setup},
    support::serial,
};

const MIB: u64 = 1 << 20;
const DASHBOARDS: &str = "../deploy/grafana/dashboards";
/// What Grafana would put for `$__rate_interval` and `$__interval` over a few minutes of a 1 s
/// scrape, and the step of the range queries.
const RATE_INTERVAL: &str = "10s";
const STEP: &str = "2s";
const OOM_KILLS_PER_NODE: usize = 2;

/// Queries that cannot return data in this setup, by (dashboard file, panel title or variable
/// name): they must still parse. Each panel's description says when it is empty.
const EMPTY_HERE: &[(&str, &str, &str)] = &[
    (
        "memtrace-cluster.json",
        "Noisy neighbour culprits",
        "no node has both a workload growing 32 MiB over the window and another stalling in reclaim ≥ 0.05 s/s: the grower is on node-a, the writer that stalls on node-b",
    ),
    (
        "*",
        "namespace",
        "the variable's regex keeps Kubernetes workload keys (namespace/Kind/name); no pod runs here (the query itself must return data)",
    ),
];

/// How one dashboard is looked at: the value chosen for each variable (None: All).
struct View {
    file: &'static str,
    choices: &'static [(&'static str, Option<&'static str>)],
}

const VIEWS: &[View] = &[
    View {
        file: "memtrace-node.json",
        choices: &[("node", Some("node-a"))],
    },
    View {
        file: "memtrace-node.json",
        choices: &[("node", Some("node-b"))],
    },
    View {
        file: "memtrace-cluster.json",
        choices: &[],
    },
    View {
        file: "memtrace-oom.json",
        choices: &[],
    },
];

/// `memtrace cluster serve`, killed on drop.
struct Relay {
    child: Child,
    addr: SocketAddr,
}

impl Relay {
    fn start(targets: &[String]) -> Self {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let child = Command::new(memtrace_bin())
            .args(["cluster", "serve", "--interval", "2s", "--listen"])
            .arg(addr.to_string())
            .arg("--nodes")
            .arg(targets.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn memtrace cluster serve");
        let relay = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(relay.addr, "/metrics").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "cluster serve: no round within 20 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        relay
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET on Prometheus' HTTP API: its `data`, or its error (`bad_data: parse error …`).
fn api(prometheus: &Prometheus, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(&format!("http://{}{path}", prometheus.addr()));
    for (key, value) in params {
        request = request.query(*key, *value);
    }
    let mut response = request.call().map_err(|err| format!("{path}: {err}"))?;
    let body: Value = response
        .body_mut()
        .read_json()
        .map_err(|err| format!("{path}: {err}"))?;
    if body["status"] == "success" {
        Ok(body["data"].clone())
    } else {
        Err(format!("{}: {}", body["errorType"], body["error"]))
    }
}

/// Grafana's escaping of a value of a multi-value or All variable in a Prometheus query: regex
/// metacharacters get a backslash, itself escaped for the PromQL string.
fn regex_escape(value: &str) -> String {
    let mut escaped = String::new();
    for c in value.chars() {
        if r"\^$*+?.()|{}[]".contains(c) {
            escaped.push_str(r"\\");
        }
        escaped.push(c);
    }
    escaped
}

/// `$name` and `${name}` replaced by their values, then Grafana's interval macros.
fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|name| std::cmp::Reverse(name.len()));
    let mut text = text.to_owned();
    for name in names {
        text = text
            .replace(&format!("${{{name}}}"), &values[name])
            .replace(&format!("${name}"), &values[name]);
    }
    text.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", STEP)
}

fn empty_here(file: &str, what: &str) -> bool {
    EMPTY_HERE
        .iter()
        .any(|(f, name, _)| (*f == file || *f == "*") && *name == what)
}

/// The time range every query covers: from before the workloads to now.
struct Range {
    start: String,
    end: String,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// A query's outcome: its series (range: `[[t, "v"], …]` each; instant: one point each).
struct Outcome {
    series: Vec<(Value, Vec<(f64, f64)>)>,
}

fn run_query(
    prometheus: &Prometheus,
    expr: &str,
    instant: bool,
    range: &Range,
) -> Result<Outcome, String> {
    let data = if instant {
        api(prometheus, "/api/v1/query", &[("query", expr)])?
    } else {
        api(
            prometheus,
            "/api/v1/query_range",
            &[
                ("query", expr),
                ("start", &range.start),
                ("end", &range.end),
                ("step", STEP),
            ],
        )?
    };
    let point = |p: &Value| {
        let t = p[0].as_f64().unwrap_or(f64::NAN);
        let v = p[1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        (t, v)
    };
    let series = data["result"]
        .as_array()
        .map(|result| {
            result
                .iter()
                .map(|s| {
                    let points = match s.get("values") {
                        Some(values) => values
                            .as_array()
                            .map(|v| v.iter().map(point).collect())
                            .unwrap_or_default(),
                        None => vec![point(&s["value"])],
                    };
                    (s["metric"].clone(), points)
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Outcome { series })
}

/// Resolve the dashboard's variables in order, as Grafana does, checking each query: the values
/// substituted, and what the test found.
fn resolve_variables(
    prometheus: &Prometheus,
    view: &View,
    dashboard: &Value,
    range: &Range,
    problems: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    for variable in variables {
        let name = variable["name"].as_str().expect("variable name").to_owned();
        match variable["type"].as_str() {
            Some("datasource") => {
                assert_eq!(
                    variable["query"], "prometheus",
                    "{name}: a Prometheus data source"
                );
                continue;
            }
            Some("query") => {}
            other => panic!(
                "{}: variable {name} of unexpected type {other:?}",
                view.file
            ),
        }
        let query = substitute(variable["query"].as_str().expect("query"), &values);
        let (selector, label) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(", "))
            .unwrap_or_else(|| panic!("{}: {name}: not label_values(…): {query}", view.file));
        let found = match api(
            prometheus,
            &format!("/api/v1/label/{label}/values"),
            &[
                ("match[]", selector),
                ("start", &range.start),
                ("end", &range.end),
            ],
        ) {
            Ok(data) => data
                .as_array()
                .expect("label values")
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect::<Vec<_>>(),
            Err(err) => {
                problems.push(format!("{}: variable {name}: {query}: {err}", view.file));
                Vec::new()
            }
        };
        if found.is_empty() {
            problems.push(format!(
                "{}: variable {name}: {query}: no values",
                view.file
            ));
        }
        let options: Vec<String> = match variable["regex"].as_str().filter(|r| !r.is_empty()) {
            Some(grafana_regex) => {
                let mut kept: Vec<String> = found
                    .iter()
                    .filter_map(|v| variable_regex(grafana_regex, v))
                    .collect();
                kept.sort();
                kept.dedup();
                if kept.is_empty() && !empty_here(view.file, &name) {
                    problems.push(format!(
                        "{}: variable {name}: its regex {grafana_regex} keeps none of {found:?}",
                        view.file
                    ));
                }
                kept
            }
            None => found,
        };
        let escapes = variable["multi"] == true || variable["includeAll"] == true;
        let value = match view.choices.iter().find(|(n, _)| *n == name) {
            Some((_, Some(chosen))) => {
                assert!(
                    options.iter().any(|o| o == chosen),
                    "{}: variable {name} offers {options:?}, not {chosen}",
                    view.file
                );
                if escapes {
                    regex_escape(chosen)
                } else {
                    (*chosen).to_owned()
                }
            }
            _ => match variable["allValue"].as_str() {
                Some(all) if variable["includeAll"] == true => all.to_owned(),
                _ if variable["includeAll"] == true => format!(
                    "({})",
                    options
                        .iter()
                        .map(|o| regex_escape(o))
                        .collect::<Vec<_>>()
                        .join("|")
                ),
                _ => panic!(
                    "{}: variable {name} has no All: choose a value in VIEWS",
                    view.file
                ),
            },
        };
        values.insert(name, value);
    }
    values
}

/// What a variable's `regex` (`/pattern/flags`) keeps of `value`, as Grafana does: the first
/// capture group, else the whole match; None when it does not match.
fn variable_regex(grafana_regex: &str, value: &str) -> Option<String> {
    let pattern = grafana_regex
        .strip_prefix('/')
        .and_then(|r| r.rsplit_once('/'))
        .map_or(grafana_regex, |(pattern, _flags)| pattern);
    let regex = regex::Regex::new(pattern)
        .unwrap_or_else(|err| panic!("variable regex {grafana_regex}: {err}"));
    let captures = regex.captures(value)?;
    Some(captures.get(1).or(captures.get(0))?.as_str().to_owned())
}

/// The namespace variable's regex over every kind of workload key (README, "Workload identity"):
/// no pod runs in the privileged test, so the Kubernetes keys are checked here.
#[test]
fn the_namespace_variable_keeps_the_namespace_of_kubernetes_workload_keys_only() {
    for file in [
        "memtrace-node.json",
        "memtrace-cluster.json",
        "memtrace-oom.json",
    ] {
        let dashboard = load(file);
        let namespace = dashboard["templating"]["list"]
            .as_array()
            .expect("templating.list")
            .iter()
            .find(|v| v["name"] == "namespace")
            .unwrap_or_else(|| panic!("{file}: no namespace variable"));
        let regex = namespace["regex"].as_str().expect("regex");
        let keep = |key: &str| variable_regex(regex, key);
        assert_eq!(
            keep("shop/Deployment/api").as_deref(),
            Some("shop"),
            "{file}"
        );
        assert_eq!(
            keep("kube-system/DaemonSet/memtrace").as_deref(),
            Some("kube-system")
        );
        assert_eq!(keep("batch/CronJob/report").as_deref(), Some("batch"));
        assert_eq!(keep("default/Pod/debug").as_deref(), Some("default"));
        for other in [
            "pod/1f2e3d4c-0000-4000-8000-000000000001",
            "compose/web",
            "redis-server@.service",
            "nginx",
            "~other",
        ] {
            assert_eq!(keep(other), None, "{file}: {other} has no namespace");
        }
    }
}

/// One query of a dashboard: where it is, and its PromQL.
struct DashboardQuery {
    /// The panel's title, or `annotation: NAME`.
    title: String,
    description: String,
    unit: String,
    legend: String,
    expr: String,
    instant: bool,
}

fn queries(dashboard: &Value) -> Vec<DashboardQuery> {
    let mut queries = Vec::new();
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            queries.push(DashboardQuery {
                title: format!("annotation: {}", annotation["name"].as_str().unwrap_or("")),
                description: String::new(),
                unit: String::new(),
                legend: String::new(),
                expr: expr.to_owned(),
                instant: false,
            });
        }
    }
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("panel title");
        let description = panel["description"].as_str().unwrap_or_default();
        assert!(
            !description.is_empty(),
            "panel {title:?} has no description"
        );
        let unit = panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        assert!(!unit.is_empty(), "panel {title:?} has no unit");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            queries.push(DashboardQuery {
                title: title.to_owned(),
                description: description.to_owned(),
                unit: unit.to_owned(),
                legend: target["legendFormat"].as_str().unwrap_or("").to_owned(),
                expr: target["expr"].as_str().expect("expr").to_owned(),
                instant: target["instant"] == true,
            });
        }
    }
    queries
}

/// Grafana's legend: `{{label}}` replaced by the series' label, `__auto` the series' labels.
fn legend(format: &str, metric: &Value) -> String {
    let labels = metric.as_object().cloned().unwrap_or_default();
    if format.is_empty() || format == "__auto" {
        return labels
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(", ");
    }
    let mut text = format.to_owned();
    for (key, value) in &labels {
        text = text.replace(&format!("{{{{{key}}}}}"), value.as_str().unwrap_or(""));
    }
    text
}

struct Scenario {
    _workloads: Vec<Workload>,
    _fleet: Fleet,
}

/// Start `comm` in a child cgroup `comm` of `node` (with a memory limit), with `args`.
fn start(fleet: &mut Fleet, node: &str, comm: &str, limit: Option<u64>, args: &[&str]) -> Workload {
    let program = fleet.program(comm);
    let node = fleet.node_mut(node);
    let cgroup = node.add_cgroup(comm, limit);
    Workload::start_program_in(&program, &node.cgroup_dir(&cgroup), args)
}

fn plant(mut fleet: Fleet) -> Scenario {
    let mut workloads = Vec::new();
    for (node, pages) in [("node-a", "4096"), ("node-b", "12288")] {
        let mut steady = start(&mut fleet, node, "gf-steady", None, &["touch-anon", pages]);
        steady.run();
        workloads.push(steady);
    }
    let mut grower = start(
        &mut fleet,
        "node-a",
        "gf-grower",
        Some(256 * MIB),
        &["slow-hog", "256", "500"],
    );
    grower.go();
    workloads.push(grower);
    let file = fleet.dir.path().join("gf-writer-data");
    // Not in the page cache, so that the writer's cgroup is charged for it (cached pages stay
    // charged to whoever read or wrote them first).
    write_uncached(&file, 64 << 20);
    let mut writer = start(
        &mut fleet,
        "node-b",
        "gf-writer",
        Some(24 * MIB),
        &["rewrite", file.to_str().expect("UTF-8 path")],
    );
    writer.go();
    workloads.push(writer);

    // OOM kills of one workload on both nodes within seconds: an OOM storm for the rules and
    // the relay. (support::oom_kill_in_cgroup kills in a cgroup outside the nodes'
    // --cgroup-root, which the daemons do not count: the kills are made inside each node.)
    let program = fleet.program("gf-oomer");
    let cgroups: Vec<(String, PathBuf)> = ["node-a", "node-b"]
        .iter()
        .map(|name| {
            let node = fleet.node_mut(name);
            let cgroup = node.add_cgroup("gf-oomer", Some(32 * MIB));
            ((*name).to_owned(), node.cgroup_dir(&cgroup))
        })
        .collect();
    for _ in 0..OOM_KILLS_PER_NODE {
        for (node, dir) in &cgroups {
            let mut oomer = Workload::start_program_in(&program, dir, &["hog"]);
            oomer.go();
            let status = oomer.finish();
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "{node}: the oomer was not OOM-killed: {status:?}"
            );
        }
        // Apart enough for a 1 s sampler to see each life.
        std::thread::sleep(Duration::from_millis(1500));
    }
    Scenario {
        _workloads: workloads,
        _fleet: fleet,
    }
}

fn load(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(DASHBOARDS)
        .join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn every_dashboard_query_parses_and_returns_data_from_real_daemons() {
    let _serial = serial();
    let png = std::env::var_os("MEMTRACE_GRAFANA_PNG").map(PathBuf::from);
    let started = unix_now();
    let mut fleet = Fleet::new(&[("node-a", 384 * MIB), ("node-b", 384 * MIB)]);
    fleet.start_daemons(|node| {
        [
            "--node-name",
            &node.name,
            "--cgroup-root",
            &node.root.path,
            "--history-step",
            "1s",
        ]
        .map(str::to_owned)
        .to_vec()
    });
    let relay = Relay::start(&fleet.targets());
    let mut targets = fleet.targets();
    targets.push(relay.addr.to_string());
    let prometheus = Prometheus::start(&Setup {
        targets,
        rule_files: vec![shortened_rules(&fleet)],
        ..Setup::default()
    });
    // Every target scraped before the kills, so that the kernel's OOM counters are seen rising.
    let long = Duration::from_secs(60);
    prometheus.wait_for("up == 1", long, |r| r.len() == 3);
    let scenario = plant(fleet);

    // The storm has reached the rules (ALERTS) and the relay.
    prometheus.wait_for(
        r#"ALERTS{alertname="MemtraceOomStorm", alertstate="firing", workload="gf-oomer"}"#,
        long,
        |r| r.len() == 2,
    );
    prometheus.wait_for(
        r#"memtrace_cluster_finding_info{kind="oom_storm", workload="gf-oomer"}"#,
        long,
        |r| r.len() == 1,
    );
    // The grower is judged leaking once its history covers half the window (90 s here) and
    // both halves of it grow.
    prometheus.wait_for(
        r#"memtrace:instance_leaking_bytes_per_hour:1h{workload="gf-grower"}"#,
        Duration::from_secs(180),
        |r| r.len() == 1,
    );
    // A series that appeared just now may have no point at the range queries' steps yet: two
    // more rule evaluations (5 s apart in the test copy) first. The PNG wants longer lines.
    std::thread::sleep(Duration::from_secs(if png.is_some() { 120 } else { 10 }));
    let range = Range {
        start: format!("{started:.3}"),
        end: format!("{:.3}", unix_now()),
    };

    let mut problems = Vec::new();
    let mut empty_as_expected = Vec::new();
    let mut checked = 0;
    let mut plotted: Vec<Value> = Vec::new();
    for view in VIEWS {
        let dashboard = load(view.file);
        let values = resolve_variables(&prometheus, view, &dashboard, &range, &mut problems);
        for query in queries(&dashboard) {
            let expr = substitute(&query.expr, &values);
            assert!(
                !expr.contains('$'),
                "{}: {}: a variable left in {expr}",
                view.file,
                query.title
            );
            checked += 1;
            match run_query(&prometheus, &expr, query.instant, &range) {
                Err(err) => problems.push(format!("{}: {}: {expr}: {err}", view.file, query.title)),
                Ok(outcome) if outcome.series.is_empty() => {
                    if empty_here(view.file, &query.title) {
                        empty_as_expected.push(query.title.clone());
                    } else {
                        problems.push(format!("{}: {}: {expr}: no data", view.file, query.title));
                    }
                }
                Ok(outcome) => {
                    let plot = view.file == "memtrace-node.json"
                        && view.choices.contains(&("node", Some("node-b")))
                        && !query.instant
                        && !query.title.starts_with("annotation");
                    if plot {
                        let series = outcome.series.iter().map(|(metric, points)| {
                            json!({"legend": legend(&query.legend, metric), "points": points})
                        });
                        // A panel's queries are consecutive: one subplot each.
                        match plotted.last_mut() {
                            Some(panel) if panel["title"] == query.title.as_str() => {
                                let all = panel["series"].as_array_mut().expect("series");
                                all.extend(series);
                            }
                            _ => plotted.push(json!({
                                "title": query.title,
                                "unit": query.unit,
                                "description": query.description,
                                "series": series.collect::<Vec<_>>(),
                            })),
                        }
                    }
                }
            }
        }
    }
    eprintln!("grafana: {checked} queries checked; empty here, as expected: {empty_as_expected:?}");
    for (_, name, why) in EMPTY_HERE {
        eprintln!("  {name}: {why}");
    }
    assert!(
        problems.is_empty(),
        "{} of {checked} dashboard queries failed or returned nothing:\n{}",
        problems.len(),
        problems.join("\n")
    );

    if let Some(out) = png {
        render(&plotted, &out);
    }
    drop(prometheus);
    drop(relay);
    drop(scenario);
}

/// Plot the Node dashboard's results with `deploy/grafana/render.py` (matplotlib).
fn render(panels: &[Value], out: &Path) {
    let python = std::env::var_os("MEMTRACE_PYTHON")
        .expect("MEMTRACE_PYTHON: a Python with matplotlib (cargo xtask grafana --png sets it)");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node-b.json");
    let document = json!({
        "title": "memtrace / Node (node-b), from the grafana test's Prometheus",
        "panels": panels,
    });
    std::fs::write(&data, document.to_string()).expect("write the panels' data");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/render.py");
    let status = Command::new(python)
        .arg(script)
        .arg(&data)
        .arg(out)
        .status()
        .expect("run render.py");
    assert!(status.success(), "render.py failed: {status}");
}
