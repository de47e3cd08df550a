//! Writing the trace: event lines (one per event, or per run of identical ones), summaries and
//! the events line, as text within the terminal's width or as JSON lines.
use std::io::Write;

use super::{
    OutputFormat,
    collapse::Run,
    summary::{self, Table},
    width,
};
use crate::{
    events::{
        Event,
        render::{self, Clock, Repeat, TEXT_HEADER},
    },
    pipeline::PipelineSnapshot,
    probes::KernelLosses,
};

/// Renders events and summaries into a buffered writer (stdout in production).
pub struct Output<W: Write> {
    format: OutputFormat,
    clock: Clock,
    /// Text lines are cut to this many columns (`None`: whole).
    width: Option<usize>,
    text: String,
    json: Vec<u8>,
    out: std::io::BufWriter<W>,
    /// Event lines written: the "M shown" of the events line.
    shown: u64,
    /// The last text summary written, without its time and growth: an unchanged one is not
    /// written again.
    last_summary: Option<String>,
}

impl<W: Write> Output<W> {
    pub fn new(format: OutputFormat, clock: Clock, writer: W) -> Self {
        Self {
            format,
            clock,
            width: None,
            text: String::with_capacity(256),
            json: Vec::with_capacity(512),
            out: std::io::BufWriter::with_capacity(1 << 16, writer),
            shown: 0,
            last_summary: None,
        }
    }

    /// Cuts text lines to `width` columns (see [`width::detect`]).
    #[must_use]
    pub fn with_width(mut self, width: Option<usize>) -> Self {
        self.width = width;
        self
    }

    /// Event lines written so far.
    pub fn shown(&self) -> u64 {
        self.shown
    }

    fn line(&mut self, line: &str) -> std::io::Result<()> {
        writeln!(self.out, "{}", width::fit(line, self.width))
    }

    /// The column header, for text output.
    pub fn header(&mut self) {
        if self.format == OutputFormat::Text {
            let _ = self.line(TEXT_HEADER);
            self.flush();
        }
    }

    pub fn event(&mut self, event: &Event, cgroup: Option<&str>) {
        self.write_event(event, cgroup, None);
    }

    /// A run of identical events: one line (see `super::collapse`).
    pub fn run(&mut self, run: &Run) {
        let repeat = Repeat {
            count: run.count,
            last_ts_ns: run.last_ts_ns,
            total: run.total,
        };
        self.write_event(&run.first, run.cgroup.as_deref(), Some(repeat));
    }

    fn write_event(&mut self, event: &Event, cgroup: Option<&str>, repeat: Option<Repeat>) {
        self.shown += 1;
        let result = match self.format {
            OutputFormat::Text => {
                let mut text = std::mem::take(&mut self.text);
                text.clear();
                match repeat {
                    Some(repeat) => render::text_run(&mut text, &self.clock, event, cgroup, repeat),
                    None => render::text(&mut text, &self.clock, event, cgroup),
                }
                let result = self.line(&text);
                self.text = text;
                result
            }
            OutputFormat::Json => {
                self.json.clear();
                render::json_run(&mut self.json, &self.clock, event, cgroup, repeat)
                    .map_err(std::io::Error::other)
                    .and_then(|()| {
                        self.json.push(b'\n');
                        self.out.write_all(&self.json)
                    })
            }
        };
        if let Err(err) = result {
            // stdout closed (e.g. `| head`): nothing more to do for this event.
            tracing::debug!("writing event: {err}");
        }
    }

    /// Writes a summary; a periodic text one equal to the last written is left out. Whether it
    /// was written.
    pub fn summary(
        &mut self,
        table: &Table<'_>,
        losses: &KernelLosses,
        pipeline: &PipelineSnapshot,
        periodic: bool,
    ) -> bool {
        self.flush();
        let result = match self.format {
            OutputFormat::Text => {
                let fingerprint = format!(
                    "{}\n{}",
                    summary::fingerprint(table),
                    // Losses count; events delivered and shown do not make a summary new.
                    summary::losses_text(
                        losses,
                        &PipelineSnapshot {
                            decoded: 0,
                            delivered: 0,
                            ..*pipeline
                        },
                        0
                    )
                );
                if periodic && self.last_summary.as_ref() == Some(&fingerprint) {
                    return false;
                }
                self.last_summary = Some(fingerprint);
                let lines = summary::text(table, losses, pipeline, self.shown);
                writeln!(self.out).and_then(|()| lines.iter().try_for_each(|l| self.line(l)))
            }
            OutputFormat::Json => {
                self.json.clear();
                let now = Clock::monotonic_now_ns();
                summary::json(
                    &mut self.json,
                    &self.clock,
                    now,
                    table.by,
                    table.rows,
                    losses,
                    pipeline,
                    self.shown,
                )
                .map_err(std::io::Error::other)
                .and_then(|()| self.out.write_all(&self.json))
            }
        };
        if let Err(err) = result {
            tracing::debug!("writing the summary: {err}");
        }
        self.flush();
        true
    }

    /// `HH:MM:SS` of now, as summaries are stamped.
    pub fn now_text(&self) -> String {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        now.get(11..19).unwrap_or(&now).to_owned()
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}
