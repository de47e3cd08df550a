//! What one kernel's run left in its results directory (written by `guest/plan.sh`), judged, and
//! the matrix rendered as Markdown for the README.
use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path, time::Duration};

use serde_json::Value;

/// The outcome of the plan on one kernel.
#[derive(Debug, Default)]
pub struct KernelRun {
    /// `5.10`, …, or `host`.
    pub name: String,
    pub users: String,
    /// Debian package version, where the kernel came from a package.
    pub package: Option<String>,
    /// How it ran: `TCG`, `KVM`, `native`.
    pub how: String,
    pub took: Option<Duration>,
    /// Why the run itself failed (boot, timeout), if it did.
    pub error: Option<String>,
    /// `facts.env`: release, btf, kprobe_events, config_fentry, cgroup_fs, …
    pub facts: BTreeMap<String, String>,
    pub check_rc: Option<i32>,
    pub check: Option<Value>,
    pub check_err: String,
    pub trace_rc: Option<i32>,
    pub daemon: BTreeMap<String, String>,
    pub metrics_lines: usize,
    pub tests: Option<TestCounts>,
    pub failed_tests: Vec<String>,
    /// What each failed test printed (its libtest `---- NAME stdout ----` section), by name.
    pub failure_output: BTreeMap<String, String>,
    pub skipped_tests: Vec<String>,
    /// Tests listed in `known-failures.txt` for this kernel: (name, why).
    pub known: Vec<(String, String)>,
    pub bench: Vec<Value>,
}

const KNOWN_FAILURES: &str = include_str!("known-failures.txt");

/// The entries of `known-failures.txt` for `kernel`: (test, why).
pub fn known_failures(kernel: &str) -> Vec<(String, String)> {
    parse_known(KNOWN_FAILURES, kernel)
}

fn parse_known(text: &str, kernel: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut words = line.splitn(3, ' ');
            let (k, test, why) = (words.next()?, words.next()?, words.next().unwrap_or(""));
            (k == kernel).then(|| (test.to_owned(), why.trim().to_owned()))
        })
        .collect()
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct TestCounts {
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
    pub filtered: u32,
}

impl KernelRun {
    /// Reads what `plan.sh` wrote to `dir` (missing files stay empty: the judge says so).
    pub fn read(mut self, dir: &Path) -> Self {
        let text = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
        let rc = |name: &str| text(name).trim().parse::<i32>().ok();
        self.facts = env_file(&text("facts.env"));
        self.check_rc = rc("check.rc");
        self.check = serde_json::from_str(&text("check.json")).ok();
        self.check_err = text("check.err").trim().to_owned();
        self.trace_rc = rc("trace.rc");
        self.daemon = env_file(&text("daemon.env"));
        self.metrics_lines = text("metrics.txt")
            .lines()
            .filter(|line| line.starts_with("memtrace_"))
            .count();
        let log = text("tests.log");
        self.tests = test_counts(&log);
        self.failed_tests = log
            .lines()
            .filter_map(|line| line.strip_prefix("test ")?.strip_suffix(" ... FAILED"))
            .map(str::to_owned)
            .collect();
        self.failure_output = failure_sections(&log);
        self.bench = serde_json::from_str::<Vec<Value>>(&text("bench.json")).unwrap_or_default();
        self
    }

