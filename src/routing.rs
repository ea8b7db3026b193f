//! Host and path routing, compiled once per config.
//!
//! A [`RouteTable`] belongs to one listener. Matching picks the most specific route: an exact host over
//! a wildcard (`*.example.com`, longest suffix first) over any host; within the host, the longest path
//! prefix on a segment boundary (`/api` matches `/api` and `/api/x`, never `/apix`). When a more
//! specific host has no matching path, the less specific hosts are tried, so an exact-host route on
//! `/api` does not hide an any-host route on `/`.

use std::collections::HashMap;

use crate::config::HostMatch;

/// Routes of one listener, grouped by host.
#[derive(Clone, Debug)]
pub struct RouteTable<T> {
    exact: HashMap<Box<str>, PathTable<T>>,
    /// `(".example.com", paths)`, longest suffix first.
    wildcard: Vec<(Box<str>, PathTable<T>)>,
    any: PathTable<T>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            any: PathTable::default(),
        }
    }
}

#[derive(Clone, Debug)]
struct PathTable<T> {
    /// `(prefix, target)`, longest prefix first.
    entries: Vec<(Box<str>, T)>,
}

impl<T> Default for PathTable<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<T> PathTable<T> {
    fn insert(&mut self, prefix: &str, target: T) {
        // Stable position: among equal lengths the first inserted wins, as the config lists them.
        let at = self
            .entries
            .partition_point(|(p, _)| p.len() >= prefix.len());
        self.entries.insert(at, (prefix.into(), target));
    }

    fn find(&self, path: &str) -> Option<(&str, &T)> {
        self.entries
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(p, t)| (&**p, t))
    }
}

/// Whether `prefix` matches `path` on a segment boundary.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
    }
}

impl<T> RouteTable<T> {
    /// Adds a route.
    pub fn insert(&mut self, host: &HostMatch, prefix: &str, target: T) {
        match host {
            HostMatch::Any => self.any.insert(prefix, target),
            HostMatch::Exact(name) => self
                .exact
                .entry(name.as_str().into())
                .or_default()
                .insert(prefix, target),
            HostMatch::Wildcard(suffix) => {
                match self.wildcard.iter_mut().find(|(s, _)| **s == **suffix) {
                    Some((_, table)) => table.insert(prefix, target),
                    None => {
                        let mut table = PathTable::default();
                        table.insert(prefix, target);
                        let at = self
                            .wildcard
                            .partition_point(|(s, _)| s.len() >= suffix.len());
                        self.wildcard.insert(at, (suffix.as_str().into(), table));
                    }
                }
            }
        }
    }

    /// The most specific route for `host` (already normalized by [`normalize_host`]) and `path`, with
    /// the prefix that matched.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<(&str, &T)> {
        if let Some(host) = host {
            if let Some(found) = self.exact.get(host).and_then(|t| t.find(path)) {
                return Some(found);
            }
            for (suffix, table) in &self.wildcard {
                if host.len() > suffix.len() && host.ends_with(&**suffix) {
                    if let Some(found) = table.find(path) {
                        return Some(found);
                    }
                }
            }
        }
        self.any.find(path)
    }

    /// Whether the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.entries.is_empty()
    }
}

/// The host a request names, without port or trailing dot, lowercase. Borrows when it can.
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let host = if raw.starts_with('[') {
        // "[::1]:8080" -> "[::1]"
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// Whether a request path has a `.` or `..` segment, written plainly or percent-encoded. Such a path
/// could match one prefix here and mean another path upstream, so it is refused.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| {
        let bytes = seg.as_bytes();
        if bytes.is_empty() || bytes.len() > 6 {
            return false;
        }
        let mut dots = 0;
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'.' {
                i += 1;
            } else if bytes[i] == b'%'
                && bytes.get(i + 1) == Some(&b'2')
                && matches!(bytes.get(i + 2), Some(b'e' | b'E'))
            {
                i += 3;
            } else {
                return false;
            }
            dots += 1;
        }
        dots <= 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable<&'static str> {
        let mut t = RouteTable::default();
        t.insert(&HostMatch::Any, "/", "any-root");
        t.insert(&HostMatch::Any, "/api", "any-api");
        t.insert(&HostMatch::Exact("example.com".into()), "/api", "exact-api");
        t.insert(
            &HostMatch::Wildcard(".example.com".into()),
            "/",
            "wild-root",
        );
        t.insert(
            &HostMatch::Wildcard(".eu.example.com".into()),
            "/",
            "eu-root",
        );
        t
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        let t = table();
        assert_eq!(
            t.find(Some("example.com"), "/api/x").unwrap().1,
            &"exact-api"
        );
        assert_eq!(
            t.find(Some("a.example.com"), "/api/x").unwrap().1,
            &"wild-root"
        );
        assert_eq!(t.find(Some("other.org"), "/api/x").unwrap().1, &"any-api");
    }

    #[test]
    fn longest_wildcard_suffix_wins() {
        let t = table();
        assert_eq!(t.find(Some("a.eu.example.com"), "/").unwrap().1, &"eu-root");
    }

    #[test]
    fn wildcard_does_not_match_the_bare_domain() {
        let t = table();
        assert_eq!(t.find(Some("example.com"), "/x").unwrap().1, &"any-root");
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/api/", "/api/x"));
        assert!(!prefix_matches("/api/", "/api"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn hosts_lose_port_case_and_trailing_dot() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("localhost"), "localhost");
    }

    #[test]
    fn dot_segments_are_found_plain_and_encoded() {
        assert!(has_dot_segment("/a/../b"));
        assert!(has_dot_segment("/a/./b"));
        assert!(has_dot_segment("/a/%2e%2E/b"));
        assert!(has_dot_segment("/a/.%2e"));
        assert!(has_dot_segment("/.."));
        assert!(!has_dot_segment("/a/.well-known/x"));
        assert!(!has_dot_segment("/a/.../b"));
        assert!(!has_dot_segment("/file.txt"));
    }
}
