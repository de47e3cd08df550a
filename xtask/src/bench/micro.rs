//! Benchmark 7: memtrace's criterion micro-benchmarks of the hot path.
use anyhow::{Result, bail};

use super::{
    Benchmark,
    harness::Env,
    report::{Section, md},
};
use crate::{output, say};

pub(super) fn bench_micro(env: &Env) -> Result<Section> {
    let mut cmd = env.ctx.cmd("cargo");
    cmd.args([
        "bench", "-p", "memtrace", "--bench", "hot_path", "--", "--quick",
    ])
    .env_remove("CARGO_TARGET_DIR");
    env.note(&cmd);
    say("running the criterion micro-benchmarks (cargo bench … --quick)");
    let out = output(cmd)?;
    let results = parse_criterion(&out);
    if results.is_empty() {
        bail!("no results in criterion's output:\n{out}");
    }
    Ok(render_micro(&results))
}

pub(super) fn render_micro(results: &[(String, String, String, String)]) -> Section {
    let mut section = Section::new(Benchmark::Micro);
    md!(
        section.body,
        "criterion (`--quick`), in-process, no kernel involved; low – estimate – high is criterion's confidence interval. `decode/*`: `Event::decode` of one ring-buffer record; `render/*`: one event rendered as a JSON line / a text line into a reused buffer; `model/observe_event_exit`: `Model::observe_event` for an exit record; `model/observe_processes_10k_tick`: one sampling tick of 10,000 live processes (divide by 10,000 for the per-process cost).\n"
    );
    md!(
        section.body,
        "| Benchmark | time per call (low – estimate – high) |"
    );
    md!(section.body, "|---|---|");
    for (name, low, est, high) in results {
        md!(section.body, "| `{name}` | {low} – **{est}** – {high} |");
    }
    md!(section.body);
    section
}

/// `name  time:   [1.23 ns 1.25 ns 1.27 ns]` (the name may be on the line before).
pub(super) fn parse_criterion(out: &str) -> Vec<(String, String, String, String)> {
    let mut results = Vec::new();
    let mut previous = "";
    for line in out.lines() {
        if let Some(i) = line.find("time:") {
            let name = match line[..i].trim() {
                "" => previous.trim(),
                n => n,
            };
            let inside = line[i..]
                .split_once('[')
                .and_then(|(_, r)| r.split_once(']'))
                .map(|(v, _)| v);
            if let Some(values) = inside {
                let parts: Vec<&str> = values.split_whitespace().collect();
                if parts.len() == 6 {
                    results.push((
                        name.to_owned(),
                        format!("{} {}", parts[0], parts[1]),
                        format!("{} {}", parts[2], parts[3]),
                        format!("{} {}", parts[4], parts[5]),
                    ));
                }
            }
        }
        if !line.trim().is_empty() && !line.starts_with(' ') {
            previous = line;
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criterion_output() {
        let out = "decode/mmap             time:   [3.1 ns 3.2 ns 3.3 ns]\nrender/json/a_very_long_benchmark_name\n                        time:   [101.5 ns 102.0 ns 103.9 ns]\n";
        let r = parse_criterion(out);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, "decode/mmap");
        assert_eq!(r[0].2, "3.2 ns");
        assert_eq!(r[1].0, "render/json/a_very_long_benchmark_name");
        assert_eq!(r[1].3, "103.9 ns");
    }
}
