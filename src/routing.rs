//! Host and path routing, compiled once per config.
//!
//! A [`RouteTable`] belongs to one listener. Matching picks the most specific route: an exact host over
//! a wildcard (`*.example.com`, longest suffix first) over any host; within the host, the longest path
//! prefix on a segment boundary (`/api` matches `/api` and `/api/x`, never `/apix`). When a more
//! specific host has no matching path, the less specific hosts are tried, so an exact-host route on
//! `/api` does not hide an any-host route on `/`.

use crate::config::HostMatch;
use crate::fnv::NameMap;

/// Routes of one listener, grouped by host.
#[derive(Clone, Debug)]
pub struct RouteTable<T> {
    exact: NameMap<PathTable<T>>,
    /// `(".example.com", paths)`, longest suffix first.
    wildcard: Vec<(Box<str>, PathTable<T>)>,
    any: PathTable<T>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self {
            exact: NameMap::default(),
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
        // A `;` starts a segment's parameters (RFC 3986 §3.3), which servers such as Tomcat strip:
        // `/admin;x/secret` is `/admin/secret` to them, so it is under `/admin` here too.
        Some(rest) => {
            rest.is_empty()
                || prefix.ends_with('/')
                || rest.starts_with('/')
                || rest.starts_with(';')
        }
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
            // Not hashed for a table without hosts (a listener that routes by path alone).
            let exact = if self.exact.is_empty() {
                None
            } else {
                self.exact.get(host)
            };
            if let Some(found) = exact.and_then(|t| t.find(path)) {
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
        // By bytes (`:` is ASCII, so the split is on a character boundary): `rsplit_once`'s
        // character searcher costs some 160 instructions a request.
        match raw.bytes().rposition(|b| b == b':') {
            Some(colon) if raw.as_bytes()[colon + 1..].iter().all(u8::is_ascii_digit) => {
                &raw[..colon]
            }
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

/// Why a request path is refused (400) by [`normalize_path`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// A `.` or `..` segment, written plainly or percent-encoded.
    DotSegment,
    /// `%2F`: an encoded `/`.
    EncodedSlash,
    /// `\` or `%5C`.
    Backslash,
    /// `%00`.
    Nul,
    /// A `%` not followed by two hex digits (RFC 3986 §2.1).
    BadPercent,
}

impl PathError {
    /// What the 400's detail says.
    pub fn detail(self) -> &'static str {
        match self {
            PathError::DotSegment => "dot segment in path",
            PathError::EncodedSlash => "encoded slash in path",
            PathError::Backslash => "backslash in path",
            PathError::Nul => "encoded NUL in path",
            PathError::BadPercent => "invalid percent-encoding in path",
        }
    }
}

/// The request path every layer sees, routing and forwarding included: normalised once, where the
/// request enters, so that a route prefix means one thing to parapet and to the app behind it.
///
/// - Percent-encoded unreserved characters (`ALPHA DIGIT - . _ ~`) are decoded (RFC 3986 §2.3: "URIs
///   that differ in the replacement of an unreserved character with its corresponding
///   percent-encoded US-ASCII octet are equivalent"), so `/%61dmin` is `/admin`; other encodings
///   are kept, their hex digits uppercased (§6.2.2.1).
/// - Empty segments are merged (`//admin` is `/admin`), as nginx's `merge_slashes` does: servers
///   behind commonly treat them so, and a prefix must not be dodged by them.
/// - A `.` or `..` segment, plain or encoded, is refused rather than resolved (§5.2.4 and §6.2.2.3
///   describe the resolution; a client has no business sending them, and resolving them would make
///   `/public/../admin` a second spelling of a route).
/// - An encoded `/` (`%2F`), a `\` (raw or `%5C`) or an encoded NUL is refused: each is a separator
///   or a terminator to some server behind, so the path would be split differently there.
/// - A `%` not followed by two hex digits is refused (§2.1).
///
/// One scan of the path; it allocates only when something must change. The query is not part of
/// `path` and is never touched.
pub fn normalize_path(path: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    if is_plain_path(path.as_bytes()) {
        return Ok(std::borrow::Cow::Borrowed(path));
    }
    normalize_scan(path)
}

/// [`normalize_path`]'s full scan, byte by byte.
fn normalize_scan(path: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    // The path as rewritten, from the first byte that changes; until then the input's prefix is it.
    let mut out: Option<Vec<u8>> = None;
    // The current segment, decoded: its length and how many of its characters are dots.
    let (mut seg_len, mut seg_dots) = (0usize, 0usize);
    // Past a `;` in the current segment: its parameters, which servers such as Tomcat strip, so
    // `..;x` is `..` to them and counts as a dot segment here.
    let mut in_params = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' => {
                if seg_len != 0 && seg_len == seg_dots && seg_len <= 2 {
                    return Err(PathError::DotSegment);
                }
                if i > 0 && bytes[i - 1] == b'/' {
                    // An empty segment: dropped.
                    out.get_or_insert_with(|| bytes[..i].to_vec());
                } else if let Some(out) = &mut out {
                    out.push(b'/');
                }
                (seg_len, seg_dots, in_params) = (0, 0, false);
                i += 1;
                continue;
            }
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).and_then(|h| hex(*h)),
                    bytes.get(i + 2).and_then(|l| hex(*l)),
                ) else {
                    return Err(PathError::BadPercent);
                };
                let decoded = hi << 4 | lo;
                match decoded {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0 => return Err(PathError::Nul),
                    _ if is_unreserved(decoded) => {
                        out.get_or_insert_with(|| bytes[..i].to_vec()).push(decoded);
                    }
                    _ if bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase) => {
                        out.get_or_insert_with(|| bytes[..i].to_vec())
                            .extend_from_slice(&[
                                b'%',
                                bytes[i + 1].to_ascii_uppercase(),
                                bytes[i + 2].to_ascii_uppercase(),
                            ]);
                    }
                    _ => {
                        if let Some(out) = &mut out {
                            out.extend_from_slice(&bytes[i..i + 3]);
                        }
                    }
                }
                if !in_params {
                    seg_len += 1;
                    seg_dots += usize::from(decoded == b'.');
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            b';' => in_params = true,
            _ => {}
        }
        if let Some(out) = &mut out {
            out.push(b);
        }
        if !in_params {
            seg_len += 1;
            seg_dots += usize::from(b == b'.');
        }
        i += 1;
    }
    if seg_len != 0 && seg_len == seg_dots && seg_len <= 2 {
        return Err(PathError::DotSegment);
    }
    Ok(match out {
        None => std::borrow::Cow::Borrowed(path),
        // Only ASCII was decoded or removed, so the bytes are as valid UTF-8 as `path` was.
        Some(out) => {
            std::borrow::Cow::Owned(String::from_utf8(out).map_err(|_| PathError::BadPercent)?)
        }
    })
}

