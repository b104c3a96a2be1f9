//! The web UI under `/ui/`: static assets embedded in the binary.

use super::{Body, Ctx, HttpError, HttpResult, Reply};
use bytes::Bytes;

const INDEX: &str = include_str!("../../ui/index.html");

pub fn serve(ctx: &Ctx, path: &str) -> HttpResult {
    if !ctx.agent.config.ui {
        return Err(HttpError::NotFound(String::new()));
    }
    if path.is_empty() {
        return Ok(Reply {
            status: 301,
            body: Body::Raw { bytes: Bytes::new(), content_type: "text/html" },
            headers: vec![("Location", "/ui/".into())],
        });
    }
    // A single-page app: every path under /ui/ is the same page, which routes by itself.
    Ok(Reply {
        status: 200,
        body: Body::Raw { bytes: Bytes::from_static(INDEX.as_bytes()), content_type: "text/html; charset=utf-8" },
        headers: vec![],
    })
}
