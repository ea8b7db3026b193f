//! parapet's own HTTP/1.1 server path for requests without a body, with hyper's behind it.
//!
//! Most requests an edge proxy serves are `GET`s with no body, on keep-alive connections. For those,
//! hyper's server connection is more machine than the work needs: a dispatcher between the socket
//! and the service, a message state machine, a body channel, an encoder. This path reads the head
//! with `httparse` straight into a `HeaderMap` whose values share the read buffer, calls the
//! connection's service, and writes the response head and a small body in one `write`.
//!
//! It serves only what it is sure to serve as hyper would. At the first request it does not take
//! (one with a body, `Expect`, `Upgrade`, `CONNECT`, HTTP/1.0, a head hyper would refuse: too large,
//! too many lines, a malformed line or target), it stops and the connection goes to hyper's
//! connection, the bytes read so far replayed first ([`ConnIo`]); hyper then answers it, 4xx
//! included, exactly as before. When that hyper connection is released idle, the next request
//! comes here again.
//!
//! The response is written as hyper writes it (`hyper::proto::h1::role::Server::encode`): the
//! status line with the upstream's own reason phrase, the headers in order, the framing chosen from
//! the response's `Content-Length` or `Transfer-Encoding` or from the body's exact size (else
//! chunked), no body for `HEAD`, 204 and 304, a `date` header, trailers only to a client that sent
//! `TE: trailers` and only the fields the response's `Trailer` names, `connection: close` when the
//! connection closes after it. A body that ends early or fails closes the connection, so a client
//! never takes a cut body for a whole one.
//!
//! Timing is the connection's [`Clock`]'s, as on hyper's path: the head timeout (slow heads, idle
//! keep-alive), `body_timeout` for a client that does not read its response, the idle release (the
//! read buffer given back), and draining at shutdown. While a request is in flight the client's
//! socket is still read, as hyper reads it: a client that hangs up cancels its request (a 499 in the
//! access log), and a pipelined request waits in the buffer.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use http_body::Body as _;
use parapet_middlewares::Body;
use tokio::sync::watch;

use super::connection::ConnectionService;
use super::http1::{ClientStream, Clock, ConnIo, Quiet, ServedBody};
use super::{Phase, PhaseWait};
use crate::proxy::h1::{
    ends_chunked, has_token, header_name, length_digits, span_room, FieldSpans,
};
use crate::router::{HeadFacts, PROXY};

/// What a connection's lean path works with, taken when the connection was accepted.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// `server.max_header_size`: a larger head goes to hyper, which answers 431.
    pub(super) max_header_size: usize,
    /// `server.max_headers`: more lines go to hyper, which answers 431.
    pub(super) max_headers: usize,
    /// `server.header_timeout`.
    pub(super) header_timeout: Duration,
    /// `server.body_timeout`.
    pub(super) body_timeout: Duration,
    /// `server.idle_release` in clock ticks; 0: the moment the connection is idle.
    pub(super) release_after: u32,
}

/// How the lean path left the connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Lean {
    /// Idle, nothing read: the read buffer is given back, the socket waits for the next request.
    Idle,
    /// A request it does not serve: hyper's connection takes over, `ConnIo`'s replay holding the
    /// bytes read and not served.
    HandOff,
    /// The connection is done: closed by either side, timed out, or drained.
    Closed,
}

/// The read buffer's first size; a head that does not fit makes it grow, up to `max_header_size`.
/// Also the size of the buffer a connection's first bytes are read into (`accept::sniff`), which
/// becomes the first session's.
pub(super) const READ_BUF: usize = 4096;
/// Header lines parsed in place on the stack, as hyper's default; a head with more lines (allowed
/// by a larger `max_headers`) goes to hyper.
const MAX_HEADERS: usize = 100;
// A head's field spans are kept in a `FieldSpans`, which holds the upstream client's maximum.
const _: () = assert!(MAX_HEADERS <= crate::proxy::h1::MAX_HEADERS);
/// A body frame up to this size is copied beside the head and sent in one `write`; a larger one is
/// sent from where it is, in a vectored write with the head.
const COPY_UNDER: usize = 1024;
/// Bytes the socket is still read for while a request is in flight (pipelined requests); then
/// reading pauses until the response is out.
const READ_AHEAD: usize = 64 * 1024;

/// A request head the lean path serves.
struct Head {
    request: http::Request<Body>,
    /// The client asked to close after this response (`Connection: close`).
    close: bool,
    /// The client accepts trailers (`TE: trailers`).
    trailers: bool,
    /// Which fields the head has, for the router's admission.
    facts: HeadFacts,
}

// Returned once per head and matched at once, never stored: boxing the head would allocate for
// every request.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Head(Head),
    /// More bytes are needed.
    Partial,
    /// Not for the lean path: hyper's connection takes it from the buffer's start.
    HandOff,
}

