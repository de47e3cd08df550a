//! `memtrace oom`: recent OOM kills with their flight recordings, from a running daemon.
use std::{
    fmt::Write as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Args;

use memtrace_api::client::{Client, ClientError};
use memtrace_api::{OomRecord, OomResponse};

use crate::{
    cli::daemon::DEFAULT_LISTEN, escape::terminal, units::human_bytes, web::client::ClientOptions,
};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  memtrace oom                 the last kills seen by the local daemon\n  memtrace oom --last 1 --json\n  memtrace oom --comm java --since 1h\n  memtrace oom --cgroup /kubepods.slice   kills in that cgroup or below\n  memtrace oom --url 10.0.0.5:9847\n  memtrace oom --url 10.0.0.5:9847 --ca-file ca.pem --username sre --password-file pw   a daemon with a web config"
)]
pub struct OomArgs {
    /// Address of a running `memtrace daemon`: host:port or http://host:port
    /// [default: 127.0.0.1:9847, the daemon's default --listen].
    #[arg(long, value_name = "URL", env = "MEMTRACE_URL")]
    pub url: Option<String>,

    /// Show only the N most recent kills (after the filters), at least 1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub last: Option<u64>,

    /// Only kills whose victim was in this cgroup or below it (as in /proc/PID/cgroup).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,

    /// Only kills of processes with this name (as in /proc/PID/comm).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,

    /// Only kills in the last DURATION (10m, 2h, 90 for seconds…).
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub since: Option<Duration>,

    /// Print the API's JSON instead of the report.
    #[arg(long)]
    pub json: bool,

    /// TLS and basic auth for a daemon with a `--web-config-file`.
    #[command(flatten)]
    pub client: ClientOptions,
}

pub fn run(args: OomArgs) -> anyhow::Result<()> {
    let given = args.url.is_some();
    let target = args.url.as_deref().unwrap_or(DEFAULT_LISTEN);
    if secured(&args.client, target) {
        let body = fetch_secured(&args.client, target)?;
        print!("{}", output(&args, body, SystemTime::now())?);
        return Ok(());
    }
    let client = Client::new(target);
    let body = match client.ooms() {
        Ok(body) => body,
        Err(ClientError::Unreachable { url, source }) => {
            return Err(anyhow::Error::new(*source).context(unreachable(&url, given)));
        }
        Err(e @ ClientError::Status { .. }) => {
            let message = unreachable(e.url(), given);
            return Err(anyhow::Error::new(e).context(message));
        }
        Err(e @ ClientError::Decode { .. }) => return Err(e.into()),
    };
    print!("{}", output(&args, body, SystemTime::now())?);
    Ok(())
}

/// Whether the daemon is asked over HTTPS or with credentials: then through the fleet client
/// (reqwest, rustls), else through the API crate's small plain-HTTP one.
fn secured(options: &ClientOptions, target: &str) -> bool {
    target.starts_with("https://")
        || options.scheme() == "https"
        || options.username.is_some()
        || options.password_file.is_some()
}

/// `/api/v1/oom` through [`ClientOptions`]. Runs on a blocking thread of the CLI's runtime.
fn fetch_secured(options: &ClientOptions, target: &str) -> anyhow::Result<OomResponse> {
    let client = options.build(Duration::from_secs(10))?;
    tokio::runtime::Handle::current().block_on(async {
        let response = options
            .get(&client, target, memtrace_api::client::OOM_PATH)
            .await?;
        let bytes = response.bytes().await.map_err(|e| web_error(&e, target))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!("{target} did not answer with the OOM history schema: {e}")
        })
    })
}

fn web_error(err: &reqwest::Error, target: &str) -> crate::web::client::RequestError {
    crate::web::client::explain(err, target)
}

