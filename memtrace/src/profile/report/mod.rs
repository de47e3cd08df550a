//! Writing a symbolized profile: a text top list, folded stacks, pprof, an SVG flame graph, JSON.
//!
//! Every format states what the capture could not see: truncated stacks (how many, and why each
//! stack ends in JSON), the depth of the stacks and every non-zero loss.
mod folded;
mod json;
mod pprof;
mod pprof_proto;
mod svg;
mod text;

use std::io::Write as _;
use std::path::Path;

pub use crate::cli::profile::Format;
use crate::profile::symbolize::Profile;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing the report to {}", path.display())]
    Create {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the {format:?} report")]
    Write {
        format: Format,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the JSON report")]
    Json(#[source] serde_json::Error),
    #[error("drawing the flame graph (inferno)")]
    FlameGraph(#[source] std::io::Error),
    #[error("no samples with a positive {sample_type} to draw a flame graph from")]
    NoSamples { sample_type: &'static str },
    #[error("the profile's default sample type {index} is not one of its {sample_types}")]
    DefaultSampleType { index: usize, sample_types: usize },
}

/// The format to write: `format` if given, else from `path`'s extension (`.svg`, `.folded`,
/// `.pb.gz`/`.pb`/`.pprof`, `.json`), else text.
pub fn format_for(path: Option<&Path>, format: Option<Format>) -> Format {
    if let Some(format) = format {
        return format;
    }
    let Some(name) = path
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy())
    else {
        return Format::Text;
    };
    let name = name.to_ascii_lowercase();
    if name.ends_with(".svg") {
        Format::Svg
    } else if name.ends_with(".folded") || name.ends_with(".collapsed") {
        Format::Folded
    } else if name.ends_with(".pb.gz") || name.ends_with(".pb") || name.ends_with(".pprof") {
        Format::Pprof
    } else if name.ends_with(".json") {
        Format::Json
    } else {
        Format::Text
    }
}

/// Writes `profile` where `memtrace profile`'s flags say: into `output` (created or truncated)
/// in the format `format` or its extension names, else to stdout (text by default).
pub fn write_output(
    profile: &Profile,
    output: Option<&Path>,
    format: Option<Format>,
    top: usize,
) -> Result<(), ReportError> {
    let format = format_for(output, format);
    match output {
        Some(path) => {
            let create_error = |source| ReportError::Create {
                path: path.to_owned(),
                source,
            };
            let file = std::fs::File::create(path).map_err(create_error)?;
            let mut out = std::io::BufWriter::new(file);
            write(profile, format, top, &mut out)?;
            out.into_inner()
                .map_err(|error| create_error(error.into_error()))?
                .sync_all()
                .map_err(create_error)
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            write(profile, format, top, &mut out)?;
            out.flush()
                .map_err(|source| ReportError::Write { format, source })
        }
    }
}

/// Writes `profile` as `format`; `top` is the number of sites in the text report.
pub fn write(
    profile: &Profile,
    format: Format,
    top: usize,
    out: &mut dyn std::io::Write,
) -> Result<(), ReportError> {
    if profile.default_sample_type >= profile.sample_types.len() {
        return Err(ReportError::DefaultSampleType {
            index: profile.default_sample_type,
            sample_types: profile.sample_types.len(),
        });
    }
    let write_error = |source| ReportError::Write { format, source };
    match format {
        Format::Text => text::write(profile, top, out).map_err(write_error),
        Format::Folded => folded::write(profile, out).map_err(write_error),
        Format::Pprof => pprof::write(profile, out).map_err(write_error),
        Format::Svg => svg::write(profile, out),
        Format::Json => json::write(profile, out).map_err(ReportError::Json),
    }
}

#[cfg(test)]
mod tests;
