//! A recording (`--replay FILE [--at TIME]`), stepped through by the keys: one interval at a
//! time, from OOM kill to OOM kill, to either end.
use memtrace_api::frame::Frame;

use super::{Fleet, NodeFrame, Position, Seek};
use crate::record::Recording;

/// Frames before the shown one handed back after a jump, to rebuild the sparklines from.
pub const HISTORY_FRAMES: usize = super::super::history::CAPACITY;

pub struct Replay {
    recording: Recording,
    /// Shown as the node's target.
    path: String,
    index: usize,
    /// The first frame showing each OOM kill, ascending, each once.
    kill_frames: Vec<usize>,
}

impl Replay {
    /// A replay of `recording` (not empty) from frame `index` (clamped).
    pub fn new(recording: Recording, path: String, index: usize) -> Self {
        let kill_frames = kill_frames(recording.frames());
        let index = index.min(recording.frames().len().saturating_sub(1));
        Self {
            recording,
            path,
            index,
            kill_frames,
        }
    }

    /// The frame shown, its history rebuilt.
    pub fn current(&self) -> Fleet {
        self.fleet(true, None)
    }

    pub fn seek(&mut self, seek: Seek) -> Fleet {
        let last = self.recording.frames().len().saturating_sub(1);
        let (index, note) = match seek {
            Seek::Step(by) => {
                let index = i64::try_from(self.index)
                    .unwrap_or(i64::MAX)
                    .saturating_add(by)
                    .clamp(0, i64::try_from(last).unwrap_or(i64::MAX));
                let index = usize::try_from(index).unwrap_or(0);
                let note = (index == self.index).then_some(if by > 0 {
                    "end of the recording"
                } else {
                    "start of the recording"
                });
                (index, note)
            }
            Seek::NextOom => match self.kill_frames.iter().find(|&&k| k > self.index) {
                Some(&k) => (k, None),
                None => (self.index, Some("no OOM kill after this frame")),
            },
            Seek::PreviousOom => match self.kill_frames.iter().rev().find(|&&k| k < self.index) {
                Some(&k) => (k, None),
                None => (self.index, Some("no OOM kill before this frame")),
            },
            Seek::Start => (0, None),
            Seek::End => (last, None),
        };
        let continues = index == self.index + 1;
        self.index = index;
        self.fleet(!continues, note)
    }

    fn fleet(&self, restart: bool, note: Option<&str>) -> Fleet {
        let frames = self.recording.frames();
        let Some(frame) = frames.get(self.index) else {
            return Fleet {
                note: Some("the recording has no frames".to_owned()),
                ..Fleet::default()
            };
        };
        Fleet {
            nodes: vec![NodeFrame {
                target: self.path.clone(),
                frame: frame.clone(),
                detailed: true,
            }],
            failures: Vec::new(),
            position: Some(Position {
                index: self.index,
                len: frames.len(),
            }),
            restart: restart
                .then(|| frames[self.index.saturating_sub(HISTORY_FRAMES)..self.index].to_vec()),
            note: note.map(str::to_owned),
        }
    }
}

/// For each OOM kill in `frames` (in any frame's recent kills or workloads summary), the first
/// frame taken at or after it: where the kill is first shown.
pub fn kill_frames(frames: &[Frame]) -> Vec<usize> {
    let mut kills: Vec<u64> = frames
        .iter()
        .flat_map(|frame| {
            let recent = frame
                .snapshot
                .recent_ooms
                .iter()
                .map(|o| o.timestamp_unix_ms);
            let summarized = frame
                .workloads
                .iter()
                .flat_map(|w| w.ooms.iter().map(|o| o.timestamp_unix_ms));
            recent.chain(summarized).collect::<Vec<_>>()
        })
        .collect();
    kills.sort_unstable();
    kills.dedup();
    let mut indices: Vec<usize> = kills
        .into_iter()
        .map(|at| frames.partition_point(|frame| frame.timestamp_unix_ms() < at))
        .filter(|&index| index < frames.len())
        .collect();
    indices.dedup();
    indices
}
