//! What the in-process benchmarks share.

use std::cell::Cell;
use std::future::Future;

use hyper_util::rt::TokioIo;

thread_local! {
    /// Whether the code running on this thread is the in-process upstream's ([`hello_upstream`]).
    pub static IN_UPSTREAM: Cell<bool> = const { Cell::new(false) };
}

/// A loopback upstream in this process answering every request with `hello` (5 bytes of text/plain,
/// below `compress`'s `min_size`), HTTP/1.1 with keep-alive.
pub async fn hello_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    let mut r = http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"hello"),
                    ));
                    r.headers_mut()
                        .insert("content-type", http::HeaderValue::from_static("text/plain"));
                    Ok::<_, std::convert::Infallible>(r)
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let mut connection = std::pin::pin!(connection);
                // Marked as the upstream's while it runs, so that a benchmark can tell its
                // allocations (parsing what parapet forwards) from parapet's own.
                let _ = std::future::poll_fn(|cx| {
                    IN_UPSTREAM.set(true);
                    let polled = connection.as_mut().poll(cx);
                    IN_UPSTREAM.set(false);
                    polled
                })
                .await;
            });
        }
    });
    addr
}
