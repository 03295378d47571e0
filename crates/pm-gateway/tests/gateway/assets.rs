//! The board page over HTTP: every file of `web/board/dist` byte for byte, its type and cache
//! headers, the precompressed siblings by `Accept-Encoding`, ETags and 304, HEAD, the policy
//! on `index.html`, and 404/405 for anything else.

use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// One HTTP answer: status, headers (names lower case, in order), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        let value = values.next().map(|(_, v)| v.as_str());
        assert!(values.next().is_none(), "one {name} header");
        value
    }
}

/// Sends `method target` with `headers` over a fresh connection and reads the whole answer.
async fn request(app: &TestApp, method: &str, target: &str, headers: &[(&str, &str)]) -> Answer {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        app.addr
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .filter(|(name, _)| name != "date")
        .collect();
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

async fn get(app: &TestApp, target: &str, headers: &[(&str, &str)]) -> Answer {
    request(app, "GET", target, headers).await
}

fn dist() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web/board/dist")
}

/// A file of the build as it is on disk.
fn file(name: &str) -> Vec<u8> {
    std::fs::read(dist().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The hashed bundle's file with this extension (`js` or `css`), e.g. `assets/app-AB12CD34.js`.
fn bundle(extension: &str) -> String {
    let names: Vec<String> = std::fs::read_dir(dist().join("assets"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("app-") && name.ends_with(&format!(".{extension}")))
        .collect();
    assert_eq!(names.len(), 1, "one {extension} bundle: {names:?}");
    format!("assets/{}", names[0])
}

fn is_strong_etag(tag: &str) -> bool {
    tag.len() == 34
        && tag.starts_with('"')
        && tag.ends_with('"')
        && tag[1..33].bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn the_page_is_served_at_the_root_with_its_policy_and_revalidated() {
    let app = spawn_app().await;
    let index = file("index.html");
    for target in ["/", "/index.html", "/?project=x"] {
        let answer = get(&app, target, &[]).await;
        assert_eq!(answer.status, 200, "{target}");
        assert_eq!(answer.body, index, "{target}");
        assert_eq!(
            answer.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(answer.header("cache-control"), Some("no-cache"));
        assert_eq!(
            answer.header("content-length"),
            Some(index.len().to_string().as_str())
        );
        assert_eq!(answer.header("content-encoding"), None);
        assert_eq!(answer.header("vary"), Some("Accept-Encoding"));
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(
            answer.header("content-security-policy").unwrap(),
            format!(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self' ws://{0} wss://{0}; base-uri 'none'; form-action 'none'; \
                 frame-ancestors 'none'",
                app.addr
            )
        );
        assert!(is_strong_etag(answer.header("etag").unwrap()));
    }
    // The page names the bundle it is built with.
    let text = String::from_utf8(index).unwrap();
    assert!(
        text.contains(&format!(r#"src="/{}""#, bundle("js"))),
        "{text}"
    );
    assert!(
        text.contains(&format!(r#"href="/{}""#, bundle("css"))),
        "{text}"
    );
}

#[tokio::test]
async fn hashed_assets_are_typed_and_cached_for_good() {
    let app = spawn_app().await;
    for (name, content_type) in [
        (bundle("js"), "text/javascript; charset=utf-8"),
        (bundle("css"), "text/css; charset=utf-8"),
    ] {
        let answer = get(&app, &format!("/{name}"), &[]).await;
        assert_eq!(answer.status, 200, "{name}");
        assert_eq!(answer.body, file(&name), "{name}");
        assert_eq!(answer.header("content-type"), Some(content_type));
        assert_eq!(
            answer.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(answer.header("content-security-policy"), None);
        assert!(is_strong_etag(answer.header("etag").unwrap()));
    }
}

#[tokio::test]
async fn precompressed_bodies_follow_accept_encoding() {
    let app = spawn_app().await;
    let js = bundle("js");
    let target = format!("/{js}");
    let mut etags = Vec::new();
    for (accept, coding) in [
        ("gzip, deflate, br, zstd", Some("br")),
        ("br", Some("br")),
        ("gzip", Some("gzip")),
        ("br;q=0, gzip", Some("gzip")),
        ("gzip;q=0.9, br;q=0.4", Some("gzip")),
        ("gzip;q=0.5, br;q=0.9", Some("br")),
        ("*", Some("br")),
        ("identity", None),
        ("gzip;q=0, br;q=0", None),
        ("", None),
    ] {
        let answer = get(&app, &target, &[("Accept-Encoding", accept)]).await;
        assert_eq!(answer.status, 200, "{accept}");
        assert_eq!(answer.header("content-encoding"), coding, "{accept}");
        let expected = match coding {
            Some("br") => file(&format!("{js}.br")),
            Some("gzip") => file(&format!("{js}.gz")),
            _ => file(&js),
        };
        assert_eq!(answer.body, expected, "{accept}");
        assert_eq!(
            answer.header("content-type"),
            Some("text/javascript; charset=utf-8"),
            "the type of the content, not of its encoding"
        );
        assert_eq!(answer.header("vary"), Some("Accept-Encoding"));
        etags.push((coding, answer.header("etag").unwrap().to_owned()));
    }
    // One strong validator per encoding.
    for (coding, etag) in &etags {
        for (other, other_etag) in &etags {
            assert_eq!(coding == other, etag == other_etag, "{coding:?} {other:?}");
        }
    }
    // The page itself is compressed too.
    let answer = get(&app, "/", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(answer.header("content-encoding"), Some("gzip"));
    assert_eq!(answer.body, file("index.html.gz"));
}

#[tokio::test]
async fn a_known_etag_is_answered_with_304_and_no_body() {
    let app = spawn_app().await;
    let js = format!("/{}", bundle("js"));
    for (target, accept) in [("/", "gzip, br"), ("/", ""), (js.as_str(), "gzip")] {
        let first = get(&app, target, &[("Accept-Encoding", accept)]).await;
        let etag = first.header("etag").unwrap().to_owned();
        for if_none_match in [
            etag.clone(),
            format!("W/{etag}"),
            format!(r#""0000", {etag}"#),
            "*".to_owned(),
        ] {
            let answer = get(
                &app,
                target,
                &[
                    ("Accept-Encoding", accept),
                    ("If-None-Match", &if_none_match),
                ],
            )
            .await;
            assert_eq!(answer.status, 304, "{target} {if_none_match}");
            assert!(answer.body.is_empty());
            assert_eq!(answer.header("etag"), Some(etag.as_str()));
            assert_eq!(
                answer.header("cache-control"),
                first.header("cache-control")
            );
            assert_eq!(answer.header("vary"), Some("Accept-Encoding"));
            assert_eq!(answer.header("content-encoding"), None);
        }
        let changed = get(
            &app,
            target,
            &[("Accept-Encoding", accept), ("If-None-Match", r#""0000""#)],
        )
        .await;
        assert_eq!(changed.status, 200);
        assert_eq!(changed.body, first.body);
    }
    // Another encoding is another representation: its validator does not match.
    let br = get(&app, "/", &[("Accept-Encoding", "br")]).await;
    let plain = get(&app, "/", &[("If-None-Match", br.header("etag").unwrap())]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body, file("index.html"));
}

#[tokio::test]
async fn head_sends_the_headers_of_get_without_the_body() {
    let app = spawn_app().await;
    let get_answer = get(&app, "/", &[("Accept-Encoding", "br")]).await;
    let head = request(&app, "HEAD", "/", &[("Accept-Encoding", "br")]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.headers, get_answer.headers);
    assert_eq!(
        head.header("content-length"),
        Some(file("index.html.br").len().to_string().as_str())
    );
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405() {
    let app = spawn_app().await;
    for target in [
        "/nope",
        "/index.html.gz",
        "/index.html.br",
        "/assets/",
        "/assets/app-00000000.js",
        "/../Cargo.toml",
        "/assets/../../README.md",
        "/%2e%2e/Cargo.toml",
    ] {
        let answer = get(&app, target, &[]).await;
        assert_eq!(answer.status, 404, "{target}");
        assert_eq!(
            answer.body, b"not found: the board is at /, the WebSocket at /ws\n",
            "{target}"
        );
        assert_eq!(
            answer.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(answer.header("cache-control"), Some("no-store"));
    }
    for (method, target) in [("POST", "/"), ("PUT", "/index.html"), ("DELETE", "/nope")] {
        let answer = request(&app, method, target, &[("Content-Length", "0")]).await;
        assert_eq!(answer.status, 405, "{method} {target}");
        assert_eq!(answer.header("allow"), Some("GET, HEAD"));
        assert_eq!(answer.body, b"method not allowed\n");
    }
    // The server's own paths are not files.
    assert_eq!(get(&app, "/healthz", &[]).await.body, b"ok\n");
}
