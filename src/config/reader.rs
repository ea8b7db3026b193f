//! Reading a spanned TOML document while collecting every error at once.
//!
//! serde stops at the first error; an operator fixing a config wants all of them. So the file is parsed
//! into toml's spanned document ([`toml::de::DeTable`]) and walked by hand with [`Table`] and [`Value`]:
//! each typed getter records a [`ConfigError`] (file, line, column, key, message) and carries on, and
//! [`Table::finish`] reports every key nobody asked for.

use std::cell::RefCell;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::model::Location;

/// One error in a config file, located and named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The dotted key at fault, such as `apps.api.upstream` or `routes[2].path`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )
    }
}

/// Every error found in one config file, in the order they appear in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors, first in the file first.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The text of a config file and where its lines start, to turn byte offsets into lines and columns.
pub(crate) struct Source<'s> {
    path: &'s Path,
    text: &'s str,
    line_starts: Vec<usize>,
}

impl<'s> Source<'s> {
    pub(crate) fn new(path: &'s Path, text: &'s str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            path,
            text,
            line_starts,
        }
    }

    fn locate(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, column + 1)
    }
}

/// Collects the errors of one file.
pub struct Diagnostics<'s> {
    source: Source<'s>,
    errors: RefCell<Vec<ConfigError>>,
}

impl<'s> Diagnostics<'s> {
    pub(crate) fn new(source: Source<'s>) -> Self {
        Self {
            source,
            errors: RefCell::new(Vec::new()),
        }
    }

    /// Records an error at `span` (byte offsets into the file) for `key`.
    pub fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let (line, column) = self.source.locate(span.start);
        self.errors.borrow_mut().push(ConfigError {
            file: self.source.path.to_path_buf(),
            line,
            column,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// The place `span` (byte offsets into the file) stands for `key`.
    pub fn location(&self, span: Range<usize>, key: &str) -> Location {
        let (line, column) = self.source.locate(span.start);
        Location {
            file: self.source.path.to_path_buf(),
            line,
            column,
            key: key.to_owned(),
        }
    }

    /// True once any error has been recorded.
    pub fn has_errors(&self) -> bool {
        !self.errors.borrow().is_empty()
    }

    pub(crate) fn into_errors(self) -> ConfigErrors {
        let mut errors = self.errors.into_inner();
        errors.sort_by_key(|e| (e.line, e.column));
        errors.dedup();
        ConfigErrors(errors)
    }
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// One TOML table being read: typed getters record errors, [`Table::finish`] reports unknown keys.
pub struct Table<'a> {
    diag: &'a Diagnostics<'a>,
    path: String,
    span: Range<usize>,
    map: &'a DeTable<'a>,
    seen: Vec<&'a str>,
}

impl<'a> Table<'a> {
    pub(crate) fn new(
        diag: &'a Diagnostics<'a>,
        path: String,
        span: Range<usize>,
        map: &'a DeTable<'a>,
    ) -> Self {
        Self {
            diag,
            path,
            span,
            map,
            seen: Vec::new(),
        }
    }

    /// The dotted key of this table (`apps.api`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Records an error on the table as a whole.
    pub fn error(&self, message: impl Into<String>) {
        self.diag.error(self.span.clone(), &self.path, message);
    }

    /// Where this table stands in the file.
    pub fn location(&self) -> Location {
        self.diag.location(self.span.clone(), &self.path)
    }

    /// Deserializes every key of this table but those already read into `T` with serde, marking them
    /// all as known: how a kind registered with typed settings reads its table. serde's errors are
    /// recorded at the place it names (or on the table), like every other error.
    pub fn deserialize_rest<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        let mut rest = DeTable::new();
        for (k, v) in self.map.iter() {
            let key: &'a str = k.get_ref().as_ref();
            if !self.seen.contains(&key) {
                self.seen.push(key);
                rest.insert(k.clone(), v.clone());
            }
        }
        // The key at fault is the entry whose key or value holds the place serde names.
        let key_at = |span: &Range<usize>| {
            rest.iter()
                .find(|(k, v)| {
                    let whole = k.span().start..v.span().end;
                    whole.start <= span.start && span.start < whole.end.max(whole.start + 1)
                })
                .map(|(k, _)| join(&self.path, k.get_ref()))
        };
        let value = toml::Spanned::new(self.span.clone(), DeValue::Table(rest.clone()));
        match T::deserialize(toml::de::ValueDeserializer::from(value)) {
            Ok(settings) => Some(settings),
            Err(err) => {
                let span = err.span().unwrap_or_else(|| self.span.clone());
                let key = key_at(&span).unwrap_or_else(|| self.path.clone());
                self.diag.error(span, &key, err.message().trim());
                None
            }
        }
    }

    /// The value at `key`, if present; marks the key as known.
    pub fn get(&mut self, key: &str) -> Option<Value<'a>> {
        let (k, v) = self.map.get_key_value(key)?;
        self.seen.push(k.get_ref().as_ref());
        Some(Value {
            diag: self.diag,
            path: join(&self.path, key),
            span: v.span(),
            v: v.get_ref(),
        })
    }

