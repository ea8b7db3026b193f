//! The HTTPS client ACME requests go out on: hyper's HTTP/1.1 client over rustls (ring), trusting the
//! system's roots or `[acme] ca`, a connection per request (an order is a handful of requests, hours or
//! weeks apart).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::ServerName;

/// How long connecting to the ACME server (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request may take, connecting included, until its response head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The ACME server's HTTPS client.
#[derive(Clone)]
pub(super) struct AcmeHttp {
    tls: tokio_rustls::TlsConnector,
}

impl AcmeHttp {
    /// A client verifying the server with `roots`.
    pub(super) fn new(roots: rustls::RootCertStore) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            let uri = req.uri().to_string();
            match tokio::time::timeout(REQUEST_TIMEOUT, send(tls, req)).await {
                Ok(result) => result,
                Err(_) => Err(other(format!(
                    "{uri}: no response within {REQUEST_TIMEOUT:?}"
                ))),
            }
        })
    }
}

fn other(message: String) -> instant_acme::Error {
    instant_acme::Error::Other(message.into())
}

async fn send(
    tls: tokio_rustls::TlsConnector,
    mut req: http::Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, instant_acme::Error> {
    let uri = req.uri().clone();
    if uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
        return Err(other(format!("{uri}: ACME is spoken over https only")));
    }
    let Some(authority) = uri.authority().cloned() else {
        return Err(other(format!("{uri}: no host")));
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|_| other(format!("{uri}: not a valid host name")))?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        let _ = tcp.set_nodelay(true);
        tls.connect(server_name, tcp).await
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            return Err(instant_acme::Error::Other(
                format!("cannot connect to {authority}: {err}").into(),
            ))
        }
        Err(_) => {
            return Err(other(format!(
                "cannot connect to {authority} within {CONNECT_TIMEOUT:?}"
            )))
        }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "ACME connection ended with an error");
        }
    });
    // Origin form on the wire, the authority in Host (RFC 9112 §3.2).
    let path = uri
        .path_and_query()
        .map_or_else(|| http::uri::PathAndQuery::from_static("/"), Clone::clone);
    *req.uri_mut() = http::Uri::from(path);
    let host_header = http::HeaderValue::from_str(authority.as_str())
        .map_err(|_| other(format!("{uri}: not a valid host")))?;
    req.headers_mut().insert(http::header::HOST, host_header);
    req.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("parapet/", env!("CARGO_PKG_VERSION"))),
    );
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
    Ok(BytesResponse::from(response))
}
