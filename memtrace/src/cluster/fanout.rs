//! One round of the fan-out: `GET /api/v1/workloads` on every target, at most `concurrency` at
//! once, each within `timeout`, all within `deadline`. Whatever does not answer usefully in time
//! becomes a [`NodeFailure`] with one line of why; a round never fails as a whole and never waits
//! past its deadline for a dead node.
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use memtrace_api::cluster::{Coverage, NodeFailure};
use memtrace_api::workloads::{WORKLOADS_SCHEMA_VERSION, WorkloadsResponse};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::diagnose::{NodeAnswer, Thresholds};
use super::targets::Target;
use crate::units::{duration_in, parse_size};

/// How hard a round tries (flags of every `memtrace cluster` view).
#[derive(Args, Clone, Debug)]
pub struct FanoutArgs {
    /// Nodes asked at once.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,

    /// Per node: give up on a node that has not answered in full within DURATION.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration_in(Duration::from_millis(10), Duration::from_secs(600)))]
    pub timeout: Duration,

    /// Overall: report whatever answered within DURATION, the rest as not answered.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration_in(Duration::from_millis(10), Duration::from_secs(3600)))]
    pub deadline: Duration,

    /// History asked of each node (?history=); 0 for none.
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = duration_in(Duration::ZERO, Duration::from_secs(7 * 24 * 3600)))]
    pub history: Duration,

    /// Largest summary accepted from one node (after decompression); a larger one is that
    /// node's error.
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = parse_size)]
    pub max_body: u64,
}

impl Default for FanoutArgs {
    fn default() -> Self {
        Self {
            concurrency: 64,
            timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
            history: Duration::from_secs(2 * 3600),
            max_body: 8 << 20,
        }
    }
}

/// What one round found.
#[derive(Clone, Debug, Default)]
pub struct Round {
    pub generated_unix_ms: u64,
    /// In target order.
    pub answers: Vec<NodeAnswer>,
    pub coverage: Coverage,
    /// How long the round took.
    pub elapsed: Duration,
}

/// Ask every target once. With `reduce`, each answer is reduced to what those thresholds'
/// diagnostics need of its histories as it arrives, and the histories are dropped
/// ([`NodeAnswer::reduced`]): an aggregator of thousands of nodes then holds no history at all.
pub async fn fan_out(
    client: &reqwest::Client,
    targets: &[Target],
    args: &FanoutArgs,
    reduce: Option<&Thresholds>,
) -> Round {
    let started = Instant::now();
    let asked_unix_ms = now_unix_ms();
    let deadline = tokio::time::Instant::now() + args.deadline;
    let permits = Arc::new(Semaphore::new(args.concurrency as usize));
    let mut tasks = JoinSet::new();
    for (index, target) in targets.iter().enumerate() {
        let (client, target, permits) = (client.clone(), target.clone(), Arc::clone(&permits));
        let (timeout, history, max_body) = (args.timeout, args.history, args.max_body);
        let reduce = reduce.cloned();
        tasks.spawn(async move {
            // Never fails: the semaphore is not closed.
            let _permit = permits.acquire_owned().await;
            let asked = Instant::now();
            let result =
                tokio::time::timeout(timeout, fetch(&client, &target, history, max_body, timeout))
                    .await
                    .unwrap_or_else(|_| Err(format!("timed out after {}", seconds(timeout))))
                    .map(|summary| match &reduce {
                        Some(t) => {
                            NodeAnswer::reduced(target.spec.clone(), summary, t, asked_unix_ms)
                        }
                        None => NodeAnswer {
                            target: target.spec.clone(),
                            summary,
                            trends: None,
                        },
                    });
            (index, result, asked.elapsed())
        });
    }
    let mut outcomes: Vec<Option<(Result<NodeAnswer, String>, Duration)>> =
        vec![None; targets.len()];
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok((index, result, elapsed)))) => outcomes[index] = Some((result, elapsed)),
            // A panicked task leaves its slot empty: reported below like a missed deadline.
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => {
                tasks.abort_all();
                break;
            }
        }
    }
    let mut round = Round {
        generated_unix_ms: now_unix_ms(),
        elapsed: started.elapsed(),
        ..Round::default()
    };
    round.coverage.asked = u32::try_from(targets.len()).unwrap_or(u32::MAX);
    for (target, outcome) in targets.iter().zip(outcomes) {
        match outcome {
            Some((Ok(answer), _)) => round.answers.push(answer),
            Some((Err(error), elapsed)) => round.coverage.failures.push(NodeFailure {
                target: target.spec.clone(),
                node: None,
                error,
                elapsed_seconds: elapsed.as_secs_f64(),
            }),
            None => round.coverage.failures.push(NodeFailure {
                target: target.spec.clone(),
                node: None,
                error: format!(
                    "no answer within the {} deadline (--deadline)",
                    seconds(args.deadline)
                ),
                elapsed_seconds: args.deadline.as_secs_f64(),
            }),
        }
    }
    round.coverage.answered = u32::try_from(round.answers.len()).unwrap_or(u32::MAX);
    round
}

