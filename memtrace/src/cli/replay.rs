//! `memtrace replay FILE [--at TIME] [-o json|text] [--list]`: one frame of a recording, or the
//! list of its frames and OOM kills.
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use memtrace_api::{OomRecord, frame::Frame};
use serde::Serialize;

use crate::escape::terminal;
use crate::record::{Damage, Timeline, resolve_time};
use crate::units::human_bytes;

const EXAMPLES: &str = "\
Examples:
  memtrace replay node-a.mtr                          the last frame
  memtrace replay node-a.mtr --list                   every frame's time, and the OOM kills
  memtrace replay node-a.mtr --at 2026-11-30T03:12:00Z
  memtrace replay node-a.mtr --at -5m -o json         five minutes before the end, as JSON
  memtrace replay node-a.mtr --at +90s                90 s after the start
  memtrace replay /var/lib/memtrace/recordings --at 03:12   a daemon's --record-dir, all its files

Damage is said on stderr with the file and offset: a torn tail (a crash while writing) as a
warning, anything else as an error (exit status 1); every intact frame is still read.";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For a terminal.
    #[default]
    Text,
    /// The frame (memtrace_api::frame::Frame), or the list, as JSON.
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ReplayArgs {
    /// A recording (`memtrace record`, a file of `memtrace daemon --record-dir`), or a
    /// `--record-dir` itself: its files read as one timeline.
    #[arg(value_name = "FILE|DIR")]
    pub file: PathBuf,

    /// The frame at TIME (the last one taken at or before it): RFC 3339 in UTC
    /// (2026-11-30T03:12:00Z), or relative: -5m before the last frame, +90s after the first
    /// [default: the last frame].
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub at: Option<String>,

    /// List the frames (time, processes, OOM kills first seen in them) instead of showing one.
    #[arg(long, conflicts_with = "at")]
    pub list: bool,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let mut reader = Timeline::open(&args.file)?;
    let mut damage = reader.damage();
    let out = if args.list {
        list(&mut reader, args.output, &mut damage)?
    } else {
        one_frame(&mut reader, args, &mut damage)?
    };
    print!("{out}");
    // Said after the output, so it is the last thing on the terminal.
    let mut status = ExitCode::SUCCESS;
    for damage in &damage {
        if damage.is_torn_tail() {
            eprintln!("memtrace: warning: {}", terminal(&damage.to_string()));
        } else {
            eprintln!("memtrace: error: {}", terminal(&damage.to_string()));
            status = ExitCode::FAILURE;
        }
    }
    Ok(status)
}

fn one_frame(
    reader: &mut Timeline,
    args: &ReplayArgs,
    damage: &mut Vec<Damage>,
) -> anyhow::Result<String> {
    let name = args.file.display().to_string();
    if reader.is_empty() {
        anyhow::bail!("{}: no frames", terminal(&name));
    }
    let count = reader.len();
    let (first_ms, last_ms) = (
        reader.timestamp_unix_ms(0),
        reader.timestamp_unix_ms(count - 1),
    );
    let at = match &args.at {
        Some(spec) => {
            resolve_time(spec, first_ms, last_ms).map_err(|err| anyhow::anyhow!("--at: {err}"))?
        }
        None => last_ms,
    };
    if at < first_ms {
        eprintln!(
            "memtrace: warning: --at is before the first frame ({}): showing it",
            rfc3339(first_ms)
        );
    }
    let mut index = reader.index_at(at).expect("not empty");
    // A frame that does not decode is said, and the one before it shown.
    let frame = loop {
        match reader.decode(index) {
            Ok(frame) => break frame,
            Err(err) if index > 0 => {
                damage.push(err);
                index -= 1;
            }
            Err(err) => return Err(err.into()),
        }
    };
    Ok(match args.output {
        Output::Json => json(&frame)?,
        Output::Text => text(&frame, index, count, first_ms),
    })
}

/// One line of `--list`.
#[derive(Debug, Serialize)]
struct Listed {
    timestamp_unix_ms: u64,
    processes: usize,
    /// A key frame (compressed alone) or a frame compressed against its key frame.
    key_frame: bool,
    /// Bytes of its record in the file.
    record_bytes: u64,
    /// Bytes of its JSON.
    json_bytes: u64,
    /// Kills first seen in this frame (a kill stays in the snapshots' recent OOMs for a while).
    ooms: Vec<OomRecord>,
}