/// The bytes [`is_plain_path`] looks at: `%`, `\\`, NUL, `;`, `/` (the rest pass by a table lookup).
const PATH_SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    table[b'%' as usize] = true;
    table[b'\\' as usize] = true;
    table[0] = true;
    table[b';' as usize] = true;
    table[b'/' as usize] = true;
    table
};

/// Whether [`normalize_path`] would take `bytes` as they are, judged by a quick scan for the usual
/// path: no `%`, `\\`, NUL or `;`, no empty segment, no segment that is `.` or `..`. `false` sends
/// the path to the full scan, which finds what to change or refuse (or that nothing needs to).
fn is_plain_path(bytes: &[u8]) -> bool {
    let dots = |segment: &[u8]| matches!(segment, b"." | b"..");
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !PATH_SPECIAL[usize::from(b)] {
            continue;
        }
        if b != b'/' || (i > 0 && bytes[i - 1] == b'/') || dots(&bytes[start..i]) {
            return false;
        }
        start = i + 1;
    }
    !dots(&bytes[start..])
}

/// The value of a hex digit.
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3: `unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"`.
const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// [`valid_host`], remembering on each thread the last value it found valid: an edge serves a few
/// site names, and each request of a keep-alive connection repeats its `Host`, so a request's
/// `Host` is most often the one just checked, and a comparison of its bytes (a few instructions)
/// replaces the scan (a couple of hundred). Values longer than [`HOST_MEMO`] bytes are scanned
/// every time.
pub fn valid_host_memo(value: &[u8]) -> bool {
    if value.len() > HOST_MEMO {
        return valid_host(value);
    }
    LAST_VALID_HOST
        .try_with(|memo| {
            let mut memo = memo.borrow_mut();
            let (len, bytes) = &mut *memo;
            if *len == value.len() && bytes[..value.len()] == *value {
                return true;
            }
            let ok = valid_host(value);
            if ok {
                bytes[..value.len()].copy_from_slice(value);
                *len = value.len();
            }
            ok
        })
        .unwrap_or_else(|_| valid_host(value))
}

