//! [`Daemon`]: the owner of the model. One loop folds the event stream and the sampling ticks
//! into it and answers the HTTP handlers' [`Request`]s; shutting down is its last step.
use std::{
    future::Future,
    sync::{Arc, PoisonError, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use memtrace_api::workloads::WorkloadsResponse;
use memtrace_api::{FamilySet, OomRecord, PipelineView, Snapshot};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{Published, Readiness, Request, Sampler, state::StateDir, workloads::WorkloadsSource};
use crate::record::store::StoreStats;
use crate::{
    events::Event,
    export::http::{self, AppState},
    model::Model,
    pipeline::{EventStream, PipelineCounters},
    probes::{Family, Probes},
};

/// How long the HTTP server gets to finish in-flight requests on shutdown.
const SERVER_GRACE: Duration = Duration::from_secs(5);

/// The HTTP server task and the switch that stops it.
pub struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Serve `state` on `listener` within `limits`, secured by `web`, until [`Server::stop`].
    pub fn spawn(
        listener: tokio::net::TcpListener,
        state: Arc<AppState>,
        limits: http::Limits,
        web: Arc<crate::web::server::WebServer>,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(http::serve_secured(listener, state, limits, web, async {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    /// Stop accepting, let in-flight requests finish (for at most 5 s).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(SERVER_GRACE, self.task).await {
            Ok(Ok(Err(err))) => tracing::warn!("http server: {err}"),
            Err(_) => tracing::warn!("http server did not stop within 5 s"),
            _ => {}
        }
    }
}

/// The daemon's state and the loop that owns it.
pub struct Daemon {
    model: Model,
    probes: Probes,
    stream: EventStream,
    sampler: Sampler,
    requests: mpsc::Receiver<Request>,
    readiness: Readiness,
    /// The HTTP server, stopped on shutdown (none in-process, as `memtrace top`'s local source).
    server: Option<Server>,
    pipeline: PipelineSource,
    cached: CachedViews,
    /// Exits complete the task sampler's last counters for the process.
    sampling_tasks: bool,
    /// Where OOM records are persisted (none in tests).
    state: Option<StateDir>,
    /// `/api/v1/workloads`: identity, per-instance history, node name, scope, pins (none until
    /// [`Daemon::with_workloads`]).
    workloads: Option<WorkloadsSource>,
    /// `--record-dir`: each tick's views handed to the recording's writer thread.
    recorder: Option<crate::record::store::StoreThread>,
}

impl Daemon {
    pub fn new(
        model: Model,
        probes: Probes,
        stream: EventStream,
        sampler: Sampler,
        requests: mpsc::Receiver<Request>,
        readiness: Readiness,
    ) -> Self {
        let report = probes.report();
        let (probes_attached, probes_failed) = report.counts();
        let pipeline = PipelineSource {
            families: report
                .families
                .keys()
                .copied()
                .filter(|family| report.attached(*family))
                .collect(),
            probes_attached: probes_attached as u32,
            probes_failed: probes_failed as u32,
            counters: Arc::clone(&stream.counters),
            recording: None,
        };
        let sampling_tasks = report.attached(Family::Tasks);
        Self {
            model,
            probes,
            stream,
            sampler,
            requests,
            readiness,
            server: None,
            pipeline,
            cached: CachedViews::default(),
            sampling_tasks,
            state: None,
            workloads: None,
            recorder: None,
        }
    }

    /// Record a frame of each tick's views in `recorder`.
    #[must_use]
    pub fn with_recorder(mut self, recorder: crate::record::store::StoreThread) -> Self {
        self.pipeline.recording = Some(recorder.stats());
        self.recorder = Some(recorder);
        self
    }

    /// Serve `/api/v1/workloads` from `source`, recording its history each `--history-step`.
    #[must_use]
    pub fn with_workloads(mut self, source: WorkloadsSource) -> Self {
        self.workloads = Some(source);
        self
    }

    /// Stop `server` on shutdown, before the probes are detached.
    #[must_use]
    pub fn with_server(mut self, server: Server) -> Self {
        self.server = Some(server);
        self
    }

    /// What attached and what did not.
    pub fn report(&self) -> &crate::probes::AttachReport {
        self.probes.report()
    }

    /// Persist each OOM record in `state` as it is made.
    #[must_use]
    pub fn with_state(mut self, state: StateDir) -> Self {
        self.state = Some(state);
        self
    }

    /// Sample every `interval`, fold in events as they come and answer requests, until
    /// `shutdown` completes or the event stream ends; then shut down.
    pub async fn run(mut self, interval: Duration, shutdown: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                batch = self.stream.batches.recv() => {
                    let Some(mut batch) = batch else { break };
                    self.observe_events(&mut batch);
                }
                _ = tick.tick() => self.sample(),
                Some(request) = self.requests.recv() => self.publish(request),
                () = &mut shutdown => break,
            }
        }
        tracing::info!("shutting down");
        self.cleanup().await;
    }

    fn observe_events(&mut self, batch: &mut [Event]) {
        let now = Instant::now();
        let wall = SystemTime::now();
        if batch.iter().any(|event| matches!(event, Event::Oom(_))) {
            // A sample at the kill, so its flight recording ends there (not up to an interval
            // before) and lists the cgroup's processes and usage as they are now.
            self.sampler.tick(&mut self.model, &mut self.probes, now);
        }
        for event in batch {
            if self.sampling_tasks
                && let Event::Exit(exit) = event
            {
                self.sampler.complete_exit(exit);
            }
            self.probes.complete_oom(event);
            // Identity must be read while the process still exists: an OOM victim's cgroup is
            // looked up now, before its exit empties /proc/<pid>.
            let pid = event.subject_pid();
            let _ = self.sampler.identify(pid, now);
            let cgroup = self.sampler.event_cgroup(&mut self.model, event, now);
            let newest_oom = |model: &Model| {
                model
                    .last_oom()
                    .map(|r| (r.timestamp_unix_ms, r.victim_pid))
            };
            let before = newest_oom(&self.model);
            self.model
                .observe_event_in(now, wall, event, cgroup.as_deref());
            // A kill outside --cgroup-root adds no record: nothing to describe or save.
            let recorded = newest_oom(&self.model) != before;
            if let (Some(state), Some(record)) = (&mut self.state, self.model.take_completed_oom())
            {
                state.save(&record, wall);
            }
            match event {
                Event::Exit(_) | Event::Exec(_) => self.sampler.forget(pid),
                // A kill is news: do not serve views from before it.
                Event::Oom(_) if recorded => {
                    self.cached = CachedViews::default();
                    self.sampler.describe_kill(&mut self.model);
                    if let (Some(state), Some(record)) = (&mut self.state, self.model.last_oom()) {
                        state.save(record, wall);
                    }
                }
                _ => {}
            }
        }
    }

    fn sample(&mut self) {
        // Views built during the last tick are out of date: drop them (and their memory) before
        // sampling.
        self.cached = CachedViews::default();
        self.sampler
            .tick(&mut self.model, &mut self.probes, Instant::now());
        let wall = SystemTime::now();
        if let Some(workloads) = &mut self.workloads
            && workloads.due(wall)
        {
            // The snapshot is kept for the requests of this tick: a poll right after costs none.
            let snapshot = self
                .cached
                .snapshot(&self.model, &self.probes, &self.pipeline);
            workloads.record(&snapshot, wall);
        }
        if let Some(recorder) = &self.recorder {
            // The views of this tick, cached: requests until the next tick reuse them.
            let snapshot = self
                .cached
                .snapshot(&self.model, &self.probes, &self.pipeline);
            let workloads = self.workloads.as_ref().map(|source| {
                self.cached
                    .workloads(&self.model, &self.probes, &self.pipeline, source)
            });
            recorder.record(snapshot, workloads);
        }
        if !self.readiness.ready.swap(true, Ordering::Relaxed) {
            tracing::info!("ready");
        }
    }

    /// Answers a request with views built at most once per tick. A handler that gave up has
    /// dropped its reply channel; that is not an error.
    fn publish(&mut self, request: Request) {
        let Self {
            model,
            probes,
            pipeline,
            cached,
            workloads,
            ..
        } = self;
        match request {
            Request::Snapshot(reply) => {
                let _ = reply.send(cached.snapshot(model, probes, pipeline));
            }
            Request::Ooms(reply) => {
                let _ = reply.send(cached.ooms(model));
            }
            Request::Workloads(reply) => {
                // No source: the daemon was built without one; a dropped reply is a 503.
                if let Some(source) = workloads {
                    let _ = reply.send(cached.workloads(model, probes, pipeline, source));
                }
            }
            Request::Metrics(reply) => {
                let _ = reply.send(Published {
                    snapshot: cached.snapshot(model, probes, pipeline),
                    ooms: cached.ooms(model),
                });
            }
        }
    }

    /// Graceful shutdown: refuse further requests, say why, let the server finish, then stop
    /// reading and detach the probes.
    async fn cleanup(self) {
        let Self {
            probes,
            stream,
            requests,
            readiness,
            server,
            cached,
            recorder,
            ..
        } = self;
        // Requests still queued, and any later ones, get a 503 at once rather than waiting for
        // the server to give up on them.
        drop(requests);
        drop(cached);
        readiness.ready.store(false, Ordering::Relaxed);
        *readiness
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = "shutting down".to_owned();
        if let Some(server) = server {
            server.stop().await;
        }
        if let Some(recorder) = recorder {
            // The frames still queued are written and the file synced before the daemon exits.
            let _ = tokio::task::spawn_blocking(move || recorder.finish()).await;
        }
        drop(stream);
        // Processes that exited between load and attach, or whose exit was lost, leave entries
        // behind; detaching unloads the maps with them.
        probes.detach();
    }
}

/// What a [`PipelineView`] is made of besides the model.
struct PipelineSource {
    families: FamilySet,
    probes_attached: u32,
    probes_failed: u32,
    counters: Arc<PipelineCounters>,
    /// The recording store's counts, when the daemon records.
    recording: Option<Arc<crate::record::store::StoreStats>>,
}

impl PipelineSource {
    /// Losses at every stage: kernel (ring full, map full), userspace queue, decoding.
    fn view(&self, model: &Model, probes: &Probes) -> PipelineView {
        let losses = probes.kernel_losses().unwrap_or_default();
        let counters = self.counters.snapshot();
        PipelineView {
            families: self.families,
            probes_attached: self.probes_attached,
            probes_failed: self.probes_failed,
            tracked_processes: model.process_count() as u64,
            events_received: counters.decoded,
            lost_kernel_ring_full: losses.ring_total(),
            lost_kernel_map_full: losses.map_total(),
            lost_userspace_queue: counters.queue_drops,
            lost_decode: counters.decode_errors,
            recording: self.recording.as_deref().map(StoreStats::view),
        }
    }
}

/// Views built since the last sampling tick: however many scrapes come in one interval, each
/// view is built at most once (an idle daemon nobody scrapes builds none).
#[derive(Default)]
struct CachedViews {
    snapshot: Option<Arc<Snapshot>>,
    ooms: Option<Arc<Vec<OomRecord>>>,
    workloads: Option<Arc<WorkloadsResponse>>,
}

impl CachedViews {
    fn snapshot(
        &mut self,
        model: &Model,
        probes: &Probes,
        pipeline: &PipelineSource,
    ) -> Arc<Snapshot> {
        Arc::clone(self.snapshot.get_or_insert_with(|| {
            let pipeline = pipeline.view(model, probes);
            Arc::new(model.snapshot(Instant::now(), SystemTime::now(), pipeline))
        }))
    }

    fn workloads(
        &mut self,
        model: &Model,
        probes: &Probes,
        pipeline: &PipelineSource,
        source: &WorkloadsSource,
    ) -> Arc<WorkloadsResponse> {
        if let Some(built) = &self.workloads {
            return Arc::clone(built);
        }
        let snapshot = self.snapshot(model, probes, pipeline);
        Arc::clone(
            self.workloads
                .get_or_insert_with(|| Arc::new(source.build(&snapshot))),
        )
    }

    fn ooms(&mut self, model: &Model) -> Arc<Vec<OomRecord>> {
        Arc::clone(
            self.ooms
                .get_or_insert_with(|| Arc::new(model.oom_records())),
        )
    }
}
