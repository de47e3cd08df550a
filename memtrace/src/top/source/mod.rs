//! Where `memtrace top`'s frames come from: the probes loaded in this process ([`local`]), a
//! daemon ([`daemon`]), the fleet ([`cluster`]) or a recording ([`replay`]).
//!
//! Every source answers the same question, "what does the fleet look like now?", with a
//! [`Fleet`]: the frames of the nodes that answered and one line for each that did not (a
//! failure is always stated, never dropped). A [`Source`] is owned by one task ([`spawn`]) that
//! takes [`SourceCommand`]s and sends back a [`Fleet`] per command, so a slow node never stalls
//! the keyboard.
use memtrace_api::cluster::NodeFailure;
use memtrace_api::frame::Frame;
use tokio::sync::mpsc;

pub mod cluster;
pub mod daemon;
pub mod local;
pub mod replay;

/// One node's frame, as a source got it.
#[derive(Clone, Debug, Default)]
pub struct NodeFrame {
    /// How the node was reached (`local`, a URL, `host:port`, the recording's path).
    pub target: String,
    pub frame: Frame,
    /// The frame has the node's processes and cgroups (its snapshot); a node of the fleet that
    /// was not drilled into has only its workloads summary.
    pub detailed: bool,
}

/// Where a replay stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Index of the frame shown.
    pub index: usize,
    /// Frames in the recording.
    pub len: usize,
}

/// The fleet at one refresh.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    /// The nodes that answered, in target order.
    pub nodes: Vec<NodeFrame>,
    /// The nodes that did not, each with why.
    pub failures: Vec<NodeFailure>,
    /// A replay's position (`None` live).
    pub position: Option<Position>,
    /// When the frames do not follow the last ones (a replay that jumped, a node drilled into):
    /// the frames before them, oldest first, from which the history is rebuilt (empty when the
    /// source has none). `None`: they continue the last ones.
    pub restart: Option<Vec<Frame>>,
    /// One line the user should read (the end of a recording, no OOM kill further on).
    pub note: Option<String>,
}

impl Fleet {
    /// The node whose processes and cgroups are shown: the first detailed one.
    pub fn detailed(&self) -> Option<&NodeFrame> {
        self.nodes.iter().find(|node| node.detailed)
    }
}

/// How a replay moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek {
    /// By this many frames (one interval each).
    Step(i64),
    /// To the frame showing the next OOM kill.
    NextOom,
    /// To the frame showing the previous OOM kill.
    PreviousOom,
    /// To the first frame.
    Start,
    /// To the last frame.
    End,
}

/// What the source's task is asked to do; each command is answered with one [`Fleet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceCommand {
    /// The fleet now (a replay: the same frame again).
    Refresh,
    /// Move a replay (live sources answer with a refresh).
    Seek(Seek),
    /// Drill into a node of the fleet (its target), or back out (`None`).
    Focus(Option<String>),
    /// Whether the views shown need the workloads summary (the workloads and nodes views). A
    /// daemon or the local probes send it only then: at 10,000 processes, fetching and decoding
    /// it at every refresh was half of `top`'s CPU time while the processes view showed nothing
    /// of it. Answered with a fresh frame when it becomes needed, with none otherwise (the fleet
    /// and a recording always have it).
    Workloads(bool),
}

/// Commands queued at most; a refresh beyond them is dropped (the next tick asks again).
pub const COMMAND_QUEUE: usize = 16;

/// A source of frames.
pub enum Source {
    Local(local::Local),
    Daemon(daemon::DaemonSource),
    Cluster(cluster::ClusterSource),
    Replay(replay::Replay),
}

impl Source {
    /// Whether frames carry the workloads summary from now on; true when the frames shown lack
    /// what is now needed (a frame should be fetched at once).
    pub fn want_workloads(&mut self, wanted: bool) -> bool {
        match self {
            Self::Local(local) => local.want_workloads(wanted),
            Self::Daemon(daemon) => daemon.want_workloads(wanted),
            Self::Cluster(_) | Self::Replay(_) => false,
        }
    }

    /// The answer to `command`.
    pub async fn answer(&mut self, command: &SourceCommand) -> Fleet {
        match (self, command) {
            (Self::Replay(replay), SourceCommand::Seek(seek)) => replay.seek(*seek),
            (Self::Replay(replay), _) => replay.current(),
            (Self::Cluster(cluster), SourceCommand::Focus(target)) => {
                cluster.focus(target.clone());
                cluster.fetch(true).await
            }
            (Self::Cluster(cluster), _) => cluster.fetch(false).await,
            (Self::Local(local), _) => local.fetch().await,
            (Self::Daemon(daemon), _) => daemon.fetch().await,
        }
    }

    /// Stop what the source runs (the local probes are detached).
    pub async fn stop(self) {
        if let Self::Local(local) = self {
            local.stop().await;
        }
    }
}

/// The task that owns `source`: each command is answered on the returned receiver, refreshes
/// queued behind a slow answer counted once. The task ends, stopping the source, when the
/// command sender is dropped.
pub fn spawn(
    mut source: Source,
) -> (
    mpsc::Sender<SourceCommand>,
    mpsc::Receiver<Fleet>,
    tokio::task::JoinHandle<()>,
) {
    let (commands, mut queue) = mpsc::channel::<SourceCommand>(COMMAND_QUEUE);
    let (answers, fleets) = mpsc::channel::<Fleet>(2);
    let task = tokio::spawn(async move {
        let mut pending = std::collections::VecDeque::new();
        'serve: loop {
            let mut command = match pending.pop_front() {
                Some(command) => command,
                None => match queue.recv().await {
                    Some(command) => command,
                    None => break 'serve,
                },
            };
            if let SourceCommand::Workloads(wanted) = command {
                if !source.want_workloads(wanted) {
                    continue;
                }
                command = SourceCommand::Refresh;
            }
            let fleet = source.answer(&command).await;
            if answers.send(fleet).await.is_err() {
                break 'serve;
            }
            // What came in meanwhile: refreshes are one, moves are each kept.
            let mut refresh = false;
            while let Ok(next) = queue.try_recv() {
                match next {
                    SourceCommand::Refresh => refresh = true,
                    other => pending.push_back(other),
                }
            }
            if refresh && pending.is_empty() {
                pending.push_back(SourceCommand::Refresh);
            }
        }
        source.stop().await;
    });
    (commands, fleets, task)
}
