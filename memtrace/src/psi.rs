//! Pressure stall information: the one kernel format shared by `/proc/pressure/memory` (node)
//! and a v2 cgroup's `memory.pressure`, parsed by one parser into one type.
//!
//! ```text
//! some avg10=0.31 avg60=0.12 avg300=0.03 total=8820593
//! full avg10=0.00 avg60=0.05 avg300=0.01 total=4093150
//! ```
//!
//! The callers differ in one thing only, said by [`Lines`]: the node reader rejects lines it does
//! not know (a file that is not PSI means a wrong root), the cgroup reader skips them (cgroup
//! files are read for thousands of groups, and a future kernel adding a line must not lose them
//! all). Both require `some`; `full` is optional (absent from `/proc/pressure/cpu` before 5.13);
//! unknown `key=value` pairs are skipped by both, for keys a future kernel adds.
use memtrace_api::PsiView;
use serde::Serialize;

/// One line of a PSI file (`some` or `full`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PsiLine {
    /// Percent of wall time stalled (0–100), averaged over 10 s.
    pub avg10: f64,
    /// … over 60 s.
    pub avg60: f64,
    /// … over 300 s.
    pub avg300: f64,
    /// Cumulative stall time in microseconds since boot (or cgroup creation): the only PSI figure
    /// fit for computing exact rates over arbitrary intervals.
    pub total_us: u64,
}

/// A PSI file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Psi {
    /// Time in which at least one non-idle task stalled (reclaim, refaults, swap-in,
    /// compaction): latency is being lost somewhere.
    pub some: PsiLine,
    /// Time in which *all* non-idle tasks stalled at once: no useful work was done. This is the
    /// figure OOM daemons (oomd, systemd-oomd) act on. `None` if the kernel emits no `full` line.
    pub full: Option<PsiLine>,
}

/// What to do with a line that is neither `some` nor `full`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    /// An error naming the line: the file is expected to be exactly PSI.
    Strict,
    /// Skipped, as are words that are not `key=value`.
    Lenient,
}

/// What is wrong with a PSI file. Lines are numbered from 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PsiError {
    #[error("line {line}: expected \"some\" or \"full\", found {found:?}")]
    UnknownLine { line: usize, found: String },
    #[error("line {line}: duplicate {kind:?} line")]
    DuplicateLine { line: usize, kind: &'static str },
    #[error("line {line}: expected key=value, found {found:?}")]
    NotKeyValue { line: usize, found: String },
    #[error("line {line}: bad value {value:?} for `{key}`")]
    BadValue {
        line: usize,
        key: &'static str,
        value: String,
    },
    #[error("line {line}: missing key `{key}`")]
    MissingKey { line: usize, key: &'static str },
    #[error("missing `some` line")]
    MissingSome,
}

impl PsiError {
    /// The line the error is on; `None` for a missing `some` line.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::UnknownLine { line, .. }
            | Self::DuplicateLine { line, .. }
            | Self::NotKeyValue { line, .. }
            | Self::BadValue { line, .. }
            | Self::MissingKey { line, .. } => Some(*line),
            Self::MissingSome => None,
        }
    }
}

/// Parses a PSI file; see the module documentation for what `lines` changes.
pub fn parse(text: &str, lines: Lines) -> Result<Psi, PsiError> {
    let mut some = None;
    let mut full = None;
    for (index, text_line) in text.lines().enumerate() {
        let line = index + 1;
        let mut words = text_line.split_ascii_whitespace();
        let Some(kind) = words.next() else {
            continue;
        };
        let (slot, kind) = match kind {
            "some" => (&mut some, "some"),
            "full" => (&mut full, "full"),
            found => match lines {
                Lines::Strict => {
                    return Err(PsiError::UnknownLine {
                        line,
                        found: found.to_owned(),
                    });
                }
                Lines::Lenient => continue,
            },
        };
        let parsed = parse_line(line, words, lines)?;
        if slot.replace(parsed).is_some() {
            return Err(PsiError::DuplicateLine { line, kind });
        }
    }
    Ok(Psi {
        some: some.ok_or(PsiError::MissingSome)?,
        full,
    })
}

fn parse_line<'a>(
    line: usize,
    words: impl Iterator<Item = &'a str>,
    lines: Lines,
) -> Result<PsiLine, PsiError> {
    let (mut avg10, mut avg60, mut avg300, mut total_us) = (None, None, None, None);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            match lines {
                Lines::Strict => {
                    return Err(PsiError::NotKeyValue {
                        line,
                        found: word.to_owned(),
                    });
                }
                Lines::Lenient => continue,
            }
        };
        let (slot, key) = match key {
            "avg10" => (&mut avg10, "avg10"),
            "avg60" => (&mut avg60, "avg60"),
            "avg300" => (&mut avg300, "avg300"),
            "total" => {
                total_us = Some(value.parse::<u64>().map_err(|_| PsiError::BadValue {
                    line,
                    key: "total",
                    value: value.to_owned(),
                })?);
                continue;
            }
            _ => continue,
        };
        let percent = value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| PsiError::BadValue {
                line,
                key,
                value: value.to_owned(),
            })?;
        *slot = Some(percent);
    }
    let missing = |key| PsiError::MissingKey { line, key };
    Ok(PsiLine {
        avg10: avg10.ok_or_else(|| missing("avg10"))?,
        avg60: avg60.ok_or_else(|| missing("avg60"))?,
        avg300: avg300.ok_or_else(|| missing("avg300"))?,
        total_us: total_us.ok_or_else(|| missing("total"))?,
    })
}

