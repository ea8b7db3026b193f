//! TLS termination: a listener's certificates, read from their PEM files, and the rustls server
//! config its connections are accepted with.
//!
//! The names a certificate serves are the DNS names of its subject alternative names, wildcards
//! included; a listener's resolver picks one per handshake by the client's SNI: an exact name first,
//! then a wildcard covering it (one label, RFC 6125 §6.4.3), else the first certificate listed, the
//! default for a client that sends no SNI and, as nginx's default server does, for one naming none.
//!
//! The files are read by the build stage, at start and at every reload (and by `parapet check`): a
//! reload builds a new [`rustls::ServerConfig`] which new handshakes use while open connections keep
//! theirs. Session resumption state (the ticket keys and the session cache) is made once per listener
//! name and handed from the previous config to the next, so a client resumes across reloads.
//!
//! A listener's `acme` names are served the certificate [`crate::acme`] obtained for them, read
//! from its slot at each handshake (so a renewal needs no reload): an exact name of a file
//! certificate first, then an `acme` name, then a wildcard; for an `acme` name with no certificate
//! yet, the handshake is refused unless a wildcard file certificate covers it. When the config has an
//! `[acme]` table, every TLS listener also offers the `acme-tls/1` protocol and answers a
//! `tls-alpn-01` validation (RFC 8737) with the pending challenge certificate.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::acme::{Acme, CertSlot, Challenges};
use crate::config::{CertificateFiles, ConfigError, ListenerTls, TlsVersion};
use crate::metrics::CertificateExpiry;

/// Sessions kept for resumption by session ID (TLS 1.2) per listener, as nginx's
/// `ssl_session_cache shared:SSL:1m` holds about 4000.
const SESSION_CACHE_SIZE: usize = 4096;

/// A listener's TLS: its rustls config, and what a reload hands on to the next.
pub struct ListenerTlsConfig {
    config: Arc<rustls::ServerConfig>,
    /// Each certificate file's DNS names and expiry, for the expiry gauge.
    expiry: Vec<(Vec<String>, SystemTime)>,
}

impl fmt::Debug for ListenerTlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTlsConfig").finish_non_exhaustive()
    }
}

impl ListenerTlsConfig {
    /// Reads the certificates and keys of `tls` and makes the config for its listener; `previous` is the
    /// same listener's config before a reload, whose session resumption state is kept. `acme` is the
    /// server's ACME manager when the config has an `[acme]` table: the listener's `acme` names are
    /// served from it, and its `tls-alpn-01` challenges answered.
    pub fn build(
        tls: &ListenerTls,
        previous: Option<&ListenerTlsConfig>,
        acme: Option<&Acme>,
    ) -> Result<Self, Vec<ConfigError>> {
        let mut certificates = Certificates::load(&tls.certificates)?;
        let expiry = std::mem::take(&mut certificates.expiry);
        let resolver = Resolver {
            acme: acme.filter(|_| !tls.acme.is_empty()).map(|acme| AcmeNames {
                names: tls.acme.iter().map(|n| n.as_str().into()).collect(),
                slot: acme.slot(&tls.acme),
            }),
            challenges: acme.map(|acme| Arc::clone(acme.challenges())),
            files: certificates,
        };
        let provider = Arc::new(provider::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
        };
        let (ticketer, session_storage) = match previous {
            Some(p) => (
                Arc::clone(&p.config.ticketer),
                Arc::clone(&p.config.session_storage),
            ),
            None => {
                let ticketer: Arc<dyn ProducesTickets> = provider::Ticketer::new()
                    .map_err(|err| vec![tls_error(tls, format!("TLS ticket keys: {err}"))])?;
                let cache: Arc<dyn StoresServerSessions> =
                    rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
                (ticketer, cache)
            }
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|err| vec![tls_error(tls, format!("TLS versions: {err}"))])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        // ALPN (RFC 7301): HTTP/2 preferred, HTTP/1.1 otherwise; a client offering neither is served
        // HTTP/1.1 without ALPN. `acme-tls/1` last: only an ACME server's validation offers it.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if acme.is_some() {
            config
                .alpn_protocols
                .push(crate::acme::ACME_TLS_ALPN.to_vec());
        }
        config.ticketer = ticketer;
        config.session_storage = session_storage;
        Ok(Self {
            config: Arc::new(config),
            expiry,
        })
    }

    /// The certificate files' names and expiry, as the expiry gauge of `listener` shows them.
    pub fn file_certificates(&self, listener: &str) -> Vec<CertificateExpiry> {
        self.expiry
            .iter()
            .flat_map(|(names, not_after)| {
                names.iter().map(move |name| CertificateExpiry {
                    listener: listener.to_owned(),
                    name: name.clone(),
                    not_after: *not_after,
                })
            })
            .collect()
    }

    /// Reads and checks the certificates and keys of `tls` without keeping them: `parapet check`.
    pub fn check(tls: &ListenerTls) -> Vec<ConfigError> {
        Certificates::load(&tls.certificates)
            .err()
            .unwrap_or_default()
    }

    /// The rustls config new connections are accepted with.
    pub fn server_config(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }
}

