//! The web dashboard: `GET /` (the page) and `GET /web/{file}` (its script, style and the
//! vendored libraries), compiled into the binary from `jobmanager/web/`, so a jobmanager serves
//! it without network access or files beside it. The page is plain JavaScript that reads the
//! REST API of [`super`]; nothing here knows about jobs.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Every file the dashboard has: its path under `/web/`, content type and bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../web/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../web/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_bytes!("../../web/api.js")),
    ("checkpoints.js", "text/javascript; charset=utf-8", include_bytes!("../../web/checkpoints.js")),
    ("dom.js", "text/javascript; charset=utf-8", include_bytes!("../../web/dom.js")),
    ("format.js", "text/javascript; charset=utf-8", include_bytes!("../../web/format.js")),
    ("graph.js", "text/javascript; charset=utf-8", include_bytes!("../../web/graph.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../web/app.css")),
    ("icon.svg", "image/svg+xml", include_bytes!("../../web/icon.svg")),
    ("vendor/dagre.min.js", "text/javascript; charset=utf-8", include_bytes!("../../web/vendor/dagre.min.js")),
    ("vendor/chart.umd.min.js", "text/javascript; charset=utf-8", include_bytes!("../../web/vendor/chart.umd.min.js")),
    ("vendor/dagre.LICENSE", "text/plain; charset=utf-8", include_bytes!("../../web/vendor/dagre.LICENSE")),
    ("vendor/chart.js.LICENSE.md", "text/plain; charset=utf-8", include_bytes!("../../web/vendor/chart.js.LICENSE.md")),
    ("vendor/README.md", "text/plain; charset=utf-8", include_bytes!("../../web/vendor/README.md")),
];

/// The dashboard's routes, merged into the REST API's router.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(index)).route("/web/{*file}", get(asset))
}

async fn index() -> Response {
    serve("index.html")
}

async fn asset(Path(file): Path<String>) -> Response {
    serve(&file)
}

/// The file at `path` with its content type, revalidated on every load (`no-cache`), so that a
/// browser never runs the script of an older jobmanager; 404 in the API's error shape when
/// there is no such file.
fn serve(path: &str) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, bytes)) => {
            ([(header::CONTENT_TYPE, *content_type), (header::CACHE_CONTROL, "no-cache")], *bytes).into_response()
        }
        None => {
            let shown: String = path.chars().take(80).collect();
            super::ApiError::new(StatusCode::NOT_FOUND, format!("not found: /web/{shown}")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of `response`, with its status and content type.
    async fn read(response: Response) -> (StatusCode, String, Vec<u8>) {
        let status = response.status();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("the body");
        (status, content_type, body.to_vec())
    }

    /// The paths in `text` between each `prefix` and the next `end`.
    fn paths_after<'a>(text: &'a str, prefix: &str, end: char) -> Vec<&'a str> {
        text.match_indices(prefix).filter_map(|(i, _)| text[i + prefix.len()..].split(end).next()).collect()
    }

    #[tokio::test]
    async fn every_file_the_page_loads_is_served_with_its_type() {
        let (status, content_type, page) = read(index().await).await;
        assert_eq!((status, content_type.as_str()), (StatusCode::OK, "text/html; charset=utf-8"));
        let page = String::from_utf8(page).expect("UTF-8");
        // What the page names, then what the scripts import (`from './x.js'`), transitively.
        let mut wanted: Vec<String> = ["src=\"/web/", "href=\"/web/"]
            .iter()
            .flat_map(|prefix| paths_after(&page, prefix, '"'))
            .map(str::to_owned)
            .collect();
        let mut seen = Vec::new();
        while let Some(file) = wanted.pop() {
            if seen.contains(&file) {
                continue;
            }
            let (status, content_type, body) = read(serve(&file)).await;
            assert_eq!(status, StatusCode::OK, "{file}");
            assert!(!body.is_empty() && !content_type.is_empty(), "{file}");
            if !file.starts_with("vendor/") && file.ends_with(".js") {
                let script = String::from_utf8(body).expect("UTF-8");
                wanted.extend(paths_after(&script, "from './", '\'').into_iter().map(str::to_owned));
            }
            seen.push(file);
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "api.js",
                "app.css",
                "app.js",
                "checkpoints.js",
                "dom.js",
                "format.js",
                "graph.js",
                "icon.svg",
                "vendor/chart.umd.min.js",
                "vendor/dagre.min.js"
            ],
            "what the page loads"
        );
        let response = serve("vendor/dagre.min.js");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
    }

    #[tokio::test]
    async fn an_unknown_file_is_a_404_in_the_apis_shape() {
        for path in ["nope.js", "../Cargo.toml", "vendor/"] {
            let (status, content_type, body) = read(serve(path)).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(content_type.starts_with("application/json"), "{path}: {content_type}");
            let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(body["errors"][0], format!("not found: /web/{path}"));
        }
    }
}
