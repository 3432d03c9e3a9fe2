//! JSON responses, as the API server writes them.

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::Value;

/// `v` as an `application/json` response with status `code`.
pub(crate) fn json_response(code: u16, v: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(v).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