fn tls_error(tls: &ListenerTls, message: String) -> ConfigError {
    match tls.certificates.first() {
        Some(first) => first.cert_at.error(message),
        None => tls.at.error(message),
    }
}

/// A listener's certificate resolver: its files, its `acme` names, and the ACME challenges.
#[derive(Debug)]
struct Resolver {
    files: Certificates,
    acme: Option<AcmeNames>,
    /// Set when the config has an `[acme]` table: `tls-alpn-01` validations are answered.
    challenges: Option<Arc<Challenges>>,
}

/// A listener's `acme` names and the slot of the certificate obtained for them.
#[derive(Debug)]
struct AcmeNames {
    /// Lowercase, without a trailing dot (as the model keeps them).
    names: Vec<Box<str>>,
    slot: Arc<CertSlot>,
}

impl Resolver {
    /// The certificate for a client asking for `sni`, not a validation.
    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(acme) = &self.acme else {
            return self.files.pick(sni).cloned();
        };
        let Some(sni) = sni else {
            return self
                .files
                .keys
                .first()
                .cloned()
                .or_else(|| acme.slot.certified_key());
        };
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&index) = self.files.exact.get(name.as_str()) {
            return self.files.keys.get(index).cloned();
        }
        if acme.names.iter().any(|n| **n == *name) {
            // Not obtained yet: a wildcard file certificate covering it, else no handshake.
            return acme
                .slot
                .certified_key()
                .or_else(|| self.files.wildcard_for(&name).cloned());
        }
        self.files
            .pick(Some(&name))
            .cloned()
            .or_else(|| acme.slot.certified_key())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(challenges) = &self.challenges {
            if client_hello.alpn().is_some_and(crate::acme::is_tls_alpn01) {
                // RFC 8737 §3: the challenge certificate of the name asked for, or no handshake.
                return challenges.tls_alpn01(client_hello.server_name()?);
            }
        }
        self.pick(client_hello.server_name())
    }
}

/// A listener's certificate files, chosen by SNI.
#[derive(Debug)]
struct Certificates {
    /// In file order: the first is the default.
    keys: Vec<Arc<CertifiedKey>>,
    /// Exact DNS names (lowercase) to the first certificate listing them.
    exact: HashMap<Box<str>, usize>,
    /// Wildcard names, as the suffix after `*.` (lowercase), to the first certificate listing them.
    wildcard: HashMap<Box<str>, usize>,
    /// Each certificate's DNS names and expiry.
    expiry: Vec<(Vec<String>, SystemTime)>,
}

