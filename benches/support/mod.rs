//! What the in-process benchmarks share.

use hyper_util::rt::TokioIo;

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
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