/// Serves requests on `io` until the connection closes, goes idle, or sends a request this path
/// leaves to hyper.
pub(super) async fn serve<S: ClientStream>(
    io: &mut ConnIo<S>,
    first: BytesMut,
    service: &ConnectionService,
    quiet: &Arc<Quiet>,
    clock: &mut Clock,
    limits: &Limits,
    phase: &mut watch::Receiver<Phase>,
) -> Lean {
    // The read buffer and the response head's are the thread's between requests (`crate::spare`):
    // taken when a request starts (below, before the first read), given back when its response is
    // out and nothing more was read, and when the session ends however it ends (an empty one
    // only), so that a request works in memory another just used rather than in its connection's,
    // which has gone cold since its last request when a thread serves many connections.
    //
    // A connection's first bytes were read into such a buffer while its protocol was told
    // (`accept::sniff`): that is `first`, which becomes the session's, the first head parsed where
    // it is. Other bytes read before a session (hyper's read-ahead, an idle connection's next
    // bytes, in buffers of their size) are `io`'s replay, copied into the session's by its first
    // read.
    let mut buf = first;
    // The listener's phases, watched by one future each for the whole session rather than one per
    // wait: each ends the session when it resolves, so neither is polled again after.
    // The connection's own receiver tells them when the phase changed (see `PhaseWait`).
    let (mut draining, mut closing) = (phase.clone(), phase.clone());
    let draining = pin!(draining.wait_for(|p| *p >= Phase::Draining));
    let closing = pin!(closing.wait_for(|p| *p >= Phase::Closing));
    let mut draining = PhaseWait::new(draining, phase);
    let mut closing = PhaseWait::new(closing, phase);
    let end = 'session: loop {
        // A whole head, from what is buffered or read now, and at once the request's future, made
        // where it stays (this state's slot, pinned) and dropped once its response is out of it.
        // The head itself never lies in this state: a `let head = loop { .. }` around the reads'
        // awaits would keep its place here (its storage is live from the `let`), and the request
        // (some 260 bytes) would be written into memory the connection's last request left cold,
        // then copied out of it. The future passed by value to `respond` was copied three times.
        let (head_only, client_close, trailers);
        let response = {
            let dispatch = pin!(loop {
                match parse(&mut buf, limits) {
                    Parsed::Head(head) => {
                        head_only = head.request.method() == Method::HEAD;
                        (client_close, trailers) = (head.close, head.trailers);
                        break service.dispatch_noted(head.request, head.facts);
                    }
                    Parsed::HandOff => {
                        io.replay = std::mem::take(&mut buf).freeze();
                        break 'session Lean::HandOff;
                    }
                    Parsed::Partial => {}
                }
                if buf.capacity() == 0 {
                    buf = crate::spare::take_read_buf(READ_BUF);
                }
                match read_more(io, &mut buf, quiet, clock, limits, Pin::new(&mut draining)).await {
                    Read::Bytes => {}
                    Read::Idle => break 'session Lean::Idle,
                    Read::Closed => break 'session Lean::Closed,
                }
            });
            respond(io, &mut buf, dispatch, Pin::new(&mut closing)).await
        };
        let Some(response) = response else {
            break 'session Lean::Closed;
        };
        // Draining: this response is the connection's last, as hyper's graceful shutdown has it.
        let close = client_close || *phase.borrow() >= Phase::Draining;
        let mut client = Client {
            io: &mut *io,
            quiet,
            clock: &mut *clock,
            limits,
        };
        let mut out = crate::spare::take_out();
        let sent = send(&mut client, &mut out, response, head_only, close, trailers).await;
        crate::spare::give_out(out);
        match sent {
            Ok(true) => {
                if buf.is_empty() {
                    crate::spare::give_read_buf(std::mem::take(&mut buf));
                }
            }
            Ok(false) => {
                // The last response is out: over TLS, close the sending side as hyper does (a
                // plain socket's close, which follows, does the same).
                if S::SHUTDOWN_BEFORE_CLOSE {
                    let _ =
                        poll_fn(|cx| hyper::rt::Write::poll_shutdown(Pin::new(&mut *io), cx)).await;
                }
                break 'session Lean::Closed;
            }
            Err(err) => {
                tracing::debug!(error = %err, "response not sent whole: closing");
                break 'session Lean::Closed;
            }
        }
    };
    // However the session ended, an empty buffer goes back to the thread (one that holds bytes, a
    // request cut short, is dropped with them).
    crate::spare::give_read_buf(buf);
    end
}

/// What a read for more of a request head came to.
enum Read {
    Bytes,
    Idle,
    Closed,
}

/// Reads more of a head into `buf`, timing the wait by the connection's clock.
async fn read_more<S: ClientStream, D: Future>(
    io: &mut ConnIo<S>,
    buf: &mut BytesMut,
    quiet: &Quiet,
    clock: &mut Clock,
    limits: &Limits,
    mut draining: Pin<&mut D>,
) -> Read {
    let empty = buf.is_empty();
    if empty && limits.release_after == 0 {
        // Released the moment it is idle: read only what is there now.
        return match poll_fn(|cx| Poll::Ready(io.poll_read_buf(cx, buf))).await {
            Poll::Ready(Ok(0) | Err(_)) => Read::Closed,
            Poll::Ready(Ok(_)) => Read::Bytes,
            Poll::Pending => Read::Idle,
        };
    }
    loop {
        tokio::select! {
            biased;
            read = poll_fn(|cx| io.poll_read_buf(cx, buf)) => {
                return match read {
                    Ok(0) | Err(_) => Read::Closed,
                    Ok(_) => Read::Bytes,
                };
            }
            alarm = poll_fn(|cx| clock.poll_tick(cx, quiet, limits.header_timeout, limits.body_timeout)) => {
                if alarm.is_some() {
                    tracing::debug!("no request head within the timeout: closing");
                    return Read::Closed;
                }
                if empty && clock.quiet_ticks() >= limits.release_after {
                    return Read::Idle;
                }
            }
            // The listener drains: an idle connection closes, and so does one whose next head is
            // under way (not yet a request; its client may send it again elsewhere), so that no
            // slow head holds a drain up until the header timeout.
            _ = draining.as_mut() => return Read::Closed,
        }
    }
}