impl Certificates {
    /// Reads every pair; every error at once.
    fn load(files: &[CertificateFiles]) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut certificates = Certificates {
            keys: Vec::with_capacity(files.len()),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            expiry: Vec::with_capacity(files.len()),
        };
        for pair in files {
            match load_pair(pair) {
                Ok((key, names)) => {
                    if let Some((_, not_after)) = key.end_entity_cert().ok().and_then(validity) {
                        certificates.expiry.push((names.clone(), not_after));
                    }
                    certificates.add(key, &names)
                }
                Err(err) => errors.push(err),
            }
        }
        if errors.is_empty() {
            Ok(certificates)
        } else {
            Err(errors)
        }
    }

    /// Adds a certificate serving `names` (DNS names, `*.` wildcards): after those already added.
    fn add(&mut self, key: CertifiedKey, names: &[String]) {
        let index = self.keys.len();
        self.keys.push(Arc::new(key));
        for name in names {
            let name = name.to_ascii_lowercase();
            let (table, name) = match name.strip_prefix("*.") {
                Some(suffix) => (&mut self.wildcard, suffix.into()),
                None => (&mut self.exact, name.into()),
            };
            table.entry(name).or_insert(index);
        }
    }

    /// The certificate for a client asking for `sni`.
    fn pick(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let index = sni.and_then(|name| {
            let name = name.trim_end_matches('.');
            // rustls hands the name lowercased; a client's own case is not trusted anyway.
            let lower;
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                lower = name.to_ascii_lowercase();
                lower.as_str()
            } else {
                name
            };
            self.exact
                .get(name)
                .copied()
                .or_else(|| self.wildcard_index(name))
        });
        self.keys.get(index.unwrap_or(0))
    }

    /// The wildcard certificate covering `name` (lowercase), if any.
    fn wildcard_for(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        self.keys.get(self.wildcard_index(name)?)
    }

    fn wildcard_index(&self, name: &str) -> Option<usize> {
        // A wildcard covers exactly one label (RFC 6125 §6.4.3).
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).copied()
    }
}

/// Reads one certificate and its key: the certified key, and the DNS names its SANs list.
fn load_pair(pair: &CertificateFiles) -> Result<(CertifiedKey, Vec<String>), ConfigError> {
    let chain = read_chain(&pair.cert).map_err(|msg| pair.cert_at.error(msg))?;
    let names = {
        let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|err| {
            pair.cert_at.error(format!(
                "{}: the first certificate cannot be parsed: {err}",
                pair.cert.display()
            ))
        })?;
        leaf.valid_dns_names()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let key = PrivateKeyDer::from_pem_file(&pair.key).map_err(|err| {
        pair.key_at.error(format!(
            "{}: no private key read: {}",
            pair.key.display(),
            pem_error(err)
        ))
    })?;
    let signing = provider::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|err| {
            pair.key_at.error(format!(
                "{}: unusable private key: {err}",
                pair.key.display()
            ))
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(pair.key_at.error(format!(
                "{}: this key does not match the certificate {}",
                pair.key.display(),
                pair.cert.display()
            )))
        }
    }
    Ok((certified, names))
}

/// A certificate's validity (RFC 5280 §4.1.2.5): `notBefore` and `notAfter`. `None` if the DER
/// cannot be read that far.
pub(crate) fn validity(cert: &CertificateDer<'_>) -> Option<(SystemTime, SystemTime)> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
    // signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }
    let (_, certificate, _) = der_item(cert, 0x30)?;
    let (_, mut tbs, _) = der_item(certificate, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_item(tbs, 0xa0)?.2;
    }
    for tag in [0x02, 0x30, 0x30] {
        tbs = der_item(tbs, tag)?.2;
    }
    let (_, validity, _) = der_item(tbs, 0x30)?;
    let (tag, not_before, rest) = der_any(validity)?;
    let not_before = der_time(tag, not_before)?;
    let (tag, not_after, _) = der_any(rest)?;
    Some((not_before, der_time(tag, not_after)?))
}

/// The DER item at the start of `input`, if its tag is `tag`: (tag, content, rest).
fn der_item(input: &[u8], tag: u8) -> Option<(u8, &[u8], &[u8])> {
    der_any(input).filter(|(t, _, _)| *t == tag)
}

/// The DER item at the start of `input`: (tag, content, rest). Single-byte tags only.
fn der_any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let (len, after) = rest.split_at(octets);
        rest = after;
        len.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18), as
/// RFC 5280 §4.1.2.5 allows them.
fn der_time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if text.len() == 12 => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| -> i64 { rest[i..i + 2].parse().unwrap_or(-1) };
    let (month, day, hour, minute, second) = (field(0), field(2), field(4), field(6), field(8));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&hour)
        || !(0..=59).contains(&minute)
        || !(0..=60).contains(&second)
    {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    match u64::try_from(seconds) {
        Ok(s) => UNIX_EPOCH.checked_add(Duration::from_secs(s)),
        Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(seconds.unsigned_abs())),
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The certificates of a PEM file, leaf first: at least one.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("{}: {}", path.display(), pem_error(err)))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no certificate in this file (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        ));
    }
    Ok(chain)
}

