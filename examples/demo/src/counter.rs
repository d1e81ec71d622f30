//! The counter: `GET /counter` adds one to a number in the session and answers it;
//! `GET /counter/read` answers it without writing (the benchmark's read-only request).

use axum::extract::State;
use axum::response::Json;
use serde_json::json;
use tribes_axum::Session;

use crate::{App, AppError, session_hash};

/// `GET /counter`: the session's count plus one, written back.
pub(crate) async fn counter(State(app): State<App>, session: Session) -> Result<Json<serde_json::Value>, AppError> {
    let count = session.get::<u64>("count").await.unwrap_or(None).unwrap_or(0) + 1;
    session.insert("count", &count).await?;
    Ok(Json(
        json!({ "count": count, "node": app.route, "session": session_hash(&session).await }),
    ))
}

/// `GET /counter/read`: the session's count, unchanged (`"value"`, not `"count"`, so a
/// client counting new sessions by `"count":1` does not count these).
pub(crate) async fn read(State(app): State<App>, session: Session) -> Json<serde_json::Value> {
    let value = session.get::<u64>("count").await.unwrap_or(None).unwrap_or(0);
    Json(json!({ "value": value, "node": app.route, "session": session_hash(&session).await }))
}