/// One target's summary, or one line saying what was wrong.
async fn fetch(
    client: &reqwest::Client,
    target: &Target,
    history: Duration,
    max_body: u64,
    timeout: Duration,
) -> Result<WorkloadsResponse, String> {
    let mut response = client
        .get(target.workloads_url(history))
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| request_error(&e, &target.spec, timeout))?;
    let status = response.status();
    if !status.is_success() {
        let hint = if status == reqwest::StatusCode::NOT_FOUND {
            " (not a memtrace daemon, or one older than the workloads API)"
        } else if status == reqwest::StatusCode::UNAUTHORIZED {
            ": wrong username or password, or none given (--username with --password-file or \
             MEMTRACE_PASSWORD)"
        } else {
            ""
        };
        return Err(format!("HTTP {status} from /api/v1/workloads{hint}"));
    }
    if response.content_length().is_some_and(|len| len > max_body) {
        return Err(too_large(max_body));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| describe_request_error(&e, timeout))?
    {
        if (body.len() + chunk.len()) as u64 > max_body {
            return Err(too_large(max_body));
        }
        body.extend_from_slice(&chunk);
    }
    decode(&body)
}

fn too_large(max_body: u64) -> String {
    format!(
        "summary larger than {} (--max-body), not read",
        crate::units::human_bytes(max_body)
    )
}

/// Just the version, read before the rest so that a summary of another version is named as
/// such rather than as whatever field it lacks.
#[derive(Deserialize)]
struct Versioned {
    schema_version: Option<u32>,
}

/// A summary from a body: garbage, another schema version and a malformed summary each say so.
pub fn decode(body: &[u8]) -> Result<WorkloadsResponse, String> {
    // One pass in the common case; the body is read a second time, for its version alone, only
    // to say why it is not a summary this memtrace reads.
    let parsed = match serde_json::from_slice::<WorkloadsResponse>(body) {
        Ok(summary) if summary.schema_version == WORKLOADS_SCHEMA_VERSION => return Ok(summary),
        other => other,
    };
    let versioned: Versioned = serde_json::from_slice(body)
        .map_err(|e| format!("not JSON ({e}); body starts {}", preview(body)))?;
    match versioned.schema_version {
        None => Err(format!(
            "not a workloads summary (no schema_version); body starts {}",
            preview(body)
        )),
        Some(version) if version != WORKLOADS_SCHEMA_VERSION => {
            let age = if version < WORKLOADS_SCHEMA_VERSION {
                "older"
            } else {
                "newer"
            };
            Err(format!(
                "unsupported schema_version {version} (this memtrace reads {WORKLOADS_SCHEMA_VERSION}; the daemon is {age})"
            ))
        }
        Some(_) => parsed.map_err(|e| format!("malformed summary: {e}")),
    }
}

/// The first bytes of a body, quoted and safe for a terminal.
fn preview(body: &[u8]) -> String {
    const SHOWN: usize = 40;
    let head = crate::escape::escape_bytes(&body[..body.len().min(SHOWN)]);
    let more = if body.len() > SHOWN { "…" } else { "" };
    format!("\"{}{more}\"", crate::escape::terminal(&head))
}

/// A failed request: what to do about TLS and client-certificate failures (`web::client`'s
/// explanation), else the plain cause.
fn request_error(err: &reqwest::Error, target: &str, timeout: Duration) -> String {
    match crate::web::client::explain(err, target) {
        crate::web::client::RequestError::Other { .. } => describe_request_error(err, timeout),
        tls => tls.to_string(),
    }
}

/// One line for a failed request: the innermost cause in the words of the OS (`connection
/// refused`), not reqwest's chain of wrappers.
pub fn describe_request_error(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("timed out after {}", seconds(timeout));
    }
    let mut innermost: &dyn std::error::Error = err;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    let cause = innermost.to_string();
    let cause = cause
        .split(" (os error")
        .next()
        .unwrap_or(&cause)
        .to_lowercase();
    if err.is_connect() {
        format!("connecting: {cause}")
    } else if err.is_body() || err.is_decode() {
        format!("reading the body: {cause}")
    } else {
        cause
    }
}

pub(super) fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

pub(super) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
