//! The board page: the files of `web/board/dist`, served for `GET` and `HEAD` of any path
//! that is not one of the server's own (`/ws`, the probes, `/metrics`).
//!
//! Release builds embed the files in the binary (`rust-embed`), so `serve` needs nothing
//! beside it; debug builds read them from disk at each request, so a rebuilt page shows
//! without recompiling. The build writes a `.br` and a `.gz` beside each file where they are
//! smaller; they are served as the file itself when the request's `Accept-Encoding` allows,
//! each with its own strong `ETag`. Names under `assets/` carry a hash of their content and
//! are cached for a year; `index.html` is revalidated every time (`If-None-Match` → 304) and
//! carries the Content-Security-Policy. Nothing is kept per connection or per request: a
//! response borrows the embedded bytes.

use std::borrow::Cow;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use rust_embed::{EmbeddedFile, RustEmbed};

#[derive(RustEmbed)]
#[folder = "../../web/board/dist"]
struct Dist;

/// Cache lifetime of content-hashed files: they never change under their name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The encodings served from precompressed siblings, by preference on equal quality.
const CODINGS: [(&str, &str); 2] = [("br", ".br"), ("gzip", ".gz")];

/// The answer to a request for `path` that no other route took.
pub(crate) fn answer(method: &Method, path: &str, headers: &HeaderMap) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some((name, file)) = lookup(path) else {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the board is at /, the WebSocket at /ws\n",
        );
    };
    let content_type = content_type(name, &file);
    let (coding, body) = choose_encoding(name, file, headers.get(header::ACCEPT_ENCODING));
    let etag = etag(&body);

    let mut response = Response::new(Full::default());
    let out = response.headers_mut();
    out.insert(header::ETAG, etag.clone());
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if name.starts_with("assets/") {
            IMMUTABLE
        } else {
            "no-cache"
        }),
    );
    out.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if name == "index.html" {
        out.insert(
            header::CONTENT_SECURITY_POLICY,
            content_security_policy(headers.get(header::HOST)),
        );
        out.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    if not_modified(headers, &etag) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return response;
    }
    out.insert(header::CONTENT_TYPE, content_type);
    if let Some(coding) = coding {
        out.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
    }
    // hyper sends the length and no body for HEAD.
    *response.body_mut() = Full::new(body.data);
    response
}

/// The served bytes of one file in one encoding.
struct Body {
    data: Bytes,
    sha256: [u8; 32],
}

impl Body {
    fn of(file: EmbeddedFile) -> Body {
        let sha256 = file.metadata.sha256_hash();
        let data = match file.data {
            Cow::Borrowed(data) => Bytes::from_static(data),
            Cow::Owned(data) => Bytes::from(data),
        };
        Body { data, sha256 }
    }
}

/// The file a path names: `/` is `index.html`; compressed siblings are not files of their own.
fn lookup(path: &str) -> Option<(&str, EmbeddedFile)> {
    let name = match path.strip_prefix('/')? {
        "" => "index.html",
        name => name,
    };
    let safe = !name.ends_with(".gz")
        && !name.ends_with(".br")
        && name
            .split('/')
            .all(|segment| !matches!(segment, "" | "." | "..") && !segment.contains('\\'));
    if !safe {
        return None;
    }
    Dist::get(name).map(|file| (name, file))
}

