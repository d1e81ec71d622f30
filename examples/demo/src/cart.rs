//! The second application of the demo: a shopping cart at `/cart`, with its own context
//! (`cart`), manager and cookie, on the same channel as the counter. Its sessions replicate
//! only among the nodes started with `--cart`; a node without it serves the counter alone.

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use tribes_axum::{ReplicatedSessions, Session};

/// The cart's context name.
pub(crate) const CONTEXT: &str = "cart";
/// The cart's session cookie (path `/cart`), apart from the counter's `TRIBESSESSIONID`.
pub(crate) const COOKIE: &str = "TRIBESCARTID";

/// `GET /cart`: the items, as a JSON list; `POST /cart/{item}`: adds one;
/// `DELETE /cart`: empties the cart (ends its session).
pub(crate) fn router(layer: ReplicatedSessions) -> Router {
    Router::new()
        .route("/cart", get(items).delete(empty))
        .route("/cart/{item}", post(add))
        .layer(layer)
}

async fn items(session: Session) -> Json<Vec<String>> {
    // An unreadable value (a deploy changed its type) is an empty cart, never a 500.
    Json(
        session
            .get::<Vec<String>>("items")
            .await
            .ok()
            .flatten()
            .unwrap_or_default(),
    )
}

async fn add(session: Session, Path(item): Path<String>) -> Response {
    let mut items = session
        .get::<Vec<String>>("items")
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    items.push(item);
    match session.insert("items", &items).await {
        Ok(()) => (StatusCode::OK, Json(items)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn empty(session: Session) -> Response {
    match session.invalidate().await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}
