//! `memtrace oom`: recent OOM kills with their flight recordings, from a running daemon.
use std::fmt::Write as _;

use clap::Args;

use memtrace_api::OomRecord;
use memtrace_api::client::{Client, ClientError};

use crate::{cli::daemon::DEFAULT_LISTEN, units::human_bytes};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  memtrace oom                 the last kills seen by the local daemon\n  memtrace oom --last 1 --json\n  memtrace oom --url http://10.0.0.5:9847"
)]
pub struct OomArgs {
    /// Base URL of a running `memtrace daemon`.
    #[arg(long, value_name = "URL", default_value_t = format!("http://{DEFAULT_LISTEN}"))]
    pub url: String,

    /// Show only the N most recent kills.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,

    /// Print the API's JSON instead of the report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: OomArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.url);
    let body = match client.ooms() {
        Ok(body) => body,
        Err(ClientError::Unreachable { url, source }) => {
            return Err(anyhow::Error::new(*source).context(unreachable(&url)));
        }
        Err(e @ ClientError::Status { .. }) => {
            let message = unreachable(e.url());
            return Err(anyhow::Error::new(e).context(message));
        }
        Err(e @ ClientError::Decode { .. }) => return Err(e.into()),
    };
    let mut ooms = body.ooms;
    if let Some(last) = args.last {
        ooms.truncate(last);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "schema_version": body.schema_version, "ooms": ooms })
            )?
        );
        return Ok(());
    }
    if ooms.is_empty() {
        println!("no OOM kills seen since the daemon started");
        return Ok(());
    }
    for oom in &ooms {
        print!("{}", report(oom));
    }
    Ok(())
}

fn unreachable(url: &str) -> String {
    format!("cannot reach the memtrace daemon at {url} (is `memtrace daemon` running? see --url)")
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
                p.comm,
                human_bytes(p.rss_bytes)
            );
        }
    }
}

/// The human report of one kill.
pub fn report(oom: &OomRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "OOM kill at {}", oom.timestamp);
    let _ = write!(out, "  victim   {} ({})", oom.victim_pid, oom.victim_comm);
    if let Some(cgroup) = &oom.victim_cgroup {
        let _ = write!(out, "  cgroup {cgroup}");
    }
    if let Some(pod) = &oom.victim_owner.pod_uid {
        let _ = write!(out, "  pod {pod}");
    }
    if let Some(container) = &oom.victim_owner.container_id {
        let _ = write!(out, "  container {}", &container[..container.len().min(12)]);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "  trigger  {} ({})", oom.trigger_pid, oom.trigger_comm);
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
            url: addr.to_string(),
            last: None,
            json: false,
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the memtrace daemon at http://{addr}/api/v1/oom (is `memtrace \
                 daemon` running? see --url)"
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