    /// The value at `key`; records an error if it is missing.
    pub fn required(&mut self, key: &str) -> Option<Value<'a>> {
        let v = self.get(key);
        if v.is_none() {
            self.diag.error(
                self.span.clone(),
                &join(&self.path, key),
                format!("missing required key `{key}`"),
            );
        }
        v
    }

    /// Whether `key` is present, without marking it as known.
    pub fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// The string at `key`, if present and a string.
    pub fn str(&mut self, key: &str) -> Option<&'a str> {
        self.get(key).and_then(|v| v.str())
    }

    /// The boolean at `key`, if present and a boolean.
    pub fn bool(&mut self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.bool())
    }

    /// The duration at `key` ("250ms", "2s", "1m30s"), if present and valid.
    pub fn duration(&mut self, key: &str) -> Option<Duration> {
        self.get(key).and_then(|v| v.duration())
    }

    /// The size in bytes at `key` (`65536`, "64KiB", "10MiB"), if present and valid.
    pub fn size(&mut self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.size())
    }

    /// The integer at `key` within `range`, if present and valid.
    pub fn int_in(&mut self, key: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        self.get(key).and_then(|v| v.int_in(range))
    }

    /// Every entry of this table, in key order, all marked as known.
    pub fn entries(&mut self) -> Vec<(&'a str, Value<'a>)> {
        let mut out = Vec::with_capacity(self.map.len());
        for (k, v) in self.map.iter() {
            let key: &'a str = k.get_ref().as_ref();
            self.seen.push(key);
            out.push((
                key,
                Value {
                    diag: self.diag,
                    path: join(&self.path, key),
                    span: v.span(),
                    v: v.get_ref(),
                },
            ));
        }
        out
    }

    /// The span of `key` itself, for errors about the key (not its value).
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.map.get_key_value(key).map(|(k, _)| k.span())
    }

    /// Reports every key of this table that no getter asked for.
    pub fn finish(self) {
        for (k, _) in self.map.iter() {
            let key: &str = k.get_ref().as_ref();
            if !self.seen.contains(&key) {
                self.diag.error(
                    k.span(),
                    &join(&self.path, key),
                    format!("unknown key `{key}`"),
                );
            }
        }
    }
}

/// One TOML value being read, with its location.
#[derive(Clone)]
pub struct Value<'a> {
    diag: &'a Diagnostics<'a>,
    path: String,
    span: Range<usize>,
    v: &'a DeValue<'a>,
}

impl<'a> Value<'a> {
    /// The dotted key of this value.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Byte offsets of this value in the file.
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// Records an error on this value.
    pub fn error(&self, message: impl Into<String>) {
        self.diag.error(self.span.clone(), &self.path, message);
    }

    /// Where this value stands in the file.
    pub fn location(&self) -> Location {
        self.diag.location(self.span.clone(), &self.path)
    }

    /// Where this value's errors are collected.
    pub fn diagnostics(&self) -> &'a Diagnostics<'a> {
        self.diag
    }

    fn expected(&self, what: &str) {
        self.error(format!("expected {what}, found {}", type_name(self.v)));
    }