/// The longest `Host` value [`valid_host_memo`] remembers.
pub const HOST_MEMO: usize = 64;

thread_local! {
    /// The last value [`valid_host_memo`] found valid on this thread: its length (`usize::MAX`
    /// before the first) and its bytes.
    static LAST_VALID_HOST: std::cell::RefCell<(usize, [u8; HOST_MEMO])> =
        const { std::cell::RefCell::new((usize::MAX, [0; HOST_MEMO])) };
}

/// Whether a `Host` value is valid (RFC 9112 §3.2, RFC 9110 §7.2): `uri-host [ ":" port ]`, where
/// `uri-host` is an IP literal in brackets, or a non-empty reg-name (RFC 3986 §3.2.2: unreserved,
/// sub-delims, percent-encodings), and `port` digits. No user info, no path, no empty host (RFC
/// 9110 §4.2.1: an `http` URI has a host), and, as nginx, no empty label (`a..b`).
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..end];
        let ok = std::str::from_utf8(literal)
            .ok()
            .is_some_and(|l| l.parse::<std::net::Ipv6Addr>().is_ok());
        if !ok {
            return false;
        }
        match &value[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&value[..0], port),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon + 1..]),
            None => (value, &value[..0]),
        }
    };
    if !port.iter().all(u8::is_ascii_digit) {
        return false;
    }
    if value.first() == Some(&b'[') {
        return true;
    }
    if host.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if REG_NAME[usize::from(b)] {
            // No empty label (`a..b`).
            if b == b'.' && host.get(i + 1) == Some(&b'.') {
                return false;
            }
            i += 1;
            continue;
        }
        if b != b'%'
            || host.get(i + 1).and_then(|h| hex(*h)).is_none()
            || host.get(i + 2).and_then(|l| hex(*l)).is_none()
        {
            return false;
        }
        i += 3;
    }
    true
}