/// Waits for the response, reading the socket meanwhile as hyper does: a client that hangs up
/// cancels the request (`None`), and a pipelined request's bytes wait in `buf`.
async fn respond<S: ClientStream, D: Future>(
    io: &mut ConnIo<S>,
    buf: &mut BytesMut,
    mut dispatch: Pin<&mut super::connection::DispatchFuture>,
    mut closing: Pin<&mut D>,
) -> Option<http::Response<ServedBody>> {
    let mut reading = true;
    // One poll of each per wake-up: the response first (at once, from an in-process handler).
    poll_fn(|cx| {
        if let Poll::Ready(Ok(response)) = dispatch.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        while reading {
            match io.poll_read_buf(cx, buf) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => reading = buf.len() < READ_AHEAD,
                Poll::Pending => break,
            }
        }
        if closing.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// How a response's body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// Exactly this many bytes follow the head (0: none).
    Length(u64),
    /// Chunked (RFC 9112 §7.1).
    Chunked,
}

/// The body's length as hyper's encoder sees it: `None` for an empty body.
fn body_length(body: &ServedBody) -> Option<Option<u64>> {
    if body.is_end_stream() {
        None
    } else {
        Some(body.size_hint().exact())
    }
}

/// The client's side of the connection, as writing to it needs it: the socket, the connection's
/// state and clock, and the limits that time a client that does not read.
struct Client<'a, S> {
    io: &'a mut ConnIo<S>,
    quiet: &'a Quiet,
    clock: &'a mut Clock,
    limits: &'a Limits,
}

/// Writes the response: its head, then its body framed as hyper frames it. `Ok(true)`: the
/// connection stays open for the next request.
async fn send<S: ClientStream>(
    client: &mut Client<'_, S>,
    out: &mut Vec<u8>,
    response: http::Response<ServedBody>,
    head_only: bool,
    mut close: bool,
    trailers: bool,
) -> io::Result<bool> {
    let (mut parts, body) = response.into_parts();
    if parts.status.is_informational() {
        // A 1xx as the final answer to a request that asked for no upgrade (a 101's tunnel goes
        // with the request's `Upgrade`, which hyper serves): as hyper, a 500, and close.
        tracing::warn!(status = %parts.status, "a 1xx response to a request without an upgrade: 500");
        client.quiet.drop_tunnel();
        parts = http::Response::new(()).into_parts().0;
        parts.status = StatusCode::INTERNAL_SERVER_ERROR;
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        drop(body);
        encode_head(out, &parts, None, head_only, true, &mut false)?;
        client.write_all(&mut [IoSlice::new(out)]).await?;
        return Ok(false);
    }
    let length = body_length(&body);
    let framing = encode_head(out, &parts, length, head_only, close, &mut close)?;
    // Trailers go only to a client that accepts them, and only the fields `Trailer` names.
    let allowed: Option<Vec<HeaderName>> =
        (trailers && framing == Framing::Chunked && parts.headers.contains_key(header::TRAILER))
            .then(|| {
                parts
                    .headers
                    .get_all(header::TRAILER)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok())
                    .collect()
            });
    // Emptied there, its room kept for another request's head.
    crate::spare::give_headers(std::mem::take(&mut parts.headers));
    drop(parts);
    let body = pin!(body);
    let whole = write_body(client, out, body, framing, allowed.as_deref()).await?;
    Ok(whole && !close)
}

