//! Which web pages may open `/ws`.
//!
//! A browser lets any page open a WebSocket to any host, and tells the server which page it
//! is with the `Origin` header, which scripts cannot forge. Without a check, a page on another
//! site could drive a visitor's session (cross-site WebSocket hijacking). An upgrade is
//! allowed when it has no `Origin` (a program, not a browser), when its origin is the
//! server's own (its host and port are the request's `Host`), or when the origin is in
//! `server.allowed_origins`; any other is refused with 403 before the upgrade.

use hyper::header::HeaderValue;

/// The origins allowed besides the server's own.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origins {
    allowed: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `scheme://host[:port]`, lower case.
    Exact(String),
    /// `scheme://host`, any port (written `scheme://host:*`).
    AnyPort(String),
}

impl Origins {
    /// Parses `server.allowed_origins`; an entry that is not an origin is an error naming it.
    pub(crate) fn new(entries: &[String]) -> Result<Origins, String> {
        let allowed = entries
            .iter()
            .map(|entry| {
                Pattern::parse(entry).ok_or_else(|| {
                    format!(
                        "server.allowed_origins: {entry:?} is not an origin (scheme://host[:port], \
                         or scheme://host:* for any port; no path)"
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Origins { allowed })
    }

    /// Whether an upgrade with this `Origin` (if any) to this `Host` may proceed.
    pub(crate) fn allows(&self, origin: Option<&HeaderValue>, host: Option<&HeaderValue>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
        let Some((scheme, authority)) = split(&origin) else {
            // "null" (a sandboxed page, a file) and anything unreadable.
            return false;
        };
        let same = host
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| h.eq_ignore_ascii_case(authority));
        same || self.allowed.iter().any(|p| p.matches(scheme, authority))
    }
}

impl Pattern {
    fn parse(entry: &str) -> Option<Pattern> {
        let entry = entry.trim().to_ascii_lowercase();
        let (scheme, authority) = split(&entry)?;
        match authority.strip_suffix(":*") {
            Some(host) if !host.is_empty() => Some(Pattern::AnyPort(format!("{scheme}://{host}"))),
            Some(_) => None,
            None => Some(Pattern::Exact(format!("{scheme}://{authority}"))),
        }
    }

    fn matches(&self, scheme: &str, authority: &str) -> bool {
        match self {
            Pattern::Exact(exact) => {
                exact
                    .strip_prefix(scheme)
                    .and_then(|r| r.strip_prefix("://"))
                    == Some(authority)
            }
            Pattern::AnyPort(prefix) => {
                let Some(host) = prefix
                    .strip_prefix(scheme)
                    .and_then(|r| r.strip_prefix("://"))
                else {
                    return false;
                };
                authority == host
                    || authority.strip_prefix(host).is_some_and(|rest| {
                        rest.strip_prefix(':').is_some_and(|port| {
                            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
                        })
                    })
            }
        }
    }
}

/// `scheme://authority` split in two, for http and https origins with a host and no path.
fn split(origin: &str) -> Option<(&str, &str)> {
    let (scheme, authority) = origin.split_once("://")?;
    let valid = matches!(scheme, "http" | "https")
        && !authority.is_empty()
        && !authority.starts_with(':')
        && !authority.contains(['/', '?', '#', '@', ' ']);
    valid.then_some((scheme, authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(allowed: &[&str], origin: Option<&str>, host: &str) -> bool {
        let origins =
            Origins::new(&allowed.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let origin = origin.map(|o| HeaderValue::from_str(o).unwrap());
        origins.allows(origin.as_ref(), Some(&HeaderValue::from_str(host).unwrap()))
    }

    #[test]
    fn programs_and_the_servers_own_pages_are_allowed() {
        assert!(allows(&[], None, "board.example.com"));
        assert!(allows(
            &[],
            Some("https://board.example.com"),
            "board.example.com"
        ));
        assert!(allows(&[], Some("http://127.0.0.1:7400"), "127.0.0.1:7400"));
        assert!(allows(
            &[],
            Some("HTTP://Board.Example.COM"),
            "board.example.com"
        ));
    }

    #[test]
    fn other_origins_only_when_listed() {
        assert!(!allows(
            &[],
            Some("https://evil.example"),
            "board.example.com"
        ));
        assert!(!allows(
            &[],
            Some("http://127.0.0.1:7401"),
            "127.0.0.1:7400"
        ));
        assert!(!allows(&[], Some("null"), "board.example.com"));
        let listed = ["https://app.example.com", "http://localhost:*"];
        assert!(allows(
            &listed,
            Some("https://app.example.com"),
            "api.example.com"
        ));
        assert!(!allows(
            &listed,
            Some("http://app.example.com"),
            "api.example.com"
        ));
        assert!(!allows(
            &listed,
            Some("https://app.example.com:8443"),
            "api.example.com"
        ));
        assert!(allows(
            &listed,
            Some("http://localhost:5173"),
            "127.0.0.1:7400"
        ));
        assert!(allows(&listed, Some("http://localhost"), "127.0.0.1:7400"));
        assert!(!allows(
            &listed,
            Some("http://localhost.evil.example"),
            "127.0.0.1:7400"
        ));
        assert!(!allows(
            &listed,
            Some("http://localhost:5173x"),
            "127.0.0.1:7400"
        ));
        assert!(!allows(
            &listed,
            Some("https://localhost:5173"),
            "127.0.0.1:7400"
        ));
    }

    #[test]
    fn entries_that_are_not_origins_are_refused() {
        for entry in [
            "example.com",
            "https://",
            "ftp://example.com",
            "https://a.example/path",
            "http://:*",
            "*",
        ] {
            let error = Origins::new(&[entry.to_string()]).unwrap_err();
            assert!(
                error.starts_with(&format!(
                    "server.allowed_origins: {entry:?} is not an origin"
                )),
                "{error}"
            );
        }
    }
}
