//! TLS to `https://` upstream servers: one rustls [`ClientConfig`] per upstream, built at load.
//!
//! The trusted roots are the system's (read once per process by rustls-native-certs and shared), or
//! the upstream's `tls.ca` alone. The name sent as SNI and verified in the certificate is
//! `tls.server_name`, else each server's host (an IP address is verified against the certificate's
//! IP SANs, RFC 6125 as rustls-webpki applies it). `tls.verify = false` accepts any certificate but
//! still checks the handshake's signatures, so the connection is at least bound to the key it was
//! shown. ALPN offers what `protocol` allows (RFC 7301): `h2` and `http/1.1` for `auto`.
//!
//! A [`ClientConfig`] keeps a session cache, so reconnections to a server resume their TLS session
//! rather than paying a full handshake; it lives as long as the upstream (kept across reloads that
//! leave the upstream unchanged).

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::config::{ConfigError, UpstreamConfig, UpstreamProtocol, UpstreamServer};

/// The crypto provider: ring, the one provider parapet builds with.
fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// The system's trusted roots, read once per process (reading them parses every file of the
/// system's bundle: milliseconds, not something to repeat per upstream or per reload). Shared by
/// `https://` upstreams and the ACME directory client (`crate::acme`).
pub(crate) fn native_roots() -> &'static Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for err in &found.errors {
            tracing::warn!(error = %err, "reading the system's trusted certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(
                ignored,
                "no trusted certificate found on the system: https upstreams need `tls.ca`, and an \
                 ACME directory `[acme] ca`"
            );
        }
        Arc::new(roots)
    })
}

/// Why a PEM file of CA certificates cannot be used ([`pem_roots`]); each caller words it.
pub(crate) enum PemRootsError {
    /// The file cannot be read.
    Read(String),
    /// A block is not valid PEM.
    Invalid(String),
    /// rustls refused a certificate.
    Rejected(String),
    /// No certificate in it.
    Empty,
}

/// Every certificate of the PEM file at `path`, as roots to trust: `tls.ca` of an upstream,
/// `[acme] ca`.
pub(crate) fn pem_roots(path: &std::path::Path) -> Result<RootCertStore, PemRootsError> {
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| PemRootsError::Read(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| PemRootsError::Invalid(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| PemRootsError::Rejected(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(PemRootsError::Empty);
    }
    Ok(roots)
}

/// The roots `tls.ca` names: every certificate of its PEM file.
fn ca_roots(config: &UpstreamConfig, path: &std::path::Path) -> Result<RootCertStore, ConfigError> {
    let at = &config.tls.at;
    let cannot = |why: String| at.error(format!("cannot use CA file {}: {why}", path.display()));
    pem_roots(path).map_err(|err| match err {
        PemRootsError::Read(e) | PemRootsError::Invalid(e) | PemRootsError::Rejected(e) => {
            cannot(e)
        }
        PemRootsError::Empty => cannot("no certificate in it".into()),
    })
}

/// The upstream's TLS client config, or `None` if none of its servers is `https://`. `check_only`
/// reads `tls.ca` but not the system's roots (what `parapet check` needs to know is whether the
/// file is usable).
pub(crate) fn client_config(
    config: &UpstreamConfig,
    check_only: bool,
) -> Result<Option<Arc<ClientConfig>>, ConfigError> {
    if !config
        .servers
        .iter()
        .any(|s| s.scheme == http::uri::Scheme::HTTPS)
    {
        return Ok(None);
    }
    let roots = match &config.tls.ca {
        Some(path) => Arc::new(ca_roots(config, path)?),
        None if check_only => Arc::new(RootCertStore::empty()),
        None => Arc::clone(native_roots()),
    };
    let builder = ClientConfig::builder_with_provider(Arc::clone(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| config.tls.at.error(format!("TLS: {e}")))?;
    let mut tls = builder.with_root_certificates(roots).with_no_client_auth();
    if !config.tls.verify {
        if !check_only {
            tracing::warn!(
                upstream = %config.name,
                at = %config.tls.at,
                "tls.verify = false: the certificates of this upstream's https servers are NOT \
                 verified; anyone on the path can impersonate them"
            );
        }
        tls.dangerous()
            .set_certificate_verifier(Arc::new(AcceptAnyCertificate(Arc::clone(provider()))));
    }
    tls.alpn_protocols = match config.protocol {
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::H2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(Some(Arc::new(tls)))
}

/// The name `server` is verified as and sent as SNI: `tls.server_name`, else its host (without an
/// IPv6 literal's brackets).
pub(crate) fn server_name(
    config: &UpstreamConfig,
    server: &UpstreamServer,
) -> Result<ServerName<'static>, ConfigError> {
    let name = match &config.tls.server_name {
        Some(name) => name.as_str(),
        None => server
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']'),
    };
    ServerName::try_from(name.to_owned()).map_err(|_| {
        config.tls.at.error(format!(
            "{server}: {name:?} is not a name TLS can verify; set tls.server_name"
        ))
    })
}

/// `tls.verify = false`: any certificate is accepted, but the handshake's signatures are still
/// checked with the provider's algorithms, as for a verified one.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