/// Writes the response head into `out` as hyper's `Server::encode` does; returns the body's
/// framing. `close`: the connection closes after this response; set further if a `Connection`
/// header of the response says so.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    length: Option<Option<u64>>,
    head_only: bool,
    close_in: bool,
    close: &mut bool,
) -> io::Result<Framing> {
    let status = parts.status;
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if status == StatusCode::OK && reason.is_none() {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        match reason {
            Some(reason) => out.extend_from_slice(reason.as_bytes()),
            None => out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    }
    // RFC 9110 §6.4.1: no content for HEAD, 204 and 304 (1xx never reach here).
    let bodiless_status = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let can_chunk = !head_only && !bodiless_status;
    let mut framing = None;
    let mut wrote_date = false;
    let mut wrote_close = false;
    let mut te_last_chunked = true;
    let mut te_open = false;
    for (name, value) in &parts.headers {
        if te_open && name != header::TRANSFER_ENCODING {
            close_te(out, te_last_chunked);
            te_open = false;
        }
        match *name {
            header::CONTENT_LENGTH => {
                if framing == Some(Framing::Chunked) {
                    // Transfer-Encoding came first and wins (RFC 9112 §6.3).
                    continue;
                }
                match length {
                    None if !head_only => continue,
                    None => {}
                    Some(Some(known)) => {
                        if framing.is_some() {
                            continue;
                        }
                        framing = Some(Framing::Length(known));
                    }
                    Some(None) => {
                        let Some(len) = length_digits(value.as_bytes()) else {
                            return Err(io::Error::other(
                                "a response with an invalid content-length",
                            ));
                        };
                        match framing {
                            Some(Framing::Length(prev)) if prev != len => {
                                return Err(io::Error::other(
                                    "a response with differing content-lengths",
                                ));
                            }
                            Some(_) => continue,
                            None => framing = Some(Framing::Length(len)),
                        }
                    }
                }
            }
            header::TRANSFER_ENCODING => {
                if !can_chunk {
                    continue;
                }
                if framing.is_some() && !te_open && framing != Some(Framing::Chunked) {
                    return Err(io::Error::other(
                        "a response with both content-length and transfer-encoding",
                    ));
                }
                te_last_chunked = ends_chunked(value);
                if te_open {
                    out.extend_from_slice(b", ");
                } else {
                    out.extend_from_slice(b"transfer-encoding: ");
                    te_open = true;
                }
                out.extend_from_slice(value.as_bytes());
                framing = Some(Framing::Chunked);
                continue;
            }
            header::CONNECTION if has_token(value, "close") => {
                *close = true;
                wrote_close = true;
            }
            header::DATE => wrote_date = true,
            header::TRAILER if !can_chunk => continue,
            _ => {}
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if te_open {
        close_te(out, te_last_chunked);
    }
    let framing = match framing {
        Some(framing) => framing,
        None => match length {
            // Unknown length: chunked, or nothing for a bodiless answer.
            Some(None) if can_chunk => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            Some(None) => Framing::Length(0),
            None | Some(Some(0)) => {
                if !bodiless_status && !head_only {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            Some(Some(len)) => {
                if !bodiless_status {
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                Framing::Length(len)
            }
        },
    };
    if close_in && !wrote_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(if can_chunk {
        framing
    } else {
        Framing::Length(0)
    })
}

/// Ends a `transfer-encoding` line, with `chunked` last as RFC 9112 §6.1 requires.
fn close_te(out: &mut Vec<u8>, last_chunked: bool) {
    if !last_chunked {
        out.extend_from_slice(b", chunked");
    }
    out.extend_from_slice(b"\r\n");
}

/// Sends the body after the head held in `out`. `Ok(false)`: the body ended short of its length
/// and the connection must close.
async fn write_body<S: ClientStream>(
    client: &mut Client<'_, S>,
    out: &mut Vec<u8>,
    mut body: Pin<&mut ServedBody>,
    framing: Framing,
    trailers: Option<&[HeaderName]>,
) -> io::Result<bool> {
    let mut remaining = match framing {
        Framing::Length(0) => {
            client.write_all(&mut [IoSlice::new(out)]).await?;
            return Ok(true);
        }
        Framing::Length(n) => n,
        Framing::Chunked => u64::MAX,
    };
    loop {
        // The head waits for the first frame, to go out in one write with it, unless the frame is
        // not ready yet: then the head goes now (a stream's client sees it at once).
        let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    client.write_all(&mut [IoSlice::new(out)]).await?;
                    out.clear();
                }
                poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    if data.is_empty() {
                        continue;
                    }
                    let mut chunk = [0u8; 20];
                    let mut too_long = false;
                    // The body's last chunk takes the terminator along in its write: one write and
                    // one segment per response, not a second for five bytes.
                    let last = framing == Framing::Chunked && body.is_end_stream();
                    let (size_line, tail): (&[u8], &[u8]) = if framing == Framing::Chunked {
                        let tail: &[u8] = if last { b"\r\n0\r\n\r\n" } else { b"\r\n" };
                        (chunk_size(&mut chunk, data.len()), tail)
                    } else {
                        if data.len() as u64 > remaining {
                            // More than the length said: send what it promised, then close.
                            data.truncate(remaining as usize);
                            too_long = true;
                        }
                        remaining -= data.len() as u64;
                        (&[], &[])
                    };
                    if data.len() <= COPY_UNDER {
                        out.extend_from_slice(size_line);
                        out.extend_from_slice(&data);
                        out.extend_from_slice(tail);
                        client.write_all(&mut [IoSlice::new(out)]).await?;
                    } else {
                        out.extend_from_slice(size_line);
                        client
                            .write_all(&mut [
                                IoSlice::new(out),
                                IoSlice::new(&data),
                                IoSlice::new(tail),
                            ])
                            .await?;
                    }
                    out.clear();
                    if remaining == 0 {
                        // The whole length is out: what the body holds beyond it is not sent.
                        return Ok(!too_long);
                    }
                    if last {
                        return Ok(true);
                    }
                }
                Err(frame) => {
                    // Trailers end the body.
                    if framing != Framing::Chunked {
                        continue;
                    }
                    out.extend_from_slice(b"0\r\n");
                    if let (Some(allowed), Ok(fields)) = (trailers, frame.into_trailers()) {
                        for (name, value) in &fields {
                            if allowed.contains(name) && trailer_allowed(name) {
                                out.extend_from_slice(name.as_str().as_bytes());
                                out.extend_from_slice(b": ");
                                out.extend_from_slice(value.as_bytes());
                                out.extend_from_slice(b"\r\n");
                            }
                        }
                    }
                    out.extend_from_slice(b"\r\n");
                    client.write_all(&mut [IoSlice::new(out)]).await?;
                    return Ok(true);
                }
            },
            None => {
                if framing == Framing::Chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                    client.write_all(&mut [IoSlice::new(out)]).await?;
                    return Ok(true);
                }
                // Ended short of its length: what was sent stands, and the connection closes.
                if !out.is_empty() {
                    client.write_all(&mut [IoSlice::new(out)]).await?;
                }
                tracing::debug!(
                    missing = remaining,
                    "response body ended short of its length"
                );
                return Ok(false);
            }
            Some(Err(err)) => {
                if !out.is_empty() {
                    client.write_all(&mut [IoSlice::new(out)]).await?;
                }
                return Err(io::Error::other(err));
            }
        }
    }
}

/// Fields never sent as trailers (RFC 9110 §6.5.1: framing, routing, authentication and control).
fn trailer_allowed(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::AUTHORIZATION
            | header::CACHE_CONTROL
            | header::CONTENT_ENCODING
            | header::CONTENT_LENGTH
            | header::CONTENT_RANGE
            | header::CONTENT_TYPE
            | header::HOST
            | header::MAX_FORWARDS
            | header::SET_COOKIE
            | header::TE
            | header::TRAILER
            | header::TRANSFER_ENCODING
    )
}