fn list(reader: &mut Timeline, output: Output, damage: &mut Vec<Damage>) -> anyhow::Result<String> {
    let mut seen = HashSet::new();
    let mut listed = Vec::with_capacity(reader.len());
    for index in 0..reader.len() {
        let header = reader.entry(index).header;
        let frame = match reader.decode(index) {
            Ok(frame) => frame,
            Err(err) => {
                damage.push(err);
                continue;
            }
        };
        let mut ooms: Vec<OomRecord> = frame
            .snapshot
            .recent_ooms
            .iter()
            .filter(|oom| seen.insert((oom.timestamp_unix_ms, oom.victim_pid)))
            .cloned()
            .collect();
        ooms.sort_by_key(|oom| oom.timestamp_unix_ms);
        listed.push(Listed {
            timestamp_unix_ms: frame.timestamp_unix_ms(),
            processes: frame.snapshot.processes.len(),
            key_frame: header.is_key(),
            record_bytes: header.record_len() as u64,
            json_bytes: u64::from(header.frame_len),
            ooms,
        });
    }
    if output == Output::Json {
        return json(&listed);
    }
    let mut out = String::new();
    let mut previous: Option<u64> = None;
    for item in &listed {
        let gap = previous.map_or(String::new(), |p| {
            format!(
                "+{:.1}s",
                item.timestamp_unix_ms.saturating_sub(p) as f64 / 1000.0
            )
        });
        previous = Some(item.timestamp_unix_ms);
        let _ = writeln!(
            out,
            "{}  {gap:>7}  {:>6} processes  {:>10}{}",
            rfc3339(item.timestamp_unix_ms),
            item.processes,
            human_bytes(item.record_bytes),
            if item.key_frame { " (key)" } else { "" }
        );
        for oom in &item.ooms {
            let _ = writeln!(
                out,
                "    OOM kill at {}: {}",
                rfc3339(oom.timestamp_unix_ms),
                victim(oom)
            );
        }
    }
    let kills: usize = listed.iter().map(|item| item.ooms.len()).sum();
    let bytes: u64 = listed.iter().map(|item| item.record_bytes).sum();
    let _ = writeln!(
        out,
        "{} frames in {}, {kills} OOM kills",
        listed.len(),
        human_bytes(bytes)
    );
    Ok(out)
}

fn json<T: Serialize>(value: &T) -> anyhow::Result<String> {
    let mut json = serde_json::to_string_pretty(value).context("serializing")?;
    json.push('\n');
    Ok(json)
}

/// The frame for a terminal: the node, its memory, the processes under most pressure and the
/// OOM kills it lists.
fn text(frame: &Frame, index: usize, count: usize, first_ms: u64) -> String {
    let snapshot = &frame.snapshot;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} at {}: frame {} of {}, {:.0} s into the recording",
        terminal(frame.node_name()),
        rfc3339(frame.timestamp_unix_ms()),
        index + 1,
        count,
        frame.timestamp_unix_ms().saturating_sub(first_ms) as f64 / 1000.0
    );
    let memory = &snapshot.node_memory;
    let psi = memory.psi.map_or(String::new(), |psi| {
        format!(
            ", PSI some {:.2}% full {}",
            psi.some_avg10,
            psi.full_avg10
                .map_or("-".to_owned(), |full| format!("{full:.2}%"))
        )
    });
    let _ = writeln!(
        out,
        "memory: {} available of {}, swap {} free of {}{psi}",
        human_bytes(memory.mem_available_bytes),
        human_bytes(memory.mem_total_bytes),
        human_bytes(memory.swap_free_bytes),
        human_bytes(memory.swap_total_bytes),
    );
    let _ = writeln!(
        out,
        "\n{:>8}  {:<16} {:>11} {:>10} {:>9} {:>6}",
        "PID", "COMM", "RSS", "MINFLT/s", "MAJFLT/s", "SCORE"
    );
    let mut processes: Vec<_> = snapshot.processes.iter().collect();
    processes.sort_by(|a, b| b.pressure_score.total_cmp(&a.pressure_score));
    const SHOWN: usize = 15;
    for process in processes.iter().take(SHOWN) {
        let _ = writeln!(
            out,
            "{:>8}  {:<16} {:>11} {:>10.1} {:>9.1} {:>6.1}",
            process.pid,
            terminal(&process.comm),
            human_bytes(process.rss_bytes),
            process.rates.faults_minor_per_sec,
            process.rates.faults_major_per_sec,
            process.pressure_score
        );
    }
    if processes.len() > SHOWN {
        let _ = writeln!(
            out,
            "… {} more processes (-o json for all)",
            processes.len() - SHOWN
        );
    }
    if !snapshot.recent_ooms.is_empty() {
        let _ = writeln!(out, "\nOOM kills:");
        let mut ooms: Vec<_> = snapshot.recent_ooms.iter().collect();
        ooms.sort_by_key(|oom| oom.timestamp_unix_ms);
        for oom in ooms {
            let _ = writeln!(out, "  {}  {}", rfc3339(oom.timestamp_unix_ms), victim(oom));
        }
    }
    out
}

