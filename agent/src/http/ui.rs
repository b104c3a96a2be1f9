//! The web UI under `/ui/`: a single page (HTML with its CSS, and one script) embedded in the
//! binary, so an agent serves it with no files on disk and no network fetch. The page talks to the
//! ordinary `/v1/...` API; this module knows nothing of the data it shows.

use super::{Body, Ctx, HttpError, HttpResult, Reply};
use bytes::Bytes;

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; \
                   img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

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
    let (bytes, content_type) = asset(path);
    Ok(Reply {
        status: 200,
        body: Body::Raw { bytes: Bytes::from_static(bytes.as_bytes()), content_type },
        headers: vec![
            // A new binary may bring new assets: the browser revalidates instead of trusting a cache.
            ("Cache-Control", "no-cache".into()),
            // The page runs only its own script and talks only to its own origin; data it shows
            // goes in as text, and this header keeps it so should that ever slip.
            ("Content-Security-Policy", CSP.into()),
            ("X-Content-Type-Options", "nosniff".into()),
        ],
    })
}

/// The asset for a path under `/ui`. Pages are routed in the browser (`/ui/#/services/web`), so
/// every other path is the page itself.
fn asset(path: &str) -> (&'static str, &'static str) {
    match path {
        "/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        _ => (INDEX, "text/html; charset=utf-8"),
    }
}

#[cfg(test)]
mod tests {
    use super::asset;

    #[test]
    fn the_script_has_its_own_type_and_other_paths_are_the_page() {
        assert!(asset("/app.js").1.starts_with("text/javascript"));
        assert!(asset("/").0.contains("/ui/app.js"));
        assert_eq!(asset("/services/web").0, asset("/").0);
    }
}