    /// The string, or an error if this is not one.
    pub fn str(&self) -> Option<&'a str> {
        match self.v {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.expected("a string");
                None
            }
        }
    }

    /// The boolean, or an error if this is not one.
    pub fn bool(&self) -> Option<bool> {
        match self.v {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.expected("a boolean");
                None
            }
        }
    }

    /// The integer, or an error if this is not one or lies outside `range`.
    pub fn int_in(&self, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        let DeValue::Integer(i) = self.v else {
            self.expected("an integer");
            return None;
        };
        match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                self.error(format!(
                    "expected an integer from {} to {}",
                    range.start(),
                    range.end()
                ));
                None
            }
        }
    }

    /// A duration written as a string ("250ms", "2s", "1m30s").
    pub fn duration(&self) -> Option<Duration> {
        let s = self.str()?;
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.error(msg);
                None
            }
        }
    }

    /// A size in bytes: an integer, or a string of a number and a unit ("512B", "32KiB", "10MiB",
    /// "1GiB").
    pub fn size(&self) -> Option<u64> {
        match self.v {
            DeValue::Integer(_) => self.int_in(0..=i64::MAX).map(|n| n as u64),
            DeValue::String(s) => match parse_size(s) {
                Ok(n) => Some(n),
                Err(msg) => {
                    self.error(msg);
                    None
                }
            },
            _ => {
                self.expected("a size (an integer of bytes, or a string like \"32KiB\")");
                None
            }
        }
    }

    /// Whether this is a table (no error either way).
    pub fn is_table(&self) -> bool {
        matches!(self.v, DeValue::Table(_))
    }

    /// Whether this is an integer (no error either way).
    pub fn is_int(&self) -> bool {
        matches!(self.v, DeValue::Integer(_))
    }

    /// The table, or an error if this is not one.
    pub fn table(&self) -> Option<Table<'a>> {
        match self.v {
            DeValue::Table(t) => Some(Table::new(
                self.diag,
                self.path.clone(),
                self.span.clone(),
                t,
            )),
            _ => {
                self.expected("a table");
                None
            }
        }
    }

    /// The array's items, or an error if this is not an array.
    pub fn array(&self) -> Option<Vec<Value<'a>>> {
        match self.v {
            DeValue::Array(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Value {
                        diag: self.diag,
                        path: format!("{}[{i}]", self.path),
                        span: v.span(),
                        v: v.get_ref(),
                    })
                    .collect(),
            ),
            _ => {
                self.expected("an array");
                None
            }
        }
    }

    /// A list of strings; a single string is accepted as a list of one.
    pub fn str_list(&self) -> Option<Vec<(&'a str, Value<'a>)>> {
        if let DeValue::String(s) = self.v {
            return Some(vec![(s.as_ref(), self.clone())]);
        }
        let items = self.array()?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(s) = item.str() {
                out.push((s, item));
            }
        }
        Some(out)
    }
}

/// Parses "250ms", "2s", "1m", "1h", or sums of them ("1m30s").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration {s:?}: expected a number and a unit (ms, s, m, h), like \"250ms\" or \"2s\"")
    };
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Parses a size: a whole number and a binary unit, `B`, `KiB`, `MiB` or `GiB` ("512B", "32KiB",
/// "10MiB"). Decimal units ("10MB") are refused rather than guessed at.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || {
        format!("invalid size {s:?}: expected a whole number and a unit (B, KiB, MiB, GiB), like \"32KiB\" or \"10MiB\", or an integer of bytes")
    };
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = s[..digits].parse().map_err(|_| bad())?;
    let unit: u64 = match &s[digits..] {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_every_unit() {
        assert_eq!(parse_size("512B").unwrap(), 512);
        assert_eq!(parse_size("32KiB").unwrap(), 32 * 1024);
        assert_eq!(parse_size("10MiB").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("0B").unwrap(), 0);
    }

    #[test]
    fn sizes_without_a_binary_unit_or_number_are_refused() {
        for bad in [
            "",
            "32",
            "KiB",
            "32 KiB",
            "1.5MiB",
            "10MB",
            "10mb",
            "32k",
            "-1KiB",
            "KiB32",
            "99999999999999999999GiB",
            "20000000000GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn durations_parse_in_every_unit_and_in_sums() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
    }

    #[test]
    fn durations_without_unit_or_number_are_refused() {
        for bad in ["", "2", "s", "2 s", "1.5s", "2d", "-1s", "ms2"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nbé = 2\n";
        let src = Source::new(Path::new("x.toml"), text);
        assert_eq!(src.locate(0), (1, 1));
        assert_eq!(src.locate(6), (2, 1));
        // column counts characters, not bytes
        assert_eq!(src.locate(6 + "bé ".len()), (2, 4));
    }
}
