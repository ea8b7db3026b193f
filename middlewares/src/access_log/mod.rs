//! `access_log`: one line per request, written when the response ends.
//!
//! ```toml
//! [middlewares.log]
//! kind = "access_log"
//! format = "json"      # "common" | "combined" (default) | "json"
//! path = "-"           # "-" is stdout, else a file appended to (reopened on SIGUSR1)
//! ```
//!
//! Each line has the client address, the time the request arrived, the method, target and protocol,
//! the status **as sent to the client**, the body bytes actually sent, the duration to the last byte,
//! the user agent and referer; `json` adds the upstream's address and own status where there was one,
//! and which side an error came from (`"error_by": "gateway"` for parapet's own 404/502/504/500,
//! `"upstream"` for an upstream's own error status), and for a request over TLS the protocol version
//! (`"tls_version": "TLSv1.3"`) and the name the client asked for (`"sni"`), `null` otherwise.
//!
//! With a [`request_id`](crate::request_id) layer in the chain (on either side of the log), each line
//! carries the request's id: `json` as `"request_id"` (`null` without one); `combined` as one more
//! quoted field at the end of the line, after the user agent (as nginx's
//! `log_format ... "$request_id"` does); `common` lines stay the standard's.
//!
//! When the line is written:
//!
//! - the body was sent to its end: its status;
//! - the client went away before the end (or before the head): status **499**, like nginx;
//! - the body broke off (an upstream failing mid-body, a panic): the status that was sent, with
//!   `"error": "body_error"`;
//! - a `101 Switching Protocols` (a WebSocket): when its tunnel closes, with status 101, the tunnel's
//!   whole duration, and as bytes those the upstream sent the client through it; `json` adds
//!   `"tunnel": {"from_client": N, "to_client": N, "end": "closed" | "idle_timeout" | "shutdown" |
//!   "not_opened"}` (see [`crate::tunnel`]).
//!
//! Put `access_log` first in a chain, so the bytes it counts are the bytes on the wire (after
//! compression). The status is the final one wherever it sits: the server reports the status it sent
//! back to every access log the response passed through. A request never waits for the disk: lines go
//! to a writer thread ([`sink`]). What the log needs from the server (reporting that status, flushing
//! at shutdown, reopening on SIGUSR1, the client's address, signalling the panics it catches) is the
//! [host contract](crate::host).

pub mod format;
pub mod sink;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};

pub use format::Format;
pub use sink::{dropped_lines, Sink, Target};

use crate::host::PanicSignal;
use crate::intercept::{Intercept, InterceptLayer, Interceptor};
use crate::request_id::RequestId;
use crate::tunnel::{Tunnel, TunnelEnd};
use crate::{
    Body, BoxError, ClientAddr, GatewayError, TlsInfo, UpstreamResponse, UpstreamResponseWanted,
};

/// The settings of an `access_log` layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// `format`.
    pub format: Format,
    /// `path`: `-` for stdout, else a file.
    pub target: Target,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            format: Format::Combined,
            target: Target::Stdout,
        }
    }
}

/// Writes an access log line per request.
#[derive(Clone, Debug)]
pub struct AccessLogLayer {
    inner: InterceptLayer<AccessLog>,
}

impl AccessLogLayer {
    /// A layer with these settings; opens (or shares) its sink now.
    pub fn new(config: AccessLogConfig) -> io::Result<Self> {
        let sink = Sink::open(config.target)?;
        Ok(Self {
            inner: InterceptLayer::new(AccessLog {
                format: config.format,
                sink,
            }),
        })
    }
}

impl AccessLogLayer {
    /// The interceptor this layer applies: what a host runs without a layer of its own (parapet runs
    /// adjacent guards and interceptors in one future).
    pub fn interceptor(&self) -> &AccessLog {
        self.inner.interceptor()
    }
}

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = Intercept<AccessLog, S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}

/// The interceptor behind [`AccessLogLayer`].
#[derive(Clone, Debug)]
pub struct AccessLog {
    format: Format,
    sink: Arc<Sink>,
}

/// The statuses the server finally sent, reported back to every access log a response passed through.
///
/// An access log puts a slot here on its way out; the server, about to send the head, fills every
/// slot with the status it sends ([`host::report_final_status`](crate::host::report_final_status)).
/// Layers outside the log may have rewritten the status since the log saw it.
#[derive(Clone, Debug, Default)]
pub(crate) struct FinalStatus(Vec<Arc<AtomicU16>>);

/// Tells every access log the response passed through the status actually sent. Hosts call it as
/// [`crate::host::report_final_status`].
pub(crate) fn report_final_status<B>(response: &Response<B>) {
    if let Some(FinalStatus(slots)) = response.extensions().get::<FinalStatus>() {
        for slot in slots {
            slot.store(response.status().as_u16(), Ordering::Relaxed);
        }
    }
}

impl Interceptor for AccessLog {
    type State = Record;

