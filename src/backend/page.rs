//! The upload page at `/`: plain HTML, CSS and JavaScript compiled into the
//! binary (`page/`), no build step. It uploads through the chunk API as any
//! client does — create, chunks in parallel with their CRC-32C (computed in
//! a Web Worker, off the page's thread), status, `DELETE` to cancel — and
//! draws committed progress from the event stream.
//!
//! The page is served without credentials: it holds no secret (the user
//! types their token; it stays in the tab's `sessionStorage`) and every
//! request it makes carries the credentials the API asks for. Its headers
//! allow it nothing it does not need: scripts, styles and workers from
//! this server only, requests to this server only, no framing, no
//! `Referer` (the events token travels in a query string), no sniffing.

use super::refusals::Refusal;
use crate::chunk_api::Cause;
use crate::wire::Reply;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// The page.
const INDEX_HTML: &str = include_str!("page/index.html");
/// Its script.
const APP_JS: &str = include_str!("page/app.js");
/// The worker computing chunks' CRC-32C.
const CRC32C_WORKER_JS: &str = include_str!("page/crc32c-worker.js");
/// Its style.
const APP_CSS: &str = include_str!("page/app.css");

/// What the page may do: load its own script, style and worker, talk to
/// this server; nothing else (no inline script, no other origin, no
/// framing, no form posts, no plugins).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     worker-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's assets under `/page/`, by name: content type and text.
const ASSETS: [(&str, &str, &str); 3] = [
    ("app.js", "text/javascript; charset=utf-8", APP_JS),
    (
        "crc32c-worker.js",
        "text/javascript; charset=utf-8",
        CRC32C_WORKER_JS,
    ),
    ("app.css", "text/css; charset=utf-8", APP_CSS),
];

/// `GET /`: the page.
pub(super) fn index() -> Reply {
    static_reply("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /page/{file}`: one of its assets, or 404.
pub(super) fn asset(file: &str) -> Result<Reply, Refusal> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, content_type, text)| static_reply(content_type, text))
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                Cause::NotFound,
                format!("the page has no file {file:?}"),
            )
        })
}

fn static_reply(content_type: &'static str, text: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    for (name, value) in [
        (http::header::CONTENT_TYPE, content_type),
        (
            http::header::CONTENT_SECURITY_POLICY,
            CONTENT_SECURITY_POLICY,
        ),
        (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (http::header::REFERRER_POLICY, "no-referrer"),
        (http::header::X_FRAME_OPTIONS, "DENY"),
        // Served from the binary: a new binary may bring a new page.
        (http::header::CACHE_CONTROL, "no-cache"),
    ] {
        reply
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This is a regression test that ensures the page names only the
    /// assets the server has, and loads no script or style inline (the
    /// Content-Security-Policy would block it, silently).
    #[test]
    fn the_page_loads_only_what_is_served_and_nothing_inline() {
        for (name, _, text) in ASSETS {
            assert!(!text.is_empty(), "{name} is empty");
        }
        for reference in ["/page/app.js", "/page/app.css"] {
            assert!(INDEX_HTML.contains(reference), "{reference} not loaded");
        }
        assert!(APP_JS.contains("/page/crc32c-worker.js"));
        assert!(!INDEX_HTML.contains("<script>"), "inline script");
        assert!(!INDEX_HTML.contains("<style"), "inline style");
        assert!(!INDEX_HTML.contains("style=\""), "inline style attribute");
        let inline_handler = INDEX_HTML.split(" on").skip(1).any(|after| {
            let name: String = after.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && after[name.len()..].starts_with('=')
        });
        assert!(!inline_handler, "inline event handler");
        assert!(asset("app.js").is_ok());
        assert!(asset("../Cargo.toml").is_err());
        let reply = index();
        assert_eq!(
            reply.headers()[http::header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
    }
}
