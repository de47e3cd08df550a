//! Benchmark 12: the size of a recording. The daemon runs with this machine's own processes;
//! `memtrace record` records it at a 1 s interval for a few minutes; `memtrace replay --list -o
//! json` gives each record's bytes on disk and its JSON's. The figures are extrapolated to an
//! hour (3,600 frames at 1 s) and divided by the mean process count: bytes per process per hour.
//! Compared with the ratios Meta's below publishes for its store (`below record --compress`:
//! "around 10x smaller data files", with `--dict-compress-chunk-size 16`: "around 20-30x
//! smaller"; `below/src/main.rs`, `CompressOpts`).
use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use super::{
    Benchmark,
    harness::{Env, Running, STOP_GRACE},
    report::{Section, Status, Verdict, md},
};
use crate::say;

/// How long the recording runs: about eleven key intervals (a key frame each 16 s at 1 s).
const RECORD_FOR: Duration = Duration::from_secs(180);

/// One line of `memtrace replay --list -o json` (the fields read here).
#[derive(Debug, Deserialize)]
struct Listed {
    processes: u64,
    key_frame: bool,
    record_bytes: u64,
    json_bytes: u64,
}

pub(super) struct RecordSize {
    frames: u64,
    key_frames: u64,
    mean_processes: f64,
    file_bytes: u64,
    record_bytes: u64,
    json_bytes: u64,
    key_bytes: u64,
}

impl RecordSize {
    fn of(listed: &[Listed], file_bytes: u64) -> Self {
        let keys = listed.iter().filter(|l| l.key_frame);
        Self {
            frames: listed.len() as u64,
            key_frames: keys.clone().count() as u64,
            mean_processes: listed.iter().map(|l| l.processes as f64).sum::<f64>()
                / listed.len().max(1) as f64,
            file_bytes,
            record_bytes: listed.iter().map(|l| l.record_bytes).sum(),
            json_bytes: listed.iter().map(|l| l.json_bytes).sum(),
            key_bytes: keys.map(|l| l.record_bytes).sum(),
        }
    }

    fn bytes_per_frame(&self) -> f64 {
        self.record_bytes as f64 / self.frames.max(1) as f64
    }

    /// At 1 s: 3,600 frames an hour.
    fn bytes_per_hour(&self) -> f64 {
        self.bytes_per_frame() * 3600.0
    }

    fn bytes_per_process_hour(&self) -> f64 {
        self.bytes_per_hour() / self.mean_processes.max(1.0)
    }

    fn ratio(&self) -> f64 {
        self.json_bytes as f64 / self.record_bytes.max(1) as f64
    }
}

pub(super) fn bench_record_size(env: &Env) -> Result<Section> {
    if env.running != Running::Daemon {
        bail!("needs `memtrace daemon` (this build runs the trace stand-in)");
    }
    let file = env.logs.join("record-size.mtr");
    let (mut daemon, _) = env.start_memtrace()?;
    let mut record = Command::new(&env.bins.memtrace);
    record
        .args(["record", "-o"])
        .arg(&file)
        .args(["--url", &env.args.listen.to_string(), "--interval", "1s"])
        .args(["--duration", &format!("{}s", RECORD_FOR.as_secs())]);
    env.note(&record);
    say(format!(
        "recording the daemon for {} s",
        RECORD_FOR.as_secs()
    ));
    let recorded = record.output().context("running memtrace record")?;
    daemon.stop(STOP_GRACE)?;
    if !recorded.status.success() {
        bail!(
            "memtrace record failed: {}",
            String::from_utf8_lossy(&recorded.stderr).trim()
        );
    }
    let mut list = Command::new(&env.bins.memtrace);
    list.arg("replay").arg(&file).args(["--list", "-o", "json"]);
    env.note(&list);
    let listed = list.output().context("running memtrace replay")?;
    if !listed.status.success() {
        bail!(
            "memtrace replay --list failed: {}",
            String::from_utf8_lossy(&listed.stderr).trim()
        );
    }
    let listed: Vec<Listed> =
        serde_json::from_slice(&listed.stdout).context("reading replay --list -o json")?;
    let file_bytes = std::fs::metadata(&file)
        .with_context(|| format!("{}", file.display()))?
        .len();
    let size = RecordSize::of(&listed, file_bytes);
    say(format!(
        "{} frames, {:.0} processes, {:.0} B/frame, {:.0} B per process per hour",
        size.frames,
        size.mean_processes,
        size.bytes_per_frame(),
        size.bytes_per_process_hour()
    ));
    Ok(render_record_size(&size))
}

pub(super) fn render_record_size(size: &RecordSize) -> Section {
    let mut section = Section::new(Benchmark::RecordSize);
    let kib = |bytes: f64| format!("{:.1} KiB", bytes / 1024.0);
    let mib = |bytes: f64| format!("{:.1} MiB", bytes / (1024.0 * 1024.0));
    md!(
        section.body,
        "`memtrace record` of the daemon at a 1 s interval for {} s: {} frames ({} key frames) of \
         {:.0} processes on average (this machine's own), {} on disk. An hour is 3,600 such \
         frames.\n",
        RECORD_FOR.as_secs(),
        size.frames,
        size.key_frames,
        size.mean_processes,
        kib(size.file_bytes as f64)
    );
    md!(section.body, "| Figure | Value |");
    md!(section.body, "|---|---|");
    md!(
        section.body,
        "| bytes per frame (mean) | {:.0} B |",
        size.bytes_per_frame()
    );
    md!(
        section.body,
        "| key frames' share of the file | {:.0}% |",
        100.0 * size.key_bytes as f64 / size.record_bytes.max(1) as f64
    );
    md!(
        section.body,
        "| frames' JSON / bytes on disk | {:.0}× (below publishes ~10× for `--compress`, ~20–30× with `--dict-compress-chunk-size 16`) |",
        size.ratio()
    );
    md!(
        section.body,
        "| per hour at 1 s | {} |",
        mib(size.bytes_per_hour())
    );
    md!(
        section.body,
        "| per process per hour at 1 s | {} |\n",
        kib(size.bytes_per_process_hour())
    );
    section.verdicts.push(Verdict::new(
        "recording, per process per hour at 1 s",
        kib(size.bytes_per_process_hour()),
        "—",
        Status::Info,
    ));
    section.verdicts.push(Verdict::new(
        "recording, JSON / bytes on disk",
        format!("{:.0}×", size.ratio()),
        "below: 20–30×",
        Status::Info,
    ));
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_per_frame_extrapolated_to_an_hour_and_per_process() {
        let listed: Vec<Listed> = serde_json::from_str(
            r#"[{"processes": 100, "key_frame": true, "record_bytes": 6000, "json_bytes": 60000},
                {"processes": 100, "key_frame": false, "record_bytes": 1000, "json_bytes": 60000},
                {"processes": 100, "key_frame": false, "record_bytes": 1000, "json_bytes": 60000,
                 "timestamp_unix_ms": 1, "ooms": []}]"#,
        )
        .unwrap();
        let size = RecordSize::of(&listed, 8016);
        assert_eq!(size.bytes_per_frame(), 8000.0 / 3.0);
        assert_eq!(size.bytes_per_hour(), 9_600_000.0);
        assert_eq!(size.bytes_per_process_hour(), 96_000.0);
        assert_eq!(size.ratio(), 22.5);
        let section = render_record_size(&size);
        assert!(
            section
                .body
                .contains("| per process per hour at 1 s | 93.8 KiB |")
        );
        assert!(
            section
                .body
                .contains("| key frames' share of the file | 75% |")
        );
    }
}