    fn request(&self, req: &mut Request<Body>) -> Record {
        let request_id = crate::request_id::read_or_ask(req);
        // The proxy names the server that answered only for a request that asks.
        req.extensions_mut().insert(UpstreamResponseWanted);
        let headers = req.headers();
        Record {
            log: self.clone(),
            start: Instant::now(),
            time: SystemTime::now(),
            remote: req.extensions().get::<ClientAddr>().copied(),
            tls: req.extensions().get::<TlsInfo>().cloned(),
            panic: req.extensions().get::<PanicSignal>().cloned(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            user_agent: headers.get(http::header::USER_AGENT).cloned(),
            referer: headers.get(http::header::REFERER).cloned(),
            request_id,
            status: None,
            final_status: None,
            upstream: None,
            gateway_error: None,
            bytes: 0,
            expected: None,
            end: None,
            body_error: false,
            tunnel: None,
        }
    }

    fn response(&self, mut record: Record, res: &mut Response<Body>) {
        record.status = Some(res.status());
        record.upstream = res.extensions().get::<UpstreamResponse>().cloned();
        record.gateway_error = res.extensions().get::<GatewayError>().cloned();
        if record.request_id.is_none() {
            // A `request_id` layer inside this log put the id on the response.
            record.request_id = res.extensions().get::<RequestId>().map(|id| id.0.clone());
        }
        let slot = Arc::new(AtomicU16::new(0));
        record.final_status = Some(Arc::clone(&slot));
        let extensions = res.extensions_mut();
        match extensions.get_mut::<FinalStatus>() {
            Some(FinalStatus(slots)) => slots.push(slot),
            None => {
                extensions.insert(FinalStatus(vec![slot]));
            }
        }
        if res.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(tunnel) = res.extensions().get::<Tunnel>() {
                // One line per tunnel, written when it closes: its duration and bytes each way.
                tunnel.on_end(move |end| {
                    // The whole record moves in (not its fields): it is written when dropped.
                    let mut record = record;
                    record.end = Some(Instant::now());
                    record.tunnel = Some(*end);
                    record.bytes = end.to_client;
                });
                return;
            }
        }
        let inner = std::mem::take(res.body_mut());
        // A body of known length (its size hint, or its Content-Length) is complete once that many
        // bytes went out: the server stops polling it there, without ever seeing its end.
        record.expected = inner.size_hint().exact().or_else(|| {
            res.headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        });
        if inner.is_end_stream() {
            record.end = Some(Instant::now());
        }
        *res.body_mut() = Body::new(LogBody { inner, record });
    }
}

/// What is known of one request; the line is written when it is dropped.
pub struct Record {
    log: AccessLog,
    start: Instant,
    time: SystemTime,
    remote: Option<ClientAddr>,
    /// What the connection negotiated, over TLS.
    tls: Option<TlsInfo>,
    /// The signal of the nearest panic-catcher outside this log, if any.
    panic: Option<PanicSignal>,
    method: Method,
    uri: Uri,
    version: Version,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    /// The id a `request_id` layer gave the request, on either side of this log.
    request_id: Option<HeaderValue>,
    /// The status this layer saw; `None` until the response head came through.
    status: Option<StatusCode>,
    final_status: Option<Arc<AtomicU16>>,
    upstream: Option<UpstreamResponse>,
    gateway_error: Option<GatewayError>,
    bytes: u64,
    /// The body's length, when known in advance.
    expected: Option<u64>,
    /// When the last byte went out; `None` while the body is unfinished.
    end: Option<Instant>,
    body_error: bool,
    /// How the tunnel of a 101 ended (see [`crate::tunnel`]).
    tunnel: Option<TunnelEnd>,
}