/// What `memtrace oom` prints for `body`, given the filters of `args`, at `now`.
fn output(args: &OomArgs, body: OomResponse, now: SystemTime) -> anyhow::Result<String> {
    let seen = body.ooms.len();
    let since_ms = args.since.map(|since| {
        now.checked_sub(since)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |t| t.as_millis() as u64)
    });
    let mut ooms: Vec<OomRecord> = body
        .ooms
        .into_iter()
        .filter(|oom| {
            args.comm
                .as_ref()
                .is_none_or(|comm| oom.victim_comm == *comm)
                && args.cgroup.as_ref().is_none_or(|cgroup| {
                    oom.victim_cgroup
                        .as_deref()
                        .is_some_and(|path| in_cgroup(path, cgroup))
                })
                && since_ms.is_none_or(|since| oom.timestamp_unix_ms >= since)
        })
        .collect();
    let matched = ooms.len();
    if let Some(last) = args.last {
        ooms.truncate(usize::try_from(last).unwrap_or(usize::MAX));
    }
    if args.json {
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(
                &serde_json::json!({ "schema_version": body.schema_version, "ooms": ooms })
            )?
        ));
    }
    let filtered = args.comm.is_some() || args.cgroup.is_some() || args.since.is_some();
    if seen == 0 {
        return Ok("no OOM kills seen since the daemon started\n".to_owned());
    }
    if matched == 0 {
        return Ok(format!(
            "none of the {seen} OOM kills seen since the daemon started match the filters\n"
        ));
    }
    let mut out: String = ooms.iter().map(report).collect();
    if ooms.len() < seen {
        let why = match (filtered, ooms.len() < matched) {
            (true, true) => format!(", {matched} match the filters; --last"),
            (true, false) => ", the others do not match the filters".to_owned(),
            _ => "; --last".to_owned(),
        };
        let _ = writeln!(
            out,
            "{} of {seen} OOM kills shown (newest first{why})",
            ooms.len()
        );
    }
    Ok(out)
}

/// `path` is `cgroup` or below it.
fn in_cgroup(path: &str, cgroup: &str) -> bool {
    let cgroup = cgroup.trim_end_matches('/');
    cgroup.is_empty()
        || path == cgroup
        || path
            .strip_prefix(cgroup)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn unreachable(url: &str, given: bool) -> String {
    if given {
        format!("cannot reach the memtrace daemon at {url}: is `memtrace daemon` running there?")
    } else {
        format!(
            "cannot reach the memtrace daemon at {url}, the default address: is `memtrace \
             daemon` running? If it listens elsewhere, give its address with --url HOST:PORT \
             or MEMTRACE_URL"
        )
    }
}

fn opt_bytes(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), human_bytes)
}

/// The "cgroup at the kill" block: its usage, what that usage was made of (`memory.stat`) and
/// its other processes, which together explain a usage well above the victim's RSS.
fn cgroup_at_kill(out: &mut String, oom: &OomRecord) {
    if oom.cgroup_usage_at_kill_bytes.is_none()
        && oom.cgroup_memory_stat.is_none()
        && oom.cgroup_processes.is_empty()
    {
        return;
    }
    let _ = writeln!(
        out,
        "  cgroup at the kill  usage {}",
        opt_bytes(oom.cgroup_usage_at_kill_bytes)
    );
    if let Some(stat) = &oom.cgroup_memory_stat {
        let parts = [
            ("anon", stat.anon_bytes),
            ("file", stat.file_bytes),
            ("kernel", stat.kernel_bytes),
            ("shmem", stat.shmem_bytes),
            ("file_mapped", stat.file_mapped_bytes),
            ("kernel_stack", stat.kernel_stack_bytes),
            ("pagetables", stat.pagetables_bytes),
            ("slab", stat.slab_bytes),
            ("sock", stat.sock_bytes),
            ("swap", stat.swap_bytes),
            ("lru_anon", stat.lru_anon_bytes),
            ("lru_file", stat.lru_file_bytes),
            ("unevictable", stat.unevictable_bytes),
        ];
        let _ = write!(out, "    memory.stat (v{})", stat.version);
        for (name, value) in parts {
            if let Some(value) = value {
                let _ = write!(out, "  {name} {}", human_bytes(value));
            }
        }
        let _ = writeln!(out);
    }
    if oom.cgroup_processes.is_empty() {
        let _ = writeln!(out, "    no other process in the cgroup");
    } else {
        let _ = writeln!(out, "    other processes:");
        for p in &oom.cgroup_processes {
            let _ = writeln!(
                out,
                "      {:<8} {:<16} rss {}",
                p.pid,
                terminal(&p.comm),
                human_bytes(p.rss_bytes)
            );
        }
    }
}

