//! `ip_filter`: allow or deny clients by address, `403` for the others.
//!
//! ```toml
//! [middlewares.office]
//! kind = "ip_filter"
//! allow = ["10.0.0.0/8", "192.168.1.7"]   # empty (the default): every address
//! deny = ["10.6.6.0/24"]                  # wins over allow
//! ```
//!
//! The client is the one `server.trusted_proxies` resolves ([`ClientIp`]): the peer, or behind a
//! trusted proxy the address that proxy vouches for. A request is refused when its client is in a
//! `deny` block, or when `allow` is not empty and the client is in none of its blocks. A request
//! whose client is unknown (no [`ClientAddr`](crate::ClientAddr) from the server) is refused when
//! `allow` is not empty. The refusal is a `403` carrying a
//! [`GatewayErrorKind::Forbidden`], blamed on the client, whose body the `errors` layer may replace.
//!
//! ```
//! use parapet_middlewares::ip_filter::IpFilterLayer;
//!
//! let layer = IpFilterLayer::new(vec!["10.0.0.0/8".parse().unwrap()], vec![]);
//! # let _ = layer;
//! ```

use std::sync::Arc;

use http::{Request, Response};

use crate::guard::{Guard, GuardLayer, Guarded};
use crate::ip::IpRange;
use crate::{Body, ClientIp, GatewayError, GatewayErrorKind};

/// The guard behind [`IpFilterLayer`].
#[derive(Clone, Debug)]
pub struct IpFilter {
    lists: Arc<(Vec<IpRange>, Vec<IpRange>)>,
}

impl IpFilter {
    /// Whether a client at this address (or an unknown one) may pass.
    pub fn admits(&self, ip: Option<std::net::IpAddr>) -> bool {
        let (allow, deny) = &*self.lists;
        match ip {
            Some(ip) => {
                !deny.iter().any(|r| r.contains(ip))
                    && (allow.is_empty() || allow.iter().any(|r| r.contains(ip)))
            }
            None => allow.is_empty(),
        }
    }
}

impl Guard for IpFilter {
    type State = ();

    fn request(&self, req: &mut Request<Body>) -> Result<(), Response<Body>> {
        let ip = ClientIp::of(req.extensions()).map(|c| c.ip);
        if self.admits(ip) {
            Ok(())
        } else {
            Err(GatewayError::new(GatewayErrorKind::Forbidden).into_response())
        }
    }

    fn response(&self, _: (), _: &mut Response<Body>) {}
}

/// Refuses clients outside `allow` or inside `deny` with `403`.
#[derive(Clone, Debug)]
pub struct IpFilterLayer {
    inner: GuardLayer<IpFilter>,
}

impl IpFilterLayer {
    /// A layer admitting the clients in `allow` (every one if empty) and not in `deny`.
    pub fn new(allow: Vec<IpRange>, deny: Vec<IpRange>) -> Self {
        Self {
            inner: GuardLayer::new(IpFilter {
                lists: Arc::new((allow, deny)),
            }),
        }
    }
}

impl IpFilterLayer {
    /// The guard this layer applies: what a host runs without a layer of its own (parapet runs
    /// adjacent guards and interceptors in one future).
    pub fn guard(&self) -> &IpFilter {
        self.inner.guard()
    }
}

impl<S> tower::Layer<S> for IpFilterLayer {
    type Service = Guarded<IpFilter, S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientAddr;
    use std::convert::Infallible;
    use tower::{Layer, ServiceExt};

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    async fn status(allow: &[&str], deny: &[&str], client: Option<ClientIp>, peer: &str) -> u16 {
        let inner = tower::service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let mut req = Request::get("/").body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ClientAddr(peer.parse().unwrap()));
        if let Some(client) = client {
            req.extensions_mut().insert(client);
        }
        let svc = IpFilterLayer::new(ranges(allow), ranges(deny)).layer(inner);
        svc.oneshot(req).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn deny_wins_over_allow_and_an_empty_allow_admits_everyone_else() {
        assert_eq!(status(&[], &[], None, "1.2.3.4:1").await, 200);
        assert_eq!(status(&["10.0.0.0/8"], &[], None, "10.1.1.1:1").await, 200);
        assert_eq!(status(&["10.0.0.0/8"], &[], None, "11.1.1.1:1").await, 403);
        assert_eq!(
            status(&["10.0.0.0/8"], &["10.6.0.0/16"], None, "10.6.1.1:1").await,
            403
        );
        assert_eq!(status(&[], &["10.6.0.0/16"], None, "10.7.1.1:1").await, 200);
        // A v4 client of a [::] listener is matched as its v4 address.
        assert_eq!(
            status(&["10.0.0.0/8"], &[], None, "[::ffff:10.0.0.1]:1").await,
            200
        );
    }

    #[tokio::test]
    async fn the_client_behind_a_trusted_proxy_is_filtered_not_the_proxy() {
        let client = ClientIp {
            ip: "203.0.113.9".parse().unwrap(),
            peer_trusted: true,
        };
        assert_eq!(
            status(&["10.0.0.0/8"], &[], Some(client), "10.0.0.1:1").await,
            403
        );
        assert_eq!(
            status(&["203.0.113.0/24"], &[], Some(client), "10.0.0.1:1").await,
            200
        );
    }

    #[tokio::test]
    async fn the_refusal_is_a_gateway_error_blamed_on_the_client() {
        let inner = tower::service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let res = IpFilterLayer::new(ranges(&["10.0.0.0/8"]), vec![])
            .layer(inner)
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        let err = res.extensions().get::<GatewayError>().unwrap();
        assert_eq!(err.kind(), GatewayErrorKind::Forbidden);
    }
}