/// A PEM reading error in words: the I/O error itself where there is one.
fn pem_error(err: rustls_pki_types::pem::Error) -> String {
    match err {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no PEM block of the expected kind in this file".to_owned()
        }
        other => format!("not valid PEM: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> CertifiedKey {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let signing = provider::default_provider()
            .key_provider
            .load_private_key(der)
            .unwrap();
        CertifiedKey::new(vec![cert.der().clone()], signing)
    }

    fn certificates(sets: &[&[&str]]) -> Certificates {
        let mut c = Certificates {
            keys: Vec::new(),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            expiry: Vec::new(),
        };
        for names in sets {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            c.add(key(&names[0]), &names);
        }
        c
    }

    fn picked(c: &Certificates, sni: Option<&str>) -> usize {
        let key = c.pick(sni).unwrap();
        c.keys.iter().position(|k| Arc::ptr_eq(k, key)).unwrap()
    }

    #[test]
    fn an_exact_name_wins_over_a_wildcard_and_the_first_is_the_default() {
        let c = certificates(&[
            &["default.test"],
            &["*.example.test"],
            &["api.example.test"],
        ]);
        assert_eq!(picked(&c, Some("api.example.test")), 2);
        assert_eq!(picked(&c, Some("API.Example.Test.")), 2);
        assert_eq!(picked(&c, Some("www.example.test")), 1);
        // RFC 6125 §6.4.3: one label, and not the bare domain.
        assert_eq!(picked(&c, Some("a.b.example.test")), 0);
        assert_eq!(picked(&c, Some("example.test")), 0);
        assert_eq!(picked(&c, Some("other.test")), 0);
        assert_eq!(picked(&c, None), 0);
    }

    #[test]
    fn the_first_certificate_listing_a_name_serves_it() {
        let c = certificates(&[
            &["a.test"],
            &["b.test", "*.x.test"],
            &["b.test", "*.x.test"],
        ]);
        assert_eq!(picked(&c, Some("b.test")), 1);
        assert_eq!(picked(&c, Some("y.x.test")), 1);
    }

    #[test]
    fn a_certificates_validity_is_read_from_its_der() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2024, 2, 29);
        params.not_after = rcgen::date_time_ymd(2051, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let (not_before, not_after) = validity(cert.der()).unwrap();
        // 2024-02-29T00:00:00Z (UTCTime) and 2051-01-01T00:00:00Z (GeneralizedTime, from 2050 on).
        assert_eq!(
            not_before.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_709_164_800
        );
        assert_eq!(
            not_after.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            2_556_144_000
        );
        assert_eq!(
            validity(&CertificateDer::from(vec![0x30, 0x03, 0x02])),
            None
        );
    }

    fn resolver(files: &[&[&str]], acme: &[&str], slot: Arc<CertSlot>) -> Resolver {
        Resolver {
            files: certificates(files),
            acme: Some(AcmeNames {
                names: acme.iter().map(|n| (*n).into()).collect(),
                slot,
            }),
            challenges: None,
        }
    }

    #[test]
    fn an_acme_name_without_a_certificate_yet_is_refused_unless_a_wildcard_covers_it() {
        let r = resolver(
            &[&["default.test"], &["*.wild.test"]],
            &["a.test", "b.wild.test"],
            Arc::default(),
        );
        assert!(r.pick(Some("a.test")).is_none());
        let wild = r.pick(Some("b.wild.test")).unwrap();
        assert!(Arc::ptr_eq(&wild, &r.files.keys[1]));
        let other = r.pick(Some("other.test")).unwrap();
        assert!(Arc::ptr_eq(&other, &r.files.keys[0]));
    }

    #[test]
    fn an_acme_only_listener_serves_its_certificate_by_default() {
        let r = resolver(&[], &["a.test"], Arc::default());
        assert!(r.pick(None).is_none());
        assert!(r.pick(Some("other.test")).is_none());
    }
}