/// A chunk's size line: the length in hex and CRLF.
fn chunk_size(buf: &mut [u8; 20], len: usize) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = buf.len() - 2;
    buf[at..].copy_from_slice(b"\r\n");
    let mut n = len;
    loop {
        at -= 1;
        buf[at] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

impl<S: ClientStream> Client<'_, S> {
    /// Writes every slice, flushes, and times a client that does not read by the connection's
    /// clock: `body_timeout` of stalled ticks fails the write.
    async fn write_all(&mut self, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        let Client {
            io,
            quiet,
            clock,
            limits,
        } = self;
        let mut bufs = bufs;
        IoSlice::advance_slices(&mut bufs, 0);
        let mut flushed = false;
        poll_fn(|cx| loop {
            if bufs.is_empty() {
                if flushed {
                    return Poll::Ready(Ok(()));
                }
                match hyper::rt::Write::poll_flush(Pin::new(&mut *io), cx) {
                    Poll::Ready(Ok(())) => {
                        flushed = true;
                        continue;
                    }
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => {}
                }
            } else {
                match hyper::rt::Write::poll_write_vectored(Pin::new(&mut *io), cx, bufs) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        IoSlice::advance_slices(&mut bufs, n);
                        continue;
                    }
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => {}
                }
            }
            // The client does not take what is written: the clock times it.
            match clock.poll_tick(cx, quiet, limits.header_timeout, limits.body_timeout) {
                Poll::Ready(Some(_)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client did not read its response within server.body_timeout",
                    )))
                }
                // A tick without an alarm: the clock re-armed; wait on it again.
                Poll::Ready(None) => continue,
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    }
}

/// Parses a request head at the start of `buf`; a served one is split off it.
fn parse(buf: &mut BytesMut, limits: &Limits) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    // Where each header's name and value are in the head: (name start, name end, value start,
    // value end).
    let mut room = span_room();
    let mut at = FieldSpans::new(&mut room);
    let max = limits.max_headers.min(MAX_HEADERS);
    let (len, method, path, count) = {
        let mut req = httparse::Request::new(&mut []);
        let bytes: &[u8] = buf;
        let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            bytes,
            &mut slots[..max],
        ) {
            Ok(httparse::Status::Complete(len)) if len <= limits.max_header_size => len,
            Ok(httparse::Status::Partial) if bytes.len() < limits.max_header_size => {
                return Parsed::Partial
            }
            // Too large, too many lines, malformed: hyper answers it.
            _ => return Parsed::HandOff,
        };
        if req.version != Some(1) {
            return Parsed::HandOff;
        }
        let method = match req.method.map(|m| Method::from_bytes(m.as_bytes())) {
            Some(Ok(m)) if m != Method::CONNECT => m,
            _ => return Parsed::HandOff,
        };
        let base = bytes.as_ptr() as usize;
        let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        let path = req.path.expect("a complete head has a target");
        let path = (offset(path.as_bytes()), path.len() as u32);
        for h in req.headers.iter() {
            let name = offset(h.name.as_bytes());
            let value = offset(h.value);
            at.push((
                name,
                name + h.name.len() as u32,
                value,
                value + h.value.len() as u32,
            ));
        }
        (len, method, path, req.headers.len())
    };
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path.0 as usize..(path.0 + path.1) as usize))
    else {
        return hand_back(buf, head);
    };
    // A response's map, emptied (`crate::spare`): its room is what a proxied request grows to
    // (hyper keeps the last response's the same way).
    let mut headers = crate::spare::take_headers(count);
    // Which of the fields the router's admission looks for are here.
    let mut facts = HeadFacts {
        connection: false,
        proxy: false,
    };
    let mut close = false;
    let mut trailers = false;
    for &(n0, n1, v0, v1) in at.as_slice() {
        let Ok(name) = header_name(&head[n0 as usize..n1 as usize]) else {
            return hand_back(buf, head);
        };
        // SAFETY: httparse accepted the value: visible ASCII, obs-text, spaces and tabs, which is
        // what `HeaderValue` allows (hyper builds its values the same way).
        let value = unsafe {
            HeaderValue::from_maybe_shared_unchecked(head.slice(v0 as usize..v1 as usize))
        };
        match name {
            header::CONTENT_LENGTH if value.as_bytes() == b"0" => {}
            header::CONTENT_LENGTH
            | header::TRANSFER_ENCODING
            | header::EXPECT
            | header::UPGRADE => return hand_back(buf, head),
            header::CONNECTION => {
                facts.connection = true;
                close |= has_token(&value, "close");
            }
            header::TE => trailers |= has_token(&value, "trailers"),
            _ => facts.proxy |= name == PROXY,
        }
        headers.append(name, value);
    }
    let mut request = http::Request::new(Body::empty());
    *request.extensions_mut() = crate::spare::take();
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parsed::Head(Head {
        request,
        close,
        trailers,
        facts,
    })
}

