//! Content negotiation: the best encoding a client accepts (RFC 9110 §12.5.3, Accept-Encoding).

use http::HeaderMap;

/// A content coding parapet can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `gzip`, always available.
    Gzip,
    /// `br` (Brotli).
    Br,
    /// `zstd` (Zstandard).
    Zstd,
}

impl Encoding {
    /// The token in `Accept-Encoding` and `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// Parses `gzip`, `br` or `zstd`.
    pub fn parse(s: &str) -> Option<Encoding> {
        match s {
            "gzip" => Some(Encoding::Gzip),
            "br" => Some(Encoding::Br),
            "zstd" => Some(Encoding::Zstd),
            _ => None,
        }
    }
}

/// A quality value in thousandths: `q=0.5` is 500.
fn parse_q(s: &str) -> Option<u16> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    let mut thousandths = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    let q = whole + thousandths;
    (q <= 1000).then_some(q)
}

/// The encoding to use for a client's `Accept-Encoding`, among `offered` (in the server's order of
/// preference): the highest q-value wins, ties go to the server's preference, `q=0` refuses, and `*`
/// stands for every coding not named. No `Accept-Encoding` at all means no encoding.
pub fn choose(headers: &HeaderMap, offered: &[Encoding]) -> Option<Encoding> {
    let mut best: Option<(u16, usize, Encoding)> = None;
    let mut named = [None::<u16>; 3];
    let mut star: Option<u16> = None;
    for value in headers.get_all(http::header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let mut q = 1000;
            for param in parts {
                if let Some((k, v)) = param.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = parse_q(v).unwrap_or(0);
                    }
                }
            }
            if coding == "*" {
                star = Some(q);
            } else if let Some(enc) = offered
                .iter()
                .copied()
                .find(|e| coding.eq_ignore_ascii_case(e.as_str()))
            {
                named[enc as usize] = Some(q);
            }
        }
    }
    for (rank, &enc) in offered.iter().enumerate() {
        let Some(q) = named[enc as usize].or(star) else {
            continue;
        };
        if q == 0 {
            continue;
        }
        // Higher q first; among equal q, the earlier (preferred) offer.
        if best.is_none_or(|(bq, brank, _)| q > bq || (q == bq && rank < brank)) {
            best = Some((q, rank, enc));
        }
    }
    best.map(|(_, _, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("accept-encoding", HeaderValue::from_static(v));
        h
    }

    const ALL: [Encoding; 3] = [Encoding::Zstd, Encoding::Br, Encoding::Gzip];

    #[test]
    fn the_highest_q_value_wins() {
        assert_eq!(
            choose(&accept("gzip;q=1.0, br;q=0.5"), &ALL),
            Some(Encoding::Gzip)
        );
        assert_eq!(
            choose(&accept("gzip;q=0.2, br;q=0.9"), &ALL),
            Some(Encoding::Br)
        );
    }

    #[test]
    fn ties_go_to_the_servers_preference() {
        assert_eq!(
            choose(&accept("gzip, br, zstd"), &ALL),
            Some(Encoding::Zstd)
        );
        assert_eq!(
            choose(&accept("gzip, br"), &[Encoding::Gzip]),
            Some(Encoding::Gzip)
        );
    }

    #[test]
    fn q_zero_refuses_and_star_covers_the_rest() {
        assert_eq!(choose(&accept("gzip;q=0"), &ALL), None);
        assert_eq!(
            choose(&accept("*;q=0.5, zstd;q=0"), &ALL),
            Some(Encoding::Br)
        );
        assert_eq!(
            choose(&accept("*"), &[Encoding::Gzip]),
            Some(Encoding::Gzip)
        );
        assert_eq!(choose(&accept("identity"), &ALL), None);
        assert_eq!(choose(&HeaderMap::new(), &ALL), None);
    }

    #[test]
    fn malformed_q_values_count_as_zero() {
        assert_eq!(choose(&accept("gzip;q=2"), &ALL), None);
        assert_eq!(choose(&accept("gzip;q=0.0001"), &ALL), None);
        assert_eq!(choose(&accept("gzip;q=0.001"), &ALL), Some(Encoding::Gzip));
    }
}