/// The human report of one kill.
pub fn report(oom: &OomRecord) -> String {
    let mut out = String::new();
    // Every string here came over the network from whatever answers at --url, and names
    // processes and cgroups anyone can name: printed through `terminal` only.
    let _ = writeln!(out, "OOM kill at {}", terminal(&oom.timestamp));
    let _ = write!(
        out,
        "  victim   {} ({})",
        oom.victim_pid,
        terminal(&oom.victim_comm)
    );
    if let Some(cgroup) = &oom.victim_cgroup {
        let _ = write!(out, "  cgroup {}", terminal(cgroup));
    }
    if let Some(pod) = &oom.victim_owner.pod_uid {
        let _ = write!(out, "  pod {}", terminal(pod));
    }
    if let Some(container) = &oom.victim_owner.container_id {
        let short: String = container.chars().take(12).collect();
        let _ = write!(out, "  container {}", terminal(&short));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  trigger  {} ({})",
        oom.trigger_pid,
        terminal(&oom.trigger_comm)
    );
    let _ = writeln!(
        out,
        "  memory   anon {}  file {}  shmem {}  total_vm {}  pgtables {}  cgroup limit {}",
        opt_bytes(oom.anon_rss_bytes),
        opt_bytes(oom.file_rss_bytes),
        opt_bytes(oom.shmem_rss_bytes),
        opt_bytes(oom.total_vm_bytes),
        opt_bytes(oom.pgtables_bytes),
        oom.cgroup_limit_bytes
            .map_or_else(|| "none".to_owned(), human_bytes),
    );
    if let (Some(uid), Some(adj)) = (oom.uid, oom.oom_score_adj) {
        let _ = writeln!(out, "  uid {uid}  oom_score_adj {adj}");
    }
    cgroup_at_kill(&mut out, oom);
    if oom.flight_recording.is_empty() {
        let _ = writeln!(
            out,
            "  (no history: the process was not seen before the kill)\n"
        );
        return out;
    }
    let _ = writeln!(
        out,
        "  the last {} s before the kill:",
        oom.flight_recording.len()
    );
    let _ = writeln!(
        out,
        "    {:>6} {:>11} {:>11} {:>10} {:>9} {:>13} {:>13}",
        "t(s)", "rss_anon", "rss_file", "minflt/s", "majflt/s", "reclaim ms/s", "cgroup usage"
    );
    for s in &oom.flight_recording {
        let _ = writeln!(
            out,
            "    {:>6.1} {:>11} {:>11} {:>10.0} {:>9.0} {:>13.1} {:>13}",
            s.offset_seconds,
            human_bytes(s.rss_anon_bytes),
            human_bytes(s.rss_file_bytes),
            s.faults_minor_per_sec,
            s.faults_major_per_sec,
            s.reclaim_stall_seconds_per_sec * 1000.0,
            opt_bytes(s.cgroup_usage_bytes),
        );
    }
    let _ = writeln!(out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrace_api::FlightSample;

    #[test]
    fn an_unreachable_daemon_is_named_with_a_hint() {
        // A port that was just free: nothing listens there any more.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = run(OomArgs {
            url: Some(addr.to_string()),
            ..args()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the memtrace daemon at http://{addr}/api/v1/oom: is `memtrace \
                 daemon` running there?"
            )
        );
        assert!(err.chain().count() > 1, "the cause is kept: {err:#}");
    }

    #[test]
    fn report_shows_victim_trigger_and_history() {
        let oom = OomRecord {
            timestamp: "2026-11-24T02:31:05.123Z".into(),
            victim_pid: 4242,
            victim_comm: "memhog".into(),
            victim_cgroup: Some("/oomtest".into()),
            trigger_pid: 4242,
            trigger_comm: "memhog".into(),
            anon_rss_bytes: Some(63 << 20),
            cgroup_limit_bytes: Some(64 << 20),
            flight_recording: vec![
                FlightSample {
                    offset_seconds: -1.0,
                    rss_anon_bytes: 32 << 20,
                    faults_minor_per_sec: 8000.0,
                    ..Default::default()
                },
                FlightSample {
                    offset_seconds: 0.0,
                    rss_anon_bytes: 63 << 20,
                    faults_minor_per_sec: 8100.0,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = report(&oom);
        assert!(
            text.contains("victim   4242 (memhog)  cgroup /oomtest"),
            "{text}"
        );
        assert!(text.contains("anon 63.0 MiB"), "{text}");
        assert!(text.contains("cgroup limit 64.0 MiB"), "{text}");
        assert!(text.contains("  -1.0    32.0 MiB"), "{text}");
        assert!(text.contains("the last 2 s before the kill"), "{text}");
    }

    fn args() -> OomArgs {
        OomArgs {
            url: None,
            last: None,
            cgroup: None,
            comm: None,
            since: None,
            json: false,
            client: ClientOptions::default(),
        }
    }

    /// `count` kills, newest first, one a minute before `now`: `java` in `/app/web` for even
    /// `i`, `redis` in `/db` for odd.
    /// A daemon with a web config (HTTPS, basic auth) asked by `memtrace oom`'s options.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_secured_daemon_is_asked_with_the_client_options() {
        use std::sync::Arc;

        use crate::export::http::{Connections, Limits, serve_router};
        use crate::web::server::WebServer;

        let tmp = tempfile::tempdir().expect("tempdir");
        let pki = crate::web::tests::Pki::new(tmp.path(), "a");
        let web = tmp.path().join("web.yml");
        let hash = bcrypt::hash("pw", 4).expect("hash");
        std::fs::write(
            &web,
            format!(
                "tls_server_config:\n  cert_file: a/server.pem\n  key_file: a/server.key\nbasic_auth_users:\n  sre: {hash}\n"
            ),
        )
        .expect("write");
        let now = SystemTime::now();
        let body = serde_json::to_string(&history(3, now)).expect("JSON");
        let app = axum::Router::new().route(
            memtrace_api::client::OOM_PATH,
            axum::routing::get(move || async move { body }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = listener.local_addr().expect("addr").to_string();
        tokio::spawn(serve_router(
            listener,
            app,
            Arc::new(Connections::default()),
            Limits::default(),
            Arc::new(WebServer::load(&web).expect("web config")),
            std::future::pending(),
        ));
        let password = tmp.path().join("pw");
        std::fs::write(&password, "pw\n").expect("write");
        let options = ClientOptions {
            ca_file: Some(pki.file("ca.pem")),
            username: Some("sre".to_owned()),
            password_file: Some(password),
            ..ClientOptions::default()
        };
        assert!(secured(&options, &target));
        assert!(!secured(&ClientOptions::default(), &target));
        let fetch = |options: ClientOptions, target: String| {
            tokio::task::spawn_blocking(move || fetch_secured(&options, &target))
        };
        let got = fetch(options.clone(), target.clone())
            .await
            .expect("join")
            .expect("the OOM history over HTTPS");
        assert_eq!(got.ooms.len(), 3);
        let mut wrong = options;
        wrong.username = Some("nobody".to_owned());
        let err = fetch(wrong, target.clone())
            .await
            .expect("join")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("401 Unauthorized from {target}: wrong username or password")
        );
    }

    fn history(count: u64, now: SystemTime) -> OomResponse {
        let now_ms = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let ooms = (0..count)
            .map(|i| OomRecord {
                timestamp: format!("kill {i}"),
                timestamp_unix_ms: now_ms - (i + 1) * 60_000,
                victim_pid: 100 + i as u32,
                victim_comm: if i % 2 == 0 { "java" } else { "redis" }.into(),
                victim_cgroup: Some(if i % 2 == 0 { "/app/web" } else { "/db" }.into()),
                ..Default::default()
            })
            .collect();
        OomResponse {
            schema_version: 1,
            ooms,
        }
    }

    fn victims(text: &str) -> Vec<u32> {
        text.lines()
            .filter_map(|line| line.strip_prefix("  victim   "))
            .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn last_zero_is_refused_and_last_says_how_many_were_left_out() {
        use clap::Parser;
        let err = crate::cli::Cli::try_parse_from(["memtrace", "oom", "--last", "0"]).unwrap_err();
        assert_eq!(
            crate::cli::one_line(&err.render().to_string()),
            "invalid value '0' for '--last <N>': 0 is not in 1..18446744073709551615"
        );
        let now = SystemTime::now();
        let text = output(
            &OomArgs {
                last: Some(2),
                ..args()
            },
            history(22, now),
            now,
        )
        .unwrap();
        assert_eq!(victims(&text), [100, 101]);
        assert!(
            text.ends_with("2 of 22 OOM kills shown (newest first; --last)\n"),
            "{text}"
        );
        let text = output(&args(), history(0, now), now).unwrap();
        assert_eq!(text, "no OOM kills seen since the daemon started\n");
    }

    #[test]
    fn filters_by_cgroup_comm_and_age() {
        let now = SystemTime::now();
        let show = |args: OomArgs| output(&args, history(6, now), now).unwrap();
        let text = show(OomArgs {
            comm: Some("redis".into()),
            ..args()
        });
        assert_eq!(victims(&text), [101, 103, 105]);
        assert!(
            text.ends_with(
                "3 of 6 OOM kills shown (newest first, the others do not match the filters)\n"
            ),
            "{text}"
        );
        let text = show(OomArgs {
            cgroup: Some("/app".into()),
            since: Some(Duration::from_secs(150)),
            ..args()
        });
        assert_eq!(victims(&text), [100], "below /app, in the last 2.5 minutes");
        assert_eq!(
            victims(&show(OomArgs {
                cgroup: Some("/ap".into()),
                ..args()
            })),
            Vec::<u32>::new(),
            "a prefix of a name is not a parent"
        );
        let text = show(OomArgs {
            comm: Some("java".into()),
            last: Some(1),
            ..args()
        });
        assert_eq!(victims(&text), [100]);
        assert!(
            text.ends_with("1 of 6 OOM kills shown (newest first, 3 match the filters; --last)\n"),
            "{text}"
        );
        assert_eq!(
            show(OomArgs {
                comm: Some("nginx".into()),
                ..args()
            }),
            "none of the 6 OOM kills seen since the daemon started match the filters\n"
        );
        let json: serde_json::Value = serde_json::from_str(&show(OomArgs {
            comm: Some("redis".into()),
            json: true,
            ..args()
        }))
        .unwrap();
        assert_eq!(json["ooms"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn without_url_the_error_says_where_it_looked_and_how_to_look_elsewhere() {
        let message = unreachable("http://127.0.0.1:9847/api/v1/oom", false);
        assert_eq!(
            message,
            "cannot reach the memtrace daemon at http://127.0.0.1:9847/api/v1/oom, the default \
             address: is `memtrace daemon` running? If it listens elsewhere, give its address \
             with --url HOST:PORT or MEMTRACE_URL"
        );
    }

    /// A one-request HTTP server answering with `body`; its port.
    fn serve_once(body: &'static str) -> u16 {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                line.clear();
            }
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        });
        port
    }

    #[test]
    fn a_url_without_a_scheme_is_http() {
        let port = serve_once(include_str!(
            "../../../memtrace-api/tests/fixtures/oom-v1.json"
        ));
        run(OomArgs {
            url: Some(format!("localhost:{port}")),
            ..args()
        })
        .expect("localhost:PORT reaches the daemon");
    }

    #[test]
    fn hostile_names_cannot_forge_report_lines() {
        let oom = OomRecord {
            timestamp: "2026-11-24T02:31:05.123Z\u{1b}[2J".into(),
            victim_pid: 1,
            victim_comm: "x\n# TYPE y".into(),
            victim_cgroup: Some("/rel_\\xff\u{1b}[31m".into()),
            trigger_pid: 1,
            trigger_comm: "\u{1b}]0;t\u{7}".into(),
            victim_owner: memtrace_api::OwnerView {
                container_id: Some("é\u{1b}".repeat(20)),
                ..Default::default()
            },
            ..Default::default()
        };
        let text = report(&oom);
        assert!(
            text.contains("victim   1 (x\\n# TYPE y)  cgroup /rel_\\xff\\e[31m"),
            "{text}"
        );
        assert!(text.contains("trigger  1 (\\e]0;t\\x07)"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        // Header, victim, trigger, memory, "no history" and the blank line after it.
        assert_eq!(text.lines().count(), 6, "{text}");
    }

    #[test]
    fn report_explains_the_cgroup_at_the_kill() {
        let mut oom = OomRecord {
            victim_pid: 4242,
            victim_comm: "memhog".into(),
            victim_cgroup: Some("/oomtest".into()),
            anon_rss_bytes: Some(99 << 20),
            ..Default::default()
        };
        assert!(
            !report(&oom).contains("cgroup at the kill"),
            "nothing known, no block"
        );
        oom.cgroup_usage_at_kill_bytes = Some(200 << 20);
        oom.cgroup_memory_stat = Some(memtrace_api::CgroupMemoryStat {
            version: 1,
            anon_bytes: Some(190 << 20),
            file_bytes: Some(9 << 20),
            kernel_bytes: Some(1 << 20),
            ..Default::default()
        });
        oom.cgroup_processes = vec![memtrace_api::CgroupProcess {
            pid: 4243,
            comm: "memhog-child".into(),
            rss_bytes: 91 << 20,
        }];
        let text = report(&oom);
        assert!(
            text.contains("  cgroup at the kill  usage 200.0 MiB\n"),
            "{text}"
        );
        assert!(
            text.contains("    memory.stat (v1)  anon 190.0 MiB  file 9.0 MiB  kernel 1.0 MiB\n"),
            "{text}"
        );
        assert!(
            text.contains("4243     memhog-child     rss 91.0 MiB"),
            "{text}"
        );
    }
}
