//! Ring buffers → decoded event batches on a bounded channel.
//!
//! One task per ring drains every record available on each wake-up into a batch (one allocation
//! per batch, none per event) and hands it to the consumer with `try_send`: a slow consumer never
//! stalls the drain, and what it cannot take is counted as a userspace queue drop — drops are
//! data (tokio-console style), shown in summaries and exported as metrics.
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
    task::JoinHandle,
};

use crate::events::Event;

/// Most events per batch: bounds consumer latency under a flood.
const MAX_BATCH: usize = 4096;

/// Rings are also drained on a timer, for records submitted without a wake-up (the kernel side
/// wakes the reader only once a quarter of a ring is full, or for an OOM kill). A live trace
/// prints as it goes: every 10 ms.
pub const DRAIN_EVERY_LIVE: Duration = Duration::from_millis(10);
/// The daemon folds events into a model it samples once a second: every 100 ms is a tenth of
/// the idle wake-ups of [`DRAIN_EVERY_LIVE`] and still well inside a sampling tick.
pub const DRAIN_EVERY_DAEMON: Duration = Duration::from_millis(100);

/// Userspace stage counters (the kernel stages are in `KernelLosses`).
#[derive(Debug, Default)]
pub struct PipelineCounters {
    /// Records read from the rings and decoded.
    pub decoded: AtomicU64,
    /// Records that failed to decode (size/kind mismatch).
    pub decode_errors: AtomicU64,
    /// Decoded events handed to the consumer.
    pub delivered: AtomicU64,
    /// Decoded events dropped because the consumer's queue was full.
    pub queue_drops: AtomicU64,
}

/// A point-in-time copy of [`PipelineCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PipelineSnapshot {
    pub decoded: u64,
    pub decode_errors: u64,
    pub delivered: u64,
    pub queue_drops: u64,
}

impl PipelineCounters {
    pub fn snapshot(&self) -> PipelineSnapshot {
        PipelineSnapshot {
            decoded: self.decoded.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            queue_drops: self.queue_drops.load(Ordering::Relaxed),
        }
    }
}

/// The consumer's end: batches of events, plus the counters.
#[derive(Debug)]
pub struct EventStream {
    pub batches: mpsc::Receiver<Vec<Event>>,
    pub counters: Arc<PipelineCounters>,
    readers: Vec<JoinHandle<()>>,
}

impl EventStream {
    /// Start one reader task per ring. `queue_batches` bounds the channel (in batches);
    /// `drain_every` is the timer for records submitted without a wake-up.
    pub fn spawn(
        rings: Vec<RingBuf<MapData>>,
        queue_batches: usize,
        drain_every: Duration,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(queue_batches.max(1));
        let counters = Arc::new(PipelineCounters::default());
        let mut readers = Vec::new();
        for ring in rings {
            // SAFETY: the ring buffer owns its map fd; it stays open, and the same fd, for as long
            // as the `AsyncFd` owns the ring.
            let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                .map_err(std::io::Error::from)?;
            readers.push(tokio::spawn(read_ring(
                fd,
                tx.clone(),
                Arc::clone(&counters),
                drain_every,
            )));
        }
        Ok(Self {
            batches: rx,
            counters,
            readers,
        })
    }

    /// Drain whatever the rings hold right now (used at shutdown so the final summary counts
    /// events already produced).
    pub fn try_drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(batch) = self.batches.try_recv() {
            out.extend(batch);
        }
        out
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

async fn read_ring(
    mut fd: AsyncFd<RingBuf<MapData>>,
    tx: mpsc::Sender<Vec<Event>>,
    counters: Arc<PipelineCounters>,
    drain_every: Duration,
) {
    // The fault stream submits without waking the reader until a quarter of its ring is full
    // (a wake-up per record would cost more than the record): below that, this timer drains it.
    let mut drain_timer = tokio::time::interval(drain_every);
    drain_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ready = fd.readable_mut() => match ready {
                // Clear before draining: a record submitted meanwhile re-arms readiness.
                Ok(mut guard) => guard.clear_ready(),
                Err(err) => {
                    tracing::error!("ring buffer poll failed: {err}");
                    return;
                }
            },
            _ = drain_timer.tick() => {}
        }
        if !drain(fd.get_mut(), &tx, &counters) {
            return;
        }
    }
}

/// Decode everything the ring holds into batches; false once the consumer is gone.
fn drain(
    ring: &mut RingBuf<MapData>,
    tx: &mpsc::Sender<Vec<Event>>,
    counters: &PipelineCounters,
) -> bool {
    let mut batch = Vec::new();
    while let Some(record) = ring.next() {
        match Event::decode(&record) {
            Ok(event) => batch.push(event),
            Err(err) => {
                if counters.decode_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("undecodable ring record (further ones only counted): {err}");
                }
            }
        }
        if batch.len() >= MAX_BATCH && !send(tx, counters, std::mem::take(&mut batch)) {
            return false;
        }
    }
    batch.is_empty() || send(tx, counters, batch)
}

/// Hand a batch over; false once the consumer is gone.
fn send(tx: &mpsc::Sender<Vec<Event>>, counters: &PipelineCounters, batch: Vec<Event>) -> bool {
    let n = batch.len() as u64;
    counters.decoded.fetch_add(n, Ordering::Relaxed);
    match tx.try_send(batch) {
        Ok(()) => {
            counters.delivered.fetch_add(n, Ordering::Relaxed);
            true
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            counters.queue_drops.fetch_add(n, Ordering::Relaxed);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}