    /// Every way this run falls short; empty when the kernel passes.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(error) = &self.error {
            problems.push(error.clone());
            return problems;
        }
        // 1: a family was skipped — reported, and not a failure (the matrix says which).
        match self.check_rc {
            Some(0 | 1) if self.check.is_some() => {}
            other => problems.push(format!(
                "memtrace check exited {other:?}: {}",
                self.check_err.lines().last().unwrap_or("no output")
            )),
        }
        if self.trace_rc != Some(0) {
            problems.push(format!("memtrace trace exited {:?}", self.trace_rc));
        }
        let daemon = |key: &str| self.daemon.get(key).map(String::as_str);
        if daemon("ready") != Some("yes") || daemon("metrics_rc") != Some("0") {
            problems.push("memtrace daemon did not become ready and serve /metrics".into());
        } else if self.metrics_lines == 0 {
            problems.push("/metrics had no memtrace_ series".into());
        }
        if daemon("exit") != Some("0") {
            problems.push(format!(
                "memtrace daemon exited {:?} on SIGTERM",
                daemon("exit")
            ));
        }
        let unexpected = self.unexpected_failures();
        match &self.tests {
            None => problems.push("the privileged tests did not report a result".into()),
            Some(t) if t.passed == 0 => problems.push("no privileged test ran".into()),
            Some(_) if !unexpected.is_empty() => problems.push(format!(
                "{} privileged test(s) failed: {}",
                unexpected.len(),
                unexpected.join(", ")
            )),
            Some(_) => {}
        }
        problems
    }

    /// What the unexpected failures printed, so a CI log says why without the results directory:
    /// each test's section, its last `max_lines` lines.
    pub fn unexpected_failure_output(&self, max_lines: usize) -> String {
        let mut out = String::new();
        for test in self.unexpected_failures() {
            let section = self.failure_output.get(&test).map_or("", String::as_str);
            let lines: Vec<&str> = section.lines().collect();
            let kept = &lines[lines.len().saturating_sub(max_lines)..];
            let _ = writeln!(out, "---- {test} (kernel {}) ----", self.name);
            if kept.len() < lines.len() {
                let _ = writeln!(
                    out,
                    "[{} earlier lines in tests.log]",
                    lines.len() - kept.len()
                );
            }
            for line in kept {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    /// Failed tests that `known-failures.txt` does not list for this kernel.
    fn unexpected_failures(&self) -> Vec<String> {
        self.failed_tests
            .iter()
            .filter(|test| !self.known.iter().any(|(known, _)| known == *test))
            .cloned()
            .collect()
    }
}

fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// libtest's closing line: `test result: ok. 40 passed; 0 failed; 9 ignored; 0 measured; 4
/// filtered out; …`.
fn test_counts(log: &str) -> Option<TestCounts> {
    let line = log.lines().rev().find(|l| l.starts_with("test result:"))?;
    let number = |label: &str| -> Option<u32> {
        line.split(';')
            .find_map(|part| part.trim().strip_suffix(label))
            .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
    };
    Some(TestCounts {
        passed: number("passed")?,
        failed: number("failed")?,
        ignored: number("ignored").unwrap_or(0),
        filtered: number("filtered out").unwrap_or(0),
    })
}

/// One mode's families as a table cell: `tasks, reclaim, oom, lifecycle` with the exceptions
/// marked, plus the notes explaining them.
fn families_cell(run: &KernelRun, mode: &str, notes: &mut Vec<String>) -> String {
    let Some(families) = run.check.as_ref().and_then(|check| {
        check["modes"]
            .as_array()?
            .iter()
            .find(|m| m["mode"] == mode)?["families"]
            .as_array()
            .cloned()
    }) else {
        return "—".into();
    };
    let mut cell = Vec::new();
    for family in &families {
        let name = family["family"].as_str().unwrap_or("?");
        let missing: Vec<&str> = family["missing"]
            .as_array()
            .map(|m| m.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match family["status"].as_str() {
            Some("attached") => cell.push(name.to_owned()),
            Some("partial") => {
                notes.push(format!(
                    "{} {mode}: {name} without {}",
                    run.name,
                    missing.join("; ")
                ));
                cell.push(format!("{name} (partial¹)"));
            }
            Some("skipped") => {
                notes.push(format!(
                    "{} {mode}: {name} skipped: {}",
                    run.name,
                    missing.join("; ")
                ));
                cell.push(format!("**{name} skipped¹**"));
            }
            _ => {}
        }
    }
    cell.join(", ")
}

fn bench_cell(run: &KernelRun, number: u64) -> String {
    let rows: Vec<String> = run
        .bench
        .iter()
        .filter(|row| row["benchmark"].as_u64() == Some(number))
        .map(|row| {
            let figure = row["figure"].as_str().unwrap_or("");
            // Benchmarks 1 and 2: memtrace's overhead and its ratio to bpftrace's; 11: one row
            // per attach mechanism, named by its first word, memtrace's by what runs.
            let short = if figure.contains('÷') {
                "÷ bpftrace"
            } else if figure.starts_with("memtrace overhead") {
                "memtrace"
            } else if figure.starts_with("memtrace ") {
                figure.split(':').next().unwrap_or(figure)
            } else {
                figure.split_whitespace().next().unwrap_or(figure)
            };
            let result = row["result"].as_str().unwrap_or("?");
            let result = if result.starts_with("not run") {
                "not run"
            } else {
                result
            };
            format!("{short} {result}")
        })
        .collect();
    if rows.is_empty() {
        "not run".into()
    } else {
        rows.join("; ")
    }
}

/// The matrix as Markdown: one row per kernel, then the notes (fallbacks, skips, failures).
pub fn render(runs: &[KernelRun], when: &str, command: &str) -> String {
    let mut out = String::new();
    let mut notes = Vec::new();
    let _ = writeln!(
        out,
        "Generated by `{command}` on {when}. Families as `memtrace check` reports them on each \
         kernel (daemon: what `memtrace daemon` attaches; trace: what `memtrace trace` attaches); \
         tests: the privileged test binary run inside the VM; smoke: `memtrace trace` for 5 s \
         and `memtrace daemon` serving `/metrics`.\n"
    );
    let _ = writeln!(
        out,
        "| Kernel | Runs on | How | BTF · kprobes · fentry · cgroup | Daemon families | Trace families | Privileged tests | Smoke | Bench 1 (faults) | Bench 2 (mmap) | Bench 11 (attach mechanisms) | Result |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        let fact = |key: &str| run.facts.get(key).map(String::as_str).unwrap_or("?");
        let yes = |key: &str| match fact(key) {
            "yes" | "y" => "yes",
            "" | "?" => "?",
            _ => "no",
        };
        let kernel = match &run.package {
            Some(package) => format!("{} (`{}`, {package})", run.name, fact("release")),
            None => format!("{} (`{}`)", run.name, fact("release")),
        };
        let features = format!(
            "{} · {} · {} · {}",
            yes("btf"),
            yes("kprobe_events"),
            yes("config_fentry"),
            match fact("cgroup_fs") {
                "cgroup2fs" => "v2",
                "tmpfs" => "v1",
                other => other,
            }
        );
        let known_failed = run.failed_tests.len() - run.unexpected_failures().len();
        for (test, why) in &run.known {
            if run.failed_tests.contains(test) {
                notes.push(format!("{}: `{test}` failed, known: {why}", run.name));
            } else if run.tests.is_some() {
                notes.push(format!(
                    "{}: `{test}` passed, though listed as a known failure ({why})",
                    run.name
                ));
            }
        }
        let tests = match &run.tests {
            Some(t) => format!(
                "{} passed, {} failed{}{}",
                t.passed,
                t.failed,
                if known_failed > 0 {
                    format!(" ({known_failed} known¹)")
                } else {
                    String::new()
                },
                if t.filtered > 0 {
                    format!(", {} not run here²", t.filtered)
                } else {
                    String::new()
                }
            ),
            None => "no result".into(),
        };
        let smoke = if run.trace_rc == Some(0)
            && run.daemon.get("ready").map(String::as_str) == Some("yes")
            && run.metrics_lines > 0
        {
            format!("ok ({} series)", run.metrics_lines)
        } else {
            "**failed**".into()
        };
        let problems = run.problems();
        for problem in &problems {
            notes.push(format!("{}: {problem}", run.name));
        }
        let how = match run.took {
            Some(took) => format!("{} {}s", run.how, took.as_secs()),
            None => run.how.clone(),
        };
        let _ = writeln!(
            out,
            "| {kernel} | {} | {how} | {features} | {} | {} | {tests} | {smoke} | {} | {} | {} | {} |",
            run.users,
            families_cell(run, "daemon", &mut notes),
            families_cell(run, "trace", &mut notes),
            bench_cell(run, 1),
            bench_cell(run, 2),
            bench_cell(run, 11),
            if problems.is_empty() {
                "pass"
            } else {
                "**FAIL**"
            },
        );
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\n¹ Fallbacks, skips and failures:\n");
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    let skipped: Vec<&String> = runs.iter().flat_map(|r| &r.skipped_tests).collect();
    if !skipped.is_empty() {
        let mut unique: Vec<&String> = Vec::new();
        for s in skipped {
            if !unique.contains(&s) {
                unique.push(s);
            }
        }
        let _ = writeln!(out, "\n² Not run in this matrix:\n");
        for s in unique {
            let _ = writeln!(out, "- {s}");
        }
    }
    out
}

/// `readme` with the text between the matrix markers replaced by `table`.
pub fn splice_readme(readme: &str, table: &str) -> Option<String> {
    const BEGIN: &str = "<!-- kernel-matrix:begin -->";
    const END: &str = "<!-- kernel-matrix:end -->";
    let start = readme.find(BEGIN)? + BEGIN.len();
    let end = readme[start..].find(END)? + start;
    Some(format!("{}\n{table}{}", &readme[..start], &readme[end..]))
}

/// libtest's `failures:` block split by test: `---- NAME stdout ----` opens a test's section,
/// the next such line or the closing `failures:` list ends it.
fn failure_sections(log: &str) -> BTreeMap<String, String> {
    let mut sections = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in log.lines() {
        let opening = line
            .strip_prefix("---- ")
            .and_then(|rest| rest.strip_suffix(" stdout ----"));
        if (opening.is_some() || line == "failures:")
            && let Some((name, text)) = current.take()
        {
            sections.insert(name, text);
        }
        if let Some(name) = opening {
            current = Some((name.to_owned(), String::new()));
        } else if let Some((_, text)) = &mut current {
            text.push_str(line);
            text.push('\n');
        }
    }
    if let Some((name, text)) = current {
        sections.insert(name, text);
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_libtests_failures_by_test() {
        let log = "running 3 tests\ntest a::one ... FAILED\ntest b::two ... ok\n\
                   test c::three ... FAILED\n\nfailures:\n\n---- a::one stdout ----\n\
                   thread 'a::one' panicked at x.rs:1:1:\nboom\n\n---- c::three stdout ----\n\
                   deadline passed\n\nfailures:\n    a::one\n    c::three\n\n\
                   test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out\n";
        let sections = failure_sections(log);
        assert_eq!(sections.len(), 2, "{sections:?}");
        assert_eq!(
            sections["a::one"],
            "thread 'a::one' panicked at x.rs:1:1:\nboom\n\n"
        );
        assert_eq!(sections["c::three"], "deadline passed\n\n");

        let run = KernelRun {
            name: "6.1".into(),
            failed_tests: vec!["a::one".into(), "c::three".into()],
            failure_output: sections,
            known: vec![("c::three".into(), "known".into())],
            ..KernelRun::default()
        };
        assert_eq!(
            run.unexpected_failure_output(2),
            "---- a::one (kernel 6.1) ----\n[1 earlier lines in tests.log]\nboom\n\n"
        );
    }

    #[test]
    fn reads_libtests_closing_line() {
        let log = "test a ... ok\ntest b ... FAILED\n\ntest result: FAILED. 18 passed; 27 failed; 2 ignored; 0 measured; 4 filtered out; finished in 168.62s\n";
        assert_eq!(
            test_counts(log),
            Some(TestCounts {
                passed: 18,
                failed: 27,
                ignored: 2,
                filtered: 4
            })
        );
        assert_eq!(test_counts("running 0 tests\n"), None);
    }

    #[test]
    fn a_run_passes_only_with_every_step_and_test() {
        let dir = tempdir();
        let write = |name: &str, text: &str| fs::write(dir.join(name), text).unwrap();
        write(
            "facts.env",
            "release=6.1.0-50-cloud-amd64\nbtf=yes\ncgroup_fs=cgroup2fs\n",
        );
        write("check.rc", "1\n");
        write(
            "check.json",
            r#"{"kernel":"6.1","warnings":[],"modes":[{"mode":"daemon","families":[
                {"family":"tasks","status":"skipped","hooks":[],"missing":["iter/task: no BTF"]},
                {"family":"oom","status":"attached","hooks":["oom:mark_victim"],"missing":[]}]}]}"#,
        );
        write("trace.rc", "0\n");
        write("daemon.env", "ready=yes\nmetrics_rc=0\nexit=0\n");
        write("metrics.txt", "# HELP x\nmemtrace_up 1\n");
        write(
            "tests.log",
            "test result: ok. 40 passed; 0 failed; 3 ignored; 0 measured; 4 filtered out; finished in 1s\n",
        );
        let run = KernelRun {
            name: "6.1".into(),
            ..KernelRun::default()
        }
        .read(&dir);
        assert_eq!(run.problems(), Vec::<String>::new());
        let table = render(&[run], "today", "cargo xtask vm-test");
        assert!(table.contains("**tasks skipped¹**, oom"), "{table}");
        assert!(
            table.contains("6.1 daemon: tasks skipped: iter/task: no BTF"),
            "{table}"
        );
        assert!(table.contains("| pass |"), "{table}");

        write(
            "tests.log",
            "test faults::minor ... FAILED\ntest result: FAILED. 39 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n",
        );
        write("daemon.env", "ready=no\nmetrics_rc=7\nexit=0\n");
        let run = KernelRun::default().read(&dir);
        let problems = run.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[1].contains("faults::minor"), "{problems:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn known_failures_are_read_per_kernel_and_excuse_only_themselves() {
        let text = "# comment\n7.3 a::x slow here\n6.1 b::y other\n";
        assert_eq!(
            parse_known(text, "7.3"),
            [("a::x".to_owned(), "slow here".to_owned())]
        );
        let run = KernelRun {
            name: "7.3".into(),
            failed_tests: vec!["a::x".into(), "c::z".into()],
            known: parse_known(text, "7.3"),
            tests: Some(TestCounts {
                passed: 3,
                failed: 2,
                ignored: 0,
                filtered: 0,
            }),
            ..KernelRun::default()
        };
        assert_eq!(run.unexpected_failures(), ["c::z"]);
        // The committed list names kernels of the matrix only.
        for line in KNOWN_FAILURES
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            let kernel = line.split(' ').next().unwrap();
            assert!(super::super::kernels::by_name(kernel).is_ok(), "{line}");
        }
    }

    #[test]
    fn the_readme_block_is_replaced_between_its_markers() {
        let readme = "a\n<!-- kernel-matrix:begin -->\nold\n<!-- kernel-matrix:end -->\nb\n";
        assert_eq!(
            splice_readme(readme, "new\n").unwrap(),
            "a\n<!-- kernel-matrix:begin -->\nnew\n<!-- kernel-matrix:end -->\nb\n"
        );
        assert_eq!(splice_readme("no markers", "x"), None);
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-matrix-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
