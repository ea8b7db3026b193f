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

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{CertificateFiles, ConfigError, ListenerTls, TlsVersion};

/// Sessions kept for resumption by session ID (TLS 1.2) per listener, as nginx's
/// `ssl_session_cache shared:SSL:1m` holds about 4000.
const SESSION_CACHE_SIZE: usize = 4096;

/// A listener's TLS: its rustls config, and what a reload hands on to the next.
pub struct ListenerTlsConfig {
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ListenerTlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTlsConfig").finish_non_exhaustive()
    }
}

impl ListenerTlsConfig {
    /// Reads the certificates and keys of `tls` and makes the config for its listener; `previous` is the
    /// same listener's config before a reload, whose session resumption state is kept.
    pub fn build(
        tls: &ListenerTls,
        previous: Option<&ListenerTlsConfig>,
    ) -> Result<Self, Vec<ConfigError>> {
        let certificates = Certificates::load(&tls.certificates)?;
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
            .with_cert_resolver(Arc::new(certificates));
        // ALPN (RFC 7301): HTTP/2 preferred, HTTP/1.1 otherwise; a client offering neither is served
        // HTTP/1.1 without ALPN.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ticketer = ticketer;
        config.session_storage = session_storage;
        Ok(Self {
            config: Arc::new(config),
        })
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
        // Never: the model refuses a TLS listener without certificates.
        None => ConfigError {
            file: Default::default(),
            line: 0,
            column: 0,
            key: String::new(),
            message,
        },
    }
}

/// A listener's certificates, chosen by SNI.
#[derive(Debug)]
struct Certificates {
    /// In file order: the first is the default.
    keys: Vec<Arc<CertifiedKey>>,
    /// Exact DNS names (lowercase) to the first certificate listing them.
    exact: HashMap<Box<str>, usize>,
    /// Wildcard names, as the suffix after `*.` (lowercase), to the first certificate listing them.
    wildcard: HashMap<Box<str>, usize>,
}

impl Certificates {
    /// Reads every pair; every error at once.
    fn load(files: &[CertificateFiles]) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut certificates = Certificates {
            keys: Vec::with_capacity(files.len()),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for pair in files {
            match load_pair(pair) {
                Ok((key, names)) => certificates.add(key, &names),
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
            self.exact.get(name).copied().or_else(|| {
                // A wildcard covers exactly one label (RFC 6125 §6.4.3).
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent).copied()
            })
        });
        self.keys.get(index.unwrap_or(0))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(client_hello.server_name()).cloned()
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
}