fn victim(oom: &OomRecord) -> String {
    let cgroup = oom
        .victim_cgroup
        .as_deref()
        .map_or(String::new(), |cg| format!(" in {}", terminal(cg)));
    format!(
        "pid {} ({}){cgroup}, {}",
        oom.victim_pid,
        terminal(&oom.victim_comm),
        oom.anon_rss_bytes
            .map_or("RSS unknown".to_owned(), |rss| format!(
                "{} anon RSS",
                human_bytes(rss)
            ))
    )
}

fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{RecordWriter, WriterOptions};

    fn replay(file: &std::path::Path, flags: &[&str]) -> anyhow::Result<String> {
        use clap::Parser as _;
        let mut argv = vec!["memtrace", "replay", file.to_str().unwrap()];
        argv.extend_from_slice(flags);
        let cli = crate::cli::Cli::try_parse_from(argv)?;
        let crate::cli::Command::Replay(args) = cli.command else {
            panic!("not replay");
        };
        let mut reader = Timeline::open(&args.file)?;
        let mut damage = Vec::new();
        if args.list {
            list(&mut reader, args.output, &mut damage)
        } else {
            one_frame(&mut reader, &args, &mut damage)
        }
    }

    #[test]
    fn at_picks_the_frame_and_json_is_the_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.mtr");
        let frames = crate::record::tests::frames(10, 4);
        let mut writer = RecordWriter::create(&path, WriterOptions::default()).unwrap();
        for frame in &frames {
            writer.append(frame).unwrap();
        }
        writer.finish().unwrap();
        let at = |flags: &[&str]| -> Frame {
            serde_json::from_str(&replay(&path, flags).unwrap()).unwrap()
        };
        assert_eq!(at(&["-o", "json"]), frames[9], "the last by default");
        assert_eq!(at(&["--at", "+3s", "-o", "json"]), frames[3]);
        assert_eq!(at(&["--at", "+3999ms", "-o", "json"]), frames[3]);
        assert_eq!(at(&["--at", "-2s", "-o", "json"]), frames[7]);
        let absolute = rfc3339(frames[5].timestamp_unix_ms() + 500);
        assert_eq!(at(&["--at", &absolute, "-o", "json"]), frames[5]);
        let text = replay(&path, &["--at", "+1s"]).unwrap();
        assert!(
            text.starts_with("node-7 at 2026-11-22T02:31:11.000Z: frame 2 of 10"),
            "{text}"
        );
        assert!(
            text.contains("frame 2 of 10, 1 s into the recording"),
            "{text}"
        );
        assert!(text.contains("    1000  java"), "{text}");

        let listed = replay(&path, &["--list"]).unwrap();
        assert_eq!(listed.lines().count(), 10 + 1 + 1, "{listed}");
        assert!(
            listed.lines().last().unwrap().starts_with("10 frames in "),
            "{listed}"
        );
        assert!(listed.ends_with(" KiB, 1 OOM kills\n"), "{listed}");
        assert!(
            listed.lines().next().unwrap().ends_with(" (key)"),
            "{listed}"
        );
        let kill = listed
            .lines()
            .position(|l| l.contains("OOM kill at"))
            .unwrap();
        assert_eq!(kill, 6, "first seen in frame 5 (the sixth): {listed}");
        let err = replay(&path, &["--at", "soon"]).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("--at: invalid time 'soon'"),
            "{err:#}"
        );
    }
    /// A daemon's `--record-dir` reads as one timeline, whatever order its files were written.
    #[test]
    fn a_record_dir_is_one_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let frames = crate::record::tests::frames(10, 4);
        // The later hour first: order comes from the frames' times, not the files'.
        for (name, part) in [
            ("memtrace-20261122T023116Z.mtr", &frames[6..]),
            ("memtrace-20261122T023110Z.mtr", &frames[..6]),
        ] {
            let mut writer =
                RecordWriter::create(&dir.path().join(name), WriterOptions::default()).unwrap();
            for frame in part {
                writer.append(frame).unwrap();
            }
            writer.finish().unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "not a recording").unwrap();
        let at = |flags: &[&str]| -> Frame {
            serde_json::from_str(&replay(dir.path(), flags).unwrap()).unwrap()
        };
        assert_eq!(at(&["-o", "json"]), frames[9]);
        assert_eq!(at(&["--at", "+7s", "-o", "json"]), frames[7]);
        assert_eq!(at(&["--at", "+2s", "-o", "json"]), frames[2]);
        let listed = replay(dir.path(), &["--list"]).unwrap();
        assert!(
            listed.lines().last().unwrap().starts_with("10 frames in "),
            "{listed}"
        );
        let recording = crate::record::Recording::open(dir.path()).unwrap();
        assert_eq!(recording.frames(), frames.as_slice());
        assert!(recording.damage().is_empty());

        let empty = tempfile::tempdir().unwrap();
        let err = replay(empty.path(), &[]).unwrap_err();
        assert!(
            format!("{err:#}").ends_with("no recordings (memtrace-*.mtr) in this directory"),
            "{err:#}"
        );
    }
}
