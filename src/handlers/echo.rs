//! `echo`: answers with a description of the request, then the request's own body.
//!
//! ```toml
//! [apps.echo]
//! handler = { kind = "echo" }
//! ```
//!
//! The response is `text/plain`: the request line, each header on a line, a blank line, then the
//! request body streamed back as it arrives. Handy as a stand-in upstream and for seeing what a proxy
//! forwards (the default config uses it behind `/api/`).

use std::convert::Infallible;
use std::fmt::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use parapet_middlewares::{Body, BoxError};

use crate::{AppService, Request, Response};

/// The service echoing every request.
pub fn service() -> AppService {
    AppService::new(tower::service_fn(|req: Request| async move {
        let (parts, body) = req.into_parts();
        let mut head = String::with_capacity(256);
        let _ = writeln!(head, "{} {} {:?}", parts.method, parts.uri, parts.version);
        for (name, value) in &parts.headers {
            let _ = writeln!(
                head,
                "{}: {}",
                name,
                String::from_utf8_lossy(value.as_bytes())
            );
        }
        head.push('\n');
        let mut response = Response::new(Body::new(Echo {
            head: Some(Bytes::from(head)),
            body,
        }));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok::<_, Infallible>(response)
    }))
}

/// The description first, then the request body's frames.
struct Echo {
    head: Option<Bytes>,
    body: Body,
}

impl HttpBody for Echo {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        let body = self.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(body.lower() + head);
        if let Some(upper) = body.upper() {
            hint.set_upper(upper + head);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn echo_body_holds_request_line_headers_and_body() {
        let req = http::Request::post("/api/x?y=1")
            .header("x-test", "yes")
            .body(Body::from("payload"))
            .unwrap();
        let response = service().oneshot(req).await.unwrap();
        let text = response.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&text).unwrap();
        assert!(text.starts_with("POST /api/x?y=1 HTTP/1.1\n"), "{text}");
        assert!(text.contains("x-test: yes\n"), "{text}");
        assert!(text.ends_with("\n\npayload"), "{text}");
    }
}
