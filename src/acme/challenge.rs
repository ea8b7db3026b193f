//! The answers to pending ACME challenges, published by an order while the ACME server checks them
//! and shared by every listener of every config generation.
//!
//! - `tls-alpn-01` (RFC 8737): a TLS listener's certificate resolver sees a ClientHello offering
//!   only the `acme-tls/1` protocol and answers with the challenge certificate of the name asked
//!   for ([`Challenges::tls_alpn01`]); the connection ends with the handshake.
//! - `http-01` (RFC 8555 §8.3): every plain-HTTP listener answers
//!   `GET /.well-known/acme-challenge/<token>` with the key authorization, before its middlewares
//!   and routes ([`answer_http01`]), so that no route (a redirect to https, say) can shadow it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{header, Method, StatusCode};
use rustls::sign::CertifiedKey;

use crate::{AppService, Body, Response};

/// The ALPN protocol of a `tls-alpn-01` validation (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The path prefix of an `http-01` validation request (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// The answers to the challenges of the orders in progress.
#[derive(Debug, Default)]
pub struct Challenges {
    /// `http-01`: token to key authorization.
    http01: RwLock<HashMap<String, Bytes>>,
    /// `tls-alpn-01`: DNS name (lowercase) to challenge certificate.
    tls_alpn01: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The key authorization to answer an `http-01` request for `token` with, if one is pending.
    pub fn http01(&self, token: &str) -> Option<Bytes> {
        let pending = self.http01.read().unwrap_or_else(|e| e.into_inner());
        pending.get(token).cloned()
    }

    /// The challenge certificate for a `tls-alpn-01` validation of `name`, if one is pending.
    pub fn tls_alpn01(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let pending = self.tls_alpn01.read().unwrap_or_else(|e| e.into_inner());
        pending.get(&name.to_ascii_lowercase()).cloned()
    }

    /// Publishes the answer to an `http-01` challenge until the returned guard is dropped.
    pub(super) fn publish_http01(
        self: &Arc<Self>,
        token: &str,
        key_authorization: &str,
    ) -> Published {
        let mut pending = self.http01.write().unwrap_or_else(|e| e.into_inner());
        pending.insert(
            token.to_owned(),
            Bytes::copy_from_slice(key_authorization.as_bytes()),
        );
        Published {
            challenges: Arc::clone(self),
            answer: Answer::Http01(token.to_owned()),
        }
    }

    /// Publishes the challenge certificate of a `tls-alpn-01` challenge for `name` until the
    /// returned guard is dropped.
    pub(super) fn publish_tls_alpn01(
        self: &Arc<Self>,
        name: &str,
        certificate: Arc<CertifiedKey>,
    ) -> Published {
        let mut pending = self.tls_alpn01.write().unwrap_or_else(|e| e.into_inner());
        pending.insert(name.to_owned(), certificate);
        Published {
            challenges: Arc::clone(self),
            answer: Answer::TlsAlpn01(name.to_owned()),
        }
    }
}

/// A published answer, withdrawn when dropped: when its order is done, has failed, or was stopped.
pub(super) struct Published {
    challenges: Arc<Challenges>,
    answer: Answer,
}

enum Answer {
    Http01(String),
    TlsAlpn01(String),
}

impl Drop for Published {
    fn drop(&mut self) {
        match &self.answer {
            Answer::Http01(token) => {
                let mut pending = self
                    .challenges
                    .http01
                    .write()
                    .unwrap_or_else(|e| e.into_inner());
                pending.remove(token);
            }
            Answer::TlsAlpn01(name) => {
                let mut pending = self
                    .challenges
                    .tls_alpn01
                    .write()
                    .unwrap_or_else(|e| e.into_inner());
                pending.remove(name);
            }
        }
    }
}

/// Whether a ClientHello's ALPN offer is a `tls-alpn-01` validation's: `acme-tls/1` and nothing
/// else (RFC 8737 §3).
pub fn is_tls_alpn01<'a>(mut offered: impl Iterator<Item = &'a [u8]>) -> bool {
    offered.next() == Some(ACME_TLS_ALPN) && offered.next().is_none()
}

/// The challenge certificate of `tls-alpn-01` for `name` (RFC 8737 §3): self-signed, for `name`
/// alone, with the critical acmeIdentifier extension holding `digest`, the SHA-256 of the key
/// authorization.
pub(super) fn tls_alpn01_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(der.into())
        .map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

/// `entry`, a plain-HTTP listener's service, behind the answers to `http-01` challenges: a `GET`
/// (or `HEAD`) of `/.well-known/acme-challenge/<token>` with a pending token is answered here,
/// before the listener's middlewares and routes; every other request goes on to `entry` at the cost
/// of one prefix comparison.
pub fn answer_http01(challenges: Arc<Challenges>, entry: AppService) -> AppService {
    AppService::from_fn(move |req| {
        if let Some(token) = req.uri().path().strip_prefix(HTTP01_PREFIX) {
            let method = req.method();
            if method == Method::GET || method == Method::HEAD {
                if let Some(key_authorization) = challenges.http01(token) {
                    tracing::debug!(token, "ACME http-01 challenge answered");
                    let body = if method == Method::HEAD {
                        Body::empty()
                    } else {
                        Body::from(key_authorization)
                    };
                    let mut response = Response::new(body);
                    *response.status_mut() = StatusCode::OK;
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("application/octet-stream"),
                    );
                    return Box::pin(std::future::ready(Ok(response)));
                }
            }
        }
        entry.handle(req)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_offer_of_acme_tls_alone_is_a_validation() {
        let offer = |protocols: &[&'static [u8]]| is_tls_alpn01(protocols.iter().copied());
        assert!(offer(&[b"acme-tls/1"]));
        assert!(!offer(&[b"h2", b"acme-tls/1"]));
        assert!(!offer(&[b"acme-tls/1", b"http/1.1"]));
        assert!(!offer(&[]));
    }

    #[test]
    fn a_published_answer_is_withdrawn_when_its_guard_drops() {
        let challenges = Arc::new(Challenges::default());
        let guard = challenges.publish_http01("tok", "tok.thumb");
        assert_eq!(challenges.http01("tok").as_deref(), Some(&b"tok.thumb"[..]));
        drop(guard);
        assert_eq!(challenges.http01("tok"), None);
    }

    #[tokio::test]
    async fn a_pending_token_is_answered_before_the_entry_and_others_pass() {
        use http_body_util::BodyExt;
        let challenges = Arc::new(Challenges::default());
        let entry = AppService::from_fn(|_req| {
            Box::pin(async {
                let mut redirect = Response::new(Body::empty());
                *redirect.status_mut() = StatusCode::PERMANENT_REDIRECT;
                Ok(redirect)
            })
        });
        let service = answer_http01(Arc::clone(&challenges), entry);
        let _guard = challenges.publish_http01("abc", "abc.xyz");
        let get = |path: &str| http::Request::get(path).body(Body::empty()).unwrap();
        let answered = service
            .handle(get("/.well-known/acme-challenge/abc"))
            .await
            .unwrap();
        assert_eq!(answered.status(), 200);
        let body = answered.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"abc.xyz");
        let unknown = service
            .handle(get("/.well-known/acme-challenge/nope"))
            .await
            .unwrap();
        assert_eq!(unknown.status(), 308);
        let other = service.handle(get("/")).await.unwrap();
        assert_eq!(other.status(), 308);
    }
}