/// The bytes a reg-name takes as they are (RFC 3986 §3.2.2): unreserved and sub-delims
/// (`! $ & ' ( ) * + , ; =`); `%` begins a percent-encoding. One lookup per byte: every request's
/// `Host` is checked.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = is_unreserved(c)
            || matches!(
                c,
                b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
            );
        b += 1;
    }
    table
};

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
        assert_eq!(normalize_host("example.com:"), "example.com");
        assert_eq!(normalize_host("example.com:8x"), "example.com:8x");
        assert_eq!(normalize_host("a:b:80"), "a:b");
    }

    #[test]
    fn dot_segments_are_refused_plain_and_encoded() {
        for path in [
            "/a/../b",
            "/a/./b",
            "/a/%2e%2E/b",
            "/a/.%2e",
            "/..",
            "/.",
            "/a/..",
            "/a/%2E/b",
            "/a//../b",
        ] {
            assert_eq!(normalize_path(path), Err(PathError::DotSegment), "{path}");
        }
        for path in ["/a/.well-known/x", "/a/.../b", "/file.txt", "/a/..b", "/.x"] {
            assert!(normalize_path(path).is_ok(), "{path}");
        }
    }

    #[test]
    fn a_path_the_quick_scan_passes_is_one_the_full_scan_keeps_as_it_is() {
        // Every path of up to four pieces from these: the quick scan may send a path on to the
        // full scan, but one it passes must be one the full scan keeps unchanged.
        let pieces = [
            "/", "a", ".", "..", "...", "%2e", "%41", ";x", "\\", "//", "b.c", "é",
        ];
        let mut paths = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| pieces.iter().map(move |piece| format!("{p}{piece}")))
                .collect();
            paths.extend(longer);
        }
        let mut plain = 0;
        for path in &paths {
            let full = normalize_scan(path);
            if is_plain_path(path.as_bytes()) {
                plain += 1;
                assert!(
                    matches!(full, Ok(std::borrow::Cow::Borrowed(p)) if p == path),
                    "{path:?}: {full:?}"
                );
            }
            assert_eq!(normalize_path(path), full, "{path:?}");
        }
        assert!(
            plain > 1000,
            "{plain} of {} passed the quick scan",
            paths.len()
        );
    }

    #[test]
    fn clean_paths_are_borrowed_unchanged() {
        for path in [
            "/",
            "/api/users",
            "/a/b/",
            "/caf%C3%A9",
            "/a%20b",
            "/~user/x-y_z.txt",
        ] {
            let normalized = normalize_path(path).unwrap();
            assert!(
                matches!(normalized, std::borrow::Cow::Borrowed(_)),
                "{path}"
            );
            assert_eq!(normalized, path);
        }
    }

    #[test]
    fn encoded_unreserved_characters_are_decoded() {
        assert_eq!(normalize_path("/%61dmin").unwrap(), "/admin");
        assert_eq!(
            normalize_path("/%41%5a%30%2D%2e%5F%7E").unwrap(),
            "/AZ0-._~"
        );
        assert_eq!(normalize_path("/a%2Db/%7euser").unwrap(), "/a-b/~user");
    }

    #[test]
    fn other_encodings_are_kept_with_uppercase_hex() {
        assert_eq!(normalize_path("/a%20b").unwrap(), "/a%20b");
        assert_eq!(normalize_path("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(normalize_path("/%3f%23").unwrap(), "/%3F%23");
    }

    #[test]
    fn empty_segments_are_merged() {
        assert_eq!(normalize_path("//admin").unwrap(), "/admin");
        assert_eq!(normalize_path("/a///b//").unwrap(), "/a/b/");
        assert_eq!(normalize_path("//%61dmin//x").unwrap(), "/admin/x");
    }

    #[test]
    fn separators_and_nul_in_disguise_are_refused() {
        assert_eq!(normalize_path("/a%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(normalize_path("/a%2fb"), Err(PathError::EncodedSlash));
        assert_eq!(normalize_path("/a%5Cb"), Err(PathError::Backslash));
        assert_eq!(normalize_path("/a%5cb"), Err(PathError::Backslash));
        assert_eq!(normalize_path("/a\\b"), Err(PathError::Backslash));
        assert_eq!(normalize_path("/a%00b"), Err(PathError::Nul));
    }

    #[test]
    fn broken_percent_encodings_are_refused() {
        for path in ["/a%", "/a%4", "/a%zz", "/a%4g", "/%%41"] {
            assert_eq!(normalize_path(path), Err(PathError::BadPercent), "{path}");
        }
    }

    #[test]
    fn paths_stay_case_sensitive() {
        assert_eq!(normalize_path("/ADMIN").unwrap(), "/ADMIN");
    }

    #[test]
    fn hosts_are_validated_as_rfc_9110_says() {
        for host in [
            "example.com",
            "example.com:8080",
            "example.com:",
            "EXAMPLE.com.",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "xn--bcher-kva.example",
            "a_b.example",
            "%65xample.com",
        ] {
            assert!(valid_host(host.as_bytes()), "{host}");
        }
        for host in [
            "",
            ":80",
            "user@example.com",
            "example.com/path",
            "example.com:80a",
            "a:b:80",
            "[::1",
            "[not-v6]",
            "[::1]x",
            "a..b",
            "exa mple.com",
            "example.com\\x",
            "%zz.com",
        ] {
            assert!(!valid_host(host.as_bytes()), "{host}");
        }
    }

    #[test]
    fn the_host_memo_answers_as_the_scan_does_in_any_order() {
        // A fresh thread: a memo of its own, empty.
        std::thread::spawn(the_host_memo_in_order).join().unwrap();
    }

    fn the_host_memo_in_order() {
        let long_ok = format!("{}.example", "a".repeat(HOST_MEMO));
        let long_bad = format!("{}..example", "a".repeat(HOST_MEMO));
        // Each valid value right before invalid ones of its length and after them, so that a
        // memo that matched on length, or kept an invalid value, would answer wrongly.
        let values = [
            "example.com",
            "exa mple.com",
            "example.com",
            "example.co:",
            "a..bcdefghi",
            "127.0.0.1:80",
            "127.0.0.1:8a",
            "127.0.0.1:80",
            "[::1]:8080",
            "[::1]x8080",
            "",
            long_ok.as_str(),
            long_bad.as_str(),
            long_ok.as_str(),
        ];
        for _ in 0..2 {
            for value in values {
                assert_eq!(
                    valid_host_memo(value.as_bytes()),
                    valid_host(value.as_bytes()),
                    "{value}"
                );
            }
        }
    }
}
