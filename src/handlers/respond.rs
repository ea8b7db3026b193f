//! `respond`: answers every request with a fixed status, body and headers.
//!
//! ```toml
//! [apps.hello]
//! handler = { kind = "respond", status = 200, body = "hello\n", headers = { "content-type" = "text/plain" } }
//! ```

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use parapet_middlewares::Body;

use crate::config::Table;
use crate::{AppService, Request, Response};

/// The settings of a `respond` handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Respond {
    /// `status`, default 200.
    pub status: StatusCode,
    /// `body`, default empty.
    pub body: Bytes,
    /// `headers`, default none.
    pub headers: HeaderMap,
}

impl Respond {
    /// The service answering every request with these settings.
    pub fn service(&self) -> AppService {
        let settings = Arc::new(self.clone());
        AppService::new(tower::service_fn(move |_req: Request| {
            let settings = Arc::clone(&settings);
            async move {
                let mut response = Response::new(Body::full(settings.body.clone()));
                *response.status_mut() = settings.status;
                // Room for the headers the layers outside add (an id, CORS, rate limits): filled
                // without growing the map (each growth is two allocations and a rehash).
                let headers = response.headers_mut();
                headers.reserve(settings.headers.len() + 6);
                headers.extend(settings.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
                Ok::<_, Infallible>(response)
            }
        }))
    }
}

/// Reads a `respond` handler's table.
pub(crate) fn parse(t: &mut Table<'_>) -> Option<Respond> {
    let status = match super::read_status(t, "status", 100..=599) {
        None => Ok(StatusCode::OK),
        Some(s) => s,
    };
    let body = t.str("body").unwrap_or("");
    let headers = match t.get("headers") {
        None => Some(HeaderMap::new()),
        Some(v) => super::read_header_map(&v),
    };
    Some(Respond {
        status: status.ok()?,
        body: Bytes::copy_from_slice(body.as_bytes()),
        headers: headers?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn respond_answers_with_its_status_headers_and_body() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let svc = Respond {
            status: StatusCode::IM_A_TEAPOT,
            body: Bytes::from_static(b"short and stout\n"),
            headers,
        }
        .service();
        let response = svc.oneshot(Request::new(Body::empty())).await.unwrap();
        assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(response.headers()["content-type"], "text/plain");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"short and stout\n");
    }
}
