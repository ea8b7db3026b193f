//! Formatting access log lines: `common`, `combined` and `json`.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// The line format of an access log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// NCSA Common Log Format: `host - - [time] "request" status bytes`.
    Common,
    /// Common plus `"referer" "user-agent"` (nginx's and Apache's `combined`).
    #[default]
    Combined,
    /// One JSON object per line, with every field parapet knows.
    Json,
}

impl Format {
    /// Parses `common`, `combined` or `json`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "common" => Some(Format::Common),
            "combined" => Some(Format::Combined),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

struct Utc {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    millis: u32,
}

fn utc(t: SystemTime) -> Utc {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    Utc {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        millis: d.subsec_millis(),
    }
}

/// `10/Oct/2000:13:55:36 +0000`, the Common Log Format's time, in UTC.
pub fn clf_time(out: &mut String, t: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let u = utc(t);
    let _ = write!(
        out,
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        u.day,
        MONTHS[(u.month - 1) as usize],
        u.year,
        u.hour,
        u.minute,
        u.second
    );
}

/// `2000-10-10T13:55:36.123Z`, RFC 3339 in UTC.
pub fn rfc3339(out: &mut String, t: SystemTime) {
    let u = utc(t);
    let _ = write!(
        out,
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.millis
    );
}

/// Appends `s` as a JSON string, quotes included.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `s` for a quoted field of the Common Log Format: `"` and `\` escaped, controls as `\xHH`.
pub fn clf_str(out: &mut String, s: &[u8]) {
    for &b in s {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02X}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_format_in_utc() {
        // 2000-10-10T13:55:36.5Z
        let t = UNIX_EPOCH + Duration::from_millis(971_186_136_500);
        let mut s = String::new();
        clf_time(&mut s, t);
        assert_eq!(s, "10/Oct/2000:13:55:36 +0000");
        s.clear();
        rfc3339(&mut s, t);
        assert_eq!(s, "2000-10-10T13:55:36.500Z");
        s.clear();
        rfc3339(&mut s, UNIX_EPOCH + Duration::from_secs(951_782_400)); // leap day
        assert_eq!(s, "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn json_strings_escape_quotes_and_controls() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn clf_strings_escape_quotes_and_bytes() {
        let mut s = String::new();
        clf_str(&mut s, b"Mozilla \"x\" \xff");
        assert_eq!(s, r#"Mozilla \"x\" \xFF"#);
    }
}
