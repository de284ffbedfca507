//! The dashboard's page and assets, embedded in the binary (no build step, no CDN: it works on
//! a network with no internet), and the headers every dashboard response carries: a strict
//! Content-Security-Policy (scripts and styles from this origin only, no inline code, no
//! frames, no forms posting elsewhere), `nosniff`, no referrer, no caching of API answers.

use axum::body::Body;
use axum::http::{HeaderValue, Response, header};
use axum::response::IntoResponse;

/// The one page: every dashboard path serves it and the script routes on the path.
pub const INDEX_HTML: &str = include_str!("assets/index.html");
pub const APP_JS: &str = include_str!("assets/app.js");
pub const APP_CSS: &str = include_str!("assets/app.css");

/// What the page may load and do.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Bytes the browser loads for a page: the HTML, the script and the style sheet.
pub fn page_weight() -> usize {
    INDEX_HTML.len() + APP_JS.len() + APP_CSS.len()
}

pub async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], INDEX_HTML)
}

pub async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], APP_JS)
}

pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], APP_CSS)
}

/// Adds the security headers to a dashboard response (API answers are never cached).
pub async fn secure(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_script_and_style_and_has_no_inline_code() {
        assert!(INDEX_HTML.contains(r#"src="/assets/app.js""#) && INDEX_HTML.contains(r#"href="/assets/app.css""#));
        let lower = INDEX_HTML.to_ascii_lowercase();
        assert_eq!(lower.matches("<script").count(), 1, "one script, from /assets");
        assert!(
            !lower.contains("<style") && !lower.contains("style=") && !lower.contains(" onclick"),
            "no inline code"
        );
        assert!(!lower.contains("http://") && !lower.contains("https://"), "nothing from elsewhere");
        for bad in
            ["innerHTML =", "innerHTML=", "outerHTML", "insertAdjacentHTML", "eval(", "new Function", "document.write"]
        {
            let uses: Vec<&str> = APP_JS
                .lines()
                .filter(|l| l.contains(bad) && !l.contains("innerHTML = ''") && !l.contains("innerHTML = \"\""))
                .collect();
            assert!(uses.is_empty(), "app.js must build the DOM from text, never markup: {bad} in {uses:?}");
        }
    }
}