impl From<&Psi> for PsiView {
    fn from(psi: &Psi) -> Self {
        Self {
            some_avg10: psi.some.avg10,
            some_avg60: psi.some.avg60,
            some_total_us: psi.some.total_us,
            full_avg10: psi.full.map(|f| f.avg10),
            full_avg60: psi.full.map(|f| f.avg60),
            full_total_us: psi.full.map(|f| f.total_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: [Lines; 2] = [Lines::Strict, Lines::Lenient];

    #[test]
    fn parses_some_and_full() {
        for lines in BOTH {
            let psi = parse(
                "some avg10=12.34 avg60=5.67 avg300=1.00 total=123456789\n\
                 full avg10=3.21 avg60=1.09 avg300=0.25 total=23456789\n",
                lines,
            )
            .unwrap();
            assert_eq!(
                psi,
                Psi {
                    some: PsiLine {
                        avg10: 12.34,
                        avg60: 5.67,
                        avg300: 1.0,
                        total_us: 123_456_789
                    },
                    full: Some(PsiLine {
                        avg10: 3.21,
                        avg60: 1.09,
                        avg300: 0.25,
                        total_us: 23_456_789
                    }),
                }
            );
        }
    }

    #[test]
    fn full_is_optional_and_unknown_keys_are_skipped() {
        // Pre-5.13 /proc/pressure/cpu: only `some`.
        for lines in BOTH {
            let cpu = parse(
                "some avg10=2.00 avg60=1.00 avg300=0.50 total=7 extra=1\n",
                lines,
            )
            .unwrap();
            assert_eq!(
                (cpu.some.avg10, cpu.some.total_us, cpu.full),
                (2.0, 7, None)
            );
        }
    }

    #[test]
    fn unknown_lines_are_errors_only_when_strict() {
        let text = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nhalf x=1\n";
        assert_eq!(
            parse(text, Lines::Strict),
            Err(PsiError::UnknownLine {
                line: 2,
                found: "half".to_owned()
            })
        );
        assert_eq!(parse(text, Lines::Lenient).unwrap().some.total_us, 0);
        let word = "some avg10=0 avg60=0 avg300=0 total=0 banana\n";
        assert!(matches!(
            parse(word, Lines::Strict),
            Err(PsiError::NotKeyValue { line: 1, .. })
        ));
        assert!(parse(word, Lines::Lenient).is_ok());
    }

    #[test]
    fn malformed_input_is_an_error_either_way() {
        for lines in BOTH {
            assert_eq!(parse("", lines), Err(PsiError::MissingSome));
            assert_eq!(
                parse("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", lines),
                Err(PsiError::MissingSome)
            );
            assert_eq!(
                parse("some avg10=x avg60=0 avg300=0 total=0", lines),
                Err(PsiError::BadValue {
                    line: 1,
                    key: "avg10",
                    value: "x".into()
                })
            );
            assert!(matches!(
                parse("some avg10=-1 avg60=0 avg300=0 total=0", lines),
                Err(PsiError::BadValue { key: "avg10", .. })
            ));
            assert_eq!(
                parse("some avg10=0 avg60=0 avg300=0", lines),
                Err(PsiError::MissingKey {
                    line: 1,
                    key: "total"
                })
            );
            assert!(matches!(
                parse("some avg10=0 avg60=0 total=0\n", lines),
                Err(PsiError::MissingKey { key: "avg300", .. })
            ));
            assert!(matches!(
                parse(
                    "some avg10=0 avg60=0 avg300=0 total=0\nsome avg10=0 avg60=0 avg300=0 total=0\n",
                    lines
                ),
                Err(PsiError::DuplicateLine {
                    line: 2,
                    kind: "some"
                })
            ));
        }
    }

    #[test]
    fn converts_to_the_api_view() {
        let line = |avg10, total_us| PsiLine {
            avg10,
            avg60: avg10 / 2.0,
            avg300: 0.0,
            total_us,
        };
        let view = PsiView::from(&Psi {
            some: line(4.0, 10),
            full: Some(line(1.0, 3)),
        });
        assert_eq!(
            view,
            PsiView {
                some_avg10: 4.0,
                some_avg60: 2.0,
                some_total_us: 10,
                full_avg10: Some(1.0),
                full_avg60: Some(0.5),
                full_total_us: Some(3),
            }
        );
        let some_only = PsiView::from(&Psi {
            some: line(4.0, 10),
            full: None,
        });
        assert_eq!(
            (some_only.full_avg10, some_only.full_total_us),
            (None, None)
        );
    }
}
