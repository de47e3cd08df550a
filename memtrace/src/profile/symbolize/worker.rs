//! blazesym's symbolizer on a thread of its own.
//!
//! blazesym caches every file it parsed (ELF symbol tables, DWARF, kallsyms) in its symbolizer,
//! behind `Rc`s, so the symbolizer is not `Send`. Keeping it on one thread for the life of a
//! [`Symbolizer`](super::Symbolizer) keeps those caches across `--interval`s (a large module's
//! DWARF is parsed once, not at each interval) while the `Symbolizer` itself stays `Send`.
use std::path::PathBuf;
use std::sync::mpsc;

use blazesym::symbolize;

type Job = Box<dyn FnOnce(&symbolize::Symbolizer) + Send>;

#[derive(Debug)]
pub(super) struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    debug_dirs: Option<Vec<PathBuf>>,
}

impl Worker {
    /// The thread starts with the first job.
    pub(super) fn new(debug_dirs: Option<Vec<PathBuf>>) -> Self {
        Self {
            jobs: None,
            debug_dirs,
        }
    }

    /// Runs `job` with the symbolizer and waits for its result; `None` if the thread could not
    /// be started or died in the job (a panic in blazesym): the next job starts a new one.
    pub(super) fn run<T: Send + 'static>(
        &mut self,
        job: impl FnOnce(&symbolize::Symbolizer) -> T + Send + 'static,
    ) -> Option<T> {
        let jobs = match &self.jobs {
            Some(jobs) => jobs,
            None => self.jobs.insert(spawn(self.debug_dirs.clone())?),
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = jobs.send(Box::new(move |symbolizer| {
            let _ = reply.send(job(symbolizer));
        }));
        let answer = sent.ok().and_then(|()| answer.recv().ok());
        if answer.is_none() {
            self.jobs = None;
        }
        answer
    }
}

fn spawn(debug_dirs: Option<Vec<PathBuf>>) -> Option<mpsc::Sender<Job>> {
    let (jobs, received) = mpsc::channel::<Job>();
    let thread = std::thread::Builder::new()
        .name("memtrace-symbols".to_owned())
        .spawn(move || {
            let symbolizer = symbolize::Symbolizer::builder()
                .enable_code_info(true)
                .enable_inlined_fns(true)
                .enable_demangling(true)
                .set_debug_dirs(debug_dirs.as_deref())
                .build();
            for job in received {
                job(&symbolizer);
            }
        });
    match thread {
        Ok(_) => Some(jobs),
        Err(error) => {
            tracing::warn!("cannot start the symbolizer's thread: {error}");
            None
        }
    }
}
