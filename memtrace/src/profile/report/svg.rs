//! The SVG flame graph, drawn by inferno from the folded stacks.
//!
//! Licence: inferno is CDDL-1.0, a file-level (weak) copyleft. memtrace uses it unmodified, as a
//! library from crates.io, so memtrace's own files stay MIT OR Apache-2.0; whoever distributes a
//! memtrace binary must also make inferno's source available (it is: crates.io/crates/inferno),
//! and a modification of inferno's files would have to be published under the CDDL. That is a
//! smaller cost than re-deriving flamegraph.pl's layout, colours and interactive SVG by hand (the
//! other choice, since no permissively licensed Rust flame graph renderer is maintained).
use inferno::flamegraph::{self, Options};

use super::{ReportError, folded};
use crate::profile::symbolize::Profile;

pub(super) fn write(profile: &Profile, out: &mut dyn std::io::Write) -> Result<(), ReportError> {
    let lines: Vec<String> = folded::lines(profile)
        .into_iter()
        .map(|(stack, value)| format!("{stack} {value}"))
        .collect();
    let sample_type = &profile.sample_types[profile.default_sample_type];
    let mut options = Options::default();
    options.title = format!("memtrace profile: {}", profile.target);
    options.subtitle = Some(format!("{}; {}", sample_type.name, profile.sampling));
    options.count_name = sample_type.unit.to_owned();
    options.name_type = "Site:".to_owned();
    if lines.is_empty() {
        // inferno would draw an error message: say it as an error instead.
        return Err(ReportError::NoSamples {
            sample_type: sample_type.name,
        });
    }
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
        .map_err(ReportError::FlameGraph)
}
