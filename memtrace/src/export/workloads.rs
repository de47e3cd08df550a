//! `GET /api/v1/workloads[?history=DURATION]`: the node's per-workload summary for the fan-out
//! (`memtrace cluster`), gzipped when the client accepts it (`Accept-Encoding: gzip`).
//!
//! The daemon builds the response once per tick with all the history it keeps; each request
//! gets a copy trimmed to its `history` (default [`DEFAULT_HISTORY`], `0` for none; a duration
//! as the flags take it, bare seconds included), here on the server's threads.
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde::Deserialize;
use tower_http::compression::CompressionLayer;

use super::http::{AppState, ask, json_response};
use crate::daemon::Request;
use crate::model::workloads::limit_history;
use crate::units::parse_duration;

/// History sent when the request does not say.
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(2 * 3600);

/// The route, with its gzip layer (only this route: the others' bytes stay as they were).
pub fn route() -> MethodRouter<Arc<AppState>> {
    get(workloads).layer(CompressionLayer::new().gzip(true))
}

#[derive(Debug, Default, Deserialize)]
pub struct WorkloadsQuery {
    history: Option<String>,
}

impl WorkloadsQuery {
    /// How much history to send, or why the value is not a duration.
    pub fn history(&self) -> Result<Duration, String> {
        self.history
            .as_deref()
            .map_or(Ok(DEFAULT_HISTORY), parse_duration)
    }
}

#[derive(serde::Serialize)]
struct BadRequest {
    error: String,
}

async fn workloads(
    State(state): State<Arc<AppState>>,
    Query(query): Query<WorkloadsQuery>,
) -> Response {
    let span = match query.history() {
        Ok(span) => span,
        Err(reason) => {
            let mut response = json_response(&BadRequest {
                error: format!("history: {reason}"),
            });
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    let built = match ask(&state, Request::Workloads).await {
        Ok(built) => built,
        Err(response) => return response,
    };
    let mut response = (*built).clone();
    limit_history(&mut response, span);
    response.node.ready = state.readiness.ready.load(Ordering::Acquire);
    json_response(&response).into_response()
}

#[cfg(test)]
mod tests;
