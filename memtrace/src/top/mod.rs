//! `memtrace top`: the full-screen live view of processes, workloads, cgroups and nodes, from
//! the probes loaded here, a daemon, the fleet, or a recording.
//!
//! `source` gets frames (one task owns the source, see [`source::spawn`]), `app` is the state
//! and what each key does to it (no I/O), `history` the client-side ring behind the
//! sparklines, `rows` the rows of each view, `views` draws, `terminal` sets the terminal up and
//! always gives it back. [`run`] is the event loop joining them.
use std::time::Duration;

use anyhow::Context as _;
use crossterm::event::{Event, EventStream, KeyEventKind};
use futures::StreamExt as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::error::TrySendError;

pub mod app;
pub mod format;
pub mod history;
pub mod rows;
pub mod source;
pub mod terminal;
pub mod views;

#[cfg(test)]
mod tests;

use self::app::{Action, App};
use self::source::{Fleet, Seek, Source, SourceCommand};

/// Runs `top` on `source` until `q`, Ctrl-C, SIGINT or SIGTERM. `first` is the source's first
/// answer (asked before the screen is taken, so that an error is printed plainly).
pub async fn run(source: Source, mut app: App, first: Fleet) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    app.update(first);
    let (commands, mut fleets, task) = source::spawn(source);
    let mut screen = terminal::Screen::enter().context("setting up the terminal")?;
    let mut keys = EventStream::new();
    let mut ticks = ticker(app.interval);
    let mut dirty = true;
    let result = loop {
        if dirty {
            if let Err(err) = screen.terminal.draw(|frame| views::draw(frame, &app)) {
                break Err(anyhow::Error::new(err).context("drawing"));
            }
            dirty = false;
        }
        tokio::select! {
            event = keys.next() => match event {
                Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => {
                    match app.on_key(key) {
                        Action::Nothing => {}
                        Action::Redraw => dirty = true,
                        Action::Quit => break Ok(()),
                        Action::Source(command) => {
                            dirty = true;
                            ask(&commands, command);
                        }
                        Action::Timing => {
                            dirty = true;
                            ticks = ticker(app.interval);
                        }
                    }
                }
                Some(Ok(Event::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(err)) => break Err(anyhow::Error::new(err).context("reading the keyboard")),
                None => break Ok(()),
            },
            _ = ticks.tick() => {
                if !app.paused {
                    ask(&commands, if app.is_replay() {
                        SourceCommand::Seek(Seek::Step(1))
                    } else {
                        SourceCommand::Refresh
                    });
                }
            }
            fleet = fleets.recv() => match fleet {
                Some(fleet) => {
                    app.update(fleet);
                    dirty = true;
                }
                None => break Err(anyhow::anyhow!("the source of frames stopped")),
            },
            _ = sigterm.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
            _ = hangup.recv() => break Ok(()),
        }
    };
    // The screen first: whatever follows (detaching the probes) happens on the user's terminal.
    drop(screen);
    drop(commands);
    drop(fleets);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    result
}

/// Ask the source; a refresh that finds the queue full is dropped (one is already pending).
fn ask(commands: &tokio::sync::mpsc::Sender<SourceCommand>, command: SourceCommand) {
    if let Err(TrySendError::Full(command)) = commands.try_send(command)
        && command != SourceCommand::Refresh
    {
        let commands = commands.clone();
        tokio::spawn(async move {
            let _ = commands.send(command).await;
        });
    }
}

fn ticker(interval: Duration) -> tokio::time::Interval {
    let start = tokio::time::Instant::now() + interval;
    let mut ticks = tokio::time::interval_at(start, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}