/// Puts a head split off `buf` back before what follows it, for hyper's connection to read.
fn hand_back(buf: &mut BytesMut, head: bytes::Bytes) -> Parsed {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(&head);
    whole.extend_from_slice(buf);
    *buf = whole;
    Parsed::HandOff
}

/// The `date` header's value, formatted once a second per thread.
fn date(out: &mut Vec<u8>) {
    use std::cell::Cell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static DATE: Cell<(u64, [u8; 29])> = const { Cell::new((0, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cached| {
        let (at, mut value) = cached.get();
        if at != secs {
            value.copy_from_slice(httpdate::fmt_http_date(now).as_bytes());
            cached.set((secs, value));
        }
        out.extend_from_slice(&value);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_header_size: 32 * 1024,
            max_headers: 100,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            release_after: 1,
        }
    }

    fn parsed(bytes: &[u8]) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        (parse(&mut buf, &limits()), buf)
    }

    #[test]
    fn a_head_notes_whether_it_has_connection_and_proxy_lines() {
        let facts = |bytes: &[u8]| {
            let Parsed::Head(head) = parsed(bytes).0 else {
                panic!("not parsed")
            };
            (head.facts.connection, head.facts.proxy)
        };
        assert_eq!(facts(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), (false, false));
        assert_eq!(
            facts(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: x-a\r\n\r\n"),
            (true, false)
        );
        assert_eq!(
            facts(b"GET / HTTP/1.1\r\nHost: x\r\nPROXY: http://e\r\n\r\n"),
            (false, true)
        );
    }

    #[test]
    fn heads_on_one_thread_get_their_own_names_whatever_the_last_one_sent() {
        // One thread's names across the heads: the same names, other cases, other names at the
        // same positions, fewer and more lines.
        let heads: [&[u8]; 4] = [
            b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: a\r\nX-One: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: a\r\nX-One: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: x\r\nX-Two: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHOST: x\r\nX-Two: 2\r\nuser-agent: b\r\nAccept: */*\r\n\r\n",
        ];
        let expected: [&[&str]; 4] = [
            &["host", "user-agent", "x-one"],
            &["host", "user-agent", "x-one"],
            &["host", "x-two"],
            &["host", "x-two", "user-agent", "accept"],
        ];
        for (head, expected) in heads.iter().zip(expected) {
            let mut buf = BytesMut::from(*head);
            let Parsed::Head(head) = parse(&mut buf, &limits()) else {
                panic!("not parsed")
            };
            let got: Vec<&str> = head.request.headers().keys().map(|k| k.as_str()).collect();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn a_get_is_parsed_and_split_off_what_follows() {
        let (p, rest) = parsed(b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\nConnection: keep-alive, Close\r\n\r\nGET /next");
        let Parsed::Head(head) = p else {
            panic!("not parsed")
        };
        assert_eq!(head.request.method(), Method::GET);
        assert_eq!(head.request.uri(), "/a?b");
        assert_eq!(head.request.headers()["host"], "x");
        assert_eq!(head.request.headers().get_all("x-a").iter().count(), 2);
        assert!(head.close);
        assert!(!head.trailers);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn requests_it_does_not_serve_are_left_to_hyper_whole() {
        for bytes in [
            &b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\nhost: x:443\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header: x\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\nhost: x\r\n\r\n",
            b"GET http://[::1 HTTP/1.1\r\nhost: x\r\n\r\n",
        ] {
            let (p, rest) = parsed(bytes);
            assert!(
                matches!(p, Parsed::HandOff),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
            assert_eq!(&rest[..], bytes, "nothing consumed");
        }
    }

    #[test]
    fn a_head_in_pieces_waits_and_one_too_large_goes_to_hyper() {
        assert!(matches!(
            parsed(b"GET / HTTP/1.1\r\nhost").0,
            Parsed::Partial
        ));
        let mut limits = limits();
        limits.max_header_size = 1024;
        let big = format!("GET / HTTP/1.1\r\nx: {}", "a".repeat(1100));
        let mut buf = BytesMut::from(big.as_bytes());
        assert!(matches!(parse(&mut buf, &limits), Parsed::HandOff));
        limits.max_headers = 2;
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n"[..]);
        assert!(matches!(parse(&mut buf, &limits), Parsed::HandOff));
    }

    fn head(
        status: u16,
        headers: &[(&str, &str)],
        length: Option<Option<u64>>,
        head_only: bool,
    ) -> (String, Framing, bool) {
        let mut response = http::Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (n, v) in headers {
            response.headers_mut().append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let (parts, ()) = response.into_parts();
        let mut out = Vec::new();
        let mut close = false;
        let framing = encode_head(&mut out, &parts, length, head_only, false, &mut close).unwrap();
        let text = String::from_utf8(out).unwrap();
        let text = text.split("date: ").next().unwrap().to_owned();
        (text, framing, close)
    }

    #[test]
    fn heads_are_framed_as_hyper_frames_them() {
        type Case = (
            u16,
            &'static [(&'static str, &'static str)],
            Option<Option<u64>>,
            bool,
        );
        let ok = "HTTP/1.1 200 OK\r\n";
        // (status, headers, the body's length, HEAD), then the head written and the framing.
        let cases: [(Case, String, Framing); 11] = [
            (
                (200, &[("x", "1")], Some(Some(5)), false),
                format!("{ok}x: 1\r\ncontent-length: 5\r\n"),
                Framing::Length(5),
            ),
            (
                (200, &[("content-length", "5")], Some(Some(5)), false),
                format!("{ok}content-length: 5\r\n"),
                Framing::Length(5),
            ),
            (
                (200, &[("content-length", "7")], Some(None), false),
                format!("{ok}content-length: 7\r\n"),
                Framing::Length(7),
            ),
            (
                (200, &[], Some(None), false),
                format!("{ok}transfer-encoding: chunked\r\n"),
                Framing::Chunked,
            ),
            (
                (200, &[("transfer-encoding", "gzip")], Some(None), false),
                format!("{ok}transfer-encoding: gzip, chunked\r\n"),
                Framing::Chunked,
            ),
            // `chunked` must come last (RFC 9112 §6.1): listed before another coding, it is
            // added again at the end.
            (
                (
                    200,
                    &[("transfer-encoding", "chunked, gzip")],
                    Some(None),
                    false,
                ),
                format!("{ok}transfer-encoding: chunked, gzip, chunked\r\n"),
                Framing::Chunked,
            ),
            (
                (200, &[], None, false),
                format!("{ok}content-length: 0\r\n"),
                Framing::Length(0),
            ),
            (
                (204, &[], None, false),
                "HTTP/1.1 204 No Content\r\n".into(),
                Framing::Length(0),
            ),
            (
                (304, &[("content-length", "9")], Some(Some(9)), false),
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n".into(),
                Framing::Length(0),
            ),
            // HEAD: the length the GET would have, no body.
            (
                (200, &[("content-length", "9")], None, true),
                format!("{ok}content-length: 9\r\n"),
                Framing::Length(0),
            ),
            ((200, &[], Some(None), true), ok.into(), Framing::Length(0)),
        ];
        for ((status, headers, length, head_only), text, framing) in cases {
            assert_eq!(
                head(status, headers, length, head_only),
                (text, framing, false),
                "{status} {headers:?} {length:?} HEAD {head_only}"
            );
        }
        assert!(head(200, &[("connection", "close")], None, false).2);
        assert!(head(200, &[("connection", "keep-alive")], None, false)
            .0
            .contains("connection: keep-alive\r\n"));
        // A length the response cannot be framed by closes the connection unanswered, as hyper.
        let mut bad = http::Response::new(());
        bad.headers_mut()
            .insert("content-length", HeaderValue::from_static("x"));
        let (parts, ()) = bad.into_parts();
        assert!(encode_head(
            &mut Vec::new(),
            &parts,
            Some(None),
            false,
            false,
            &mut false
        )
        .is_err());
    }

    /// A body of these frames, each ready at once; it says it has ended once none is left.
    struct Frames(std::collections::VecDeque<http_body::Frame<bytes::Bytes>>);

    impl http_body::Body for Frames {
        type Data = bytes::Bytes;
        type Error = parapet_middlewares::BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// A client socket that counts the writes made to it (each one a system call).
    struct Counted {
        inner: tokio::net::TcpStream,
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Counted {
        fn count(&self, polled: &Poll<io::Result<usize>>) {
            if let Poll::Ready(Ok(_)) = polled {
                self.writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    impl tokio::io::AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
            self.count(&polled);
            polled
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            self.count(&polled);
            polled
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    impl ClientStream for Counted {
        async fn next_bytes(&mut self) -> Option<bytes::Bytes> {
            self.inner.next_bytes().await
        }
    }

    /// Sends a response of `status` for a GET on a real socket, as the lean path does; what the
    /// client read and whether the connection may stay open.
    async fn sent(
        status: u16,
        headers: &[(&str, &str)],
        frames: Vec<http_body::Frame<bytes::Bytes>>,
        te_trailers: bool,
    ) -> (String, bool) {
        let (raw, keep, _) = sent_counted(status, headers, frames, te_trailers).await;
        (raw, keep)
    }

    /// [`sent`], and how many writes it took.
    async fn sent_counted(
        status: u16,
        headers: &[(&str, &str)],
        frames: Vec<http_body::Frame<bytes::Bytes>>,
        te_trailers: bool,
    ) -> (String, bool, usize) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let server = Counted {
            inner: server,
            writes: Arc::clone(&writes),
        };
        let quiet = Arc::new(Quiet::default());
        let mut io = ConnIo::new(server, bytes::Bytes::new(), Arc::clone(&quiet));
        let mut clock = Clock::new();
        let mut response =
            http::Response::new(ServedBody::new(Body::new(Frames(frames.into())), None));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (n, v) in headers {
            response.headers_mut().append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let limits = limits();
        let mut writer = Client {
            io: &mut io,
            quiet: &quiet,
            clock: &mut clock,
            limits: &limits,
        };
        let keep = send(
            &mut writer,
            &mut Vec::new(),
            response,
            false,
            false,
            te_trailers,
        )
        .await
        .unwrap();
        drop(io);
        let mut raw = Vec::new();
        client.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).unwrap();
        // The date aside.
        let (before, after) = raw.split_once("date: ").unwrap();
        (
            format!("{before}{}", &after[after.find("\r\n").unwrap() + 2..]),
            keep,
            writes.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    fn data(s: &str) -> http_body::Frame<bytes::Bytes> {
        http_body::Frame::data(bytes::Bytes::copy_from_slice(s.as_bytes()))
    }

    fn trailers() -> http_body::Frame<bytes::Bytes> {
        let mut t = http::HeaderMap::new();
        t.insert("x-sum", HeaderValue::from_static("5"));
        t.insert("x-other", HeaderValue::from_static("1"));
        t.insert("content-length", HeaderValue::from_static("9"));
        http_body::Frame::trailers(t)
    }

    #[tokio::test]
    async fn bodies_are_chunked_with_the_trailers_a_client_asked_for() {
        let big = "x".repeat(2000);
        let (raw, keep) = sent(
            200,
            &[("trailer", "x-sum, content-length")],
            vec![data("abc"), data(&big), trailers()],
            true,
        )
        .await;
        assert_eq!(
            raw,
            format!("HTTP/1.1 200 OK\r\ntrailer: x-sum, content-length\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n7d0\r\n{big}\r\n0\r\nx-sum: 5\r\n\r\n")
        );
        assert!(keep);
        // No `TE: trailers` from the client: none sent.
        let (raw, keep) = sent(
            200,
            &[("trailer", "x-sum")],
            vec![data("abc"), trailers()],
            false,
        )
        .await;
        assert!(raw.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), "{raw}");
        assert!(keep);
    }

    #[tokio::test]
    async fn a_chunked_body_goes_out_with_its_terminator_in_its_last_write() {
        // One frame that ends the body (a compressed whole body): head, chunk and terminator in
        // one write, small or large (written from the frame's own buffer).
        for len in [3, 2000] {
            let body = "x".repeat(len);
            let (raw, keep, writes) = sent_counted(200, &[], vec![data(&body)], false).await;
            assert_eq!(
                raw,
                format!(
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{len:x}\r\n{body}\r\n0\r\n\r\n"
                )
            );
            assert!(keep);
            assert_eq!(writes, 1, "{len} bytes");
        }
        // Two frames: the head goes with the first, the terminator with the last.
        let (raw, _, writes) = sent_counted(200, &[], vec![data("ab"), data("c")], false).await;
        assert!(
            raw.ends_with("\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"),
            "{raw}"
        );
        assert_eq!(writes, 2);
        // Trailers follow the last data frame: they and the terminator go in a write of their own.
        let (raw, _, writes) = sent_counted(
            200,
            &[("trailer", "x-sum")],
            vec![data("abc"), trailers()],
            true,
        )
        .await;
        assert!(
            raw.ends_with("\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 5\r\n\r\n"),
            "{raw}"
        );
        assert_eq!(writes, 2);
    }

    #[tokio::test]
    async fn a_body_that_breaks_its_length_closes_the_connection() {
        // Shorter than it said: what came is sent, and the connection closes.
        let (raw, keep) = sent(200, &[("content-length", "9")], vec![data("abc")], false).await;
        assert!(raw.ends_with("content-length: 9\r\n\r\nabc"), "{raw}");
        assert!(!keep);
        // Longer: the length said is sent, no more, and the connection closes.
        let (raw, keep) = sent(200, &[("content-length", "2")], vec![data("abc")], false).await;
        assert!(raw.ends_with("content-length: 2\r\n\r\nab"), "{raw}");
        assert!(!keep);
        // Exactly: kept.
        let (raw, keep) = sent(
            200,
            &[("content-length", "3")],
            vec![data("a"), data("bc")],
            false,
        )
        .await;
        assert!(raw.ends_with("content-length: 3\r\n\r\nabc"), "{raw}");
        assert!(keep);
    }

    #[tokio::test]
    async fn a_1xx_as_the_final_answer_is_a_500_and_the_connection_closes() {
        let (raw, keep) = sent(103, &[("link", "</a.css>")], vec![data("abc")], false).await;
        assert_eq!(
            raw,
            "HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(!keep);
    }

    #[test]
    fn chunk_sizes_are_hex() {
        let mut b = [0; 20];
        assert_eq!(chunk_size(&mut b, 0), b"0\r\n");
        assert_eq!(chunk_size(&mut b, 255), b"ff\r\n");
        assert_eq!(chunk_size(&mut b, 4096), b"1000\r\n");
    }
}