impl Record {
    /// The status to log and the error to name, from what happened.
    fn outcome(&self) -> (u16, Option<&'static str>) {
        let Some(status) = self.status else {
            // No response head came through this layer: the future was dropped because the client
            // went away, or because of a panic that a catcher outside turns into a 500 (it is
            // unwinding through here now, or the catcher caught it and signalled it).
            let panicked =
                std::thread::panicking() || self.panic.as_ref().is_some_and(PanicSignal::is_set);
            return if panicked {
                (500, Some("panic"))
            } else {
                (499, Some("client_closed"))
            };
        };
        let sent = self
            .final_status
            .as_ref()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&s| s != 0)
            .unwrap_or(status.as_u16());
        let bodiless = self.method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        if self.body_error {
            (sent, Some("body_error"))
        } else if self.end.is_some() || bodiless {
            (sent, self.gateway_error.as_ref().map(|e| e.kind().as_str()))
        } else {
            (499, Some("client_closed"))
        }
    }

    fn format(&self, out: &mut String) {
        let (status, error) = self.outcome();
        let end = self.end.unwrap_or_else(Instant::now);
        let duration = end.duration_since(self.start);
        let remote = self.remote.map(|c| c.0.ip());
        let target = self.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let protocol = version_str(self.version);
        match self.log.format {
            Format::Common | Format::Combined => {
                use std::fmt::Write;
                match remote {
                    Some(ip) => out.push_str(crate::ip::format(ip, &mut [0; 64])),
                    None => out.push('-'),
                }
                out.push_str(" - - [");
                format::clf_time(out, self.time);
                out.push_str("] \"");
                format::clf_str(out, self.method.as_str().as_bytes());
                out.push(' ');
                format::clf_str(out, target.as_bytes());
                out.push(' ');
                out.push_str(protocol);
                let _ = write!(out, "\" {status} ");
                if self.bytes == 0 {
                    out.push('-');
                } else {
                    let _ = write!(out, "{}", self.bytes);
                }
                if self.log.format == Format::Combined {
                    for value in [&self.referer, &self.user_agent] {
                        out.push_str(" \"");
                        match value {
                            Some(v) => format::clf_str(out, v.as_bytes()),
                            None => out.push('-'),
                        }
                        out.push('"');
                    }
                    if let Some(id) = &self.request_id {
                        out.push_str(" \"");
                        format::clf_str(out, id.as_bytes());
                        out.push('"');
                    }
                }
            }
            Format::Json => {
                use std::fmt::Write;
                out.push_str("{\"time\":\"");
                format::rfc3339(out, self.time);
                out.push_str("\",\"remote\":");
                match remote {
                    Some(ip) => {
                        out.push('"');
                        out.push_str(crate::ip::format(ip, &mut [0; 64]));
                        out.push('"');
                    }
                    None => out.push_str("null"),
                }
                out.push_str(",\"method\":");
                format::json_str(out, self.method.as_str());
                out.push_str(",\"target\":");
                format::json_str(out, target);
                let _ = write!(
                    out,
                    ",\"protocol\":\"{protocol}\",\"status\":{status},\"bytes\":{},\"duration_ms\":{:.3}",
                    self.bytes,
                    duration.as_secs_f64() * 1000.0
                );
                for (key, value) in [("user_agent", &self.user_agent), ("referer", &self.referer)] {
                    let _ = write!(out, ",\"{key}\":");
                    match value {
                        Some(v) => format::json_str(out, &String::from_utf8_lossy(v.as_bytes())),
                        None => out.push_str("null"),
                    }
                }
                match &self.tls {
                    Some(TlsInfo(tls)) => {
                        let _ = write!(out, ",\"tls_version\":\"{}\",\"sni\":", tls.version);
                        match &tls.sni {
                            Some(sni) => format::json_str(out, sni),
                            None => out.push_str("null"),
                        }
                    }
                    None => out.push_str(",\"tls_version\":null,\"sni\":null"),
                }
                out.push_str(",\"request_id\":");
                match &self.request_id {
                    Some(v) => format::json_str(out, &String::from_utf8_lossy(v.as_bytes())),
                    None => out.push_str("null"),
                }
                match &self.upstream {
                    Some(u) => {
                        out.push_str(",\"upstream\":");
                        format::json_str(out, &u.server);
                        let _ = write!(out, ",\"upstream_status\":{}", u.status.as_u16());
                    }
                    None => out.push_str(",\"upstream\":null,\"upstream_status\":null"),
                }
                if let Some(t) = &self.tunnel {
                    let _ = write!(
                        out,
                        ",\"tunnel\":{{\"from_client\":{},\"to_client\":{},\"end\":\"{}\"}}",
                        t.from_client,
                        t.to_client,
                        t.reason.as_str()
                    );
                }
                let error_by = if self.gateway_error.is_some() {
                    "\"gateway\""
                } else if self
                    .upstream
                    .as_ref()
                    .is_some_and(|u| u.status.as_u16() >= 400)
                {
                    "\"upstream\""
                } else {
                    "null"
                };
                let _ = write!(out, ",\"error_by\":{error_by},\"error\":");
                match error {
                    Some(e) => {
                        let _ = write!(out, "\"{e}\"");
                    }
                    None => out.push_str("null"),
                }
                out.push('}');
            }
        }
        out.push('\n');
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        thread_local! {
            // One formatting buffer per thread, reused: a line costs no allocation.
            static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(512));
        }
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                self.format(&mut line);
                self.log.sink.write(&line);
            }
            Err(_) => {
                let mut line = String::new();
                self.format(&mut line);
                self.log.sink.write(&line);
            }
        });
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// Counts the bytes sent and notices the end of the body (or its absence).
struct LogBody {
    inner: Body,
    record: Record,
}

impl http_body::Body for LogBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.record.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() || this.record.expected == Some(this.record.bytes) {
                    this.record.end = Some(Instant::now());
                }
            }
            Poll::Ready(Some(Err(_))) => this.record.body_error = true,
            Poll::Ready(None) => {
                if this.record.end.is_none() {
                    this.record.end = Some(Instant::now());
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
