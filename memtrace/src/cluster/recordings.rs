//! `memtrace cluster … --recordings FILE… [--at TIME]`: a round whose answers are the
//! recordings' frames at one instant, as if each recording were a node answering then. The views
//! and diagnostics run on it unchanged, with "now" at that instant (a post-mortem of a fleet).
use std::path::PathBuf;
use std::time::Duration;

use memtrace_api::cluster::NodeFailure;

use super::diagnose::{NodeAnswer, Thresholds};
use super::fanout::Round;
use crate::record::{Timeline, resolve_time};

/// A recording whose last frame before the instant is older than this did not "answer" then:
/// its node was down, or not recorded.
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// The round of `files` at `at` (see [`resolve_time`]; relative to the newest end and the oldest
/// start among them; default: the newest end). A file that cannot be read, has no frame near the
/// instant or no workloads view is a failure naming it.
pub fn round(
    files: &[PathBuf],
    at: Option<&str>,
    reduce: Option<&Thresholds>,
) -> anyhow::Result<Round> {
    let started = std::time::Instant::now();
    let mut readers = Vec::with_capacity(files.len());
    for file in files {
        let target = file.display().to_string();
        match Timeline::open(file) {
            Ok(reader) => {
                for damage in reader.damage() {
                    eprintln!(
                        "memtrace: warning: {}",
                        crate::escape::terminal(&damage.to_string())
                    );
                }
                readers.push((target, Ok(reader)));
            }
            Err(err) => readers.push((target, Err(err.to_string()))),
        }
    }
    let spans = readers.iter().filter_map(|(_, reader)| {
        let reader = reader.as_ref().ok()?;
        let last = reader.len().checked_sub(1)?;
        Some((reader.timestamp_unix_ms(0), reader.timestamp_unix_ms(last)))
    });
    let (first, last) = spans.fold((u64::MAX, 0), |(first, last), (start, end)| {
        (first.min(start), last.max(end))
    });
    let now = match at {
        Some(spec) => resolve_time(spec, first.min(last), last)
            .map_err(|err| anyhow::anyhow!("--at: {err}"))?,
        None => last,
    };
    let mut round = Round {
        generated_unix_ms: now,
        ..Round::default()
    };
    round.coverage.asked = u32::try_from(files.len()).unwrap_or(u32::MAX);
    for (target, reader) in readers {
        let answer = reader.and_then(|mut reader| frame_at(&mut reader, now));
        match answer {
            Ok(summary) => round.answers.push(match reduce {
                Some(t) => NodeAnswer::reduced(target, summary, t, now),
                None => NodeAnswer {
                    target,
                    summary,
                    trends: None,
                },
            }),
            Err(error) => round.coverage.failures.push(NodeFailure {
                target,
                node: None,
                error,
                elapsed_seconds: 0.0,
            }),
        }
    }
    round.coverage.answered = u32::try_from(round.answers.len()).unwrap_or(u32::MAX);
    round.elapsed = started.elapsed();
    Ok(round)
}

/// The workloads view of the last frame at or before `now`, if recent enough.
fn frame_at(
    reader: &mut Timeline,
    now: u64,
) -> Result<memtrace_api::workloads::WorkloadsResponse, String> {
    let Some(last) = reader.len().checked_sub(1) else {
        return Err("no frames".to_owned());
    };
    let span = format!(
        "it covers {} to {}",
        rfc3339(reader.timestamp_unix_ms(0)),
        rfc3339(reader.timestamp_unix_ms(last))
    );
    let mut index = reader.index_at(now).ok_or("no frames")?;
    if reader.timestamp_unix_ms(index) > now {
        return Err(format!("no frame at {} ({span})", rfc3339(now)));
    }
    let stale_ms = now.saturating_sub(reader.timestamp_unix_ms(index));
    if stale_ms > STALE_AFTER.as_millis() as u64 {
        return Err(format!(
            "no frame in the 5 minutes before {} ({span})",
            rfc3339(now)
        ));
    }
    // A frame that does not decode: the one before, if still recent.
    let frame = loop {
        match reader.decode(index) {
            Ok(frame) => break frame,
            Err(damage) => {
                let previous = index.checked_sub(1).filter(|&i| {
                    now.saturating_sub(reader.timestamp_unix_ms(i))
                        <= STALE_AFTER.as_millis() as u64
                });
                match previous {
                    Some(i) => index = i,
                    None => return Err(damage.to_string()),
                }
            }
        }
    };
    frame
        .workloads
        .ok_or_else(|| "recorded without the workloads view (a daemon older than cluster)".into())
}

fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(unix_ms))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::views;
    use crate::record::{RecordWriter, WriterOptions, tests::frames};

    /// Ten frames of `node`, the first at `offset_s` after the fixtures' time.
    fn record(dir: &std::path::Path, node: &str, offset_s: u64) -> PathBuf {
        let path = dir.join(format!("{node}.mtr"));
        let mut writer = RecordWriter::create(&path, WriterOptions::default()).unwrap();
        for mut frame in frames(10, 3) {
            frame.snapshot.timestamp_unix_ms += offset_s * 1000;
            frame.snapshot.node.name = Some(node.to_owned());
            if let Some(workloads) = &mut frame.workloads {
                workloads.timestamp_unix_ms += offset_s * 1000;
                workloads.node.name = node.to_owned();
            }
            writer.append(&frame).unwrap();
        }
        writer.finish().unwrap();
        path
    }

    #[test]
    fn recordings_are_nodes_at_one_instant() {
        let dir = tempfile::tempdir().unwrap();
        let a = record(dir.path(), "node-a", 0);
        let b = record(dir.path(), "node-b", 2);
        // Ended ten minutes before the others: not a node at that instant.
        let gone = record(dir.path(), "node-gone", 0);
        let garbage = dir.path().join("notes.mtr");
        std::fs::write(&garbage, "not a recording").unwrap();

        // At +6s (of the oldest start): a's frame 6, b's frame 4.
        let round = round(&[a.clone(), b.clone()], Some("+6s"), None).unwrap();
        assert_eq!(round.coverage.asked, 2);
        assert!(round.coverage.failures.is_empty(), "{:?}", round.coverage);
        let input = frames(10, 3);
        assert_eq!(round.generated_unix_ms, input[6].timestamp_unix_ms());
        let nodes: Vec<_> = round.answers.iter().map(|a| a.node_name()).collect();
        assert_eq!(nodes, ["node-a", "node-b"]);
        let times: Vec<u64> = round
            .answers
            .iter()
            .map(|a| a.summary.timestamp_unix_ms)
            .collect();
        assert_eq!(
            times,
            [
                input[6].timestamp_unix_ms(),
                input[4].timestamp_unix_ms() + 2000
            ]
        );
        let top = views::top(&round);
        let redis = top
            .workloads
            .iter()
            .find(|w| w.workload == "shop/Deployment/redis-cache")
            .expect("the fixture's workload");
        assert_eq!(redis.nodes, 2, "merged across the two recordings");
        // The diagnostics run on it, "now" being the instant.
        let with_trends =
            super::round(&[a.clone(), b.clone()], None, Some(&Thresholds::default())).unwrap();
        assert!(with_trends.answers.iter().all(|a| a.trends.is_some()));
        let report = views::diagnose_report(&with_trends, &Thresholds::default());
        assert_eq!(
            report.generated_unix_ms,
            input[9].timestamp_unix_ms() + 2000
        );

        let gone_path = dir.path().join("node-gone-late.mtr");
        std::fs::rename(&gone, &gone_path).unwrap();
        let round = super::round(&[a, gone_path.clone(), garbage], Some("+12m"), None).unwrap();
        assert_eq!(round.coverage.answered, 0);
        let errors: Vec<&str> = round
            .coverage
            .failures
            .iter()
            .map(|f| f.error.as_str())
            .collect();
        assert!(
            errors[0]
                .starts_with("no frame in the 5 minutes before 2026-11-22T02:43:10Z (it covers"),
            "{errors:?}"
        );
        assert!(
            errors[2].contains("offset 0: not a memtrace recording"),
            "{errors:?}"
        );
    }
}