/// The encoding to send (`None`: the file as it is) and its bytes.
fn choose_encoding(
    name: &str,
    file: EmbeddedFile,
    accept: Option<&HeaderValue>,
) -> (Option<&'static str>, Body) {
    let accept = accept.and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut best: Option<(&'static str, f32, EmbeddedFile)> = None;
    for (coding, suffix) in CODINGS {
        let quality = quality(accept, coding);
        if quality <= 0.0 || best.as_ref().is_some_and(|(_, q, _)| *q >= quality) {
            continue;
        }
        if let Some(sibling) = Dist::get(&format!("{name}{suffix}")) {
            best = Some((coding, quality, sibling));
        }
    }
    match best {
        Some((coding, _, sibling)) => (Some(coding), Body::of(sibling)),
        None => (None, Body::of(file)),
    }
}

/// The quality `Accept-Encoding` gives `coding` (RFC 9110 §12.5.3): its own entry, else `*`'s,
/// else 0.
fn quality(accept: &str, coding: &str) -> f32 {
    let mut wildcard = None;
    for entry in accept.split(',') {
        let mut parts = entry.split(';');
        let token = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if token.eq_ignore_ascii_case(coding) {
            return q;
        }
        if token == "*" {
            wildcard = Some(q);
        }
    }
    wildcard.unwrap_or(0.0)
}

/// A strong validator: the SHA-256 of the bytes sent (so each encoding has its own).
fn etag(body: &Body) -> HeaderValue {
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for byte in &body.sha256[..16] {
        tag.push_str(&format!("{byte:02x}"));
    }
    tag.push('"');
    HeaderValue::from_str(&tag).expect("quotes and hex digits are a valid header value")
}

/// Whether `If-None-Match` names `etag` (weak comparison, as RFC 9110 §13.1.2 asks) or is `*`.
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag)
}

/// The media type by extension, with the charset for text (every text file of the build is
/// UTF-8).
fn content_type(name: &str, file: &EmbeddedFile) -> HeaderValue {
    // JavaScript is text/javascript (RFC 9239), whatever older tables say.
    let mime = if name.ends_with(".js") {
        "text/javascript"
    } else {
        file.metadata.mimetype()
    };
    let text = mime.starts_with("text/") || mime.ends_with("json") || mime.ends_with("+xml");
    let value = if text {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// The page's policy: its own scripts, styles and images only, WebSockets to its own host, no
/// framing, no plugins, no inline code.
fn content_security_policy(host: Option<&HeaderValue>) -> HeaderValue {
    // The host goes into the header only when it is a plain host[:port], so a forged Host
    // cannot add directives.
    let host = host.and_then(|h| h.to_str().ok()).filter(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    });
    let connect = match host {
        Some(host) => format!("'self' ws://{host} wss://{host}"),
        None => "'self'".to_owned(),
    };
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).expect("the policy is ASCII without control characters")
}

/// A plain-text answer that is never cached.
fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_qualities() {
        assert_eq!(quality("gzip, deflate, br, zstd", "br"), 1.0);
        assert_eq!(quality("gzip;q=0.5, br;q=0.8", "gzip"), 0.5);
        assert_eq!(quality("gzip; q=0", "gzip"), 0.0);
        assert_eq!(quality("identity", "gzip"), 0.0);
        assert_eq!(quality("*;q=0.3", "br"), 0.3);
        assert_eq!(quality("*, br;q=0", "br"), 0.0);
        assert_eq!(quality("", "gzip"), 0.0);
        assert_eq!(quality("GZIP", "gzip"), 1.0);
    }

    #[test]
    fn paths_outside_the_page_are_not_files() {
        for path in [
            "",
            "index.html",
            "/index.html.gz",
            "/index.html.br",
            "/../Cargo.toml",
            "/assets/../index.html",
            "/./index.html",
            "//index.html",
            "/assets\\..\\index.html",
            "/assets/",
        ] {
            assert!(lookup(path).is_none(), "{path}");
        }
        assert_eq!(lookup("/").map(|(name, _)| name), Some("index.html"));
        assert_eq!(
            lookup("/index.html").map(|(name, _)| name),
            Some("index.html")
        );
    }

    #[test]
    fn the_policy_names_only_a_plain_host() {
        let policy = |host: &str| {
            content_security_policy(Some(&HeaderValue::from_str(host).unwrap()))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert!(policy("127.0.0.1:7400")
            .contains("connect-src 'self' ws://127.0.0.1:7400 wss://127.0.0.1:7400;"));
        assert!(policy("[::1]:7400").contains("ws://[::1]:7400 "));
        assert!(policy("x; script-src *").contains("connect-src 'self';"));
        assert!(!policy("x; script-src *").contains("script-src *"));
    }
}
